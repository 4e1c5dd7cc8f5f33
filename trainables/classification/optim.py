"""Optimizers for ``classify``, by name, and the flat parameter buffer that makes them cheap.

Names: ``sgd`` (heavy-ball momentum), ``adam``, ``adamw`` (decoupled weight decay, Loshchilov &
Hutter), ``amsgrad`` (Adam keeping the running maximum of the second moment, Reddi et al.) and
``rmsprop``. Each does exactly what ``torch.optim``'s class of that name does with PyTorch's
defaults (betas 0.9 / 0.999, eps 1e-8, RMSprop alpha 0.99, no dampening); the tests check them
step for step against ``torch.optim``. ``momentum`` and ``nesterov`` are used by ``sgd`` only (momentum
0 is plain SGD; Nesterov needs momentum > 0), the others ignore them, so a grid over optimizers can
share one config. ``weight_decay`` is L2 added to the gradient, except for ``adamw`` where it
shrinks the weights directly.

The learning rate is read from ``optimizer.hyper["lr"]`` (a Python float) at every step, so a
scheduler changes it by assigning there (:attr:`Optimizer.lr`): no per-step cost.

Why not ``torch.optim`` itself: at the benchmark's size (an MLP of ~110k parameters, batch 32, one
CPU thread) a step is dominated by per-call overhead, not arithmetic, and

* ``torch.optim.Optimizer.step`` spends ~80 µs per call in Python (profiler ranges, hook
  dispatch, gathering state lists, grouping by device) around a ~70 µs fused Adam kernel;
* creating any ``torch.optim`` optimizer imports ``torch._dynamo`` (~1.5 s per fresh process,
  i.e. per Ray trial), 25 % of a whole 150-epoch benchmark trial.

Here a step is the arithmetic only: one fused kernel call for the Adam family (PyTorch's own
``_fused_adam_`` / ``_fused_adamw_`` where the device has them), a few in-place ops for SGD and
RMSprop. Together with :func:`flat_parameters` (all parameters and gradients in one contiguous
tensor, so a step touches one tensor and zeroing the gradients is one ``zero_()``) the optimizer
costs ~80 µs per step instead of ~250 µs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from expgrid.errors import ConfigError
from expgrid.registry import Registry

OPTIMIZER_DEFAULTS: dict[str, Any] = {
    "name": "adam",
    "lr": 1e-3,  # learning rate (step size)
    "weight_decay": 0.0,  # L2 coefficient (decoupled for adamw)
    "momentum": 0.9,  # sgd only; 0: plain SGD
    "nesterov": False,  # sgd only: Nesterov momentum (needs momentum > 0)
}

# Devices with PyTorch fused Adam / AdamW kernels (for floating-point tensors).
FUSED_DEVICES = ("cpu", "cuda", "mps")


class Optimizer:
    """An optimizer over a few tensors (usually one flat tensor, see :func:`flat_parameters`).

    Subclasses name their per-parameter buffers in ``buffers`` (zero-initialised, shaped like the
    parameter) and implement ``_update``. ``state_dict`` / ``load_state_dict`` round-trip the
    step count, hyperparameters and buffers, for checkpoints.
    """

    buffers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Iterable[torch.Tensor], **hyper: Any):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__} got no parameters")
        self.hyper = hyper
        # Detached aliases (same storage) to update in place: no torch.no_grad() context needed.
        self.data = [p.detach() for p in self.params]
        # Steps taken (Adam's bias correction), float32 on the parameter's device as the fused
        # kernels read it; one per parameter, since a parameter without a grad is not stepped.
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]
        self.state = {name: [torch.zeros_like(p) for p in self.data] for name in self.buffers}

    @property
    def lr(self) -> float:
        """The learning rate the next step uses (schedulers set it; cheap: a dict entry)."""
        return self.hyper["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self.hyper["lr"] = float(value)

    def step(self) -> None:
        """One update of every parameter from its ``.grad`` (parameters without a grad are skipped)."""
        self._update()

    def _update(self) -> None:
        raise NotImplementedError

    def zero_grad(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        """Live references (as ``torch.optim`` does): copy before keeping past the next step."""
        return {"type": type(self).__name__, "hyper": dict(self.hyper), "steps": self.steps, "state": self.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Copy a :meth:`state_dict` into this optimizer's tensors (same type and shapes required)."""
        if state.get("type") != type(self).__name__:
            raise ValueError(f"optimizer state of {state.get('type')!r} cannot load into {type(self).__name__}")
        self.hyper = dict(state["hyper"])
        for mine, saved in zip(self.steps, state["steps"], strict=True):
            mine.copy_(saved)
        for name in self.buffers:
            for mine, saved in zip(self.state[name], state["state"][name], strict=True):
                mine.copy_(saved)

    def _with_grads(self) -> list[int]:
        return [i for i, p in enumerate(self.params) if p.grad is not None]


