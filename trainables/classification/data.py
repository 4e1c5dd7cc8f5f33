"""Image-classification datasets, loaded whole into memory as NumPy arrays.

Like airbench, the ``classify`` trainable holds the entire (small) dataset as tensors and slices
batches out of it, so there is no ``DataLoader`` and no per-sample Python. A loader here takes the
``dataset`` config mapping and returns::

    {"x_train": float32 (N, C, H, W) in [0, 1], "y_train": int64 (N,),
     "x_val": ..., "y_val": ..., "x_test": ..., "y_test": ..., "num_classes": int}

NumPy (not torch) because expgrid loads the data once on the driver and puts it in Ray's object
store, where NumPy arrays are shared zero-copy (and arrive read-only) in every trial.

Splits are reproducible: the pool is shuffled with ``dataset.seed`` (independent of the training
seed, so changing the training seed does not change which samples are validated on), the first
``train_size`` samples train, the next ``val_size`` validate, the rest test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from expgrid.errors import ConfigError
from expgrid.registry import Registry

DATASET_DEFAULTS: dict[str, Any] = {
    "name": "digits",
    "root": None,  # torchvision root directory (fashion_mnist)
    "path": None,  # .npz with `images` (uint8 N×H×W) and `labels` (fashion_mnist)
    "download": False,  # let torchvision download into `root` when it is missing
    "train_size": 1000,  # samples
    "val_size": 500,  # samples
    "seed": 0,  # seed of the shuffle that picks the splits
}

Arrays = dict[str, Any]
DATASETS: Registry[Callable[[Mapping[str, Any]], Arrays]] = Registry("dataset")

# Samples each source holds, for checking sizes before any data is read (None: only known on load).
DIGITS_SAMPLES = 1797
FASHION_MNIST_TRAIN_SAMPLES = 60_000


def load_dataset(cfg: Mapping[str, Any]) -> Arrays:
    """Load the dataset named by ``cfg["name"]`` (``cfg`` is the ``dataset`` config mapping)."""
    cfg = {**DATASET_DEFAULTS, **cfg}
    return DATASETS.get(cfg["name"], "dataset.name")(cfg)


def check_dataset(cfg: Mapping[str, Any]) -> None:
    """Reject a ``dataset`` config that cannot load, without reading any data (cheap stat calls only)."""
    cfg = {**DATASET_DEFAULTS, **cfg}
    DATASETS.get(cfg["name"], "dataset.name")
    for key in ("train_size", "val_size"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"dataset.{key}", "an integer number of samples >= 1", value)
    if isinstance(cfg["seed"], bool) or not isinstance(cfg["seed"], int):
        raise ConfigError("dataset.seed", "an integer", cfg["seed"])
    available = {"digits": DIGITS_SAMPLES}.get(cfg["name"])
    if cfg["name"] == "fashion_mnist":
        _fashion_mnist_source(cfg)  # raises when neither a readable file nor a root is given
        if cfg["path"] is None:
            available = FASHION_MNIST_TRAIN_SAMPLES
    if available is not None:
        _check_sizes(cfg, available)


def _check_sizes(cfg: Mapping[str, Any], available: int) -> None:
    need = cfg["train_size"] + cfg["val_size"]
    if need > available:
        raise ConfigError(
            "dataset.train_size",
            f"train_size + val_size <= {available} (the samples {cfg['name']} has for training and validation)",
            f"{cfg['train_size']} + {cfg['val_size']} = {need}",
        )


def split_shuffled(
    images: np.ndarray,
    labels: np.ndarray,
    cfg: Mapping[str, Any],
    num_classes: int,
    scale: float,
    keep_rest: bool = True,
) -> Arrays:
    """Shuffle one pool with ``cfg["seed"]`` and cut it into train / val / test (the rest).

    ``images``: (N, H, W) or (N, C, H, W) of raw pixel values, multiplied by ``scale`` into [0, 1]
    after the split, so a large pool is converted to float32 only for the samples kept.
    ``keep_rest=False`` drops the rest (when the test set comes from elsewhere)."""
    _check_sizes(cfg, len(images))
    order = np.random.default_rng(cfg["seed"]).permutation(len(images))
    n_train, n_val = cfg["train_size"], cfg["val_size"]
    parts = {"train": order[:n_train], "val": order[n_train : n_train + n_val]}
    if keep_rest:
        parts["test"] = order[n_train + n_val :]
    out: Arrays = {"num_classes": num_classes}
    for split, idx in parts.items():
        out[f"x_{split}"] = to_unit(images[idx], scale)
        out[f"y_{split}"] = labels[idx].astype(np.int64)
    return out


def to_unit(images: np.ndarray, scale: float) -> np.ndarray:
    """Raw pixels → contiguous float32 (N, C, H, W) in [0, 1] (a channel axis is added to N×H×W)."""
    x = images.astype(np.float32) * np.float32(scale)
    return np.ascontiguousarray(x[:, None] if x.ndim == 3 else x)


@DATASETS.register("digits")
def digits(cfg: Mapping[str, Any]) -> Arrays:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes; no download).

    Pixel values are 0..16, scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return split_shuffled(bunch.images, bunch.target, cfg, num_classes=10, scale=1 / 16)


def _fashion_mnist_source(cfg: Mapping[str, Any]) -> tuple[str, Path]:
    """("path", file) or ("root", directory); raises ConfigError when it cannot be read."""
    if cfg["path"] is not None:
        path = Path(cfg["path"]).expanduser()
        if not path.is_file():
            raise ConfigError("dataset.path", "an existing .npz file with `images` and `labels`", str(path))
        return "path", path
    if cfg["root"] is None:
        raise ConfigError(
            "dataset.path",
            "an .npz file (dataset.path) or a torchvision root directory (dataset.root) for fashion_mnist",
            None,
        )
    root = Path(cfg["root"]).expanduser()
    raw = root / "FashionMNIST" / "raw"
    needed = [raw / f"{s}-{k}-ubyte" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]
    legacy = [root / "FashionMNIST" / "processed" / f for f in ("training.pt", "test.pt")]  # older torchvision
    present = all(p.is_file() for p in needed) or all(p.is_file() for p in legacy)
    if not cfg["download"] and not present:
        raise ConfigError(
            "dataset.root",
            "a directory holding torchvision's FashionMNIST/raw files; set dataset.download: true to "
            "download them there, or give dataset.path (an .npz with images and labels)",
            str(root),
        )
    return "root", root


@DATASETS.register("fashion_mnist")
def fashion_mnist(cfg: Mapping[str, Any]) -> Arrays:
    """Fashion-MNIST (28×28 grey images, 10 classes), from an .npz file or a torchvision root.

    ``path``: one pool (e.g. a subset of the test set) split into train / val / test (the rest).
    ``root``: train and val drawn from the 60,000 training images, test = the 10,000 test images.
    Pixel values are 0..255, scaled to [0, 1]."""
    kind, where = _fashion_mnist_source(cfg)
    if kind == "path":
        with np.load(where) as npz:
            missing = {"images", "labels"} - set(npz.files)
            if missing:
                raise ConfigError("dataset.path", f"an .npz with arrays {sorted(missing)}", str(where))
            images, labels = npz["images"], npz["labels"]
        return split_shuffled(images, labels, cfg, num_classes=10, scale=1 / 255)

    from torchvision.datasets import FashionMNIST

    try:
        train = FashionMNIST(str(where), train=True, download=bool(cfg["download"]))
        test = FashionMNIST(str(where), train=False, download=bool(cfg["download"]))
    except (RuntimeError, OSError) as e:  # missing files, or a failed download
        raise ConfigError(
            "dataset.root", f"a readable FashionMNIST root (download={cfg['download']}: {e})", str(where)
        ) from None
    # .data / .targets are the whole split as uint8 / int64 tensors: no per-sample __getitem__.
    out = split_shuffled(train.data.numpy(), train.targets.numpy(), cfg, num_classes=10, scale=1 / 255, keep_rest=False)
    out["x_test"] = to_unit(test.data.numpy(), 1 / 255)
    out["y_test"] = test.targets.numpy().astype(np.int64)
    return out
