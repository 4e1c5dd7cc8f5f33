"""Data-parallel trials: a Ray Train run inside a Tune trial.

Train V2 (the default in 2.60) cannot be a Tune trainable itself. The supported pattern: the
Tune trial (a token CPU share) builds and fits a TorchTrainer whose workers hold the real
resources; TuneReportCallback forwards rank 0's reports to the Tune trial, so ASHA and the
driver see them as any trial's. Train's report is collective: every rank reports every epoch.

Trial side, like ``cluster.trial_side``: the Tune trial and the Train workers import it.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import expgrid.reporter as reporter
from cluster.trial_side import _CHECKPOINT_FILE, _save_checkpoint, fetch
from expgrid import wire


def workers_of(config: dict[str, Any]) -> int:
    """Processes a trial asks for: its config's ``workers`` (1 when absent)."""
    workers = config.get("workers")
    return int(workers) if isinstance(workers, int) and workers > 1 else 1


TRIAL_CPU_OF_TRAIN_RUN = 0.01  # what the Tune trial driving a Train run reserves itself


def worker_cpu(cpu: float, workers: int) -> float:
    """A worker's CPU share: the section's, less its part of the Tune trial's token share, so a
    trial of N workers at 1 CPU fits on N CPUs. Rounded down to Ray's 1/10000 resource unit."""
    return math.floor((cpu - TRIAL_CPU_OF_TRAIN_RUN / workers) * 10_000) / 10_000


class TrainSession(reporter.Session):
    """``expgrid.reporter`` session on one Ray Train worker."""

    def __init__(self, rules: Any):
        # No time-based batching: Train's report is collective, so every rank must report at the
        # same epochs, and a rank's clock must not decide that.
        super().__init__(dataclasses.replace(rules, report_interval=0.0))
        import ray.train

        self.rank = ray.train.get_context().get_world_rank()
        self.restarted = False  # Train restarted the workers (a failure): the driver counts a retry

    def _deliver(self, messages: list[wire.Message], state: dict[str, Any] | None) -> None:
        import ray.train

        if self.restarted:
            messages = [wire.Restarted(), *messages]
            self.restarted = False
        metrics = wire.encode(messages)
        if state is None or self.rank != 0:  # rank 0's model is every rank's (DDP keeps them equal)
            ray.train.report(metrics)
            return
        tmp = _save_checkpoint(state)
        try:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _load(self) -> dict[str, Any] | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        self.restarted = True
        with checkpoint.as_directory() as d:
            with open(Path(d) / _CHECKPOINT_FILE, "rb") as f:
                return pickle.load(f)


def run_data_parallel(fn: Callable[..., Any], config: dict[str, Any], data: Any, workers: int, rules: Any,
                      train: dict[str, Any], data_ref: Any = None) -> None:  # fmt: skip
    """Fit a TorchTrainer of ``workers`` processes running ``fn`` (see expgrid.data_parallel);
    ``train`` holds what the driver planned: per-worker CPU / GPU, run name and storage.

    ``data_ref``: the object reference ``data`` was fetched from (the section's shared data),
    handed on to the workers as it is; data the trainable made itself is put in the store here."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    gpu = float(train["gpu"])
    per_worker = {"CPU": float(train["cpu"]), **({"GPU": gpu} if gpu > 0 else {})}
    if data_ref is None and data is not None:
        data_ref = ray.put(data)

    def loop(_: dict[str, Any]) -> None:
        session = TrainSession(rules)
        with reporter.active(session):
            try:
                fn(config, fetch(data_ref)) if data_ref is not None else fn(config)
            except reporter.StopTrial:
                pass
            session.flush()

    trainer = TorchTrainer(
        loop,
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=gpu > 0, resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=train["name"],
            storage_path=train["storage_path"],
            callbacks=[TuneReportCallback()],
            # A worker (or its node) lost: Train restarts the workers from the latest checkpoint.
            failure_config=ray.train.FailureConfig(max_failures=train["max_failures"]),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=1,
                checkpoint_score_attribute=train["keep_best_by"],
                checkpoint_score_order=train["mode"],
            ),
        ),
    )
    trainer.fit()

