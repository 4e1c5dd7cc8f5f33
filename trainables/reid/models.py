"""Re-identification models, by name (the architecture names of the coursework's study).

Every model is a torchvision backbone (``trainables.backbones``: the ImageNet classifier layer
removed, optionally ImageNet-pretrained) followed by an identity classifier over the training
identities. In training mode ``model(x)`` returns ``(logits, embedding)``: the logits for the
cross-entropy loss, the embedding for the triplet loss. In eval mode it returns the embedding,
the feature that query and gallery images are compared by.

The embedding follows the coursework's code (EEEM071-Coursework-2025: src/models/resnet.py and
src/models/tvmodels.py): the global-average-pooled last feature map for ResNets (512 or 2048
wide); for MobileNetV3-small and VGG16 the whole ImageNet ``classifier`` is replaced, so the
embedding is what it read: MobileNetV3-small's 576-wide pooled feature, VGG16's flattened pool5
(``AdaptiveAvgPool2d(7, 7)`` of the last conv stage: 512 × 7 × 7 = 25,088 wide, whatever the
image size); ViT-B/16's 768-wide class token (not in the coursework). The ``*_fc512`` variants
follow torchreid's ResNet-fc512: the last stage's stride is 1 (a feature map twice as large, for
finer detail), then global average pooling and ``Linear(→512) + BatchNorm1d + ReLU`` as the
embedding.

The identity classifier's initialisation is the coursework's too: N(0, 0.01²) weights and zero
bias for the ResNets (its ResNet's ``_init_params``), PyTorch's default ``Linear`` initialisation
for the torchvision models (its ``TorchVisionModel`` leaves the new layer as built).

A builder takes ``num_classes``, ``pretrained``, ``weights`` (see ``trainables.backbones``) and
``input_size`` (H, W) as keyword arguments and returns a :class:`ReIDModel`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from expgrid.registry import Registry
from trainables.backbones import Backbone, create_backbone
from trainables.reid.checks import architecture, check_model  # noqa: F401 - re-exported
from trainables.reid.options import MODEL_DEFAULTS, PLAIN_MODELS, RESNETS

EMBEDDING_DIM = 512  # width of the *_fc512 embedding

MODELS: Registry[Callable[..., ReIDModel]] = Registry("model")


class ReIDModel(nn.Module):
    """backbone → embedding (``Identity`` or fc512) → classifier; see the module docstring."""

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        embedding: nn.Module | None = None,
        embedding_dim: int = 0,
        small_init: bool = True,
    ):
        super().__init__()
        self.backbone = backbone
        self.embedding = embedding if embedding is not None else nn.Identity()
        self.embedding_dim = embedding_dim if embedding is not None else backbone.feature_dim
        self.classifier = nn.Linear(self.embedding_dim, num_classes)
        if small_init:
            # torchreid's initialisation of its ResNets' Linear layers, N(0, 0.01²): small
            # logits, so the first cross-entropy is near log(num_classes).
            nn.init.normal_(self.classifier.weight, 0, 0.01)
            nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        v = self.embedding(self.backbone(x))
        if not self.training:
            return v
        return self.classifier(v), v


def fc512(in_features: int) -> nn.Sequential:
    """torchreid's fc layer: Linear → BatchNorm1d → ReLU, with its initialisation (Linear weights
    N(0, 0.01²), zero bias; BatchNorm's default weight 1, bias 0)."""
    linear = nn.Linear(in_features, EMBEDDING_DIM)
    nn.init.normal_(linear.weight, 0, 0.01)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(linear, nn.BatchNorm1d(EMBEDDING_DIM), nn.ReLU(inplace=True))


def set_last_stride_1(backbone: Backbone) -> None:
    """Make the first block of a ResNet's layer4 keep the spatial size (stride 2 → 1).

    The stride sits on ``conv1`` in a BasicBlock and on ``conv2`` in a Bottleneck (torchvision's
    ResNet v1.5), and on the shortcut's 1×1 conv in both. Weights are unchanged, so ImageNet
    weights still apply."""
    block = backbone.body.layer4[0]
    for conv in (getattr(block, "conv1", None), getattr(block, "conv2", None)):
        if isinstance(conv, nn.Conv2d) and conv.stride == (2, 2):
            conv.stride = (1, 1)
    if block.downsample is not None:
        block.downsample[0].stride = (1, 1)


# Architectures whose whole ImageNet `classifier` Sequential the coursework replaces by Identity
# (its TorchVisionModel), not only the last Linear.
WHOLE_CLASSIFIER = ("mobilenet_v3_small", "vgg16")


def drop_classifier(backbone: Backbone) -> None:
    """Replace ``backbone.body.classifier`` (all of it) by Identity, as the coursework does: the
    features are then what its first layer read (``feature_dim`` updated)."""
    body = backbone.body
    backbone.feature_dim = body.classifier[0].in_features
    body.classifier = nn.Identity()


def _plain(arch: str) -> Callable[..., ReIDModel]:
    def build(num_classes: int, pretrained: bool = False, weights: str | None = None,
              input_size: Sequence[int] | None = None) -> ReIDModel:  # fmt: skip
        backbone = create_backbone(arch, pretrained=pretrained, weights=weights, input_size=input_size)
        if arch in WHOLE_CLASSIFIER:
            drop_classifier(backbone)
        return ReIDModel(backbone, num_classes, small_init=arch in RESNETS)

    what = "classifier removed" if arch in WHOLE_CLASSIFIER else "head removed"
    init = "N(0, 0.01²)" if arch in RESNETS else "default-initialised"
    build.__doc__ = f"torchvision {arch} features ({what}) → {init} Linear(num_classes)."
    return build


def _fc512(arch: str) -> Callable[..., ReIDModel]:
    def build(num_classes: int, pretrained: bool = False, weights: str | None = None,
              input_size: Sequence[int] | None = None) -> ReIDModel:  # fmt: skip
        backbone = create_backbone(arch, pretrained=pretrained, weights=weights, input_size=input_size)
        set_last_stride_1(backbone)
        return ReIDModel(backbone, num_classes, fc512(backbone.feature_dim), EMBEDDING_DIM)

    build.__doc__ = f"torchvision {arch}, last stride 1, GAP → fc512 embedding → Linear(num_classes)."
    return build


for _arch in PLAIN_MODELS:
    MODELS.register(_arch, _plain(_arch))
for _arch in RESNETS:
    MODELS.register(f"{_arch}_fc512", _fc512(_arch))


def create_model(model_cfg: Mapping[str, Any], num_classes: int, input_size: Sequence[int]) -> ReIDModel:
    """Build the model named by ``model_cfg["name"]`` for ``num_classes`` training identities."""
    cfg = {**MODEL_DEFAULTS, **model_cfg}
    builder = MODELS.get(cfg["name"], "model.name")
    return builder(
        num_classes, pretrained=bool(cfg["pretrained"]), weights=cfg["weights"], input_size=tuple(input_size)
    )
