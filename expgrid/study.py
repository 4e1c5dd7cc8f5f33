"""The study file: YAML → a :class:`~expgrid.study_types.Study`, every rule checked before anything starts.

The objects are ``expgrid.study_types`` (with the schema), the single-field checks
``expgrid.study_checks``; both are imported here too, as the names the package reads studies by.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from expgrid import yamlfile
from expgrid.config import check_values, finite_number, flatten, nest
from expgrid.errors import ConfigError, OptionError, StudyFileError, Text
from expgrid.study_checks import (
    SAFE_NAME,
    SAFE_NAME_RULE,
    check_integer,
    check_known_keys,
    check_list,
    check_mapping,
    check_optional_positive,
    check_safe_name,
    check_string,
    is_number,
)
from expgrid.study_types import EarlyStopping, Resources, Sampled, Scheduler, Section, Selection, Study

__all__ = [
    "SAFE_NAME",
    "SAFE_NAME_RULE",
    "EarlyStopping",
    "Overrides",
    "Resources",
    "Sampled",
    "Scheduler",
    "Section",
    "Selection",
    "Study",
    "is_number",
    "load_inline",
    "load_study",
    "parse_study",
    "read_text",
]

MODES = ("max", "min")
SELECTS = ("last_epoch", "best_epoch")
SCHEDULERS = ("fifo", "asha")
TESTS = ("best", "none")  # `test:` (expgrid.test_eval)
ASHA_KEYS = {"grace_period", "reduction_factor", "brackets"}
SAMPLERS = {"loguniform": 2, "uniform": 2, "randint": 2, "choice": None}
MAX_FILE_BYTES = 10 * 2**20  # a study file is a few KiB; reading a huge one would just hang


RUN_KEYS = {"scheduler", "early_stopping", "max_failures", "checkpoint_every", "resources", "max_concurrent"}
STUDY_KEYS = {"study", "description", "trainable", "metric", "mode", "report", "seed", "defaults", "sections"} | RUN_KEYS
STUDY_KEYS |= {"test"}
SECTION_KEYS = {
    "id", "name", "description", "grid", "zip", "sample", "num_samples", "fixed", "inherit", "epochs", "select",
} | RUN_KEYS
SECTION_KEYS |= {"test"}


class Overrides(dict):
    """``--set`` values by dotted key, remembering the option that gave each one (``--data-root``
    gives ``dataset.root``) so that a value it makes invalid is reported against that option."""

    def __init__(self, values: Mapping[str, Any] | None = None, options: Mapping[str, str] | None = None):
        super().__init__(values or {})
        self.options = dict(options or {})

    def option_of(self, key: str) -> str:
        return self.options.get(key, "--set")


def load_study(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Study:
    """Read and check a study file. ``overrides`` (``--set``) are laid over ``defaults``.

    Raises :class:`StudyFileError` naming the file and field of the first broken rule, or
    :class:`OptionError` naming the option whose value breaks one."""
    path = str(path)
    overrides = overrides if isinstance(overrides, Overrides) else Overrides(overrides)
    _check_overrides(overrides)
    try:
        raw = yamlfile.load(read_text(path))
        return parse_study(raw, path, overrides)
    except ConfigError as e:
        raise StudyFileError(path, e) from None


def load_inline(raw: Any, path: str = "<inline>", overrides: Mapping[str, Any] | None = None) -> Study:
    """A study given as a mapping instead of a file (``expgrid.run({...})`` in a notebook): the
    same rules as a file's YAML, its errors naming ``path`` and the field, e.g.
    ``<inline>: sections[1].grid.x: expected a non-empty list of values, got []``. Tuples read
    as lists (YAML has only lists); the mapping given is not changed."""
    overrides = overrides if isinstance(overrides, Overrides) else Overrides(overrides)
    _check_overrides(overrides)
    try:
        return parse_study(_as_yaml(raw), path, overrides)
    except ConfigError as e:
        raise StudyFileError(path, e) from None


def _as_yaml(value: Any, enclosing: frozenset[int] = frozenset()) -> Any:
    """A copy with mappings as dicts and tuples as lists, as a YAML file would give them. A
    value that contains itself is left as it is, for check_values to name."""
    if not isinstance(value, (Mapping, list, tuple)) or id(value) in enclosing:
        return value
    inner = enclosing | {id(value)}
    if isinstance(value, Mapping):
        return {key: _as_yaml(child, inner) for key, child in value.items()}
    return [_as_yaml(child, inner) for child in value]


def read_text(path: str) -> str:
    """The file's text: UTF-8, of a study file's size; ConfigError naming what it is instead."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError("", "a readable YAML file", Text(e.strerror or type(e).__name__)) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError("", f"a study file of at most {MAX_FILE_BYTES // 2**20} MiB", Text("a larger file"))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"line {line}", "UTF-8 text", data[e.start : e.start + 1]) from None


def _check_overrides(overrides: Overrides) -> None:
    for key, value in overrides.items():
        try:
            check_values(value, key)
            nest({key: value})
        except ConfigError as e:
            raise OptionError(overrides.option_of(key), e) from None
    try:
        nest(overrides)
    except ConfigError as e:  # two keys that spell one value differently
        raise OptionError(overrides.option_of(e.field), e) from None


def parse_study(raw: Any, path: str = "<study>", overrides: Mapping[str, Any] | None = None) -> Study:
    check_values(raw)
    check_values(dict(overrides or {}), "--set")
    if raw is None:
        raise ConfigError("", "a mapping at the top of the file (study, trainable, metric, sections, …)", Text("an empty file"))
    check_mapping(raw, "", "a mapping at the top of the file (study, trainable, metric, sections, …)")
    check_known_keys(raw, STUDY_KEYS, "")
    for key in ("study", "trainable", "metric", "sections"):
        if key not in raw:
            raise ConfigError(key, "this key to be present", None, show_got=False)
    defaults = nest(check_mapping(raw.get("defaults", {}), "defaults", "a mapping of parameter → value"), "defaults")
    if overrides:
        from expgrid.config import lay_over

        defaults = lay_over(defaults, nest(overrides, "--set"))
    mode = raw.get("mode", "max")
    if mode not in MODES:
        raise ConfigError("mode", f"one of {', '.join(MODES)}", mode)
    sections_raw = raw["sections"]
    if not isinstance(sections_raw, list) or not sections_raw:
        raise ConfigError("sections", "a non-empty list of sections", sections_raw)
    metric = check_string(raw["metric"], "metric")
    sections: list[Section] = []
    for i, s in enumerate(sections_raw):
        section = _section(s, f"sections[{i}]")
        section = dataclasses.replace(section, select=_settle_select(section.select, f"sections[{i}].select", metric, mode))
        if any(section.id == other.id for other in sections):
            raise ConfigError(f"sections[{i}].id", "section ids to be unique", section.id)
        earlier = {other.id for other in sections}
        if isinstance(section.inherit, tuple):
            where = f"sections[{i}].inherit" + (".from" if section.top is not None else "")
            for sid in section.inherit:
                if sid not in earlier:
                    raise ConfigError(where, f"ids of earlier sections ({', '.join(sorted(earlier)) or 'none'})", sid)
        if section.top is not None:
            _check_top(section, sections, f"sections[{i}].inherit")
        sections.append(section)
    options = overrides.options if isinstance(overrides, Overrides) else {}
    return Study(
        name=check_safe_name(raw["study"], "study"),
        description=check_string(raw.get("description", ""), "description", allow_empty=True),
        trainable=check_string(raw["trainable"], "trainable"),
        metric=metric,
        mode=mode,
        report=tuple(check_string(m, f"report[{j}]") for j, m in enumerate(check_list(raw.get("report", []), "report"))),
        seed=check_integer(raw.get("seed", 0), "seed"),
        defaults=types.MappingProxyType(defaults),
        resources=_resources(raw.get("resources", {}), "resources"),
        max_concurrent=check_optional_positive(raw.get("max_concurrent"), "max_concurrent"),
        scheduler=_scheduler(raw.get("scheduler", "fifo"), "scheduler"),
        early_stopping=_early_stopping(raw["early_stopping"], "early_stopping") if "early_stopping" in raw else None,
        max_failures=check_integer(raw.get("max_failures", 1), "max_failures", minimum=0),
        checkpoint_every=check_optional_positive(raw.get("checkpoint_every"), "checkpoint_every"),
        test=_test(raw.get("test", "none"), "test"),
        sections=tuple(sections),
        path=path,
        overrides=types.MappingProxyType({key: options.get(key, "--set") for key in overrides or {}}),
    )


def _section(raw: Any, field: str) -> Section:
    check_mapping(raw, field, "a mapping describing a section")
    check_known_keys(raw, SECTION_KEYS, field)
    if "id" not in raw:
        raise ConfigError(f"{field}.id", "a section id such as \"3.1\"", None, show_got=False)
    sid = raw["id"]
    if isinstance(sid, bool) or isinstance(sid, float) or not isinstance(sid, (str, int)):
        raise ConfigError(f"{field}.id", 'a string such as "3.1" (quote it: YAML reads 3.1 as a number)', sid)
    sid = check_safe_name(str(sid), f"{field}.id")
    grid = _sweep(raw.get("grid", {}), f"{field}.grid")
    zipped = _sweep(raw.get("zip", {}), f"{field}.zip")
    if zipped:
        lengths = {k: len(v) for k, v in zipped}
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"{field}.zip", "lists of equal length (their values vary together)", lengths)
    sample = _samples(raw.get("sample", {}), f"{field}.sample")
    names = [k for k, _ in grid] + [k for k, _ in zipped] + [k for k, _ in sample]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"{field}", "each parameter swept once (in grid, zip or sample)", name)
    num_samples = check_integer(raw.get("num_samples", 1), f"{field}.num_samples", minimum=1)
    if num_samples > 1 and not sample:
        raise ConfigError(f"{field}.num_samples", "`sample` parameters to draw (num_samples repeats draws)", num_samples)
    fixed = flatten(nest(check_mapping(raw.get("fixed", {}), f"{field}.fixed", "a mapping"), f"{field}.fixed"))
    for name in fixed:
        if name in names:
            raise ConfigError(f"{field}.fixed.{name}", "a parameter the section does not also sweep", fixed[name])
    inherit, top = _inherit(raw.get("inherit", "previous"), f"{field}.inherit")
    select = _select(raw.get("select", "last_epoch"), f"{field}.select")
    epochs = raw.get("epochs")
    return Section(
        id=sid,
        name=check_string(raw.get("name", f"Section {sid}"), f"{field}.name"),
        description=check_string(raw.get("description", ""), f"{field}.description", allow_empty=True),
        grid=grid,
        zip=zipped,
        sample=sample,
        num_samples=num_samples,
        fixed=types.MappingProxyType(fixed),
        inherit=inherit,
        top=top,
        epochs=None if epochs is None else check_integer(epochs, f"{field}.epochs", minimum=1),
        select=select,
        scheduler=_scheduler(raw["scheduler"], f"{field}.scheduler") if "scheduler" in raw else None,
        early_stopping=_early_stopping(raw["early_stopping"], f"{field}.early_stopping") if "early_stopping" in raw else None,
        max_failures=check_integer(raw["max_failures"], f"{field}.max_failures", minimum=0) if "max_failures" in raw else None,
        checkpoint_every=check_optional_positive(raw.get("checkpoint_every"), f"{field}.checkpoint_every"),
        resources=_resources(raw["resources"], f"{field}.resources") if "resources" in raw else None,
        max_concurrent=check_optional_positive(raw.get("max_concurrent"), f"{field}.max_concurrent"),
        test=_test(raw["test"], f"{field}.test") if "test" in raw else None,
    )


