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

from collections.abc import Mapping
from typing import Any

import torch

from trainables.classification.checks import check_scheduler  # noqa: F401 - re-exported
from trainables.classification.options import MONITORS, SCHEDULER_DEFAULTS, SCHEDULERS  # noqa: F401

PLATEAU_THRESHOLD = 1e-4  # relative improvement that counts (torch's default, threshold_mode "rel")
PLATEAU_EPS = 1e-8  # a reduction smaller than this is not applied (torch's default)


def monitor_mode(monitor: str) -> str:
    """``"max"`` for accuracies, ``"min"`` for losses and errors."""
    return "max" if "accuracy" in monitor else "min"


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
