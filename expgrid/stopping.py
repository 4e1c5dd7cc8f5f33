"""How a trial ends, decided inside the trial from its own reports.

A :class:`Watcher` sees each epoch's metrics and says whether the trial must stop now
(``diverged``: a NaN or infinite loss; ``early_stopped``: patience ran out) and whether this
epoch is the best so far by the section's ``select`` monitor (so a ``best_epoch`` section
checkpoints it). The driver picks each trial's best epoch by the same rule
(:func:`selection_value`), so the checkpoint kept is the epoch the records select. Deciding in the trial
means a stalled trial frees its slot at once, with no round trip to the driver.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

# How a trial ended (records, tables, the MLflow tag ``expgrid.status``).
COMPLETED = "completed"
EARLY_STOPPED = "early_stopped"
ASHA_STOPPED = "asha_stopped"  # cut by the ASHA scheduler at a rung
DIVERGED = "diverged"
FAILED = "failed"
# Running when the study was stopped (Ctrl-C, SIGTERM, a full disk): not an ending of the trial,
# which `--resume` continues from its last checkpoint; never scored, never carried forward.
INTERRUPTED = "interrupted"
SCORED = (COMPLETED, EARLY_STOPPED, ASHA_STOPPED)  # endings whose metrics compete for "best"

# MLflow has no "stopped early": a trial cut by ASHA (or interrupted) is KILLED, a diverged one
# FAILED; the tag expgrid.status always says exactly how it ended.
MLFLOW_STATUS = {
    COMPLETED: "FINISHED",
    EARLY_STOPPED: "FINISHED",
    ASHA_STOPPED: "KILLED",
    DIVERGED: "FAILED",
    FAILED: "FAILED",
    INTERRUPTED: "KILLED",
}


def section_mlflow_status(has_best: bool) -> str:
    """A finished section's MLflow status: FINISHED when some trial was scored, else FAILED."""
    return "FINISHED" if has_best else "FAILED"


@dataclasses.dataclass(frozen=True)
class TrialRules:
    """What a trial checks on every report (plain data: it travels to Ray workers)."""

    metric: str
    mode: str
    keep_best_checkpoint: bool = False  # select: best_epoch
    # select: {best_epoch: val_loss, mode: min}: the metric whose best value marks the best
    # epoch, and its mode; None: the study metric and mode.
    select_monitor: str | None = None
    select_mode: str | None = None
    # test: the trial's selected epoch must have a checkpoint for its test evaluation: also the
    # last planned epoch, ASHA's rungs (where it may be cut) and the epoch early stopping ends it
    keep_last_checkpoint: bool = False
    monitor: str | None = None  # early stopping
    monitor_mode: str = "min"
    patience: int = 0
    min_delta: float = 0.0
    checkpoint_every: int = 1
    # Reports are sent to the driver in batches: at most every `report_interval` seconds, and at
    # these epochs (ASHA's rungs, so its decisions see exactly the rung epoch), a checkpoint, a
    # stop, or the trial's end. Per-epoch round trips would otherwise dominate small trials.
    report_interval: float = 1.0
    flush_epochs: frozenset[int] = frozenset()
    # The trial's planned last epoch (config `epochs`), when known: its report carries the
    # trainable's artifacts.
    last_epoch: int | None = None

    # Trial configs travel as plain data: Tune saves them as JSON in its experiment state, and a
    # restored experiment (``--resume``) gets back what JSON kept.
    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "flush_epochs": sorted(self.flush_epochs)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrialRules:
        return cls(**{**data, "flush_epochs": frozenset(data.get("flush_epochs", ()))})


class MissingMonitor(Exception):
    """An epoch reported the study metric but not the ``select`` monitor: the trial fails, saying so
    (a trainable that declares its metrics has this caught when the study is checked)."""


def selection_value(row: dict[str, Any], metric: str, monitor: str) -> float | None:
    """The monitor's value in an epoch row that can be selected: one reporting both the monitor
    and the study metric (by which trials are then compared) as finite numbers; else None."""
    value = row.get(monitor)
    return float(value) if is_finite_number(value) and is_finite_number(row.get(metric)) else None


class Watcher:
    def __init__(self, rules: TrialRules):
        self.rules = rules
        self.best_monitor: float | None = None
        self.stale = 0  # epochs since the monitor last improved
        # The best value so far of the select monitor (the study metric unless `select` names one);
        # the checkpoint state's key predates the select monitor.
        self.best_metric: float | None = None

    def observe(self, metrics: dict[str, Any]) -> tuple[str | None, bool]:
        """(stop reason or None, whether this epoch is the best so far by the select monitor)."""
        r = self.rules
        if any(_bad(v) for k, v in metrics.items() if "loss" in k) or _bad(metrics.get(r.metric)):
            return DIVERGED, False
        selecting_by = r.select_monitor or r.metric
        if r.select_monitor is not None and r.metric in metrics and r.select_monitor not in metrics:
            reported = ", ".join(sorted(map(str, metrics)))
            raise MissingMonitor(f"select: best_epoch monitor {r.select_monitor!r} is not in the epoch's report "
                                 f"(it reports {reported})")  # fmt: skip
        best_now = False
        value = selection_value(metrics, r.metric, selecting_by)
        if value is not None and (self.best_metric is None
                                  or _better(value, self.best_metric, r.select_mode or r.mode, 0.0)):  # fmt: skip
            self.best_metric, best_now = value, True
        if r.monitor is not None and is_finite_number(metrics.get(r.monitor)):
            current = float(metrics[r.monitor])
            if self.best_monitor is None or _better(current, self.best_monitor, r.monitor_mode, r.min_delta):
                self.best_monitor, self.stale = current, 0
            else:
                self.stale += 1
                if self.stale >= r.patience:
                    return EARLY_STOPPED, best_now
        return None, best_now

    def state(self) -> dict[str, Any]:
        return {"best_monitor": self.best_monitor, "stale": self.stale, "best_metric": self.best_metric}

    def load(self, state: dict[str, Any]) -> None:
        self.best_monitor, self.stale, self.best_metric = state["best_monitor"], state["stale"], state["best_metric"]


def _better(value: float, best: float, mode: str, min_delta: float) -> bool:
    return value > best + min_delta if mode == "max" else value < best - min_delta


def is_finite_number(value: Any) -> bool:
    """A real number (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bad(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)