SELECT_FORMS = "last_epoch, best_epoch, or {best_epoch: METRIC, mode: min|max}"


def _select(raw: Any, field: str) -> Selection:
    """``last_epoch``, ``best_epoch`` (by the study metric), or ``{best_epoch: val_loss, mode: min}``:
    each trial's epoch of lowest val_loss. The mode may be left out only for the study metric
    (checked by :func:`_settle_select`, which knows it)."""
    if isinstance(raw, str) and raw in SELECTS:
        return Selection(epoch=raw)
    if not isinstance(raw, Mapping):
        raise ConfigError(field, f"one of {SELECT_FORMS}", raw)
    check_known_keys(raw, {"best_epoch", "mode"}, field)
    if "best_epoch" not in raw:
        raise ConfigError(f"{field}.best_epoch", "the metric whose best value picks each trial's epoch, e.g. val_loss",
                          None, show_got=False)  # fmt: skip
    monitor = check_string(raw["best_epoch"], f"{field}.best_epoch")
    mode = raw.get("mode")
    if mode is not None and mode not in MODES:
        raise ConfigError(f"{field}.mode", f"one of {', '.join(MODES)}", mode)
    return Selection(epoch="best_epoch", monitor=monitor, mode=mode)


def _settle_select(select: Selection, field: str, metric: str, mode: str) -> Selection:
    """The study metric named as the monitor, in the study's mode, is plain ``best_epoch`` (one
    spelling, one fingerprint); any other monitor needs its mode."""
    if select.monitor is None:
        return select
    if select.monitor == metric and select.mode in (None, mode):
        return Selection(epoch="best_epoch")
    if select.mode is None:
        raise ConfigError(f"{field}.mode", f"min or max: whether a lower or higher {select.monitor} is better",
                          None, show_got=False)  # fmt: skip
    return select


