"""The one module that calls Ray. Ray's reporting, checkpoint and Tuner APIs keep changing
between releases; everything else in expgrid talks to these few functions instead.

Written against Ray 2.60 (Train V2 on by default): inside a Tune function trainable use
``tune.report`` / ``tune.get_checkpoint`` (``ray.train.*`` raises there).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import ray
from ray import tune

import expgrid.reporter as reporter
from expgrid.planning import asha_grace_period
from expgrid.study import Scheduler

# Keys Tune adds to every result; they are not the trainable's metrics.
_TUNE_KEYS = frozenset(
    {
        "training_iteration", "time_total_s", "time_this_iter_s", "time_since_restore", "timestamp",
        "date", "pid", "hostname", "node_ip", "config", "done", "trial_id", "experiment_tag",
        "iterations_since_restore", "timesteps_since_restore", "timesteps_total", "episodes_total",
        "checkpoint_dir_name", "should_checkpoint", "experiment_id",
    }
)  # fmt: skip
_CHECKPOINT_FILE = "expgrid_state.pkl"
ROWS_KEY = "expgrid_rows"  # a result carries every epoch row since the trial's previous result

# Keep Tune quiet: expgrid prints its own progress line. Set before Tune reads them.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter is silent at verbose=0
# No CSV / JSON / TensorBoard file per trial: expgrid keeps its own records and MLflow runs.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# ...and so the result grid Tune builds at the end finds no such files; it need not say so.
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


# ---------------------------------------------------------------------------------------------
# Connecting


def connect(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> dict[str, float]:
    """Start a local Ray (address None) or attach to a running cluster; return its resources.

    A session already connected (a test's ``ray.init``, ``ray submit``) is used as it is."""
    if not ray.is_initialized():
        if address is None:
            # Token auth is on by default in 2.60 and only warns on a private local instance.
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(
            address=address,
            num_cpus=num_cpus if address is None else None,
            num_gpus=num_gpus if address is None else None,
            dashboard_host="127.0.0.1",
            log_to_driver=False,  # trial output goes to Ray's log files, not over the progress line
            logging_level=logging.WARNING,
            configure_logging=True,
        )
    return cluster_resources()


def cluster_resources() -> dict[str, float]:
    res = ray.cluster_resources()
    return {"cpu": float(res.get("CPU", 0.0)), "gpu": float(res.get("GPU", 0.0))}


def node_resources() -> list[dict[str, float]]:
    """CPUs and GPUs of each alive node (for "does one trial fit on some node")."""
    return [
        {"cpu": float(n["Resources"].get("CPU", 0.0)), "gpu": float(n["Resources"].get("GPU", 0.0))}
        for n in ray.nodes()
        if n.get("Alive")
    ]


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


# ---------------------------------------------------------------------------------------------
# Inside a trial


class RaySession(reporter.Session):
    """``expgrid.reporter`` session inside a Tune trial: metrics and checkpoints go to Tune."""

    def _deliver(self, rows: list[dict[str, Any]], state: dict[str, Any] | None) -> None:
        # Tune (and ASHA) see the newest row; the driver unpacks every row from ROWS_KEY.
        metrics = {**rows[-1], ROWS_KEY: rows}
        if state is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="expgrid-ckpt-") as tmp:
            with open(Path(tmp) / _CHECKPOINT_FILE, "wb") as f:
                pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    def _load(self) -> dict[str, Any] | None:
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as d:
            with open(Path(d) / _CHECKPOINT_FILE, "rb") as f:
                return pickle.load(f)


_functions: dict[str, Callable[..., Any]] = {}


def _trial_entry(param: dict[str, Any], shared: dict[Any, Any] | None = None, code_path: str = "") -> None:
    """What each Tune trial runs: import the trainable once per worker process, then call it."""
    plan = param["expgrid"]
    fn = _functions.get(plan["ref"])
    if fn is None:
        if code_path and code_path not in sys.path:
            sys.path.insert(0, code_path)  # a user's module next to the study
        from trainables.registry import import_ref

        fn = _functions[plan["ref"]] = import_ref(plan["ref"])
    session = RaySession(plan["rules"])
    with reporter.active(session):
        try:
            if plan["data"] is not None:
                fn(plan["config"], shared[plan["data"]])
            else:
                fn(plan["config"])
        except reporter.StopTrial:
            pass
        session.flush()


