"""What a trainable is to expgrid: a :class:`TrainableSpec`, and references to code by name.

A spec holds the function one trial runs (see ``expgrid.reporter`` for the protocol), the
parameters it accepts with their defaults, the metrics it reports, and optional hooks: ``check``
(rejects values it cannot run before Ray starts), ``data_key`` / ``load_data`` (data loaded once
on the driver and shared by the trials), ``check_data`` (the data files a config names),
``catalogue`` (the names ``expgrid list`` shows: datasets, models, …), ``section_log`` (a
section's log file, see ``expgrid.logfiles``), and ``evaluate`` / ``test_split`` (a section's
best trial evaluated once on the test split, ``test: best``; see ``expgrid.test_eval``).

Every callable of a spec may be given as a ``"package.module:function"`` string instead: it is
imported only when it is called (:class:`FunctionRef`). A spec module that names its training
code that way stays light: resolving and checking a study imports only what the checks use,
not the training code with torch behind it. Where trainables are found:
``expgrid.trainable_lookup``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any


def import_ref(ref: str) -> Any:
    """The object ``package.module:qualname`` names, imported (used on Ray workers too)."""
    module_name, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclasses.dataclass(frozen=True)
class FunctionRef:
    """A function named ``package.module:function``, imported on its first call. Pickles as its
    name, so a spec travels to Ray workers without its modules."""

    ref: str

    def load(self) -> Callable[..., Any]:
        return import_ref(self.ref)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.load()(*args, **kwargs)


# A spec's callable: the function itself, or where to import it from.
Code = Callable[..., Any] | str


def _code(value: Code | None) -> Callable[..., Any] | None:
    return FunctionRef(value) if isinstance(value, str) else value


@dataclasses.dataclass(frozen=True)
class TrainableSpec:
    name: str
    fn: Code
    # Accepted parameters and their defaults (nested). None: accept anything, check nothing.
    defaults: Mapping[str, Any] | None = None
    # Metric names the trainable reports each epoch. None: not known in advance.
    metrics: tuple[str, ...] | None = None
    # Raises ConfigError (field = dotted parameter path) for values it cannot run.
    check: Code | None = None
    # Data shared by trials: key(config) says which configs share data, load(config) builds it.
    data_key: Code | None = None
    load_data: Code | None = None
    # Checks the data files a config names (exist, expected structure, readable image headers),
    # cheaply and without loading them; raises ConfigError (field: the config key naming the
    # files, e.g. dataset.path). Run by `expgrid validate` and `expgrid run` (expgrid.datacheck),
    # not by `expgrid show`, which works without the data; ``check`` must not touch files.
    check_data: Code | None = None
    # Where the function comes from, so Ray workers can import it ("module:function"); filled in
    # from ``fn`` when left empty.
    ref: str = ""
    # Config overrides that make a trial tiny, for `expgrid run --smoke` (None: no smoke mode).
    smoke: Mapping[str, Any] | None = None
    # () -> {"datasets": [names], "models": [...], ...}: what `expgrid list` shows for it.
    catalogue: Code | None = None
    # (path, study name, section id, section name, metric, mode) -> an object with
    # trial_ended(TrialRecord) and section_ended(best TrialRecord | None, metric): writes the
    # section's log file at ``path`` (see expgrid.logfiles). None: the sections get no log file.
    section_log: Code | None = None
    # (config, checkpoint, data) -> {"test_loss": …, "test_accuracy": …}: the trial's model as its
    # checkpoint (what the trial handed to expgrid.report) holds it, evaluated on the test split
    # of ``data`` (what load_data gave). Run once per section with `test: best`, as a Ray task
    # with the trial's resources (cluster/test_eval.py); every key must start with "test_".
    # None: the trainable cannot be asked for `test:`.
    evaluate: Code | None = None
    # (config) -> None when the config's data has a test split, else a few words saying why not
    # (e.g. "image_folder without test/"): checked by `expgrid validate` / `expgrid run` for
    # sections with `test:`. Keep it cheap (no data loading, no torch); it may look whether a
    # folder exists. None with ``evaluate`` given: every config has one.
    test_split: Code | None = None

    def __post_init__(self) -> None:
        for field in ("fn", "check", "data_key", "load_data", "check_data", "catalogue", "section_log", "evaluate",
                      "test_split"):
            object.__setattr__(self, field, _code(getattr(self, field)))
        if self.metrics is not None:
            object.__setattr__(self, "metrics", tuple(self.metrics))
        if self.load_data is None:  # a key without data to share would say nothing
            object.__setattr__(self, "data_key", None)
        if not self.ref:
            fn = self.fn
            ref = fn.ref if isinstance(fn, FunctionRef) else f"{fn.__module__}:{fn.__qualname__}"  # type: ignore[union-attr]
            object.__setattr__(self, "ref", ref)

    @property
    def takes_data(self) -> bool:
        return self.load_data is not None

    def function(self) -> Callable[..., Any]:
        """The trial function itself (imports it when the spec names it by reference)."""
        return self.fn.load() if isinstance(self.fn, FunctionRef) else self.fn  # type: ignore[return-value]

    def catalogue_names(self) -> Mapping[str, Sequence[str]]:
        """The trainable's catalogue (empty without one)."""
        return dict(self.catalogue()) if self.catalogue is not None else {}  # type: ignore[operator]


def trainable(
    *, defaults: Mapping[str, Any] | None = None, metrics: tuple[str, ...] | list[str] | None = None,
    evaluate: Code | None = None, test_split: Code | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a user trainable's parameters and metrics (``expgrid.trainable``), and optionally
    its test evaluation (``evaluate``, ``test_split``: see TrainableSpec): the function carries
    its spec, which ``trainable: module:function`` and entry points find."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__expgrid_spec__ = TrainableSpec(  # type: ignore[attr-defined]
            name=fn.__qualname__,
            fn=fn,
            defaults=defaults,
            metrics=tuple(metrics) if metrics is not None else None,
            evaluate=evaluate,
            test_split=test_split,
        )
        return fn

    return decorator


def spec_of(obj: Any, name: str) -> TrainableSpec | None:
    """``obj`` as a spec named ``name``: a TrainableSpec, or a function (with the spec
    :func:`trainable` gave it, or accepting anything). None when it is neither."""
    if isinstance(obj, TrainableSpec):
        return dataclasses.replace(obj, name=name)
    if callable(obj):
        spec = getattr(obj, "__expgrid_spec__", None)
        if isinstance(spec, TrainableSpec):
            return dataclasses.replace(spec, name=name)
        return TrainableSpec(name=name, fn=obj)
    return None


def ships_by_value(spec: TrainableSpec) -> bool:
    """Whether Ray workers get the trial function itself (pickled by value with cloudpickle, as
    Ray pickles a task's function) rather than its ``module:function`` name: a function no
    worker could import by name, i.e. one defined in ``__main__`` (a notebook's cell, a script)
    or inside another function."""
    fn = spec.fn
    if isinstance(fn, FunctionRef):
        return False
    return getattr(fn, "__module__", None) in (None, "__main__") or "<locals>" in getattr(fn, "__qualname__", "")


def data_key_of(spec: TrainableSpec, config: dict[str, Any]) -> Hashable:
    """Which configs share one dataset: the trainable's ``data_key``, else the whole config."""
    import json

    return spec.data_key(config) if spec.data_key else json.dumps(config, sort_keys=True, default=str)  # type: ignore[operator]