INHERIT_FORMS = "previous, none, or a list of earlier section ids (or {from: previous | [ids], top: k})"
TOP_RULE = "an integer ≥ 1 (how many of the best configurations to carry)"


def _inherit(raw: Any, field: str) -> tuple[str | tuple[str, ...], int | None]:
    """``previous`` | ``none`` | ``[ids]`` → (that, None); ``{from: previous | [ids], top: k}`` →
    (from, k): the k best configurations of the nearest section in ``from`` are carried."""
    if not isinstance(raw, Mapping):
        return _inherited_sections(raw, field, INHERIT_FORMS), None
    check_known_keys(raw, {"from", "top"}, field)
    source = _inherited_sections(raw.get("from", "previous"), f"{field}.from",
                                 "previous, none, or a list of earlier section ids")  # fmt: skip
    if "top" not in raw:
        return source, None
    top = raw["top"]
    if isinstance(top, bool) or not isinstance(top, int) or not finite_number(top) or top < 1:
        raise ConfigError(f"{field}.top", TOP_RULE, top)
    if source == "none":
        raise ConfigError(f"{field}.from", f"earlier sections to carry the {top} best configurations of "
                          "(previous or a list of ids), not none", source)  # fmt: skip
    return source, top


def _inherited_sections(raw: Any, field: str, expected: str) -> str | tuple[str, ...]:
    if isinstance(raw, list):
        return tuple(str(x) for x in raw)
    if raw not in ("previous", "none"):
        raise ConfigError(field, expected, raw)
    return raw