class SGD(Optimizer):
    """``torch.optim.SGD(lr, momentum, weight_decay, nesterov)``: g ← g + λ·w; v ← μ·v + g; then
    w ← w − lr·v, or with Nesterov w ← w − lr·(g + μ·v). Momentum 0: w ← w − lr·g.

    The velocity starts at zero, which gives exactly PyTorch's first step (v = g)."""

    buffers = ("momentum_buffer",)

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ):
        if nesterov and not momentum:
            raise ValueError("Nesterov momentum needs momentum > 0")
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=bool(nesterov))
        if not momentum:  # plain SGD keeps no velocity: free its memory
            self.state["momentum_buffer"] = []

    def _update(self) -> None:
        h = self.hyper
        lr, mu, wd, nesterov = h["lr"], h["momentum"], h["weight_decay"], h.get("nesterov", False)
        for i in self._with_grads():
            p, g = self.data[i], self.params[i].grad
            if wd:
                g = g.add(p, alpha=wd)
            if mu:
                v = self.state["momentum_buffer"][i].mul_(mu).add_(g)
                g = g.add(v, alpha=mu) if nesterov else v
            p.add_(g, alpha=-lr)


class Adam(Optimizer):
    """``torch.optim.Adam`` (betas, eps as PyTorch), with ``amsgrad`` and ``decoupled`` (AdamW)
    variants; one fused PyTorch kernel per step where the device has it."""

    buffers = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        amsgrad: bool = False,
        decoupled: bool = False,
        fused: bool | None = None,
    ):
        super().__init__(
            params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps, amsgrad=amsgrad, decoupled=decoupled
        )
        if not amsgrad:  # no running maximum to keep: free its memory
            self.state["max_exp_avg_sq"] = []
        if fused is None:
            fused = all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in self.params)
        self.fused = fused

    def _update(self) -> None:
        h = self.hyper
        idx = self._with_grads()
        params = [self.data[i] for i in idx]
        grads = [self.params[i].grad for i in idx]
        steps = [self.steps[i] for i in idx]
        exp_avgs = [self.state["exp_avg"][i] for i in idx]
        exp_avg_sqs = [self.state["exp_avg_sq"][i] for i in idx]
        max_sqs = [self.state["max_exp_avg_sq"][i] for i in idx] if h["amsgrad"] else []
        for s in steps:
            s += 1
        if self.fused:
            kernel = torch._fused_adamw_ if h["decoupled"] else torch._fused_adam_
            kernel(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                max_sqs,
                steps,
                lr=h["lr"],
                beta1=h["betas"][0],
                beta2=h["betas"][1],
                weight_decay=h["weight_decay"],
                eps=h["eps"],
                amsgrad=h["amsgrad"],
                maximize=False,
            )
            return
        for j, p in enumerate(params):  # PyTorch's single-tensor Adam, op for op
            self._reference(p, grads[j], steps[j], exp_avgs[j], exp_avg_sqs[j], max_sqs[j] if max_sqs else None)

    def _reference(
        self,
        p: torch.Tensor,
        g: torch.Tensor,
        step_t: torch.Tensor,
        m: torch.Tensor,
        v: torch.Tensor,
        vmax: torch.Tensor | None,
    ) -> None:
        h = self.hyper
        lr, wd, (beta1, beta2), eps = h["lr"], h["weight_decay"], h["betas"], h["eps"]
        if wd:
            if h["decoupled"]:
                p.mul_(1 - lr * wd)
            else:
                g = g.add(p, alpha=wd)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        step = step_t.item()
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        if vmax is not None:
            torch.maximum(vmax, v, out=vmax)
            v = vmax
        denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)
        p.addcdiv_(m, denom, value=-step_size)