# ---------------------------------------------------------------------------------------------
# Running a section


class TrialEvents(Protocol):
    """What the driver hears about each trial (keyed by the trial's index in the section)."""

    def trial_started(self, index: int) -> None: ...

    def trial_result(self, index: int, metrics: dict[str, Any]) -> None: ...

    def trial_retried(self, index: int, error: str) -> None: ...

    def trial_finished(self, index: int, error: str | None) -> None: ...


@dataclasses.dataclass
class TuneSection:
    name: str  # experiment folder name under storage_path
    storage_path: str  # absolute path or URI
    trials: list[dict[str, Any]]  # one dict per trial: index, config, ref, data, rules (TrialRules)
    resources: dict[str, float]  # per trial: cpu, gpu
    shared: dict[Any, Any] = dataclasses.field(default_factory=dict)  # data key → data
    max_concurrent: int | None = None
    max_failures: int = 1
    code_path: str = ""
    scheduler: Scheduler = dataclasses.field(default_factory=Scheduler)
    max_t: int = 1  # epochs of the longest trial (ASHA's last rung)
    metric: str = ""
    mode: str = "max"
    keep_best_by: str | None = None  # keep the checkpoint with the best value of this metric too


class _EventBridge(tune.Callback):
    def __init__(self, events: TrialEvents):
        self.events = events

    # Tune pickles its run config (callbacks included) into the experiment folder; the events
    # sink holds threads and clients and is the driver's own, so it is left out.
    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.events = None  # type: ignore[assignment]

    @staticmethod
    def _index(trial: Any) -> int:
        return int(trial.config["expgrid"]["index"])

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.events.trial_started(self._index(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        rows = result.get(ROWS_KEY) or [{k: v for k, v in result.items() if k not in _TUNE_KEYS}]
        for row in rows:
            self.events.trial_result(self._index(trial), row)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.events.trial_retried(self._index(trial), _error_text(trial))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.events.trial_finished(self._index(trial), None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.events.trial_finished(self._index(trial), _error_text(trial) or "trial failed")


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _scheduler(section: TuneSection) -> Any:
    if section.scheduler.kind != "asha":
        return None  # FIFO: every trial runs all its epochs
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="epoch",
        metric=section.metric,
        mode=section.mode,
        max_t=section.max_t,
        grace_period=asha_grace_period(section.scheduler, section.max_t),
        reduction_factor=section.scheduler.reduction_factor,
        brackets=section.scheduler.brackets,
    )


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.config['expgrid']['index']:04d}"


def run_section(section: TuneSection, events: TrialEvents) -> float:
    """Run every trial of one section as one Tune experiment; return its wall time (s)."""
    trainable = tune.with_parameters(_trial_entry, shared=section.shared, code_path=section.code_path)
    trainable = tune.with_resources(trainable, dict(section.resources))
    tuner = tune.Tuner(
        trainable,
        param_space={"expgrid": tune.grid_search(section.trials)},
        tune_config=tune.TuneConfig(
            reuse_actors=True,  # 20 no-op trials: 34 s without, 5 s with (DEVELOPERS.md)
            max_concurrent_trials=section.max_concurrent,
            trial_dirname_creator=_trial_dirname,
            scheduler=_scheduler(section),
        ),
        run_config=tune.RunConfig(
            name=section.name,
            storage_path=section.storage_path,
            verbose=0,
            callbacks=[_EventBridge(events)],
            failure_config=tune.FailureConfig(max_failures=section.max_failures),
            # The latest checkpoint is always kept (for retries); with a score, the best one too.
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1,
                checkpoint_score_attribute=section.keep_best_by,
                checkpoint_score_order=section.mode,
            ),
        ),
    )
    start = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - start


def measure_gpu_peak(ref: str, config: dict[str, Any], data: Any) -> tuple[int, int]:
    """Peak CUDA memory of one trial epoch, measured on a GPU of the cluster (a whole-GPU task)."""
    from cluster.packing import dry_run_peak

    task = ray.remote(num_gpus=1, num_cpus=1)(dry_run_peak)
    return ray.get(task.remote(ref, config, data))
