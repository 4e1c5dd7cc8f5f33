"""Optimizers and the learning-rate schedule for ``reid``, by name (``torch.optim``, as torchreid).

    amsgrad   Adam keeping the running maximum of the second moment (the coursework's default)
    adam      Adam, betas 0.9 / 0.999
    sgd       SGD with heavy-ball momentum (``momentum``, 0.9), no dampening, no Nesterov
    rmsprop   RMSprop, alpha 0.99, with ``momentum`` (torchreid passes it too)

``weight_decay`` is L2 added to the gradient for all four (torchreid's choice; not AdamW). Unlike
``classify``, whose steps are too small for ``torch.optim``'s per-call overhead to be ignored,
a re-ID step is a CNN forward and backward over 64 images, and the overhead does not matter.

Schedule: multi-step, the learning rate multiplied by ``gamma`` at each epoch in ``milestones``
(stepped once per epoch, after the epoch's training).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from expgrid.errors import ConfigError
from expgrid.registry import Registry

OPTIMIZER_DEFAULTS: dict[str, Any] = {
    "name": "amsgrad",
    "lr": 3e-4,  # learning rate
    "weight_decay": 5e-4,  # L2 coefficient, added to the gradient
    "momentum": 0.9,  # sgd and rmsprop only
}
SCHEDULE_DEFAULTS: dict[str, Any] = {
    "milestones": [20, 40],  # epochs (1-based) after which the learning rate is multiplied by gamma
    "gamma": 0.1,
}

Params = Iterable[torch.nn.Parameter]
OPTIMIZERS: Registry[Callable[[Params, Mapping[str, Any]], torch.optim.Optimizer]] = Registry("optimizer")
OPTIMIZERS.register(
    "amsgrad", lambda p, c: torch.optim.Adam(p, lr=c["lr"], weight_decay=c["weight_decay"], amsgrad=True)
)
OPTIMIZERS.register("adam", lambda p, c: torch.optim.Adam(p, lr=c["lr"], weight_decay=c["weight_decay"]))
OPTIMIZERS.register(
    "sgd", lambda p, c: torch.optim.SGD(p, lr=c["lr"], momentum=c["momentum"], weight_decay=c["weight_decay"])
)
OPTIMIZERS.register(
    "rmsprop",
    lambda p, c: torch.optim.RMSprop(p, lr=c["lr"], alpha=0.99, momentum=c["momentum"], weight_decay=c["weight_decay"]),
)


def _number(
    cfg: Mapping[str, Any], key: str, field: str, low: float, high: float | None = None, low_open: bool = False
) -> None:
    value = cfg[key]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value > low if low_open else value >= low) and (high is None or value < high)
    if not ok:
        bound = f"> {low}" if low_open else f">= {low}"
        raise ConfigError(f"{field}.{key}", f"a number {bound}" + (f" and < {high}" if high is not None else ""), value)


def check_optimizer(cfg: Mapping[str, Any]) -> None:
    cfg = {**OPTIMIZER_DEFAULTS, **cfg}
    OPTIMIZERS.get(cfg["name"], "optimizer.name")
    _number(cfg, "lr", "optimizer", 0, low_open=True)
    _number(cfg, "weight_decay", "optimizer", 0)
    _number(cfg, "momentum", "optimizer", 0, 1)


def check_schedule(cfg: Mapping[str, Any]) -> None:
    cfg = {**SCHEDULE_DEFAULTS, **cfg}
    milestones = cfg["milestones"]
    if not isinstance(milestones, (list, tuple)) or any(
        isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in milestones
    ):
        raise ConfigError("lr_schedule.milestones", "a list of epochs (integers >= 1)", milestones)
    _number(cfg, "gamma", "lr_schedule", 0, low_open=True)


def create_optimizer(cfg: Mapping[str, Any], params: Params) -> torch.optim.Optimizer:
    cfg = {**OPTIMIZER_DEFAULTS, **cfg}
    return OPTIMIZERS.get(cfg["name"], "optimizer.name")(params, cfg)


def create_schedule(cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.MultiStepLR:
    cfg = {**SCHEDULE_DEFAULTS, **cfg}
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=sorted(cfg["milestones"]), gamma=cfg["gamma"])
