"""Optimizers for ``classify``, by name (``torch.optim``), and the flat parameter buffer.

Names: ``sgd`` (heavy-ball momentum), ``adam``, ``adamw`` (decoupled weight decay, Loshchilov &
Hutter), ``amsgrad`` (Adam keeping the running maximum of the second moment, Reddi et al.) and
``rmsprop``: ``torch.optim.SGD``, ``Adam``, ``AdamW``, ``Adam(amsgrad=True)`` and ``RMSprop`` with
PyTorch's defaults (betas 0.9 / 0.999, eps 1e-8, RMSprop alpha 0.99, no dampening). ``momentum``
and ``nesterov`` are used by ``sgd`` only (momentum 0 is plain SGD; Nesterov needs momentum > 0),
the others ignore them, so a grid over optimizers can share one config. ``weight_decay`` is L2
added to the gradient, except for ``adamw`` where it shrinks the weights directly.

Implementation (:func:`implementation`, nanoGPT's rule): the fused kernel where the optimizer
class takes ``fused`` (its signature says so) and the parameters live on a device PyTorch has
fused kernels for, else the multi-tensor (``foreach``) one. The trainer hands the optimizer one
flat tensor (:func:`flat_parameters`), so a step is one kernel call over all parameters and
zeroing the gradients is one ``zero_()``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from expgrid.registry import Registry
from trainables.classification.checks import check_optimizer  # noqa: F401 - re-exported
from trainables.classification.options import OPTIMIZER_DEFAULTS

# Device types whose fused optimizer kernels we use. On the CPU, too: for the benchmark's Adam
# over one flat tensor of 110k parameters a fused step took 150 µs, a foreach one 317 µs, a
# single-tensor one 283 µs (README, "Measured").
FUSED_DEVICES = ("cpu", "cuda", "mps")


def implementation(cls: type[torch.optim.Optimizer], params: list[torch.Tensor]) -> dict[str, bool]:
    """``{"fused": True}`` where ``cls`` accepts ``fused`` and every parameter is a floating-point
    tensor on a device in FUSED_DEVICES; else ``{"foreach": True}`` (every class takes that)."""
    fused_available = "fused" in inspect.signature(cls).parameters
    if fused_available and all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params):
        return {"fused": True}
    return {"foreach": True}


def _make(cls: type[torch.optim.Optimizer], params: list[torch.Tensor], **hyper: Any) -> torch.optim.Optimizer:
    return cls(params, **hyper, **implementation(cls, params))


Params = Iterable[torch.Tensor]
OPTIMIZERS: Registry[Callable[[list[torch.Tensor], Mapping[str, Any]], torch.optim.Optimizer]] = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def sgd(params: list[torch.Tensor], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    if cfg["nesterov"] and not cfg["momentum"]:
        raise ValueError("Nesterov momentum needs momentum > 0")
    return _make(
        torch.optim.SGD,
        params,
        lr=cfg["lr"],
        momentum=cfg["momentum"],
        weight_decay=cfg["weight_decay"],
        nesterov=bool(cfg["nesterov"]),
    )


@OPTIMIZERS.register("adam")
def adam(params: list[torch.Tensor], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return _make(torch.optim.Adam, params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


@OPTIMIZERS.register("adamw")
def adamw(params: list[torch.Tensor], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return _make(torch.optim.AdamW, params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


@OPTIMIZERS.register("amsgrad")
def amsgrad(params: list[torch.Tensor], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return _make(torch.optim.Adam, params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], amsgrad=True)


@OPTIMIZERS.register("rmsprop")
def rmsprop(params: list[torch.Tensor], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return _make(torch.optim.RMSprop, params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def create_optimizer(opt_cfg: Mapping[str, Any], params: Params) -> torch.optim.Optimizer:
    """Build the optimizer named by ``opt_cfg["name"]`` over ``params`` (missing keys take the defaults)."""
    cfg = {**OPTIMIZER_DEFAULTS, **opt_cfg}
    params = list(params)
    if not params:
        raise ValueError(f"optimizer {cfg['name']!r} got no parameters")
    return OPTIMIZERS.get(cfg["name"], "optimizer.name")(params, cfg)


def scaled_step(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> bool:
    """``scaler.step(optimizer)`` and ``scaler.update()``; True when the step was taken.

    The scaler skips a step whose (unscaled) gradient holds an inf or NaN and then lowers its
    scale, never otherwise, so a lower scale afterwards means a skipped step. Reads the scale from
    the device twice per step (only float16 AMP on CUDA uses a scaler)."""
    before = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    return scaler.get_scale() >= before


def flat_parameters(model: nn.Module, params: Iterable[torch.Tensor] | None = None) -> nn.Parameter:
    """Re-home trainable parameters of ``model`` into one contiguous Parameter and return it.

    ``params``: the parameters to re-home (e.g. ``modes.trainable_parameters(model)``: only the
    head for a linear probe); default, every parameter with ``requires_grad``. Frozen parameters
    stay where they are, without a gradient. The flat order is ``model.parameters()`` order, so
    each module's own parameters are one contiguous slice (``diagnostics.GradNorms`` uses that).

    Afterwards each re-homed ``p`` is a view of the returned tensor, and ``p.grad`` a view of its
    ``.grad``: backward accumulates in place into those views (autograd adds into an existing
    ``.grad`` rather than replacing it), so the flat ``.grad`` always holds the whole gradient.
    Give the flat Parameter to the optimizer; zero with ``flat.grad.zero_()``, not with
    ``optimizer.zero_grad()``, which sets gradients to None by default (never set the per-layer
    grads to None either: that would detach them from the buffer). Values, ``state_dict`` and
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