class RMSprop(Optimizer):
    """``torch.optim.RMSprop(lr, weight_decay)`` with alpha 0.99, eps 1e-8, no momentum, not centred:
    s ← α·s + (1−α)·g²; w ← w − lr·g / (√s + eps)."""

    buffers = ("square_avg",)

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        weight_decay: float = 0.0,
        alpha: float = 0.99,
        eps: float = 1e-8,
    ):
        super().__init__(params, lr=lr, weight_decay=weight_decay, alpha=alpha, eps=eps)

    def _update(self) -> None:
        lr, wd, alpha, eps = (self.hyper[k] for k in ("lr", "weight_decay", "alpha", "eps"))
        for i in self._with_grads():
            p, g = self.data[i], self.params[i].grad
            if wd:
                g = g.add(p, alpha=wd)
            s = self.state["square_avg"][i].mul_(alpha).addcmul_(g, g, value=1 - alpha)
            p.addcdiv_(g, s.sqrt().add_(eps), value=-lr)


Params = Iterable[torch.Tensor]
OPTIMIZERS: Registry[Callable[[list[torch.Tensor], Mapping[str, Any]], Optimizer]] = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def sgd(params: list[torch.Tensor], cfg: Mapping[str, Any]) -> Optimizer:
    return SGD(
        params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"], nesterov=cfg["nesterov"]
    )


@OPTIMIZERS.register("adam")
def adam(params: list[torch.Tensor], cfg: Mapping[str, Any]) -> Optimizer:
    return Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


@OPTIMIZERS.register("adamw")
def adamw(params: list[torch.Tensor], cfg: Mapping[str, Any]) -> Optimizer:
    return Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], decoupled=True)


@OPTIMIZERS.register("amsgrad")
def amsgrad(params: list[torch.Tensor], cfg: Mapping[str, Any]) -> Optimizer:
    return Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], amsgrad=True)


