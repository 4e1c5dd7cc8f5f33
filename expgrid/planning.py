"""From a section to its trials: the base config, what it inherits, and the swept values.

For a section the base config is::

    trainable defaults ⊕ study defaults (⊕ --set) ⊕ inherited best values ⊕ section.fixed ⊕ epochs

and each trial lays one point of the sweep over it. The sweep is the cartesian product of
``grid``, crossed with the rows of ``zip`` (whose lists vary together), crossed with
``num_samples`` draws of ``sample`` (seeded by the study seed and section id, so a re-run draws
the same values).

A section holds at most :data:`MAX_TRIALS` trials. Counting them is arithmetic
(``Section.num_trials``) and checking a study plans only a bounded, representative set of them
(:func:`representative_points`), so a mistyped grid of 10¹⁰ trials is refused with its count
instead of filling the memory.

What a section inherits are only the swept values of the best trial of each earlier section
(``inherit: previous``: all of them, in order; a list: those named; ``none``: nothing). Fixed
values and epoch overrides of a section are its own and are not carried on. With
``inherit: {from: …, top: k}`` the section's sweep is crossed with the k best configurations of
the nearest inherited section (``expgrid.carry``): each trial's swept values are then its
parent's carried values followed by its own sweep point.

A section with neither grid, zip nor sample is one trial (its base config; one per parent with
``top``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from expgrid import carry
from expgrid.config import expand_names, finite_number, flatten, get_path, merge, nest, set_path, unknown_paths
from expgrid.errors import ConfigError, OptionError, StudyFileError, Text
from expgrid.stopping import TrialRules
from expgrid.study_types import Sampled, Scheduler, Section, Study
from expgrid.trainable_spec import TrainableSpec


@dataclasses.dataclass(frozen=True)
class TrialPlan:
    index: int
    swept: dict[str, Any]  # dotted name → value of the parameters this section varies
    config: dict[str, Any]  # the full nested config the trainable receives
    parent: carry.Parent | None = None  # the carried configuration it starts from (``top``)


inherited_from = carry.inherited_from  # ids of the earlier sections ``section`` starts from


def carried_values(study: Study, section: Section, bests: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The swept values ``section`` inherits, given the best swept values of finished sections
    (the section a ``top`` carry draws from is left out: its trials cross with its k best, see
    ``carry.carry``)."""
    carried: dict[str, Any] = {}
    parent = carry.top_parent_of(study, section)
    for sid in inherited_from(study, section):
        if sid not in bests:
            raise KeyError(sid)
        if sid != parent:
            carried.update(bests[sid])
    return carried


def base_config(study: Study, spec: TrainableSpec, section: Section, carried: Mapping[str, Any]) -> dict[str, Any]:
    schema = spec.defaults or {}
    config = merge(schema, expand_names(study.defaults, schema))
    for name, value in carried.items():
        set_path(config, name, value)
    config = merge(config, expand_names(nest(dict(section.fixed)), schema))
    if section.epochs is not None:
        config["epochs"] = section.epochs
    return config


