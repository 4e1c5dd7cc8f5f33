"""Re-identification datasets: an index of image files, and images decoded on demand.

``veri776`` reads any folder in the VeRi-776 layout (VeRi itself, or a user's own re-ID data)::

    <root>/image_train/0002_c002_00030600_0.jpg   training images
    <root>/image_query/...                       query images
    <root>/image_test/...                        the gallery

A file name starts with ``<vehicle id>_c<camera id>_`` (``0002_c002_…`` → id 2, camera 2); the
rest is free. Files whose id is -1 are skipped (the junk/distractor convention of Market-1501).
Training ids are relabelled 0..N-1 in increasing order (the classifier's classes); query and
gallery keep the ids of the file names, since only equality matters there.

What :func:`load_index` returns is what expgrid loads once on the driver and shares with every
trial through Ray's object store, so it holds the index — paths, ids, cameras as NumPy arrays and
lists — not the decoded images of a 50,000-image dataset (7.7 GB at 224×224). Small datasets are
the exception: when all decoded images at the configured size fit in ``preload_mb`` (default 256
MB, ~1,700 images at 224×224; VeRi never does), they are decoded and resized once there and
shared as uint8 arrays (N, 3, H, W), so trials spend no time on JPEG decoding (tests, smoke runs,
small studies at a small image size).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF  # noqa: N812 - torchvision's convention

from expgrid.registry import Registry
from trainables.datafiles import unreadable_image
from trainables.reid.checks import check_dataset, check_dataset_files, check_root, parse_name, read_split  # noqa: F401
from trainables.reid.options import DATASET_DEFAULTS, IMAGE_SUFFIXES, MIN_SIDE, SPLITS, VERI_LAYOUT  # noqa: F401

Index = dict[str, Any]
DATASETS: Registry[Callable[[Mapping[str, Any]], Index]] = Registry("dataset")


@DATASETS.register("veri776")
def veri776(cfg: Mapping[str, Any]) -> Index:
    """The index of a VeRi-layout folder (see the module docstring), training ids relabelled."""
    root = check_root(cfg["root"])
    index: Index = {name: read_split(root / folder) for name, folder in SPLITS.items()}
    raw = index["train"]["pids"]
    ids = np.unique(raw)  # sorted: id → class number in increasing id order
    index["train"]["labels"] = np.searchsorted(ids, raw).astype(np.int64)
    index["num_train_pids"] = len(ids)
    return index


def decoded_mb(index: Index, height: int, width: int) -> float:
    """Megabytes of uint8 pixels the whole index takes decoded at height × width."""
    images = sum(len(index[split]["paths"]) for split in SPLITS)
    return images * 3 * height * width / 2**20


def read_image(path: str, height: int | None = None, width: int | None = None) -> torch.Tensor:
    """An RGB uint8 (3, H, W) tensor, resized (antialiased) to height × width when given.

    A file it cannot decode raises OSError naming it (``cannot decode image PATH: reason``)."""
    try:
        image = decode_image(path, mode=ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as e:  # torchvision's decoders raise RuntimeError
        raise unreadable_image(path, e) from e
    if height is not None and width is not None and tuple(image.shape[-2:]) != (height, width):
        image = TF.resize(image, [height, width], antialias=True)
    return image


def load_index(cfg: Mapping[str, Any]) -> Index:
    """The dataset named by ``cfg["name"]`` (``cfg``: the ``dataset`` mapping), preloaded if small.

    Preloaded splits gain ``images``: uint8 (N, 3, height, width)."""
    cfg = {**DATASET_DEFAULTS, **cfg}
    index = DATASETS.get(cfg["name"], "dataset.name")(cfg)
    height, width = int(cfg["height"]), int(cfg["width"])
    if decoded_mb(index, height, width) <= float(cfg["preload_mb"]):
        for split in SPLITS:
            paths = index[split]["paths"]
            images = np.empty((len(paths), 3, height, width), dtype=np.uint8)
            for i, path in enumerate(paths):
                images[i] = read_image(path, height, width).numpy()
            index[split]["images"] = images
    return index


class ImageSet(torch.utils.data.Dataset):
    """Item i of one split: (transform(uint8 image), target[i]); images preloaded or read from files."""

    def __init__(
        self, split: Mapping[str, Any], targets: np.ndarray, transform: Callable[[torch.Tensor], torch.Tensor]
    ):
        self.paths = split["paths"]
        self.images = split.get("images")
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.images is not None:
            # A copy: arrays from Ray's object store are read-only, and transforms may work in place.
            image = torch.tensor(self.images[i])
        else:
            image = read_image(self.paths[i])
        return self.transform(image), int(self.targets[i])