@OPTIMIZERS.register("rmsprop")
def rmsprop(params: list[torch.Tensor], cfg: Mapping[str, Any]) -> Optimizer:
    return RMSprop(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def check_optimizer(opt_cfg: Mapping[str, Any]) -> None:
    """Reject an ``optimizer`` config that cannot run (unknown name, out-of-range values)."""
    cfg = {**OPTIMIZER_DEFAULTS, **opt_cfg}
    OPTIMIZERS.get(cfg["name"], "optimizer.name")
    rules = {
        "lr": ("a learning rate > 0", lambda v: v > 0),
        "weight_decay": ("a weight decay >= 0", lambda v: v >= 0),
        "momentum": ("a momentum in [0, 1)", lambda v: 0 <= v < 1),
    }
    for key, (expected, ok) in rules.items():
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
            raise ConfigError(f"optimizer.{key}", expected, value)
    if not isinstance(cfg["nesterov"], bool):
        raise ConfigError("optimizer.nesterov", "true or false", cfg["nesterov"])
    if cfg["name"] == "sgd" and cfg["nesterov"] and cfg["momentum"] == 0:
        raise ConfigError(
            "optimizer.nesterov", "false when optimizer.momentum is 0 (Nesterov needs momentum > 0)", True
        )
    unknown = sorted(set(cfg) - set(OPTIMIZER_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"optimizer.{unknown[0]}", f"an optimizer option: one of {', '.join(OPTIMIZER_DEFAULTS)}", unknown[0]
        )


def create_optimizer(opt_cfg: Mapping[str, Any], params: Params) -> Optimizer:
    """Build the optimizer named by ``opt_cfg["name"]`` over ``params`` (missing keys take the defaults)."""
    cfg = {**OPTIMIZER_DEFAULTS, **opt_cfg}
    return OPTIMIZERS.get(cfg["name"], "optimizer.name")(list(params), cfg)


def flat_parameters(model: nn.Module, params: Iterable[torch.Tensor] | None = None) -> nn.Parameter:
    """Re-home trainable parameters of ``model`` into one contiguous Parameter and return it.

    ``params``: the parameters to re-home (e.g. ``modes.trainable_parameters(model)``: only the
    head for a linear probe); default, every parameter with ``requires_grad``. Frozen parameters
    stay where they are, without a gradient. The flat order is ``model.parameters()`` order, so
    each module's own parameters are one contiguous slice (``diagnostics.GradNorms`` uses that).

    Afterwards each re-homed ``p`` is a view of the returned tensor, and ``p.grad`` a view of its
    ``.grad``: backward accumulates in place into those views (autograd adds into an existing
    ``.grad`` rather than replacing it), so the flat ``.grad`` always holds the whole gradient.
    Give the flat Parameter to the optimizer; zero with ``flat.grad.zero_()`` (never set the
    per-layer grads to None, which would detach them from the buffer). Values, ``state_dict`` and
    ``load_state_dict`` of the model are unchanged (loading copies in place). The parameters must
    share a dtype and device: call after moving the model to its device, and do not move it again.
    """
    if params is None:
        chosen = {id(p) for p in model.parameters() if p.requires_grad}
    else:
        given = list(params)
        if any(not p.requires_grad for p in given):
            raise ValueError("flat_parameters got a parameter that does not require a gradient")
        chosen = {id(p) for p in given}
    ordered = [p for p in model.parameters() if id(p) in chosen]
    if len(ordered) != len(chosen):
        raise ValueError(f"flat_parameters got parameters that are not {type(model).__name__}'s")
    if not ordered:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in ordered]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    for p in ordered:
        n = p.numel()
        p.data = flat.data[offset : offset + n].view_as(p)
        p.grad = flat.grad[offset : offset + n].view_as(p)
        offset += n
    return flat


def clip_grad_norm_(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Scale ``grad`` (the flat gradient) in place to an L2 norm of at most ``max_norm``; returns
    the norm before clipping. ``torch.nn.utils.clip_grad_norm_``'s rule (factor
    ``max_norm / (norm + 1e-6)``, capped at 1) on one tensor, without a device sync."""
    norm = torch.linalg.vector_norm(grad)
    grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    return norm


class LossScaler:
    """Dynamic loss scaling for float16 mixed precision, on the flat gradient.

    ``torch.amp.GradScaler``'s rule: the loss is multiplied by ``scale`` before backward so small
    float16 gradients do not flush to zero; :meth:`unscale_` divides the gradient back and checks
    it. A gradient with an inf or NaN means the scale overflowed: the caller skips that step and
    the scale halves. After ``growth_interval`` good steps in a row the scale doubles. The check
    reads one flag from the device per step (only float16 AMP uses this; bfloat16 needs no
    scaling)."""

    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
    ):
        self.scale = float(init_scale)
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval
        self.good_steps = 0

    def unscale_(self, grad: torch.Tensor) -> bool:
        """Divide ``grad`` by the scale; True when it is finite (take the step), else False (skip
        it). Updates the scale for the next step either way."""
        grad.mul_(1.0 / self.scale)
        finite = bool(torch.isfinite(grad).all())
        if finite:
            self.good_steps += 1
            if self.good_steps == self.growth_interval:
                self.scale *= self.growth_factor
                self.good_steps = 0
        else:
            self.scale *= self.backoff_factor
            self.good_steps = 0
        return finite

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "good_steps": self.good_steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.scale, self.good_steps = float(state["scale"]), int(state["good_steps"])
