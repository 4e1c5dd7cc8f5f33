"""Learning-rate schedulers for ``classify`` (config key ``scheduler``), stepped once per epoch.

Each name is a ``torch.optim.lr_scheduler`` class, stepped after each epoch, so epoch 1 trains at
the optimizer's ``lr``. With ``k`` epochs done (``k = epoch - 1``)::

    none               lr                                          (ConstantLR, factor 1)
    step               lr · gamma^⌊k / step_size⌋                  (StepLR)
    multistep          lr · gamma^(milestones ≤ k)                 (MultiStepLR: × gamma after each
                                                                   milestone epoch)
    cosine             min_lr + (lr − min_lr)·(1 + cos(π·k / t_max)) / 2
                                                                   (CosineAnnealingLR; t_max
                                                                   defaults to the trial's epochs)
    reduce_on_plateau  × factor (not below min_lr) once ``monitor`` has not improved for more
                       than ``patience`` epochs              (ReduceLROnPlateau: relative
                                                                   threshold 1e-4, no cooldown)

The scheduler's ``state_dict`` goes into the trial's checkpoint (with the optimizer's, which holds
the current rate), so a retried trial continues the same sequence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from expgrid.errors import ConfigError

SCHEDULER_DEFAULTS: dict[str, Any] = {
    "name": "none",  # none | step | multistep | cosine | reduce_on_plateau
    "step_size": 30,  # step: epochs between decays
    "gamma": 0.1,  # step, multistep: factor applied at each decay
    "milestones": [],  # multistep: epochs after which the rate decays
    "t_max": None,  # cosine: epochs of the half cosine period; null: the trial's epochs
    "min_lr": 0.0,  # cosine: the rate at t_max; reduce_on_plateau: the lowest rate
    "factor": 0.1,  # reduce_on_plateau: factor applied at each reduction
    "patience": 10,  # reduce_on_plateau: epochs without improvement tolerated before reducing
    "monitor": "val_loss",  # reduce_on_plateau: the metric watched (…accuracy: higher is better)
}
SCHEDULERS = ("none", "step", "multistep", "cosine", "reduce_on_plateau")
# The metrics reduce_on_plateau may watch (all of them reported every epoch).
MONITORS = (
    "val_loss",
    "val_accuracy",
    "val_top5_accuracy",
    "val_error",
    "val_top5_error",
    "train_loss",
    "train_accuracy",
)
PLATEAU_THRESHOLD = 1e-4  # relative improvement that counts (torch's default, threshold_mode "rel")
PLATEAU_EPS = 1e-8  # a reduction smaller than this is not applied (torch's default)


def monitor_mode(monitor: str) -> str:
    """``"max"`` for accuracies, ``"min"`` for losses and errors."""
    return "max" if "accuracy" in monitor else "min"


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _int(value: Any, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum


def check_scheduler(cfg: Mapping[str, Any]) -> None:
    """Reject a ``scheduler`` config that cannot run (unknown name or option, out-of-range value)."""
    unknown = sorted(set(cfg) - set(SCHEDULER_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"scheduler.{unknown[0]}", f"a scheduler option: one of {', '.join(SCHEDULER_DEFAULTS)}", unknown[0]
        )
    cfg = {**SCHEDULER_DEFAULTS, **cfg}
    if cfg["name"] not in SCHEDULERS:
        raise ConfigError("scheduler.name", f"a scheduler: one of {', '.join(SCHEDULERS)}", cfg["name"])
    rules: dict[str, tuple[str, Any]] = {
        "step_size": ("an integer number of epochs >= 1", lambda v: _int(v, 1)),
        "gamma": ("a factor in (0, 1]", lambda v: _number(v) and 0 < v <= 1),
        "milestones": (
            "a list of epochs (integers >= 1)",
            lambda v: isinstance(v, (list, tuple)) and all(_int(m, 1) for m in v),
        ),
        "t_max": ("null or an integer number of epochs >= 1", lambda v: v is None or _int(v, 1)),
        "min_lr": ("a learning rate >= 0", lambda v: _number(v) and v >= 0),
        "factor": ("a factor in (0, 1)", lambda v: _number(v) and 0 < v < 1),
        "patience": ("an integer number of epochs >= 0", lambda v: _int(v, 0)),
        "monitor": (f"one of {', '.join(MONITORS)}", lambda v: v in MONITORS),
    }
    for key, (expected, ok) in rules.items():
        if not ok(cfg[key]):
            raise ConfigError(f"scheduler.{key}", expected, cfg[key])


def create_scheduler(
    cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The ``torch.optim.lr_scheduler`` of a ``scheduler`` config over ``optimizer`` for a trial of
    ``epochs`` epochs (cosine's default ``t_max``); step it with :func:`step_scheduler`."""
    c = {**SCHEDULER_DEFAULTS, **cfg}
    s = torch.optim.lr_scheduler
    name = c["name"]
    if name == "step":
        return s.StepLR(optimizer, step_size=c["step_size"], gamma=c["gamma"])
    if name == "multistep":
        return s.MultiStepLR(optimizer, milestones=list(c["milestones"]), gamma=c["gamma"])
    if name == "cosine":
        t_max = int(c["t_max"] if c["t_max"] is not None else epochs)
        return s.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=c["min_lr"])
    if name == "reduce_on_plateau":
        return s.ReduceLROnPlateau(
            optimizer,
            mode=monitor_mode(c["monitor"]),
            factor=c["factor"],
            patience=c["patience"],
            threshold=PLATEAU_THRESHOLD,
            threshold_mode="rel",
            cooldown=0,
            min_lr=c["min_lr"],
            eps=PLATEAU_EPS,
        )
    return s.ConstantLR(optimizer, factor=1.0, total_iters=0)  # "none": the optimizer's lr throughout


def step_scheduler(
    scheduler: torch.optim.lr_scheduler.LRScheduler, cfg: Mapping[str, Any], metrics: Mapping[str, Any]
) -> None:
    """Advance one epoch; ``reduce_on_plateau`` reads its ``monitor`` from the epoch's ``metrics``."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(float(metrics[{**SCHEDULER_DEFAULTS, **cfg}["monitor"]]))
    else:
        scheduler.step()
