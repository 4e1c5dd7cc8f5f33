"""Learning-rate schedulers for ``classify`` (config key ``scheduler``), stepped once per epoch.

Each one gives the learning rate of every epoch exactly as the ``torch.optim.lr_scheduler`` class
of the same kind does when ``scheduler.step()`` is called after each epoch (the tests compare the
sequences); epoch 1 trains at the optimizer's ``lr``. With ``k`` epochs done (``k = epoch - 1``)::

    none               lr                                          (constant)
    step               lr · gamma^⌊k / step_size⌋                  (StepLR)
    multistep          lr · gamma^(milestones ≤ k)                 (MultiStepLR: × gamma after each
                                                                   milestone epoch)
    cosine             min_lr + (lr − min_lr)·(1 + cos(π·k / t_max)) / 2
                                                                   (CosineAnnealingLR; t_max
                                                                   defaults to the trial's epochs)
    reduce_on_plateau  × factor (not below min_lr) once ``monitor`` has not improved for more
                       than ``patience`` epochs              (ReduceLROnPlateau: relative
                                                                   threshold 1e-4, no cooldown)

The closed-form kinds depend on ``k`` alone and ``reduce_on_plateau`` on a few numbers; either way
:meth:`Scheduler.state_dict` is small and goes into the trial's checkpoint, so a retried trial
continues the same sequence. Changing the rate is one assignment to the optimizer's
``hyper["lr"]`` per epoch (``Optimizer.lr``): nothing per step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

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


class Scheduler:
    """The learning rate of each epoch for one trial.

    ``lr``: the optimizer's base rate; ``epochs``: the trial's planned epochs (cosine's default
    ``t_max``). :attr:`lr` is the rate for the next epoch; call :meth:`step` after each epoch
    with that epoch's metrics (``reduce_on_plateau`` reads ``monitor`` from them)."""

    def __init__(self, cfg: Mapping[str, Any], lr: float, epochs: int):
        self.cfg = {**SCHEDULER_DEFAULTS, **cfg}
        self.name = self.cfg["name"]
        self.base_lr = float(lr)
        self.t_max = int(self.cfg["t_max"] if self.cfg["t_max"] is not None else epochs)
        self.epochs_done = 0  # k: scheduler steps taken
        # reduce_on_plateau's state (torch's names)
        self.plateau_lr = self.base_lr
        self.best: float | None = None
        self.num_bad_epochs = 0

    @property
    def lr(self) -> float:
        """The learning rate of epoch ``epochs_done + 1``."""
        k, c = self.epochs_done, self.cfg
        if self.name == "step":
            return self.base_lr * c["gamma"] ** (k // c["step_size"])
        if self.name == "multistep":
            return self.base_lr * c["gamma"] ** sum(1 for m in c["milestones"] if m <= k)
        if self.name == "cosine":
            return c["min_lr"] + (self.base_lr - c["min_lr"]) * (1 + math.cos(math.pi * k / self.t_max)) / 2
        if self.name == "reduce_on_plateau":
            return self.plateau_lr
        return self.base_lr

    def step(self, metrics: Mapping[str, Any] | None = None) -> float:
        """Advance one epoch; returns the next epoch's rate."""
        self.epochs_done += 1
        if self.name == "reduce_on_plateau":
            self._plateau(float((metrics or {})[self.cfg["monitor"]]))
        return self.lr

    def _plateau(self, value: float) -> None:
        # torch.optim.lr_scheduler.ReduceLROnPlateau (threshold_mode "rel", cooldown 0), step by step
        if self.best is None:
            improved = True
        elif monitor_mode(self.cfg["monitor"]) == "min":
            improved = value < self.best * (1 - PLATEAU_THRESHOLD)
        else:
            improved = value > self.best * (1 + PLATEAU_THRESHOLD)
        if improved:
            self.best, self.num_bad_epochs = value, 0
        else:
            self.num_bad_epochs += 1
        if self.num_bad_epochs > self.cfg["patience"]:
            new = max(self.plateau_lr * self.cfg["factor"], self.cfg["min_lr"])
            if self.plateau_lr - new > PLATEAU_EPS:
                self.plateau_lr = new
            self.num_bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "epochs_done": self.epochs_done,
            "plateau_lr": self.plateau_lr,
            "best": self.best,
            "num_bad_epochs": self.num_bad_epochs,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"scheduler state of {state.get('name')!r} cannot load into {self.name!r}")
        self.epochs_done = int(state["epochs_done"])
        self.plateau_lr = float(state["plateau_lr"])
        self.best = None if state["best"] is None else float(state["best"])
        self.num_bad_epochs = int(state["num_bad_epochs"])


def create_scheduler(cfg: Mapping[str, Any], lr: float, epochs: int) -> Scheduler:
    """The scheduler of a ``scheduler`` config for base rate ``lr`` and a trial of ``epochs`` epochs."""
    return Scheduler(cfg, lr, epochs)
