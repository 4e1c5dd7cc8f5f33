"""``toy``: a synthetic objective with the shape of a training run, for tests and benchmarks.

No data and no torch (except with ``workers`` > 1): ``score`` rises with the epoch towards ``1 - ((x-2)² + (y+1)²) / 10``, so the
best ``x`` is 2 and the best ``y`` is -1. Switches make it misbehave on purpose: raise once at an
epoch (to test retries from a checkpoint), report NaN (divergence), or sleep (to see packing).
"""

from __future__ import annotations

import math
import time

import expgrid.reporter as reporter
from expgrid.config import finite_number
from expgrid.errors import ConfigError
from expgrid.trainable_spec import TrainableSpec

TOY_DEFAULTS = {
    "x": 0.0,
    "y": 0.0,
    "epochs": 5,
    "sleep": 0.0,  # seconds per epoch
    "fail_at_epoch": None,  # raise once at this epoch, unless resumed from a checkpoint
    "nan_at_epoch": None,  # report a NaN loss from this epoch on
    "rise_after": None,  # from this epoch on the loss rises (for patience stopping)
    "workers": 1,  # > 1: run as a data-parallel trial of this many processes (torch.distributed)
    "artifacts": False,  # leave files: summary.json (x, y, epoch) and curve.csv (score per epoch)
}
TOY_METRICS = ("epoch", "score", "loss", "world_size")


def toy_score(x: float, y: float, epoch: int) -> float:
    return (1.0 - ((x - 2.0) ** 2 + (y + 1.0) ** 2) / 10.0) * (1.0 - 0.5**epoch)


def check_toy(config: dict) -> None:
    """What the trial would otherwise fail on at its first epoch (``epochs`` and ``workers`` are
    expgrid's own checks)."""
    cfg = {**TOY_DEFAULTS, **config}
    for key in ("x", "y"):
        if not finite_number(cfg[key]):
            raise ConfigError(key, "a number", cfg[key])
    if not finite_number(cfg["sleep"]) or cfg["sleep"] < 0:
        raise ConfigError("sleep", "a number of seconds ≥ 0", cfg["sleep"])
    for key, minimum in (("fail_at_epoch", 1), ("nan_at_epoch", 1), ("rise_after", 0)):
        value = cfg[key]
        if value is not None and not (isinstance(value, int) and finite_number(value) and value >= minimum):
            raise ConfigError(key, f"null or an epoch ≥ {minimum}", value)
    if not isinstance(cfg["artifacts"], bool):
        raise ConfigError("artifacts", "true or false", cfg["artifacts"])


def toy(config: dict) -> None:
    reporter.data_parallel(_toy, config)  # on `workers` processes when > 1


def _world_size() -> int:
    """Processes in this trial, counted by an all-reduce when torch.distributed is running (so a
    data-parallel test sees that the ranks really talk to each other)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1
    ones = torch.ones(1)
    dist.all_reduce(ones)
    return int(ones.item())


def _toy(config: dict) -> None:
    world = _world_size() if int(config.get("workers") or 1) > 1 else 1
    state = reporter.restore()
    start = state["epoch"] + 1 if state else 1
    scores: list[float] = []
    for epoch in range(start, int(config["epochs"]) + 1):
        if config["sleep"]:
            time.sleep(float(config["sleep"]))
        if config["fail_at_epoch"] == epoch and state is None:
            raise RuntimeError(f"toy trial failing on purpose at epoch {epoch}")
        score = toy_score(float(config["x"]), float(config["y"]), epoch)
        loss = -score
        if config["rise_after"] is not None and epoch > config["rise_after"]:
            loss = -toy_score(float(config["x"]), float(config["y"]), config["rise_after"]) + 0.1 * (
                epoch - config["rise_after"]
            )
        if config["nan_at_epoch"] is not None and epoch >= config["nan_at_epoch"]:
            loss = math.nan
        scores.append(score)
        files = None
        if config.get("artifacts"):
            files = lambda epoch=epoch: _files(config, epoch, start, scores)  # noqa: E731 - called only when due
        reporter.report(
            {"epoch": epoch, "score": score, "loss": loss, "resumed_from": start - 1, "world_size": world},
            checkpoint=lambda epoch=epoch: {"epoch": epoch},
            artifacts=files,
        )


def _files(config: dict, epoch: int, start: int, scores: list[float]) -> dict:
    curve = "epoch,score\n" + "".join(f"{start + i},{s}\n" for i, s in enumerate(scores))
    return {"summary.json": {"x": config["x"], "y": config["y"], "epoch": epoch}, "curves/score.csv": curve}


# The entry point `expgrid.trainables: toy`. Toy keeps the coursework's section log so that the
# tests of log files (written as trials end, again on a resume, synced to MLflow) run on it.
SPEC = TrainableSpec(
    name="toy",
    fn=toy,
    defaults=TOY_DEFAULTS,
    metrics=TOY_METRICS,
    check=check_toy,
    section_log="trainables.reid.section_log:SectionLog",
)
