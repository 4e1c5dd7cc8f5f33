"""torchvision ImageNet models by name, with a new head and locally stored pretrained weights.

Shared by the trainables that fine-tune (or train from scratch) a standard architecture: the
re-identification trainable uses the features (head removed), a classifier would use a new
``Linear`` head. :func:`create_backbone` builds the torchvision model, optionally loads its
ImageNet weights, and replaces the ImageNet classifier layer (the last ``Linear``) with either
``nn.Identity`` (``num_classes=None``: the model returns the features that layer read) or a fresh
``Linear(feature_dim, num_classes)``.

Pretrained weights are never downloaded (trials may run where nothing can be reached). They come
from ``weights`` (a path to a state_dict saved with ``torch.save``) or else from torchvision's
cache, ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``), under the file
name torchvision itself would download to: the ``IMAGENET1K_V1`` weights of each architecture
(``resnet50-0676ba61.pth``, ...), the classic weights re-ID codebases fine-tune from. A missing
file is a :class:`ConfigError` naming the file expected and where.

Input size: the convolutional models take any size (adaptive pooling). torchvision's ViT only takes
the square size it was built for, a multiple of its 16-pixel patch: untrained, ``vit_b_16`` is
built for the input's longer side (rounded up to a multiple of 16, so a 32×32 smoke image costs 4
patches, not 196); pretrained, it keeps the 224×224 its position embeddings were trained at. In
both cases an input of another size is resized (bilinear) inside :class:`Backbone` to the size the
model was built for, so a config's image size never has to match the architecture.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn

from expgrid.errors import ConfigError
from expgrid.registry import Registry
from trainables import pretrained_files

VIT_PATCH = 16  # pixels per ViT patch side (vit_b_16)
VIT_PRETRAINED_SIZE = 224  # the image side vit_b_16's ImageNet position embeddings were trained at


@dataclasses.dataclass(frozen=True)
class Architecture:
    """How to build one torchvision architecture and where its ImageNet classifier layer is.

    Names, not objects: importing torchvision costs about two seconds per fresh process (it
    pulls in the TorchDynamo compiler), which every trial of a small-MLP section would pay for nothing;
    torchvision is imported when a model is built or its weights are looked up."""

    builder: str  # torchvision.models function, called with weights=None (no download)
    weights: str  # the ImageNet weights `pretrained` loads (their file name), e.g. "ResNet18_Weights.IMAGENET1K_V1"
    head: str  # dotted path of the ImageNet classifier Linear inside the model

    def build(self, **kwargs: Any) -> nn.Module:
        from torchvision import models as tv

        return getattr(tv, self.builder)(weights=None, **kwargs)

    def weights_file_name(self) -> str:
        from torchvision import models as tv

        enum_name, _, member = self.weights.partition(".")
        return Path(getattr(getattr(tv, enum_name), member).url).name


ARCHITECTURES: Registry[Architecture] = Registry("backbone")
ARCHITECTURES.register(
    "mobilenet_v3_small", Architecture("mobilenet_v3_small", "MobileNet_V3_Small_Weights.IMAGENET1K_V1", "classifier.3")
)
ARCHITECTURES.register("vgg16", Architecture("vgg16", "VGG16_Weights.IMAGENET1K_V1", "classifier.6"))
ARCHITECTURES.register("resnet18", Architecture("resnet18", "ResNet18_Weights.IMAGENET1K_V1", "fc"))
ARCHITECTURES.register("resnet34", Architecture("resnet34", "ResNet34_Weights.IMAGENET1K_V1", "fc"))
ARCHITECTURES.register("resnet50", Architecture("resnet50", "ResNet50_Weights.IMAGENET1K_V1", "fc"))
ARCHITECTURES.register("vit_b_16", Architecture("vit_b_16", "ViT_B_16_Weights.IMAGENET1K_V1", "heads.head"))


class Backbone(nn.Module):
    """A torchvision model with its ImageNet head replaced; ``body`` is the torchvision model.

    ``feature_dim``: the width of the features the old head read (the output width when the new
    head is ``Identity``). ``input_size``: (H, W) the body needs, or None for any size; other
    inputs are resized to it first."""

    def __init__(self, body: nn.Module, feature_dim: int, input_size: tuple[int, int] | None = None):
        super().__init__()
        self.body = body
        self.feature_dim = feature_dim
        self.input_size = input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        return self.body(x)


def weights_file(
    name: str, weights: str | Path | None = None, field: str = "model.weights", untrained: str = "set pretrained: false"
) -> Path:
    """The file ``pretrained`` loads for architecture ``name``; ConfigError when it is not there.

    ``weights``: an explicit path (must exist); None: torchvision's cache file for ``name``, in
    ``torch.hub.get_dir()`` (the torch-free lookup ``expgrid validate`` makes: ``pretrained_files``)."""
    ARCHITECTURES.get(name, "model.name")
    return pretrained_files.weights_file(name, weights, field, untrained, hub=torch.hub.get_dir())


def load_imagenet_weights(
    model: nn.Module, name: str, weights: str | Path | None = None, field: str = "model.weights"
) -> Path:
    """Load ``name``'s ImageNet weights (see :func:`weights_file`) into a freshly built torchvision model."""
    path = weights_file(name, weights, field)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a training checkpoint rather than a bare state_dict
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(field, f"a state_dict of torchvision's {name} ({first_line})", str(path)) from None
    return path


def _vit_side(input_size: Sequence[int] | None, pretrained: bool) -> int:
    if pretrained or input_size is None:
        return VIT_PRETRAINED_SIZE
    side = max(int(input_size[0]), int(input_size[1]))
    return VIT_PATCH * math.ceil(side / VIT_PATCH)


def create_backbone(
    name: str,
    num_classes: int | None = None,
    *,
    pretrained: bool = False,
    weights: str | Path | None = None,
    input_size: Sequence[int] | None = None,
) -> Backbone:
    """Build architecture ``name`` with a new head (see the module docstring).

    ``num_classes``: None replaces the ImageNet head with ``Identity`` (features of
    ``feature_dim``), an integer with a fresh ``Linear(feature_dim, num_classes)``.
    ``pretrained``: load ImageNet weights first (from ``weights`` or torchvision's cache; never
    downloaded). ``input_size``: (H, W) of the images the model will see, which only ViT needs."""
    arch = ARCHITECTURES.get(name, "model.name")
    kwargs: dict[str, Any] = {}
    resize_to: tuple[int, int] | None = None
    if name.startswith("vit_"):
        side = _vit_side(input_size, pretrained)
        kwargs["image_size"] = side
        resize_to = (side, side)
    body = arch.build(**kwargs)
    if pretrained:
        load_imagenet_weights(body, name, weights)
    parent_path, _, attr = arch.head.rpartition(".")
    parent = body.get_submodule(parent_path) if parent_path else body
    old_head = getattr(parent, attr)
    assert isinstance(old_head, nn.Linear), f"{name}.{arch.head} is {type(old_head).__name__}, not the ImageNet Linear"
    feature_dim = old_head.in_features
    new_head: nn.Module = nn.Identity() if num_classes is None else nn.Linear(feature_dim, num_classes)
    # setattr on the parent works for Sequential children too ("classifier.6" → attribute "6").
    setattr(parent, attr, new_head)
    return Backbone(body, feature_dim, resize_to)