def reference_values(
    study: Study, spec: TrainableSpec, section: Section, carried: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The section's swept parameters as its base config sets them: the trial with these values,
    when the grid holds one, is the reference row of the section's table. None when the base
    config does not set every swept parameter."""
    base = base_config(study, spec, section, carried)
    missing = object()
    values = {name: get_path(base, name, missing) for name in section.swept}
    return None if any(v is missing for v in values.values()) else values


MAX_TRIALS = 100_000  # per section; above it planning, records and Tune itself would crawl


def sweep_points(study: Study, section: Section) -> list[dict[str, Any]]:
    """The swept values of each trial, in a fixed order (grid-major, then zip rows, then draws)."""
    return list(iter_sweep_points(study, section))


def iter_sweep_points(study: Study, section: Section) -> Iterator[dict[str, Any]]:
    """:func:`sweep_points` one at a time: taking the first few never builds the rest."""
    names = [name for name, _ in section.grid]
    rows = [dict(zip([n for n, _ in section.zip], row)) for row in zip(*(v for _, v in section.zip))] or [{}]
    rng = random.Random(f"{study.seed}/{section.id}")
    for combo in itertools.product(*(v for _, v in section.grid)):
        for row in rows:
            point = {**dict(zip(names, combo)), **row}
            if not section.sample:
                yield point
                continue
            for _ in range(section.num_samples):
                yield {**point, **{name: _draw(rng, s) for name, s in section.sample}}


def representative_points(section: Section) -> list[dict[str, Any]]:
    """A bounded set of sweep points in which every distinct value of each swept parameter
    appears at least once (each zip row as a whole; for ``uniform``/``loguniform``/``randint``
    both bounds, for ``choice`` every choice): as many points as the longest list, not the
    product. What a trainable's check of one value decides, these decide for every trial."""
    columns: list[list[dict[str, Any]]] = [[{name: v} for v in _distinct(values)] for name, values in section.grid]
    if section.zip:
        rows = [dict(zip([n for n, _ in section.zip], row)) for row in zip(*(v for _, v in section.zip))]
        columns.append(_distinct(rows))
    for name, sampled in section.sample:
        extremes = sampled.args if sampled.kind == "choice" else sampled.args[:2]
        if sampled.kind in ("uniform", "loguniform"):  # draws are floats even between int bounds
            extremes = tuple(float(v) for v in extremes)
        columns.append([{name: v} for v in _distinct(extremes)])
    length = max((len(c) for c in columns), default=1)
    return [{k: v for column in columns for k, v in column[i % len(column)].items()} for i in range(length)]


def _distinct(values: Any) -> list[Any]:
    """``values`` without repeats, in order (compared by repr: lists and mappings too)."""
    seen: set[str] = set()
    out = []
    for value in values:
        key = repr(value)
        if key not in seen:
            seen.add(key)
            out.append(value)
    return out


def _draw(rng: random.Random, sampled: Sampled) -> Any:
    low, high = (sampled.args + (None, None))[:2]
    if sampled.kind == "loguniform":
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    if sampled.kind == "uniform":
        return rng.uniform(low, high)
    if sampled.kind == "randint":
        return rng.randint(int(low), int(high))  # both ends included
    return rng.choice(list(sampled.args))


def plan_section(
    study: Study, spec: TrainableSpec, section: Section, carried: Mapping[str, Any],
    parents: Sequence[carry.Parent] = (),
) -> list[TrialPlan]:
    """The section's trials: its sweep over its base config, or, given ``parents`` (a ``top``
    carry), the sweep crossed with them, parent-major: each parent's values laid over the base
    config, then the sweep point."""
    base = base_config(study, spec, section, carried)
    schema = spec.defaults or {}
    if study.smoke:  # the first trials only, never the whole sweep
        points = list(itertools.islice(iter_sweep_points(study, section), SMOKE_TRIALS))
        smoke = {k: v for k, v in flatten(dict(spec.smoke or {})).items() if k not in section.swept}
        base = merge(base, nest(smoke))
    else:
        points = sweep_points(study, section)
    if not parents:
        return [TrialPlan(index=i, swept=p, config=trial_config(base, p, schema)) for i, p in enumerate(points)]
    pairs = [(parent, point) for parent in parents for point in points]
    if study.smoke:  # every parent with the first sweep points, SMOKE_TRIALS trials in all
        pairs = [(parent, point) for point in points for parent in parents][:SMOKE_TRIALS]
        pairs.sort(key=lambda pair: parents.index(pair[0]))
    bases = {id(parent): trial_config(base, parent.values, schema) for parent in parents}
    return [TrialPlan(index=i, swept={**parent.values, **point}, config=trial_config(bases[id(parent)], point, schema),
                      parent=parent) for i, (parent, point) in enumerate(pairs)]  # fmt: skip


def swept_names(section: Section, plans: Sequence[TrialPlan]) -> tuple[str, ...]:
    """What the section's trials vary: its sweep and, with ``top``, the carried parents' values
    (first, as each trial's swept values list them)."""
    return tuple(dict.fromkeys(name for plan in plans for name in plan.swept)) or section.swept


def trial_config(base: Mapping[str, Any], point: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """The config one trial receives: its sweep point laid over the section's base config."""
    return merge(base, expand_names(nest(dict(point)), schema))


SMOKE_TRIALS = 2  # trials per section in a smoke run: the first ones of its sweep


def fingerprint(study: Study, section: Section, plans: list[TrialPlan]) -> str:
    """Changes when anything that decides the section's trials or its best trial changes."""
    facts: dict[str, Any] = {"metric": study.metric, "mode": study.mode, "select": section.select.to_json(),
                             "trials": [p.config for p in plans]}  # fmt: skip
    parents = [p.parent.label for p in plans if p.parent is not None]
    if parents:  # which parent trial each started from (equal values from another trial: a change)
        facts["parents"] = parents
    blob = json.dumps(facts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Checking a study against its trainable, before anything runs


def check_study(study: Study, spec: TrainableSpec) -> None:
    """Raise :class:`StudyFileError` for the first parameter or metric the trainable rejects
    (:class:`OptionError` when a ``--set`` value is the one rejected)."""
    try:
        _check(study, spec)
    except ConfigError as e:
        raise StudyFileError(study.path, e) from None


def _check(study: Study, spec: TrainableSpec) -> None:
    for i, section in enumerate(study.sections):
        if section.num_trials > MAX_TRIALS:
            raise ConfigError(f"sections[{i}]", f"at most {MAX_TRIALS} trials", section.num_trials)
    if spec.metrics is not None:
        for field, name in [("metric", study.metric)] + [(f"report[{i}]", m) for i, m in enumerate(study.report)]:
            if name not in spec.metrics:
                raise ConfigError(field, f"a metric trainable {spec.name!r} reports: one of {', '.join(spec.metrics)}", name)
        for i, section in [(None, None)] + list(enumerate(study.sections)):
            rule = study.early_stopping if section is None else section.early_stopping
            field = "early_stopping.monitor" if section is None else f"sections[{i}].early_stopping.monitor"
            if rule is not None and rule.monitor not in spec.metrics:
                raise ConfigError(field, f"a metric trainable {spec.name!r} reports: one of {', '.join(spec.metrics)}", rule.monitor)
        for i, section in enumerate(study.sections):
            monitor = section.select.monitor
            if monitor is not None and monitor not in spec.metrics:
                raise ConfigError(f"sections[{i}].select.best_epoch",
                                  f"a metric trainable {spec.name!r} reports: one of {', '.join(spec.metrics)}", monitor)  # fmt: skip
    if spec.defaults is not None:
        _check_names(study, spec)
    for i, section in enumerate(study.sections):
        field = f"sections[{i}]"
        for point, config in _configs_to_check(study, spec, section):
            try:
                check_universal(config)
                if spec.check is not None:
                    spec.check(config)
            except ConfigError as e:
                raise place_error(e, study, section, field, point) from None
            except Exception as e:  # a check that crashes on a value: still that value's problem
                trial = ", ".join(f"{k}={v!r}" for k, v in point.items())
                raise ConfigError(field, f"values trainable {spec.name!r} can check (for the trial {trial})",
                                  Text(f"{type(e).__name__}: {e}"[:300])) from None  # fmt: skip


FULL_CHECK_TRIALS = 1_000  # sections up to this size have every trial checked, not only a sample


def _configs_to_check(study: Study, spec: TrainableSpec, section: Section) -> Iterator[tuple[dict, dict]]:
    """(sweep point, trial config) pairs that decide whether the section can run: a smoke run's
    own trials; else every trial of a small section and, for any section, the representative
    points (each distinct value at least once; the sampled ranges' bounds)."""
    if study.smoke:
        yield from ((p.swept, p.config) for p in plan_section(study, spec, section, {}))
        return
    base = base_config(study, spec, section, {})
    schema = spec.defaults or {}
    yield from ((p, trial_config(base, p, schema)) for p in representative_points(section))
    if section.num_trials <= FULL_CHECK_TRIALS:
        yield from ((p, trial_config(base, p, schema)) for p in iter_sweep_points(study, section))


def _check_names(study: Study, spec: TrainableSpec) -> None:
    """Every parameter the study sets is one the trainable declares."""
    schema = spec.defaults or {}
    for name in unknown_paths(expand_names(study.defaults, schema), schema):
        option = _option_setting(study, name)
        if option is not None:
            raise OptionError(option, _not_accepted("", name, spec))
        raise _not_accepted("defaults", name, spec)
    for i, section in enumerate(study.sections):
        field = f"sections[{i}]"
        for name in section.swept:
            if not _accepts(schema, name):
                raise _not_accepted(f"{field}.{_sweep_kind(section, name)}", name, spec)
        for name in section.fixed:
            if not _accepts(schema, name):
                raise _not_accepted(f"{field}.fixed", name, spec)
        if section.epochs is not None and "epochs" not in schema:
            raise ConfigError(f"{field}.epochs", f"a trainable with an `epochs` parameter ({spec.name!r} has none)", section.epochs)


# Keys expgrid itself reads from a trial's config, whatever the trainable: checked in every trial
# config where they appear, also for trainables that declare no parameters or checks.
def check_universal(config: Mapping[str, Any]) -> None:
    for key, rule, expected in UNIVERSAL_RULES:
        if key in config and not rule(config[key]):
            raise ConfigError(key, expected, config[key])


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and finite_number(value) and value >= 1


def _gpu_share(value: Any) -> bool:
    return finite_number(value) and value >= 0 and (value <= 1 or value == int(value))


UNIVERSAL_RULES = (
    ("epochs", _positive_int, "an integer ≥ 1 (epochs every trial runs, unless stopped)"),
    ("batch_size", _positive_int, "an integer ≥ 1"),
    ("workers", _positive_int, "an integer ≥ 1 (processes of a data-parallel trial)"),
    ("gpu_per_worker", _gpu_share, "a GPU share ≥ 0: a fraction in [0, 1] or a whole number"),
)


_MISSING = object()


def _sweep_kind(section: Section, name: str) -> str:
    """Where the section sweeps ``name``: grid, zip or sample."""
    return "grid" if name in dict(section.grid) else "zip" if name in dict(section.zip) else "sample"


def _option_setting(study: Study, field: str) -> str | None:
    """The command-line option (--set, --data-root) that set ``field``, a mapping above it or a
    value below it."""
    return next((opt for key, opt in study.overrides.items()
                 if field == key or field.startswith(key + ".") or key.startswith(field + ".")), None)  # fmt: skip


def place_error(
    error: ConfigError, study: Study, section: Section, field: str, point: Mapping[str, Any]
) -> ConfigError | OptionError:
    """The trainable's error, with its field placed where the study file sets the value: the
    section's sweep (grid, zip or sample) or fixed values, a command-line option, the defaults,
    or else (a value the trainable defaults that this trial's other settings make invalid, e.g.
    no weights for ``mode: linear_probe``) the section, naming the trial."""

    def covers(name: str) -> bool:
        return error.field == name or error.field.startswith(name + ".")

    swept = next((name for name in section.swept if covers(name)), None)
    if swept is not None:
        return error.within(f"{field}.{_sweep_kind(section, swept)}")
    if any(map(covers, section.fixed)):
        return error.within(f"{field}.fixed")
    option = _option_setting(study, error.field)
    if option is not None:
        return OptionError(option, error)
    parts = error.field.split(".")
    for depth in range(1, len(parts) + 1):  # the value itself, or a shorthand above it (dataset: digits)
        value = get_path(study.defaults, ".".join(parts[:depth]), _MISSING)
        if value is not _MISSING and (depth == len(parts) or not isinstance(value, Mapping)):
            return error.within("defaults")
    trial = ", ".join(f"{k}={v}" for k, v in point.items())
    return ConfigError(f"{field}.{error.field}", f"{error.expected} (for the trial {trial})", error.got,
                       show_got=error.show_got)  # fmt: skip


def _accepts(schema: Mapping[str, Any], name: str) -> bool:
    return get_path(schema, name, _MISSING) is not _MISSING or _under_free_form(schema, name)


def _under_free_form(schema: Mapping[str, Any], name: str) -> bool:
    """True when ``name`` lies below an empty mapping of the schema (free-form options) or names
    a mapping-valued parameter as a whole (e.g. ``dataset`` with a dict value)."""
    parts = name.split(".")
    for depth in range(1, len(parts) + 1):
        node = get_path(schema, ".".join(parts[:depth]), _MISSING)
        if node is _MISSING:
            return False
        if isinstance(node, Mapping) and not node:
            return True
    return isinstance(get_path(schema, name, _MISSING), Mapping)


def _not_accepted(field: str, name: str, spec: TrainableSpec) -> ConfigError:
    import difflib

    accepted = sorted(flatten(spec.defaults or {}))
    close = difflib.get_close_matches(name, accepted, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return ConfigError(
        f"{field}.{name}" if field else name,
        f"a parameter trainable {spec.name!r} accepts: one of {', '.join(accepted)}{hint}",
        name,
    )


def asha_grace_period(scheduler: Scheduler, max_t: int) -> int:
    """ASHA's first rung: as given, else about max_t / 15 (10 epochs of 150), within [1, max_t]."""
    return min(max_t, scheduler.grace_period or max(1, round(max_t / 15)))


def asha_rungs(scheduler: Scheduler, max_t: int) -> frozenset[int]:
    """Epochs at which ASHA compares trials: grace · rfᵏ below max_t (every bracket's rungs lie
    in this sequence)."""
    if scheduler.kind != "asha":
        return frozenset()
    rungs, epoch = set(), float(asha_grace_period(scheduler, max_t))
    while epoch < max_t:
        rungs.add(int(epoch))
        epoch *= scheduler.reduction_factor
    return frozenset(rungs)


def trial_rules(study: Study, section: Section, config: Mapping[str, Any], max_t: int = 1) -> TrialRules:
    """What the trial itself checks on each report (stopping, checkpoint timing, batching)."""
    stopping = study.early_stopping_of(section)
    return TrialRules(
        metric=study.metric,
        mode=study.mode,
        keep_best_checkpoint=section.select.best_epoch,
        select_monitor=section.select.monitor,
        select_mode=section.select.mode,
        keep_last_checkpoint=study.test_of(section) != "none",
        monitor=stopping.monitor if stopping else None,
        monitor_mode=stopping.mode if stopping else "min",
        patience=stopping.patience if stopping else 0,
        min_delta=stopping.min_delta if stopping else 0.0,
        checkpoint_every=study.checkpoint_every_of(section) or checkpoint_every(config),
        flush_epochs=asha_rungs(study.scheduler_of(section), max_t),
        last_epoch=epochs if isinstance(epochs := config.get("epochs"), int) and not isinstance(epochs, bool) else None,
    )


def checkpoint_every(config: Mapping[str, Any]) -> int:
    """Default epochs between checkpoints: every epoch for short trials (≤ 10 epochs), about 10
    per trial for long ones (a 150-epoch MLP trial would otherwise spend more time writing state
    than training)."""
    epochs = config.get("epochs")
    if not isinstance(epochs, int) or epochs <= 10:
        return 1
    return math.ceil(epochs / 10)
