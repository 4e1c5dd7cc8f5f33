"""Small convolutional networks for ``classify``, sized for CIFAR-like images (32×32 pixels).

Builders (registered in ``models.py``) take ``input_shape`` (C, H, W), ``num_classes`` and their
options, and return an ``nn.Sequential`` mapping (N, C, H, W) floats to (N, num_classes) logits whose
last ``nn.Linear`` is the classifier head.

* :func:`simple_cnn`: three VGG-style blocks (two 3×3 convs, 2×2 max pool), global average pool.
* :func:`resnet9`: the DAWNBench ResNet9 of Myrtle.ai (David Page, "How to train your ResNet").
* :func:`resnet20`: He et al. 2016's CIFAR ResNet-20 (§4.2), with projection shortcuts.

Without BatchNorm (``batchnorm: false``) the convolutions get biases; with it they have none (the
BatchNorm shift replaces them). Max pools use ``ceil_mode`` so an odd or 1-pixel feature map
rounds up instead of vanishing: small images (digits' 8×8) still pass every block.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Residual(nn.Module):
    """``x + block(x)``: an identity skip connection around ``block`` (same input and output shape)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def _norm(channels: int, batchnorm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batchnorm else nn.Identity()


def conv_bn(c_in: int, c_out: int, batchnorm: bool, stride: int = 1) -> list[nn.Module]:
    """3×3 conv (padding 1: same size at stride 1) [→ BatchNorm2d] → ReLU, as a list of layers."""
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not batchnorm),
        _norm(c_out, batchnorm),
        nn.ReLU(inplace=True),
    ]


def _head(width: int, num_classes: int, dropout: float) -> list[nn.Module]:
    """Flatten [→ Dropout] → Linear: the classifier on globally pooled features."""
    layers: list[nn.Module] = [nn.Flatten()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, num_classes))
    return layers


def simple_cnn(
    input_shape: Sequence[int],
    num_classes: int,
    channels: Sequence[int] = (32, 64, 128),
    dropout: float = 0.0,
    batchnorm: bool = True,
) -> nn.Sequential:
    """Per entry of ``channels``: conv3×3 [→ BN] → ReLU → conv3×3 [→ BN] → ReLU → MaxPool 2×2
    [→ Dropout(dropout)]; then global average pool → Linear(classes).

    Each block halves the image side, so three blocks take 32×32 to 4×4 before pooling. ``dropout``
    (a probability) follows every block, as in the usual CIFAR baselines."""
    layers: list[nn.Module] = []
    width = int(input_shape[0])
    for c in channels:
        layers += [*conv_bn(width, c, batchnorm), *conv_bn(c, c, batchnorm), nn.MaxPool2d(2, ceil_mode=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = c
    layers.append(nn.AdaptiveAvgPool2d(1))
    layers += _head(width, num_classes, 0.0)
    return nn.Sequential(*layers)


def resnet9(
    input_shape: Sequence[int], num_classes: int, dropout: float = 0.0, batchnorm: bool = True
) -> nn.Sequential:
    """prep conv 64 → layer1 conv 128 + pool + Residual(2 × conv 128) → layer2 conv 256 + pool →
    layer3 conv 512 + pool + Residual(2 × conv 512) → global max pool [→ Dropout] → Linear.

    6,573,130 parameters at 10 classes. Myrtle's version scales the logits by 1/8 after a bias-free
    head; here the head is a plain Linear (the scale belongs with their learning-rate schedule)."""

    def pooled(c_in: int, c_out: int) -> list[nn.Module]:
        return [*conv_bn(c_in, c_out, batchnorm), nn.MaxPool2d(2, ceil_mode=True)]

    def residual(c: int) -> Residual:
        return Residual(nn.Sequential(*conv_bn(c, c, batchnorm), *conv_bn(c, c, batchnorm)))

    return nn.Sequential(
        *conv_bn(int(input_shape[0]), 64, batchnorm),
        *pooled(64, 128),
        residual(128),
        *pooled(128, 256),
        *pooled(256, 512),
        residual(512),
        nn.AdaptiveMaxPool2d(1),
        *_head(512, num_classes, dropout),
    )


class BasicBlock(nn.Module):
    """He et al.'s basic block: conv3×3 [BN] ReLU conv3×3 [BN], plus the shortcut, then ReLU.

    The shortcut is the identity, or where the block changes the shape (stride 2, more channels)
    a strided 1×1 conv [→ BN] projection (the paper's option B)."""

    def __init__(self, c_in: int, c_out: int, stride: int, batchnorm: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not batchnorm)
        self.bn1 = _norm(c_out, batchnorm)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=not batchnorm)
        self.bn2 = _norm(c_out, batchnorm)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=not batchnorm), _norm(c_out, batchnorm)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def resnet20(
    input_shape: Sequence[int], num_classes: int, dropout: float = 0.0, batchnorm: bool = True
) -> nn.Sequential:
    """conv3×3 16 [BN] ReLU → 3 stages × 3 basic blocks of 16, 32, 64 channels (the first block of
    stages 2 and 3 halves the image side) → global average pool [→ Dropout] → Linear.

    19 weighted layers + the head = 20; 272,474 parameters at 10 classes (0.27 M in the paper,
    whose option-A zero-padding shortcuts have none; the two 1×1 projections here add 2,752)."""
    layers: list[nn.Module] = [*conv_bn(int(input_shape[0]), 16, batchnorm)]
    width = 16
    for stage, c in enumerate((16, 32, 64)):
        for block in range(3):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(BasicBlock(width, c, stride, batchnorm))
            width = c
    layers.append(nn.AdaptiveAvgPool2d(1))
    layers += _head(width, num_classes, dropout)
    return nn.Sequential(*layers)
