"""Tiny generated image-classification data, for tests and smoke runs (no download needed).

Every class is a fixed random template: a 4×4 grid of random colours per channel, upsampled
(bilinear) to the image size, so it is smooth — a small convolution or MLP can learn it in a few
epochs, and small shifts, rotations or zooms keep it recognisable. A sample is its class's
template with a random contrast (0.5-1×) and brightness (±0.1) and Gaussian pixel noise (std
0.25), clipped to [0, 1]: learnable well above chance, not trivially at once. Everything is
drawn from one ``numpy`` generator seeded by the caller, so a seed gives the same data anywhere.

Three uses:

* :func:`synthetic_pool` — float32 (N, C, H, W) in [0, 1] and balanced int64 labels (the
  ``synthetic`` dataset of ``data.py``);
* :func:`write_fake_cifar10` — the same kind of images as uint8 in torchvision's
  ``cifar-10-batches-py`` pickle layout, which ``data.py``'s ``cifar10`` loader reads;
* :func:`write_fake_image_folder` — PNG files in ``train/<class>/`` and ``val/<class>/``.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from PIL import Image

from trainables.classification.layouts import CIFAR10_CLASSES, CIFAR10_FOLDER, CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES

GRID = 4  # template resolution before upsampling (cells per side)
NOISE_STD = 0.25  # Gaussian pixel noise, in units of the [0, 1] pixel range
CONTRAST = (0.5, 1.0)  # per-sample factor on the template's deviation from mid-grey
BRIGHTNESS = 0.1  # per-sample offset, uniform in ±this


def templates(rng: np.random.Generator, num_classes: int, shape: Sequence[int]) -> np.ndarray:
    """One smooth float32 (C, H, W) pattern in [0, 1] per class: (num_classes, C, H, W)."""
    channels, height, width = (int(s) for s in shape)
    coarse = torch.from_numpy(rng.random((num_classes, channels, GRID, GRID), dtype=np.float32))
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False).numpy()


def synthetic_pool(
    n: int, shape: Sequence[int], num_classes: int, seed: int, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples: float32 (n, C, H, W) in [0, 1] and int64 labels.

    Labels are balanced (``i % num_classes``, shuffled) unless given. The templates depend only on
    ``seed``, ``num_classes`` and ``shape``, so pools drawn with one seed share their classes."""
    rng = np.random.default_rng(seed)
    patterns = templates(rng, num_classes, shape)
    if labels is None:
        labels = rng.permutation(np.arange(n) % num_classes)
    labels = np.asarray(labels, dtype=np.int64)
    contrast = rng.uniform(*CONTRAST, size=(n, 1, 1, 1)).astype(np.float32)
    brightness = rng.uniform(-BRIGHTNESS, BRIGHTNESS, size=(n, 1, 1, 1)).astype(np.float32)
    x = (patterns[labels] - 0.5) * contrast + (0.5 + brightness)
    x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(NOISE_STD)
    return np.clip(x, 0.0, 1.0, out=x), labels


def _uint8(x: np.ndarray) -> np.ndarray:
    return np.rint(x * 255).astype(np.uint8)


def write_fake_cifar10(root: str | Path, n_train: int, n_test: int, *, seed: int = 0) -> Path:
    """Write a small CIFAR-10 in torchvision's layout under ``root`` and return ``root``.

    ``<root>/cifar-10-batches-py/`` gets ``data_batch_1`` … ``data_batch_5`` (the ``n_train``
    training images spread over them), ``test_batch`` (``n_test``) and ``batches.meta``: pickled
    dicts with ``data`` (uint8 N×3072, channel-major as in the real files) and ``labels``. The
    MD5 sums differ from the real files', so torchvision's ``CIFAR10`` refuses them; ``data.py``
    reads the pickles itself."""
    if n_train < 1 or n_test < 1:
        raise ValueError("need n_train >= 1 and n_test >= 1")
    folder = Path(root) / CIFAR10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    x, y = synthetic_pool(n_train + n_test, (3, 32, 32), len(CIFAR10_CLASSES), seed)
    pixels = _uint8(x).reshape(len(x), -1)
    parts = np.array_split(np.arange(n_train), len(CIFAR10_TRAIN_FILES))
    files = [*zip(CIFAR10_TRAIN_FILES, parts, strict=True), (CIFAR10_TEST_FILE, np.arange(n_train, len(x)))]
    for name, idx in files:
        batch = {
            "batch_label": f"fake {name}",
            "labels": [int(label) for label in y[idx]],
            "data": pixels[idx],
            "filenames": [f"fake_{i:06d}.png" for i in idx],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": max(len(p) for p in parts), "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return Path(root)


def write_fake_image_folder(
    root: str | Path,
    classes: int | Sequence[str],
    per_class: int,
    size: int | tuple[int, int],
    *,
    val_per_class: int | None = None,
    seed: int = 0,
) -> Path:
    """Write PNG images into ``<root>/train/<class>/`` and ``<root>/val/<class>/``; return ``root``.

    ``classes``: a count (folders ``class_00``, ``class_01``, …) or the folder names.
    ``per_class``: training images per class (``val_per_class``, default the same, for val/).
    ``size``: pixels, an int for square images or (height, width)."""
    names = [f"class_{i:02d}" for i in range(classes)] if isinstance(classes, int) else list(classes)
    height, width = (size, size) if isinstance(size, int) else size
    val_per_class = per_class if val_per_class is None else val_per_class
    if len(names) < 1 or per_class < 1 or val_per_class < 1:
        raise ValueError("need at least one class and one image per class in each split")
    counts = {"train": per_class, "val": val_per_class}
    per_split = [np.repeat(np.arange(len(names)), n) for n in counts.values()]
    x, _ = synthetic_pool(sum(map(len, per_split)), (3, height, width), len(names), seed, np.concatenate(per_split))
    images = _uint8(x).transpose(0, 2, 3, 1)  # N, H, W, C for PIL
    i = 0
    for split, labels in zip(counts, per_split, strict=True):
        for k, label in enumerate(labels):
            folder = Path(root) / split / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(folder / f"{split}_{k:05d}.png")
            i += 1
    return Path(root)


def write_fake_fashion_mnist(root: str | Path, n_train: int, n_test: int, *, seed: int = 0) -> Path:
    """Write a small Fashion-MNIST in torchvision's layout (``<root>/FashionMNIST/raw/``, the four
    IDX files, uncompressed) and return ``root``. torchvision checks only that the files exist,
    so its ``FashionMNIST`` reads them as it reads the real ones."""
    if n_train < 1 or n_test < 1:
        raise ValueError("need n_train >= 1 and n_test >= 1")
    raw = Path(root) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    x, y = synthetic_pool(n_train + n_test, (1, 28, 28), 10, seed)
    images = _uint8(x)[:, 0]
    for split, idx in (("train", slice(0, n_train)), ("t10k", slice(n_train, None))):
        n = len(images[idx])
        # IDX: a big-endian magic number (0x0803 uint8 images, 0x0801 labels), then the sizes.
        header = np.array([0x0803, n, 28, 28], dtype=">i4").tobytes()
        (raw / f"{split}-images-idx3-ubyte").write_bytes(header + images[idx].tobytes())
        header = np.array([0x0801, n], dtype=">i4").tobytes()
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(header + y[idx].astype(np.uint8).tobytes())
    return Path(root)
