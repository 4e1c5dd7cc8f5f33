"""Image transforms for re-identification: training augmentations by name, and the evaluation transform.

A transform maps one RGB uint8 image (3, H, W) of any size to a normalised float32 image
(3, height, width). Training augmentations are named in a list (the ``augmentations`` config).
The defaults follow the coursework's code (src/transforms.py of EEEM071-Coursework-2025, a fork
of early torchreid); the ``*_tv`` / ``pca_lighting`` names keep this package's earlier versions:

    random2dtranslation  with p 0.5 a plain resize, else resize to 1.125× and crop height × width at
                         a random place (torchreid's Random2DTranslation); replaces the plain resize
    hflip                horizontal flip, p 0.5
    random_perspective   torchvision's RandomPerspective (distortion 0.5, p 0.5)
    color_jitter         brightness ±0.2, contrast ±0.15 (torchreid's colour jitter)
    color_aug            the coursework's ColorAugmentation, p 0.5: add (λ ⊙ α) · E to every pixel,
                         α ~ N(0, 0.1²) per component, λ the AlexNet eigenvalues and E its matrix
                         (the AlexNet eigenvectors with columns reversed, read as rows)
    pca_lighting         AlexNet's PCA lighting (fb.resnet.torch's formula), p 0.5: add
                         V · (α ⊙ λ), V's columns the eigenvectors; what ``color_aug`` was before
    random_erasing       the coursework's RandomErasing (Zhong et al.), p 0.5: up to 100 tries at
                         a rectangle of area uniform in 2-40 % and aspect h/w uniform in
                         [0.3, 1/0.3]; the first that fits is set to (0.4914, 0.4822, 0.4465)
                         *in normalised units* (it runs after normalisation, as in the coursework)
    random_erasing_tv    torchvision's RandomErasing, p 0.5: area 2-40 %, aspect log-uniform in
                         [0.3, 3.33], 10 tries, fill 0 in normalised units (the ImageNet mean
                         colour); what ``random_erasing`` was before

They run in a fixed order whatever the list's order, the order that makes each one meaningful
(torchreid's): resize or random2dtranslation, the geometric and colour changes on uint8 pixels,
conversion to [0, 1], color_aug / pca_lighting, ImageNet normalisation, then random erasing. The
evaluation (query and gallery) transform is resize + normalisation.

All randomness comes from torch's generator (the coursework's ``random.uniform`` / ``randint``
draws become :func:`uniform` / :func:`randint` on it, in the same order), so ``torch.manual_seed``
makes a run repeatable (and DataLoader workers get their own streams from it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF  # noqa: N812 - torchvision's convention

from expgrid.registry import Registry
from trainables.reid.checks import check_augmentations
from trainables.reid.options import DEFAULT_AUGMENTATIONS  # noqa: F401 - re-exported

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# AlexNet's PCA of ImageNet RGB pixels in [0, 1], as fb.resnet.torch gives it: the eigenvalues,
# and the eigenvectors as columns (the first, paired with the largest eigenvalue, is brightness).
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
# The coursework's ColorAugmentation: the same eigenvalues (one row) and the eigenvectors' matrix
# with its columns reversed, multiplied as (eigval ⊙ alpha) @ matrix (src/transforms.py).
COURSEWORK_EIGVAL = ((0.2175, 0.0188, 0.0045),)
COURSEWORK_EIGVEC = (
    (0.4009, 0.7192, -0.5675),
    (-0.8140, -0.0045, -0.5808),
    (0.4203, -0.6948, -0.5836),
)
# The coursework's RandomErasing fill (CIFAR-10's mean colour in [0, 1]), written into the
# normalised image as it is: these are normalised-unit values, not a colour.
COURSEWORK_ERASE_FILL = (0.4914, 0.4822, 0.4465)

Transform = Callable[[torch.Tensor], torch.Tensor]
# Where an augmentation runs (see the module docstring): the order of these stages is fixed.
SIZE, PIXELS, UNIT, NORMALISED = "size", "pixels", "unit", "normalised"
STAGES = (SIZE, PIXELS, UNIT, NORMALISED)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    stage: str
    build: Callable[[int, int], Transform]  # (height, width) → transform
    order: int = 0  # position within its stage


AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation")


class Resize:
    """Resize (antialiased) to height × width; images already that size pass through."""

    def __init__(self, height: int, width: int):
        self.size = (height, width)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if tuple(image.shape[-2:]) == self.size:
            return image
        return TF.resize(image, list(self.size), antialias=True)


class Random2DTranslation:
    """With probability ``1 - p`` resize to height × width; else resize to 1.125× that size and
    crop height × width at a uniformly random offset (a translation of up to 12.5 %)."""

    def __init__(self, height: int, width: int, p: float = 0.5, scale: float = 1.125):
        self.height, self.width, self.p, self.scale = height, width, p, scale
        self.resize = Resize(height, width)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) < self.p:
            return self.resize(image)
        big_h, big_w = round(self.height * self.scale), round(self.width * self.scale)
        image = TF.resize(image, [big_h, big_w], antialias=True)
        top = int(torch.randint(0, big_h - self.height + 1, ()))
        left = int(torch.randint(0, big_w - self.width + 1, ()))
        return image[..., top : top + self.height, left : left + self.width]


def uniform(low: float, high: float) -> float:
    """``random.uniform(low, high)`` (``low + (high - low) · U[0, 1)``) drawn from torch's generator."""
    return low + (high - low) * float(torch.rand((), dtype=torch.float64))


def randint(low: int, high: int) -> int:
    """``random.randint(low, high)``, both ends included, drawn from torch's generator."""
    return int(torch.randint(low, high + 1, ()))


