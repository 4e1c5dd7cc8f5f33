"""Weight initialisation schemes for ``classify`` models (config key ``model.init``).

The schemes are the ones an initialisation study compares; each touches only ``nn.Linear`` and
``nn.Conv1d/2d/3d`` modules (weights and biases), so BatchNorm keeps PyTorch's weight 1 / bias 0
and parameters outside such modules (e.g. ViT's class token, position embedding and attention
input projection) keep the architecture's own initialisation.

* ``default``: leave PyTorch's own initialisation (Kaiming-uniform with a = √5 for Linear and Conv,
  i.e. U(±1/√fan_in) weights and biases): nothing is done.
* ``zeros``: every weight and bias 0: the degenerate start (all hidden units identical, so
  gradients cannot break the symmetry) that the study shows does not learn.
* ``kaiming``: weights N(0, 2/fan_in) (He et al. 2015, fan_in mode, ReLU gain √2), biases 0:
  keeps the activation variance constant through ReLU layers.
* ``xavier``: weights U(±√(6/(fan_in + fan_out))) (Glorot & Bengio 2010), biases 0: keeps
  forward and backward variance constant through linear / tanh layers.
"""

from __future__ import annotations

from torch import nn

from trainables.classification.options import INITS  # the scheme names, checked without torch

INIT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # the modules a scheme re-initialises


def init_layer(layer: nn.Module, scheme: str) -> None:
    """Re-initialise one Linear or Conv ``layer`` in place by ``scheme`` (one of :data:`INITS`)."""
    if scheme not in INITS:
        raise ValueError(f"unknown init scheme {scheme!r}; expected one of {', '.join(INITS)}")
    if scheme == "default":
        return
    weight = layer.weight
    if scheme == "zeros":
        nn.init.zeros_(weight)
    elif scheme == "kaiming":
        nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")
    else:
        nn.init.xavier_uniform_(weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)


def apply_init(module: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise every Linear and Conv layer in ``module`` (itself included) by ``scheme``;
    returns ``module``."""
    if scheme not in INITS:
        raise ValueError(f"unknown init scheme {scheme!r}; expected one of {', '.join(INITS)}")
    for layer in module.modules():
        if isinstance(layer, INIT_LAYERS):
            init_layer(layer, scheme)
    return module
