"""Models for ``classify``, by name (timm-style registry), and how they are built and initialised.

A model builder takes ``input_shape`` (C, H, W), ``num_classes`` and the options of its ``model``
config mapping as keyword arguments, and returns an ``nn.Module`` mapping a float batch
(N, C, H, W) to logits (N, num_classes). Registered models:

* ``mlp``: fully connected (``hidden`` widths, or ``depth`` × ``width``), optional BatchNorm,
  dropout, residual skips and a choice of activation (including ``sine``);
* ``simple_cnn``, ``resnet9``, ``resnet20``: CIFAR-sized CNNs (see ``cnn.py``);
* ``resnet18``, ``resnet34``, ``resnet50``, ``vgg16``, ``mobilenet_v3_small``, ``vit_b_16``:
  torchvision's architectures with a new ``Linear`` head (``trainables.backbones``); 1-channel
  images are repeated to the 3 channels they expect, other sizes are fine (ViT resizes).

Convention: **the classifier head is the last ``nn.Linear`` in ``model.modules()`` order**
(:func:`head_of`). Pretrained modes replace, initialise and (for a linear probe) train only it;
every registry model is tested for it.

Config keys that are not builder options, handled by :func:`create_model`:

* ``init``: ``default`` | ``zeros`` | ``kaiming`` | ``xavier`` (see ``init.py``), applied to every
  Linear/Conv layer when training from scratch and only to the new head when starting from weights;
* ``weights``: where pretrained weights come from (see ``modes.py``): a path, ``"random"`` (a
  stand-in, nothing read) or None.

An option whose value is None is unset: the builder's own default applies, and a model that does
not take the option does not object. That is what lets :data:`MODEL_DEFAULTS` (the ``model``
defaults every config is merged over) name every option of every model without forcing mlp's
options on a CNN: e.g. ``batchnorm`` is false for ``mlp`` but true for the CNNs unless set.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from expgrid.errors import ConfigError
from expgrid.registry import Registry
from trainables import backbones
from trainables.classification import cnn
from trainables.classification.checks import check_model, hidden_widths, model_options  # noqa: F401 - check_model: re-exported
from trainables.classification.cnn import Residual
from trainables.classification.init import apply_init
from trainables.classification.options import INITS, MODEL_DEFAULTS  # noqa: F401 - MODEL_DEFAULTS: re-exported

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")


class Sine(nn.Module):
    """x ↦ sin(x): periodic features as in SIREN (Sitzmann et al. 2020), with frequency ω₀ = 1 and
    the ``init`` scheme's weights rather than SIREN's own initialisation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x)


ACTIVATIONS.register("relu", nn.ReLU)
ACTIVATIONS.register("tanh", nn.Tanh)
ACTIVATIONS.register("sigmoid", nn.Sigmoid)
ACTIVATIONS.register("gelu", nn.GELU)
ACTIVATIONS.register("leaky_relu", nn.LeakyReLU)  # negative slope 0.01
ACTIVATIONS.register("elu", nn.ELU)
ACTIVATIONS.register("sine", Sine)


@MODELS.register("mlp")
def mlp(
    input_shape: Sequence[int],
    num_classes: int,
    hidden: Sequence[int] | None = None,
    depth: int | None = None,
    width: int | None = None,
    dropout: float = 0.0,
    batchnorm: bool = False,
    activation: str = "relu",
    residual: bool = False,
) -> nn.Sequential:
    """Flatten → per hidden size: Linear [→ BatchNorm1d] → activation [→ Dropout] → Linear(classes).

    BatchNorm sits before the activation (as in the original paper); Dropout only appears when
    ``dropout > 0`` so a plain MLP has no no-op modules costing a call per step. ``hidden=[]``
    (or ``depth=0``) gives multinomial logistic regression. With ``residual`` each hidden block
    whose input and output widths match becomes ``x + block(x)`` (a :class:`~cnn.Residual` layer
    of the Sequential): the skip that lets 100-layer stacks train."""
    act = ACTIVATIONS.get(activation, "model.activation")
    layers: list[nn.Module] = [nn.Flatten()]
    size = math.prod(input_shape)
    for units in hidden_widths(hidden, depth, width):
        block: list[nn.Module] = [nn.Linear(size, units)]
        if batchnorm:
            block.append(nn.BatchNorm1d(units))
        block.append(act())
        if dropout > 0:
            block.append(nn.Dropout(dropout))
        if residual and units == size:
            layers.append(Residual(nn.Sequential(*block)))
        else:
            layers.extend(block)
        size = units
    layers.append(nn.Linear(size, num_classes))
    return nn.Sequential(*layers)


MODELS.register("simple_cnn", cnn.simple_cnn)
MODELS.register("resnet9", cnn.resnet9)
MODELS.register("resnet20", cnn.resnet20)


