"""What a study is: frozen, typed objects (:class:`Study`, :class:`Section`, …), as the study file
(parsed and checked by ``expgrid.study``) describes them.

The schema (documented for users in README.md, "Study files")::

    study: fashion-mnist-regularisation      # name; also the MLflow experiment
    description: free text
    trainable: classify                      # a registered name, or "package.module:function"
    metric: val_accuracy                     # picks the best trial of each section
    mode: max                                # max | min
    report: [val_loss]                       # secondary metrics for summaries
    seed: 0
    defaults: {...}                          # the base config (nested or dotted keys)
    resources: {cpu: 1, gpu: 0}              # per trial
    max_concurrent: 4                        # optional cap on parallel trials
    sections:
      - id: "3.2"                            # a string; quote numbers such as "3.2"
        name: Weight decay
        inherit: previous                    # previous (default) | none | [ids] | {from: previous | [ids], top: k}
        grid: {optimizer.weight_decay: [0, 1.0e-4]}   # crossed: the cartesian product
        zip: {batch_size: [16, 128], epochs: [10, 50]} # zipped: values vary together
        sample: {optimizer.lr: {loguniform: [1.0e-5, 1.0e-1]}}
        num_samples: 4                       # draws of `sample` per grid point
        fixed: {model.dropout: 0.3}          # set for this section only, not carried on
        epochs: 20                           # sets the `epochs` parameter
        select: last_epoch                   # last_epoch | best_epoch | {best_epoch: val_loss, mode: min}
        scheduler: fifo                      # fifo | asha | {asha: {grace_period, reduction_factor, brackets}}
        early_stopping: {monitor: val_loss, mode: min, patience: 5, min_delta: 0}
        max_failures: 1                      # retries of a crashed trial, from its last checkpoint
        checkpoint_every: 1                  # epochs between checkpoints (default: see planning)
        resources: {cpu: 1, gpu: 0.25}       # gpu: a fraction, whole GPUs, or auto
        max_concurrent: 2
        test: best                           # best | none: evaluate the best trial once on the test split

``scheduler``, ``early_stopping``, ``max_failures`` and ``checkpoint_every`` may also be given at
the top level, as the default of every section.

Study names and section ids name directories (``results/<study>/sections/<id>/``), so they are
``study_checks.SAFE_NAME``: ASCII letters, digits, ``.``, ``_`` and ``-``, not starting with ``.``. Every
number anywhere in the file or a ``--set`` is finite (``config.finite_number``).
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one trial reserves: CPUs (fractions allowed) and GPUs (a fraction, whole GPUs, or
    ``"auto"``: measured by a short dry run, see ``cluster.gpu``)."""

    cpu: float = 1.0
    gpu: float | str = 0.0

    def as_ray(self) -> dict[str, float]:
        if self.gpu == "auto":
            raise ValueError("resolve gpu: auto (cluster.gpu) before asking Ray for it")
        return {"cpu": self.cpu, "gpu": float(self.gpu)}


@dataclasses.dataclass(frozen=True)
class Scheduler:
    """``fifo`` runs every trial to its last epoch; ``asha`` cuts weak trials at rungs
    (epochs grace_period · reduction_factorᵏ), comparing them by the study metric."""

    kind: str = "fifo"
    grace_period: int | None = None  # None: about max_t / 15, at least 1 (see cluster.tune_section)
    reduction_factor: float = 3.0
    brackets: int = 1


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Stop a trial whose ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs."""

    monitor: str
    mode: str = "min"
    patience: int = 5
    min_delta: float = 0.0


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which epoch stands for a trial (``select``): its last, or its best by ``monitor``.

    Trials are then compared by the study metric at those epochs, so the monitor that picks a
    trial's epoch (``val_loss``, lowest) may differ from the metric that picks the section's best
    trial (``val_accuracy``, highest). ``monitor`` None: the study metric, in the study's mode.
    A best epoch is one that reports both the monitor and the study metric as finite numbers.
    """

    epoch: str = "last_epoch"  # last_epoch | best_epoch
    monitor: str | None = None
    mode: str | None = None  # the monitor's direction; None with monitor None: the study's mode

    @property
    def best_epoch(self) -> bool:
        return self.epoch == "best_epoch"

    def by(self, metric: str, mode: str) -> tuple[str, str]:
        """The (metric, mode) that picks a best epoch, given the study's metric and mode."""
        return self.monitor or metric, self.mode or mode

    def words(self, metric: str, mode: str) -> str:
        """How tables and titles name the epoch: "the last epoch", "the epoch of lowest val_loss"."""
        if not self.best_epoch:
            return "the last epoch"
        monitor, monitor_mode = self.by(metric, mode)
        return f"the epoch of {'highest' if monitor_mode == 'max' else 'lowest'} {monitor}"

    def __str__(self) -> str:  # as `expgrid show` lists it: last_epoch, best_epoch, best_epoch: val_loss (min)
        return self.epoch if self.monitor is None else f"{self.epoch}: {self.monitor} ({self.mode})"

    def to_json(self) -> str | dict[str, str]:
        """As the study file writes it: ``last_epoch``, ``best_epoch``, or ``{best_epoch: val_loss, mode: min}``."""
        if self.monitor is None:
            return self.epoch
        return {"best_epoch": self.monitor, "mode": self.mode or ""}

    @classmethod
    def of(cls, value: Any) -> Selection:
        """A selection from its JSON form (section.json, old ones held only the string) or itself."""
        if isinstance(value, Selection):
            return value
        if value in ("last_epoch", "best_epoch"):
            return cls(epoch=value)
        if isinstance(value, Mapping) and isinstance(value.get("best_epoch"), str) and value.get("mode") in ("min", "max"):
            return cls(epoch="best_epoch", monitor=value["best_epoch"], mode=value["mode"])
        raise ValueError(f"not a select setting: {value!r}")