def _check_top(section: Section, earlier: list[Section], field: str) -> None:
    """The section a top-k carry draws from must exist before it and hold at least k trials."""
    named = [s for s in earlier if section.inherit == "previous" or s.id in section.inherit]
    if not named:
        raise ConfigError(f"{field}.from", f"an earlier section to carry the {section.top} best configurations of",
                          list(section.inherit) if section.inherit != "previous" else Text("no earlier section"))  # fmt: skip
    parent = named[-1]
    if section.top > parent.num_trials:
        raise ConfigError(f"{field}.top", f"at most {parent.num_trials} (the trials of section {parent.id})", section.top)


def _test(raw: Any, field: str) -> str:
    """``test: best`` (the section's best trial, once, on the test split) or ``none``."""
    if raw not in TESTS:
        raise ConfigError(field, f"one of {', '.join(TESTS)} (best: evaluate the section's best trial on the test split)", raw)
    return raw


def _sweep(raw: Any, field: str) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    check_mapping(raw, field, "a mapping of parameter → list of values")
    out = []
    for name, values in flatten_sweep(raw, field).items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{field}.{name}", "a non-empty list of values", values)
        out.append((name, tuple(values)))
    return tuple(out)


def flatten_sweep(raw: Mapping[str, Any], field: str) -> dict[str, Any]:
    """Sweep keys may be nested or dotted; values are the lists (never descended into)."""
    return flatten(nest(raw, field))


def _samples(raw: Any, field: str) -> tuple[tuple[str, Sampled], ...]:
    check_mapping(raw, field, "a mapping of parameter → {loguniform|uniform|randint: [low, high]} or {choice: [...]}")
    out = []
    # A sampler spec is itself a one-key mapping, so flatten to the level above it.
    for name, spec in _flatten_to_samplers(raw).items():
        f = f"{field}.{name}"
        if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in SAMPLERS:
            raise ConfigError(f, f"one of {{{' | '.join(SAMPLERS)}: ...}}", spec)
        kind, args = next(iter(spec.items()))
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{f}.{kind}", "a non-empty list", args)
        if SAMPLERS[kind] == 2:
            if len(args) != 2 or not all(finite_number(a) for a in args) or not args[0] < args[1]:
                raise ConfigError(f"{f}.{kind}", "[low, high] with low < high", args)
            if kind == "randint" and not all(isinstance(a, int) for a in args):
                raise ConfigError(f"{f}.{kind}", "[low, high] integers (both may be drawn)", args)
            if kind == "loguniform" and args[0] <= 0:
                raise ConfigError(f"{f}.{kind}", "a positive low bound for a log scale", args)
        out.append((name, Sampled(kind, tuple(args))))
    return tuple(out)


