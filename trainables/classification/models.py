"""Models for ``classify``, by name (timm-style registry).

A model builder takes ``input_shape`` (C, H, W), ``num_classes`` and the options of its ``model``
config mapping (every key but ``name``) as keyword arguments, and returns an ``nn.Module`` mapping a
float batch (N, C, H, W) to logits (N, num_classes).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from expgrid.errors import ConfigError
from expgrid.registry import Registry

MODEL_DEFAULTS: dict[str, Any] = {
    "name": "mlp",
    "hidden": [128, 64],  # units per hidden layer, input side first
    "dropout": 0.0,  # probability of zeroing a hidden unit (after each hidden activation)
    "batchnorm": False,  # BatchNorm1d between each hidden Linear and its activation
    "activation": "relu",
}

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")
ACTIVATIONS.register("relu", nn.ReLU)
ACTIVATIONS.register("tanh", nn.Tanh)
ACTIVATIONS.register("sigmoid", nn.Sigmoid)
ACTIVATIONS.register("gelu", nn.GELU)
ACTIVATIONS.register("leaky_relu", nn.LeakyReLU)  # negative slope 0.01
ACTIVATIONS.register("elu", nn.ELU)


@MODELS.register("mlp")
def mlp(
    input_shape: Sequence[int],
    num_classes: int,
    hidden: Sequence[int] = (128, 64),
    dropout: float = 0.0,
    batchnorm: bool = False,
    activation: str = "relu",
) -> nn.Sequential:
    """Flatten → per hidden size: Linear [→ BatchNorm1d] → activation [→ Dropout] → Linear(classes).

    BatchNorm sits before the activation (as in the original paper); Dropout only appears when
    ``dropout > 0`` so a plain MLP has no no-op modules costing a call per step. ``hidden=[]``
    gives multinomial logistic regression."""
    act = ACTIVATIONS.get(activation, "model.activation")
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for units in hidden:
        layers.append(nn.Linear(width, units))
        if batchnorm:
            layers.append(nn.BatchNorm1d(units))
        layers.append(act())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = units
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def model_options(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The builder's keyword arguments: the model config without ``name``."""
    return {k: v for k, v in model_cfg.items() if k != "name"}


def check_model(model_cfg: Mapping[str, Any]) -> None:
    """Reject a ``model`` config the builder cannot take (names, option names, value ranges)."""
    builder = MODELS.get(model_cfg.get("name"), "model.name")
    params = inspect.signature(builder).parameters
    for key in model_options(model_cfg):
        if key in ("input_shape", "num_classes") or key not in params:
            valid = [p for p in params if p not in ("input_shape", "num_classes")]
            raise ConfigError(
                f"model.{key}", f"an option of model {model_cfg['name']!r}: one of {', '.join(valid)}", key
            )
    if "activation" in model_cfg:
        ACTIVATIONS.get(model_cfg["activation"], "model.activation")
    if "dropout" in model_cfg:
        p = model_cfg["dropout"]
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise ConfigError("model.dropout", "a probability in [0, 1)", p)
    if "hidden" in model_cfg:
        h = model_cfg["hidden"]
        if not isinstance(h, (list, tuple)) or any(isinstance(u, bool) or not isinstance(u, int) or u < 1 for u in h):
            raise ConfigError("model.hidden", "a list of layer widths (integers >= 1)", h)
    if "batchnorm" in model_cfg and not isinstance(model_cfg["batchnorm"], bool):
        raise ConfigError("model.batchnorm", "true or false", model_cfg["batchnorm"])


def create_model(model_cfg: Mapping[str, Any], input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Build the model named by ``model_cfg["name"]`` for inputs of ``input_shape`` (C, H, W)."""
    builder = MODELS.get(model_cfg.get("name"), "model.name")
    return builder(tuple(input_shape), num_classes, **model_options(model_cfg))


def first_linear(model: nn.Module) -> nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d:
    """The first Linear or Conv layer (in module order): the layer whose weight and gradient sizes
    the diagnostics report, since it is the one furthest from the loss."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return module
    raise ValueError(f"{type(model).__name__} has no Linear or Conv layer")


def _has_hooks(module: nn.Module) -> bool:
    own = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return any(getattr(module, name, None) for name in own)


def _global_hooks() -> bool:
    import torch.nn.modules.module as mm

    names = (
        "_global_forward_hooks",
        "_global_forward_pre_hooks",
        "_global_backward_hooks",
        "_global_backward_pre_hooks",
    )
    return any(getattr(mm, name, None) for name in names)


def fast_forward(model: nn.Module) -> Callable[[Any], Any]:
    """A function equal to ``model(x)`` that, for an ``nn.Sequential`` without hooks, calls each
    layer's ``forward`` directly.

    ``Module.__call__`` checks for hooks on every call; for a small MLP on one CPU thread those
    checks cost ~10-20 µs per layer per step, over 10 % of a step. With hooks anywhere (own or
    global) the checks matter, so this returns ``model`` itself. Hooks added after the call are not
    seen: take it once, right before the training loop."""
    if not isinstance(model, nn.Sequential) or _global_hooks():
        return model
    layers = list(model)
    if _has_hooks(model) or any(_has_hooks(m) for layer in layers for m in layer.modules()):
        return model
    forwards = tuple(layer.forward for layer in layers)

    def forward(x: Any) -> Any:
        for f in forwards:
            x = f(x)
        return x

    return forward
