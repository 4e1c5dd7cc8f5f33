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

from expgrid.registry import Registry
from trainables.reid.checks import check_optimizer, check_schedule  # noqa: F401 - re-exported
from trainables.reid.options import OPTIMIZER_DEFAULTS, SCHEDULE_DEFAULTS

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


def create_optimizer(cfg: Mapping[str, Any], params: Params) -> torch.optim.Optimizer:
    cfg = {**OPTIMIZER_DEFAULTS, **cfg}
    return OPTIMIZERS.get(cfg["name"], "optimizer.name")(params, cfg)


def create_schedule(cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.MultiStepLR:
    cfg = {**SCHEDULE_DEFAULTS, **cfg}
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=sorted(cfg["milestones"]), gamma=cfg["gamma"])