def _flatten_to_samplers(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        # A mapping naming a sampler is a spec, even a bad one ({uniform: …, choice: …}): refused there.
        if isinstance(value, Mapping) and not any(k in SAMPLERS for k in value):
            out.update(_flatten_to_samplers(value, path))
        else:
            out[path] = value
    return out


def _scheduler(raw: Any, field: str) -> Scheduler:
    """``fifo``, ``asha``, or ``{asha: {grace_period: 2, reduction_factor: 3, brackets: 1}}``."""
    if isinstance(raw, str):
        if raw not in SCHEDULERS:
            raise ConfigError(field, f"one of {', '.join(SCHEDULERS)}", raw)
        return Scheduler(kind=raw)
    if not isinstance(raw, Mapping) or len(raw) != 1 or next(iter(raw)) not in SCHEDULERS:
        raise ConfigError(field, f"one of {', '.join(SCHEDULERS)} or {{asha: {{grace_period: ..., reduction_factor: ...}}}}", raw)
    kind, options = next(iter(raw.items()))
    options = options or {}
    check_mapping(options, f"{field}.{kind}", "a mapping of scheduler options")
    if kind == "fifo" and options:
        raise ConfigError(f"{field}.fifo", "no options (fifo runs every trial to its last epoch)", options)
    check_known_keys(options, ASHA_KEYS, f"{field}.{kind}")
    reduction = options.get("reduction_factor", 3)
    if not finite_number(reduction) or reduction <= 1:
        raise ConfigError(f"{field}.{kind}.reduction_factor", "a number > 1", reduction)
    grace = options.get("grace_period")
    return Scheduler(
        kind=kind,
        grace_period=None if grace is None else check_integer(grace, f"{field}.{kind}.grace_period", minimum=1),
        reduction_factor=float(reduction),
        brackets=check_integer(options.get("brackets", 1), f"{field}.{kind}.brackets", minimum=1),
    )


def _early_stopping(raw: Any, field: str) -> EarlyStopping:
    check_mapping(raw, field, "a mapping such as {monitor: val_loss, mode: min, patience: 5, min_delta: 0}")
    check_known_keys(raw, {"monitor", "mode", "patience", "min_delta"}, field)
    if "monitor" not in raw:
        raise ConfigError(f"{field}.monitor", "the metric to watch, e.g. val_loss", None, show_got=False)
    mode = raw.get("mode", "min")
    if mode not in MODES:
        raise ConfigError(f"{field}.mode", f"one of {', '.join(MODES)}", mode)
    delta = raw.get("min_delta", 0.0)
    if not finite_number(delta) or delta < 0:
        raise ConfigError(f"{field}.min_delta", "a number ≥ 0", delta)
    return EarlyStopping(
        monitor=check_string(raw["monitor"], f"{field}.monitor"),
        mode=mode,
        patience=check_integer(raw.get("patience", 5), f"{field}.patience", minimum=1),
        min_delta=float(delta),
    )


def _resources(raw: Any, field: str) -> Resources:
    check_mapping(raw, field, "a mapping such as {cpu: 1, gpu: 0.25}")
    check_known_keys(raw, {"cpu", "gpu"}, field)
    cpu = raw.get("cpu", 1)
    gpu = raw.get("gpu", 0)
    if gpu == "auto":
        gpu_checked: tuple = ()
    else:
        gpu_checked = (("gpu", gpu),)
    for name, value in (("cpu", cpu), *gpu_checked):
        if not finite_number(value) or value < 0:
            raise ConfigError(f"{field}.{name}", "a number ≥ 0" + (" or auto" if name == "gpu" else ""), value)
        if value > 1 and value != int(value):
            raise ConfigError(f"{field}.{name}", "a fraction in (0, 1] or a whole number", value)
    if cpu == 0:
        raise ConfigError(f"{field}.cpu", "a number > 0 (a trial needs some CPU)", cpu)
    return Resources(cpu=float(cpu), gpu=gpu if gpu == "auto" else float(gpu))
