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

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF  # noqa: N812 - torchvision's convention

from expgrid.errors import ConfigError
from expgrid.registry import Registry
from trainables.datafiles import unreadable_image

DATASET_DEFAULTS: dict[str, Any] = {
    "name": "veri776",
    "root": None,  # the folder holding image_train/, image_query/, image_test/
    "height": 224,  # pixels: images are resized to height × width
    "width": 224,
    "preload_mb": 256,  # decode the whole dataset once on the driver when it fits in this many MB (0: never)
}
SPLITS = {"train": "image_train", "query": "image_query", "gallery": "image_test"}
VERI_LAYOUT = (
    "a folder in the VeRi-776 layout: <root>/image_train/ (training images), <root>/image_query/ (queries), "
    "<root>/image_test/ (the gallery), each holding images named <vehicle id>_c<camera id>_<anything>.jpg, "
    "e.g. 0002_c002_00030600_0.jpg"
)
MIN_SIDE = 16  # pixels: the smallest image side accepted (a ResNet reduces 32×)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
NAME_PATTERN = re.compile(r"^(-?\d+)_c(\d+)")

Index = dict[str, Any]
DATASETS: Registry[Callable[[Mapping[str, Any]], Index]] = Registry("dataset")


def parse_name(file_name: str) -> tuple[int, int]:
    """(vehicle id, camera id) of a file name such as ``0002_c002_00030600_0.jpg``."""
    match = NAME_PATTERN.match(file_name)
    if match is None:
        raise ValueError(
            f"{file_name!r} does not start with <vehicle id>_c<camera id>_ (e.g. 0002_c002_00030600_0.jpg)"
        )
    return int(match.group(1)), int(match.group(2))


def check_root(root: Any, field: str = "dataset.root") -> Path:
    """The root as a Path when its three split folders exist (stat calls only)."""
    if not isinstance(root, (str, Path)):
        raise ConfigError(field, VERI_LAYOUT, root)
    path = Path(root).expanduser()
    missing = [folder for folder in SPLITS.values() if not (path / folder).is_dir()]
    if missing:
        raise ConfigError(field, f"{VERI_LAYOUT} (missing: {', '.join(missing)})", str(path))
    return path


def read_split(folder: Path, field: str = "dataset.root") -> dict[str, Any]:
    """The images of one split folder, in file-name order: paths, ids and cameras."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    paths, pids, camids = [], [], []
    for path in files:
        try:
            pid, camid = parse_name(path.name)
        except ValueError as e:
            raise ConfigError(field, f"{VERI_LAYOUT} ({e})", str(path)) from None
        if pid == -1:
            continue
        paths.append(str(path))
        pids.append(pid)
        camids.append(camid)
    if not paths:
        raise ConfigError(field, f"{VERI_LAYOUT} ({folder.name}/ has no such images)", str(folder.parent))
    return {"paths": paths, "pids": np.asarray(pids, dtype=np.int64), "camids": np.asarray(camids, dtype=np.int64)}


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


def check_dataset(cfg: Mapping[str, Any]) -> None:
    """Reject a ``dataset`` config whose values cannot load, looking at no file (``expgrid show``
    runs it where the data is not; :func:`check_dataset_files` looks at the files)."""
    cfg = {**DATASET_DEFAULTS, **cfg}
    DATASETS.get(cfg["name"], "dataset.name")
    for key in ("height", "width"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < MIN_SIDE:
            raise ConfigError(f"dataset.{key}", f"an integer number of pixels >= {MIN_SIDE}", value)
    mb = cfg["preload_mb"]
    if isinstance(mb, bool) or not isinstance(mb, (int, float)) or mb < 0:
        raise ConfigError("dataset.preload_mb", "a number of megabytes >= 0 (0: never preload)", mb)
    if not isinstance(cfg["root"], (str, Path)):
        raise ConfigError("dataset.root", VERI_LAYOUT, cfg["root"])


def check_dataset_files(cfg: Mapping[str, Any]) -> None:
    """Reject a ``dataset`` whose files are not a VeRi-776 layout the loader can read: the three
    split folders, each with images named ``<id>_c<camera>_…`` (the loader's own listing), and
    every image's header (``trainables.datafiles.check_image_headers``)."""
    from trainables.datafiles import check_image_headers

    cfg = {**DATASET_DEFAULTS, **cfg}
    root = check_root(cfg["root"])
    for folder in SPLITS.values():
        split = read_split(root / folder)
        check_image_headers(split["paths"], "dataset.root", "VeRi-776 image files")