@dataclasses.dataclass(frozen=True)
class Sampled:
    """A parameter drawn at random: ``loguniform``/``uniform``/``randint`` [low, high] or ``choice``."""

    kind: str
    args: tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class Section:
    id: str
    name: str
    description: str = ""
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    zip: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    sample: tuple[tuple[str, Sampled], ...] = ()
    num_samples: int = 1
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))
    inherit: str | tuple[str, ...] = "previous"
    # ``inherit: {from: …, top: k}``: the k best configurations of the nearest inherited section
    # are carried, each crossed with this section's sweep (see ``expgrid.carry``); None: its best.
    top: int | None = None
    epochs: int | None = None
    select: Selection = Selection()
    scheduler: Scheduler | None = None  # None: the study's
    early_stopping: EarlyStopping | None = None  # None: the study's
    max_failures: int | None = None  # None: the study's
    checkpoint_every: int | None = None  # None: the study's, else planning.checkpoint_every
    resources: Resources | None = None
    max_concurrent: int | None = None
    test: str | None = None  # None: the study's (see Study.test_of)

    @property
    def swept(self) -> tuple[str, ...]:
        """The dotted names of the parameters this section varies."""
        return tuple(k for k, _ in self.grid) + tuple(k for k, _ in self.zip) + tuple(k for k, _ in self.sample)

    @property
    def num_trials(self) -> int:
        """Trials of the section: its sweep (one trial when it sweeps nothing), times the
        configurations it carries with ``top``."""
        n = math.prod(len(v) for _, v in self.grid)
        if self.zip:
            n *= len(self.zip[0][1])
        return n * self.num_samples * (self.top or 1)


@dataclasses.dataclass(frozen=True)
class Study:
    name: str
    trainable: str
    metric: str
    mode: str
    sections: tuple[Section, ...]
    defaults: Mapping[str, Any]
    description: str = ""
    report: tuple[str, ...] = ()
    seed: int = 0
    resources: Resources = Resources()
    max_concurrent: int | None = None
    scheduler: Scheduler = Scheduler()
    early_stopping: EarlyStopping | None = None
    max_failures: int = 1
    checkpoint_every: int | None = None
    # After each section, evaluate its best trial once on the test split (expgrid.test_eval):
    # "best", or "none"; a section's own `test` overrides it.
    test: str = "none"
    path: str = "<study>"
    # The dotted keys --set (or --data-root) laid over `defaults`, and the option that set each:
    # a value they make invalid is reported against the option, not the file.
    overrides: Mapping[str, str] = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))
    # `expgrid run --smoke`, not a study-file key: each section runs its first two trials,
    # with the trainable's smoke overrides (tiny inputs, one epoch) on all but the swept values,
    # at one CPU and no GPU per process.
    smoke: bool = False

    # A section's own setting, else the study's.
    def scheduler_of(self, section: Section) -> Scheduler:
        return section.scheduler or self.scheduler

    def early_stopping_of(self, section: Section) -> EarlyStopping | None:
        return section.early_stopping or self.early_stopping

    def max_failures_of(self, section: Section) -> int:
        return self.max_failures if section.max_failures is None else section.max_failures

    def checkpoint_every_of(self, section: Section) -> int | None:
        return section.checkpoint_every or self.checkpoint_every

    def test_of(self, section: Section) -> str:
        return self.test if section.test is None else section.test

    def resources_of(self, section: Section) -> Resources:
        return section.resources or self.resources

    def section(self, section_id: str) -> Section:
        for s in self.sections:
            if s.id == section_id:
                return s
        raise KeyError(section_id)
