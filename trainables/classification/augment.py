"""Training-batch augmentation on the device, batched: one kernel pass per batch, no per-sample Python.

The ``augment`` config value is a preset name or a list of transforms, each a name (with its
default strength) or a one-key mapping ``name: strength``::

    augment: moderate
    augment: [hflip, {rotate: 15}, {erase: 0.25}]

    transform  strength (default)                 per sample
    hflip      probability (0.5)                  mirror left-right with that probability
    translate  max shift, fraction of the side    shift x and y each uniformly in ±strength × side
               (0.1)
    rotate     max angle, degrees (10)            rotate uniformly in ±strength degrees
    zoom       max scale deviation (0.1)          scale uniformly in [1 - strength, 1 + strength]
                                                  (> 1 enlarges the content)
    erase      probability (0.5)                  random erasing: fill one rectangle of 2-40 % of
                                                  the image, aspect 0.3-3.33 (log-uniform), with
                                                  mid-grey 0.5, with that probability

    preset      transforms
    none        (nothing; build_augment returns None)
    moderate    hflip 0.5, translate 0.1, rotate 10°, zoom 0.1
    aggressive  hflip 0.5, translate 0.2, rotate 25°, zoom 0.25, erase 0.5

A bare transform name (``augment: hflip``) means that one transform. Whatever the list's order,
the geometric transforms come first, as ONE random affine map per sample (``F.affine_grid`` +
``F.grid_sample``, bilinear), then erasing (as in the usual pipelines: erase what the model will
see). Where the map looks outside the image it reflects the image at its border rather than
padding with zeros: black corners after every rotation or zoom-out would be an artefact of the
augmentation a model could learn, and they shift the pixel statistics. A flip alone (``hflip``
and nothing else geometric) is an exact ``torch.flip``, not a resampling.

Input and output: float (N, C, H, W) in [0, 1] (the training batches of ``batches.py``), same
shape, dtype and device. Only training batches are augmented. Random numbers come from torch's
generator on the batch's device, so the trial's ``torch.manual_seed`` fixes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import Tensor

from trainables.classification.checks import check_augment, resolve_augment  # noqa: F401 - re-exported
from trainables.classification.options import DEFAULT_STRENGTH, GEOMETRIC, LIMITS, PRESETS, TRANSFORMS  # noqa: F401

ERASE_AREA = (0.02, 0.4)  # fraction of the image area
ERASE_ASPECT = (0.3, 1 / 0.3)  # height / width, drawn log-uniformly
ERASE_FILL = 0.5  # mid-grey, in the [0, 1] pixel range


def build_augment(value: Any) -> Callable[[Tensor], Tensor] | None:
    """The batch augmentation ``value`` names, or None when it does nothing (``none``, all zero)."""
    strengths = {name: s for name, s in resolve_augment(value).items() if s > 0}
    return Augment(strengths) if strengths else None


class Augment:
    """Applies the transforms of ``strengths`` (name → strength, as in the module docstring)."""

    def __init__(self, strengths: Mapping[str, float]):
        unknown = set(strengths) - set(TRANSFORMS)
        if unknown:
            raise ValueError(f"unknown transforms {sorted(unknown)}")
        self.strengths = dict(strengths)

    def __repr__(self) -> str:
        return f"Augment({self.strengths})"

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or not x.is_floating_point():
            raise TypeError(f"expected a float (N, C, H, W) batch, got {x.dtype} {tuple(x.shape)}")
        s, n, device = self.strengths, len(x), x.device

        def uniform(bound: float, *shape: int) -> Tensor:
            return (torch.rand(n, *shape, device=device) * 2 - 1) * bound

        flip = torch.rand(n, device=device) < s["hflip"] if "hflip" in s else None
        if any(name in s for name in GEOMETRIC[1:]):
            x = affine(
                x,
                flip=flip,
                shift=uniform(s["translate"], 2) if "translate" in s else None,
                degrees=uniform(s["rotate"]) if "rotate" in s else None,
                scale=1 + uniform(s["zoom"]) if "zoom" in s else None,
            )
        elif flip is not None:
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if "erase" in s:
            x = erase(x, s["erase"])
        return x


def affine(
    x: Tensor,
    *,
    flip: Tensor | None = None,
    shift: Tensor | None = None,
    degrees: Tensor | None = None,
    scale: Tensor | None = None,
) -> Tensor:
    """Each image of ``x`` (N, C, H, W) mirrored, scaled, rotated about its centre, then shifted.

    Per sample: ``flip`` bool (N,) left-right; ``scale`` (N,) > 1 enlarges the content;
    ``degrees`` (N,) clockwise on screen; ``shift`` (N, 2) fractions of the width and height, positive
    right and down (a shift of k / W moves the content exactly k pixels). Bilinear sampling,
    reflection at the borders; one ``grid_sample`` for the whole batch."""
    n, _, height, width = x.shape
    kw = {"device": x.device, "dtype": torch.float32}
    f = 1 - 2 * flip.to(**kw) if flip is not None else torch.ones(n, **kw)
    angle = torch.deg2rad(degrees.to(**kw)) if degrees is not None else torch.zeros(n, **kw)
    inv = 1 / scale.to(**kw) if scale is not None else torch.ones(n, **kw)
    cos, sin = torch.cos(angle) * inv, torch.sin(angle) * inv
    # Where output pixel p (pixels from the centre) samples the input: F R(-angle) (p - shift) / scale.
    # In grid_sample's coordinates (-1..1 across each side) the off-diagonal terms carry H/W.
    theta = torch.empty(n, 2, 3, **kw)
    theta[:, 0, 0] = f * cos
    theta[:, 0, 1] = f * sin * (height / width)
    theta[:, 1, 0] = -sin * (width / height)
    theta[:, 1, 1] = cos
    t = 2 * shift.to(**kw) if shift is not None else torch.zeros(n, 2, **kw)  # in grid units
    theta[:, :, 2] = -(theta[:, :, :2] @ t.unsqueeze(2)).squeeze(2)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def erase(x: Tensor, p: float) -> Tensor:
    """Random erasing (Zhong et al.; torchvision's ``RandomErasing``), batched with masks: with
    probability ``p`` per image, one rectangle of 2-40 % of the area, aspect (height / width)
    0.3-3.33 log-uniform, at a uniform position, filled with ``ERASE_FILL``. A rectangle too tall
    or wide for the image is clipped to its side (torchvision redraws it instead)."""
    n, _, height, width = x.shape
    device = x.device
    rand = torch.rand(n, 5, device=device)
    area = (ERASE_AREA[0] + rand[:, 0] * (ERASE_AREA[1] - ERASE_AREA[0])) * (height * width)
    low, high = math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])
    aspect = torch.exp(low + rand[:, 1] * (high - low))
    h = torch.sqrt(area * aspect).round().clamp(1, height)
    w = torch.sqrt(area / aspect).round().clamp(1, width)
    top = (rand[:, 2] * (height - h + 1)).floor()
    left = (rand[:, 3] * (width - w + 1)).floor()
    rows = torch.arange(height, device=device)[None, :, None]
    cols = torch.arange(width, device=device)[None, None, :]
    mask = (
        (rand[:, 4] < p)[:, None, None]
        & (rows >= top[:, None, None])
        & (rows < (top + h)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + w)[:, None, None])
    )
    return torch.where(mask[:, None], torch.tensor(ERASE_FILL, dtype=x.dtype, device=device), x)