class TorchvisionClassifier(backbones.Backbone):
    """A torchvision model with a new head (a :class:`~trainables.backbones.Backbone`) that also
    takes 1-channel images, repeating the channel to the RGB its first layer expects."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return super().forward(x)


def _torchvision_builder(arch: str) -> Callable[..., nn.Module]:
    def build(
        input_shape: Sequence[int],
        num_classes: int,
        dropout: float = 0.0,
        *,
        pretrained: bool = False,
        weights: str | Path | None = None,
    ) -> TorchvisionClassifier:
        if int(input_shape[0]) not in (1, 3):
            raise ConfigError(
                "model.name", f"a model for the images' {input_shape[0]} channels ({arch} takes 1 or 3)", arch
            )
        b = backbones.create_backbone(
            arch, num_classes, pretrained=pretrained, weights=weights, input_size=tuple(input_shape[1:])
        )
        if dropout > 0:
            parent_path, _, attr = backbones.ARCHITECTURES.get(arch).head.rpartition(".")
            parent = b.body.get_submodule(parent_path) if parent_path else b.body
            setattr(parent, attr, nn.Sequential(nn.Dropout(dropout), getattr(parent, attr)))
        return TorchvisionClassifier(b.body, b.feature_dim, b.input_size)

    build.__name__ = build.__qualname__ = arch
    build.__doc__ = (
        f"torchvision's {arch} with a new Linear(features, num_classes) head [after Dropout(dropout)]; "
        "``pretrained`` loads ImageNet weights (``weights`` or torchvision's cache) first."
    )
    return build


for _arch in backbones.ARCHITECTURES.names():
    MODELS.register(_arch, _torchvision_builder(_arch))


def _takes_weights(builder: Callable[..., nn.Module]) -> bool:
    """Whether ``builder`` loads pretrained weights itself (the torchvision models)."""
    return "pretrained" in inspect.signature(builder).parameters


def head_of(model: nn.Module) -> nn.Linear:
    """The classifier head: by this module's convention, the last ``nn.Linear`` in ``modules()`` order."""
    head = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            head = module
    if head is None:
        raise ValueError(f"{type(model).__name__} has no Linear layer (no classifier head)")
    return head


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (trainable or frozen; buffers such as BatchNorm's running
    statistics not included)."""
    return sum(p.numel() for p in model.parameters())


def _read_state_dict(path: Path, field: str) -> dict[str, torch.Tensor]:
    """A state_dict from ``path``: a bare one, or the ``state_dict`` / ``model`` entry of a checkpoint."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file is the same user error
        raise ConfigError(field, f"a torch.save'd state_dict ({type(e).__name__}: {e})", str(path)) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(field, "a torch.save'd state_dict (a mapping of names to tensors)", str(path))
    return state


def load_body_weights(model: nn.Module, weights: str | Path, name: str, field: str = "model.weights") -> Path:
    """Load a state_dict of the same model (same name and options) into ``model``, except its head.

    Every tensor but the head's must be in the file with the same shape; the head's are never
    loaded (the model gets a new head, whatever the file's number of classes). Returns the path."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(field, f"an existing file of {name} weights (a torch.save'd state_dict)", str(path))
    state = _read_state_dict(path, field)
    head = head_of(model)
    prefix = next(n for n, m in model.named_modules() if m is head)
    head_keys = {f"{prefix}.{p}" if prefix else p for p, _ in head.named_parameters()}
    own = {k: v for k, v in model.state_dict().items() if k not in head_keys}
    for key, value in own.items():
        if key not in state:
            raise ConfigError(field, f"a state_dict of model {name} with these options (no {key!r} in it)", str(path))
        if state[key].shape != value.shape:
            got = f"{tuple(state[key].shape)}, the model has {tuple(value.shape)}"
            raise ConfigError(field, f"a state_dict of model {name} with these options ({key!r} is {got})", str(path))
    missing, _ = model.load_state_dict({k: state[k] for k in own}, strict=False)
    assert set(missing) <= head_keys, missing
    return path


def create_model(
    model_cfg: Mapping[str, Any], input_shape: Sequence[int], num_classes: int, *, pretrained: bool = False
) -> nn.Module:
    """Build the model named by ``model_cfg["name"]`` for inputs of ``input_shape`` (C, H, W).

    ``pretrained`` false: every Linear/Conv layer initialised by ``model_cfg["init"]``; weights are
    never read. True: the weights of ``model_cfg["weights"]`` are loaded (torchvision models:
    ImageNet weights, from that path or torchvision's cache; the others: a state_dict of the same
    model, see :func:`load_body_weights`; ``"random"``: none, the architecture's own random
    initialisation stands in) and only the new head is initialised by ``init``."""
    name = model_cfg.get("name")
    builder = MODELS.get(name, "model.name")
    options = model_options(model_cfg)
    scheme = model_cfg.get("init") or "default"
    if scheme not in INITS:
        raise ConfigError("model.init", f"an initialisation scheme: one of {', '.join(INITS)}", scheme)
    weights = model_cfg.get("weights")
    load = pretrained and weights != "random"
    shape = tuple(int(s) for s in input_shape)
    if _takes_weights(builder):
        model = builder(shape, num_classes, **options, pretrained=load, weights=weights if load else None)
    else:
        model = builder(shape, num_classes, **options)
        if load:
            if weights is None:
                raise ConfigError(
                    "model.weights",
                    f'a path to a torch.save\'d state_dict of {name} to start from (or "random")',
                    weights,
                )
            load_body_weights(model, weights, str(name))
    apply_init(head_of(model) if pretrained else model, scheme)
    return model


def first_linear(model: nn.Module) -> nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d:
    """The first Linear or Conv layer (in module order): the layer whose weight and gradient sizes
    the diagnostics report, since it is the one furthest from the loss."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return module
    raise ValueError(f"{type(model).__name__} has no Linear or Conv layer")
