"""The driver's side of a section: one Tune experiment (Tuner, scheduler, callbacks), resume
and set-aside of its folder, and how many trials each Tune trial runs.

Driver only: a trial process never imports this module (it gets ``cluster.trial_side``'s
``_trial_entry`` and ``cluster.train_run``'s launcher by reference, see ``_tune_trainable``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from cluster import patches
from cluster.train_run import TRIAL_CPU_OF_TRAIN_RUN, run_data_parallel, worker_cpu, workers_of
from cluster.trial_side import _CHECKPOINT_FILE, _trial_entry
from expgrid import interrupts, wire
from expgrid.planning import asha_grace_period
from expgrid.stopping import ASHA_STOPPED
from expgrid.study import Scheduler

# Keys Tune adds to every result; they are not the trainable's metrics.

# Keep Tune quiet: expgrid prints its own progress line. Set before Tune reads them.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter is silent at verbose=0
# No CSV / JSON / TensorBoard file per trial: expgrid keeps its own records and MLflow runs.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# Errors of Ray tasks no one waited for are Tune's own (a trial actor stopped mid-task at a
# section's end or a stop); expgrid records every trial's error itself.
os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
# ...and so the result grid Tune builds at the end finds no such files; it need not say so.
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
# A trainable may leave the study metric out of epochs nothing compares (reid evaluates only at
# ASHA's rungs, its last epoch, ...). Tune would refuse such a result for ASHA; ASHA itself skips
# rows without it, and expgrid checks metric names before a run and scores trials by rows that have it.
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")


class _NoReports(tune.ProgressReporter):
    """Tune's progress reports, none: expgrid shows its own progress. Without one given, Tune
    picks its notebook reporter in a Jupyter kernel, whatever ``verbose``, and that one clears
    the cell's output at every section's start (the study's first lines, earlier sections'
    results and warnings) and leaves an empty display behind."""

    def should_report(self, trials: list[Any], done: bool = False) -> bool:
        return False

    def report(self, trials: list[Any], done: bool, *sys_info: str) -> None:
        pass


class TrialEvents(Protocol):
    """What the driver hears about each trial (keyed by the trial's index in the section)."""

    def trial_started(self, index: int, at: float | None = None) -> None: ...

    def trial_rows(self, index: int, rows: list[dict[str, Any]]) -> None:
        """Epoch rows, oldest first: each the trainable's own metrics."""

    def trial_stopped(self, index: int, reason: str) -> None:
        """The trial stopped itself (diverged, early_stopped) or ASHA cut it (asha_stopped)."""

    def trial_artifacts(self, index: int, files: dict[str, Any], epoch: int) -> None: ...

    def trial_retried(self, index: int, error: str) -> None: ...

    def trial_restarted(self, index: int) -> None:
        """Ray Train restarted the trial's workers from its last checkpoint (a retry)."""

    def trial_placed(self, index: int | None, node_id: str) -> None: ...

    def trial_finished(self, index: int, error: str | None, at: float | None = None) -> None: ...

    def results_received(self) -> None:
        """Every row of one Tune result has been handed over: make them durable now, before Tune
        registers the result's checkpoint (a resumed trial continues after that checkpoint)."""


@dataclasses.dataclass
class TuneSection:
    name: str  # experiment folder name under storage_path
    storage_path: str  # absolute path or URI
    trials: list[dict[str, Any]]  # one dict per trial: index, config, ref, data, rules (TrialRules.to_json())
    resources: dict[str, float]  # per trial: cpu, gpu
    shared: dict[str, Any] = dataclasses.field(default_factory=dict)  # data id → object reference (share)
    max_concurrent: int | None = None
    max_failures: int = 1
    code_path: str = ""
    scheduler: Scheduler = dataclasses.field(default_factory=Scheduler)
    max_t: int = 1  # epochs of the longest trial (ASHA's last rung)
    metric: str = ""
    mode: str = "max"
    keep_best_by: str | None = None  # keep the checkpoint with the best value of this metric too
    keep_best_mode: str | None = None  # keep_best_by's direction (a select monitor's may differ); None: mode
    pack: int = 1  # trials per Tune trial (see "Packs" above); 1 for ASHA and best-epoch sections
    resume: bool = False  # restore the experiment at storage_path/name (unfinished and errored trials go on)
    # Trial functions sent to the workers as themselves (ref → function), for those no worker
    # can import by name (a notebook's): see expgrid.trainable_spec.ships_by_value.
    by_value: dict[str, Any] = dataclasses.field(default_factory=dict)

    def tune_trials(self) -> list[dict[str, Any]]:
        interval = min((t["rules"]["report_interval"] for t in self.trials), default=1.0)
        size = max(1, self.pack)
        return [
            {"members": self.trials[i : i + size], "max_failures": self.max_failures, "report_interval": interval}
            for i in range(0, len(self.trials), size)
        ]


class _EventBridge(tune.Callback):
    """Turns Tune's trial callbacks and the messages in trials' results (``expgrid.wire``) into
    TrialEvents; ``cuts``: the section's ASHA scheduler, which says which trials it cut."""

    def __init__(self, events: TrialEvents, cuts: CuttingASHA | None = None):
        self.events = events
        self.cuts = cuts
        self.ended: set[int] = set()  # trials whose end the driver has seen (repeats are dropped)
        self.running: dict[str, int] = {}  # Tune trial id → the packed trial it is running
        self.stop_sent = False

    # Tune pickles its run config (callbacks included) into the experiment folder; the events
    # sink holds threads and clients and is the driver's own, so it is left out. The scheduler
    # is pickled in the same file (tuner.pkl), so a restored bridge gets the restored scheduler.
    def __getstate__(self) -> dict[str, Any]:
        return {"cuts": self.cuts}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Unpickled when Tune restores an experiment: report to the section now being resumed.
        self.events = _restoring_events  # type: ignore[assignment]
        self.cuts = state.get("cuts")
        self.ended, self.running, self.stop_sent = set(), {}, False

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        # A stop asked for before this Tune run listened for its stop signal (a Ctrl-C just as
        # the section started): tell it now.
        if not self.stop_sent and interrupts.stop_requested():
            self.stop_sent = True
            interrupts.ask_tune_to_stop()

    @staticmethod
    def _members(trial: Any) -> list[dict[str, Any]]:
        return trial.config["expgrid"]["members"]

    def _single(self, trial: Any) -> int | None:
        members = self._members(trial)
        return int(members[0]["index"]) if len(members) == 1 else None

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        index = self._single(trial)
        if index is not None:
            self.events.trial_started(index)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        # Taken out of the result in place: Tune keeps (and saves) only the user's metrics.
        messages = wire.decode(result)
        single = self._single(trial)
        node = None
        for message in messages:
            if isinstance(message, wire.Placed):
                node = message.node
                if single is not None:
                    self.events.trial_placed(single, node)
                continue
            index = single if message.trial is None else message.trial
            if index is None or (single is None and index in self.ended):
                continue  # a restarted pack repeating a trial the driver already has
            self._deliver(trial.trial_id, index, message, node)
        if single is not None and self.cuts is not None and self.cuts.take_cut(trial.trial_id):
            self.events.trial_stopped(single, ASHA_STOPPED)
        self.events.results_received()

    def _deliver(self, tune_id: str, index: int, message: wire.Message, node: str | None) -> None:
        if isinstance(message, wire.Rows):
            self.events.trial_rows(index, list(message.rows))
        elif isinstance(message, wire.Artifacts):
            self.events.trial_artifacts(index, dict(message.files), message.epoch)
        elif isinstance(message, wire.Stopped):
            self.events.trial_stopped(index, message.reason)
        elif isinstance(message, wire.Restarted):
            self.events.trial_restarted(index)
        elif isinstance(message, wire.PackEvent) and message.event == "start":
            self.running[tune_id] = index
            self.events.trial_started(index, at=message.time)
            if node is not None:
                self.events.trial_placed(index, node)
        elif isinstance(message, wire.PackEvent) and message.event == "retry":
            self.events.trial_retried(index, message.error or "")
        elif isinstance(message, wire.PackEvent):  # end
            self.running.pop(tune_id, None)
            self.ended.add(index)
            self.events.trial_finished(index, message.error, at=message.time)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        index = self._single(trial)
        if index is None:
            index = self.running.get(trial.trial_id)  # the packed trial that was running
        if index is not None:
            self.events.trial_retried(index, _error_text(trial))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        index = self._single(trial)
        if index is not None:
            self.events.trial_finished(index, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = _error_text(trial) or "trial failed"
        for member in self._members(trial):  # a pack that Tune gave up on ends all its open trials
            index = int(member["index"])
            if index not in self.ended:
                self.ended.add(index)
                self.events.trial_finished(index, error)


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


class CuttingASHA(ASHAScheduler):
    """Tune's ASHA, remembering the trials it cut: those it told to STOP before their last
    planned epoch (ASHA also says STOP to a trial that reached ``max_t``; that is no cut). The
    driver's event bridge asks right after Tune has handed the scheduler's decision on (Tune
    calls the scheduler first, then the callbacks, for each result)."""

    def __init__(self, *, max_t: int, **kwargs: Any):
        super().__init__(max_t=max_t, **kwargs)
        self.max_epochs = max_t
        self.cut: set[str] = set()  # Tune trial ids

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        epoch = result.get("epoch")
        if decision == TrialScheduler.STOP and isinstance(epoch, (int, float)) and epoch < self._planned(trial):
            self.cut.add(trial.trial_id)
        return decision

    def _planned(self, trial: Any) -> int:
        epochs = trial.config["expgrid"]["members"][0]["config"].get("epochs")
        return int(epochs) if isinstance(epochs, int) else self.max_epochs

    def take_cut(self, trial_id: str) -> bool:
        """Whether the trial was cut (and, once asked, forget it)."""
        if trial_id not in self.cut:
            return False
        self.cut.discard(trial_id)
        return True


def _scheduler(section: TuneSection) -> Any:
    if section.scheduler.kind != "asha":
        return None  # FIFO: every trial runs all its epochs
    return CuttingASHA(
        time_attr="epoch",
        metric=section.metric,
        mode=section.mode,
        max_t=section.max_t,
        grace_period=asha_grace_period(section.scheduler, section.max_t),
        reduction_factor=section.scheduler.reduction_factor,
        brackets=section.scheduler.brackets,
    )


def _trial_dirname(trial: Any) -> str:
    members = trial.config["expgrid"]["members"]
    first, last = members[0]["index"], members[-1]["index"]
    return f"trial_{first:04d}" if len(members) == 1 else f"pack_{first:04d}-{last:04d}"


_restoring_events: TrialEvents | None = None


def _experiment_path(storage_path: str, name: str) -> str:
    # Not Path(): a storage URI (s3://bucket/x, gs://…) must keep its double slash.
    return f"{storage_path.rstrip('/')}/{name}"


def set_aside(storage_path: str, name: str) -> str:
    """Move an experiment's folder out of the way of a new one under the same name (local
    storage; on an object store the new experiment is written over it). Returns where it went."""
    path = _experiment_path(storage_path, name)
    if "://" in storage_path or not os.path.isdir(path):
        return path
    aside = f"{path}.unrestorable-{time.strftime('%Y%m%d-%H%M%S')}"
    os.replace(path, aside)
    return aside


# What Tune says when a restored trial's checkpoint was deleted: the driver died between Tune
# registering a newer checkpoint (which deletes the one before, num_to_keep=1) and saving its
# experiment state, which still names the old one (Ray 2.60's wording).
LOST_CHECKPOINT = "Could not recover from checkpoint as it does not exist on storage anymore"


def newest_checkpoint(storage_path: str, name: str, index: int) -> str | None:
    """The newest checkpoint left on local storage of a trial run as its own Tune trial (not
    packed), or None."""
    folder = Path(_experiment_path(storage_path, name)) / f"trial_{index:04d}"
    if "://" in storage_path or not folder.is_dir():
        return None
    found = sorted(p for p in folder.glob("checkpoint_*") if (p / _CHECKPOINT_FILE).is_file())
    return str(found[-1]) if found else None


def _tune_trainable(section: TuneSection) -> Any:
    """The function Tune runs per trial, with its resource request.

    Tune wraps it in a class (ImplicitFunc) that Ray pickles, by value, with everything its
    functions' closures hold. The resources callable ends up there (as the class's
    ``default_resource_request``), so it closes over two numbers, never the section: the
    section holds every trial config, and it used to hold the data itself — that is how a
    150 MiB dataset made "The actor ImplicitFunc is too large". The trial function closes over
    the object references only (``share``) and, for a notebook's trainable, the trial function
    itself (``by_value``); ``tune.with_parameters`` is not used since each
    call leaves its parameter registry in Ray's post-init hooks for the life of the driver."""
    cpu, gpu = float(section.resources["cpu"]), float(section.resources.get("gpu", 0.0))
    shared, code_path = dict(section.shared), section.code_path
    by_value = dict(section.by_value) or None  # pickled with the class by cloudpickle, by value

    def resources(param: dict[str, Any]) -> Any:
        members = param["expgrid"]["members"]
        if "train" in members[0]:  # its Train workers reserve the section's resources each
            return tune.PlacementGroupFactory([{"CPU": TRIAL_CPU_OF_TRAIN_RUN}])
        return tune.PlacementGroupFactory([{"CPU": cpu, "GPU": gpu}])

    def expgrid_trial(param: dict[str, Any]) -> None:
        _trial_entry(param, shared, code_path, run_data_parallel, by_value)

    # Tune keeps the trainable's name with an experiment and restores (--resume) only one of the
    # same name: the name the trial function had under tune.with_parameters.
    expgrid_trial.__name__ = "_trial_entry"
    return tune.with_resources(expgrid_trial, resources)


def can_resume(storage_path: str, name: str) -> bool:
    """Whether an interrupted section's Tune experiment can be continued."""
    return tune.Tuner.can_restore(_experiment_path(storage_path, name))


def run_section(section: TuneSection, events: TrialEvents) -> float:
    """Run every trial of one section as one Tune experiment; return its wall time (s)."""
    patches.apply()  # once per driver; a no-op after connect() has applied them
    for trial in section.trials:
        if workers_of(trial["config"]) > 1:
            trial["train"] = {
                "cpu": worker_cpu(section.resources["cpu"], workers_of(trial["config"])),
                "gpu": float(trial["config"].get("gpu_per_worker") or section.resources.get("gpu", 0.0)),
                "name": f"{section.name}-trial_{trial['index']:04d}",
                "storage_path": section.storage_path,
                "max_failures": section.max_failures,
                "keep_best_by": section.keep_best_by,
                "mode": section.keep_best_mode or section.mode,
            }
    data_parallel = any("train" in t for t in section.trials)
    trainable = _tune_trainable(section)
    if section.resume:
        # Tune restores the run config it saved, callbacks included; the event bridge in it
        # attaches itself to this section's events as it is unpickled.
        global _restoring_events
        _restoring_events = events
        try:
            start = time.perf_counter()
            tuner = tune.Tuner.restore(_experiment_path(section.storage_path, section.name), trainable,
                                       resume_unfinished=True, resume_errored=True)  # fmt: skip
            tuner.fit()
            return time.perf_counter() - start
        finally:
            _restoring_events = None
    scheduler = _scheduler(section)
    tuner = tune.Tuner(
        trainable,
        param_space={"expgrid": tune.grid_search(section.tune_trials())},
        tune_config=tune.TuneConfig(
            # 20 no-op trials: 34 s without, 5 s with. Not for Train runs: a new actor per trial
            # means a trial cut by ASHA takes its Train run (and the workers' reservations) with it.
            reuse_actors=not data_parallel,
            max_concurrent_trials=section.max_concurrent,
            trial_dirname_creator=_trial_dirname,
            scheduler=scheduler,
        ),
        run_config=tune.RunConfig(
            name=section.name,
            storage_path=section.storage_path,
            verbose=0,
            progress_reporter=_NoReports(),
            callbacks=[_EventBridge(events, scheduler)],
            failure_config=tune.FailureConfig(max_failures=section.max_failures),
            # The latest checkpoint is always kept (for retries); with a score, the best one too.
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1,
                checkpoint_score_attribute=section.keep_best_by,
                checkpoint_score_order=section.keep_best_mode or section.mode,
            ),
        ),
    )
    start = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - start



# ---------------------------------------------------------------------------------------------
# Packs: how many trials each Tune trial runs (see cluster/trial_side.py, "Packs")

# Packs per concurrent slot: enough packs that slots finishing early take the remaining ones
# (trials of a grid can differ a lot in length), few enough that Tune's ~0.2 s per scheduled
# trial is paid rarely.
PACKS_PER_SLOT = 4


def trials_per_pack(n_trials: int, slots: int, packable: bool) -> int:
    """How many trials each Tune trial runs in turn (see cluster/trial_side.py, "Packs").

    1 when the section is not packable (ASHA needs each trial scheduled on its own; a best-epoch
    section keeps each trial's best checkpoint), or too small for packing to matter."""
    if not packable:
        return 1
    return max(1, n_trials // (slots * PACKS_PER_SLOT))