class PCALighting:
    """AlexNet's PCA lighting noise (Krizhevsky et al., as fb.resnet.torch): shift every pixel by
    one random RGB offset V · (α ⊙ λ) along the principal components of ImageNet colours, with
    probability ``p``. Input in [0, 1]."""

    def __init__(self, p: float = 0.5, std: float = 0.1):
        self.p, self.std = p, std
        self.eigval = torch.tensor(PCA_EIGVAL)
        self.eigvec = torch.tensor(PCA_EIGVEC)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) >= self.p:
            return image
        alpha = torch.randn(3) * self.std
        offset = self.eigvec @ (alpha * self.eigval)
        return image + offset.view(3, 1, 1)


class ColorAugmentation:
    """The coursework's ColorAugmentation: with probability ``p`` add the RGB offset
    (λ ⊙ α) · E, α ~ N(0, std²), to every pixel (λ: ``COURSEWORK_EIGVAL``, E:
    ``COURSEWORK_EIGVEC``). It pairs each eigenvalue with a row of E and reverses the channel
    order of AlexNet's eigenvectors, so its colour directions are not :class:`PCALighting`'s."""

    def __init__(self, p: float = 0.5, std: float = 0.1):
        self.p, self.std = p, std
        self.eigval = torch.tensor(COURSEWORK_EIGVAL)
        self.eigvec = torch.tensor(COURSEWORK_EIGVEC)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if uniform(0, 1) > self.p:
            return image
        alpha = torch.normal(mean=torch.zeros_like(self.eigval)) * self.std
        offset = torch.mm(self.eigval * alpha, self.eigvec)
        return image + offset.view(3, 1, 1)


class RandomErasing:
    """The coursework's RandomErasing (Zhong et al.): with probability ``p``, up to ``attempts``
    draws of a rectangle (area a uniform fraction in ``area`` of the image, aspect h/w uniform in
    [``min_aspect``, 1/``min_aspect``], sides rounded); the first strictly smaller than the image
    is placed uniformly and set to ``fill`` per channel, in the units of the image it is given."""

    def __init__(self, p: float = 0.5, area: tuple[float, float] = (0.02, 0.4), min_aspect: float = 0.3,
                 fill: Sequence[float] = COURSEWORK_ERASE_FILL, attempts: int = 100):  # fmt: skip
        self.p, self.area, self.min_aspect, self.fill, self.attempts = p, area, min_aspect, tuple(fill), attempts

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if uniform(0, 1) > self.p:
            return image
        _, height, width = image.shape
        for _ in range(self.attempts):
            target = uniform(*self.area) * height * width
            aspect = uniform(self.min_aspect, 1 / self.min_aspect)
            h = int(round(math.sqrt(target * aspect)))
            w = int(round(math.sqrt(target / aspect)))
            if w < width and h < height:
                top, left = randint(0, height - h), randint(0, width - w)
                image = image.clone()
                for channel in range(image.shape[0]):
                    image[channel, top : top + h, left : left + w] = self.fill[min(channel, len(self.fill) - 1)]
                return image
        return image


AUGMENTATIONS.register("random2dtranslation", Augmentation(SIZE, lambda h, w: Random2DTranslation(h, w)))
AUGMENTATIONS.register("hflip", Augmentation(PIXELS, lambda h, w: v2.RandomHorizontalFlip(p=0.5), order=0))
AUGMENTATIONS.register(
    "random_perspective", Augmentation(PIXELS, lambda h, w: v2.RandomPerspective(distortion_scale=0.5, p=0.5), order=1)
)
AUGMENTATIONS.register(
    "color_jitter", Augmentation(PIXELS, lambda h, w: v2.ColorJitter(brightness=0.2, contrast=0.15), order=2)
)
AUGMENTATIONS.register("color_aug", Augmentation(UNIT, lambda h, w: ColorAugmentation(p=0.5, std=0.1), order=0))
AUGMENTATIONS.register("pca_lighting", Augmentation(UNIT, lambda h, w: PCALighting(p=0.5, std=0.1), order=1))
AUGMENTATIONS.register("random_erasing", Augmentation(NORMALISED, lambda h, w: RandomErasing(), order=0))
AUGMENTATIONS.register(
    "random_erasing_tv",
    Augmentation(
        NORMALISED, lambda h, w: v2.RandomErasing(p=0.5, scale=(0.02, 0.4), ratio=(0.3, 3.33), value=0), order=1
    ),
)


class Compose:
    """Apply transforms in order (a plain class: picklable for DataLoader worker processes)."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:
            image = transform(image)
        return image


def to_unit(image: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [0, 1]."""
    return image.to(torch.float32).div_(255)


def normalise(image: torch.Tensor) -> torch.Tensor:
    return TF.normalize(image, list(IMAGENET_MEAN), list(IMAGENET_STD))


def train_transform(names: Iterable[str], height: int, width: int) -> Compose:
    """The training transform for augmentations ``names`` (any order; each name at most once)."""
    chosen = {name: AUGMENTATIONS.get(name, "augmentations") for name in check_augmentations(list(names))}
    staged = {stage: sorted((a.order, n) for n, a in chosen.items() if a.stage == stage) for stage in STAGES}
    steps: list[Transform] = [chosen[n].build(height, width) for _, n in staged[SIZE]] or [Resize(height, width)]
    steps += [chosen[n].build(height, width) for _, n in staged[PIXELS]]
    steps.append(to_unit)
    steps += [chosen[n].build(height, width) for _, n in staged[UNIT]]
    steps.append(normalise)
    steps += [chosen[n].build(height, width) for _, n in staged[NORMALISED]]
    return Compose(steps)


def eval_transform(height: int, width: int) -> Compose:
    """Resize to height × width and normalise: what query and gallery images go through."""
    return Compose([Resize(height, width), to_unit, normalise])
