"""Image-classification datasets: small ones held whole in memory, large ones as lists of files.

Like airbench, the ``classify`` trainable holds a small dataset whole as tensors and slices batches
out of it, so there is no ``DataLoader`` and no per-sample Python. A loader here takes the
``dataset`` config mapping and returns one of two kinds of data (``batches.make_splits`` turns
either into batch sources):

* arrays (``digits``, ``fashion_mnist``, ``cifar10``, ``synthetic``; ``moons``, ``circles``,
  ``spirals``: 2-D points, ``x_*`` float32 (N, 2), see ``two_d.py``)::

    {"x_train": float32 (N, C, H, W) in [0, 1], "y_train": int64 (N,),
     "x_val": ..., "y_val": ..., "x_test": ..., "y_test": ..., "num_classes": int,
     "classes": list[str] (cifar10 only: the class names, for reports)}

* files (``image_folder``): only the list of image files, decoded in each trial by DataLoader
  workers, since a dataset like Tiny-ImageNet (100,000 images) is too large to share decoded::

    {"paths_train": list[str] (absolute), "y_train": int64 (N,), "paths_val": ..., "y_val": ...,
     "num_classes": int, "classes": list[str], "image_size": int (pixels), "loader_workers": int}

NumPy (not torch) because expgrid loads the data once on the driver and puts it in Ray's object
store, where NumPy arrays are shared zero-copy (and arrive read-only) in every trial.

Splits are reproducible: the pool is shuffled with ``dataset.seed`` (independent of the training
seed, so changing the training seed does not change which samples are validated on), the first
``train_size`` samples train, the next ``val_size`` validate, the rest test.

Some options decide the data of one dataset only (``OWN_KEYS``: ``image_size``, ``train_dir``,
``val_dir`` of ``image_folder``; ``shape``, ``num_classes`` of ``synthetic``; ``n_samples``,
``noise`` of the point datasets); on any other
dataset they must keep their defaults, so a value that would be silently ignored is rejected
instead. ``loader_workers`` says how, not what, to load, so in-memory datasets just ignore it.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from expgrid.errors import ConfigError
from expgrid.registry import Registry
from trainables.classification.layouts import (  # noqa: F401 - CIFAR10_CLASSES: re-exported
    CIFAR10_CLASSES,
    CIFAR10_FOLDER,
    CIFAR10_TEST_FILE,
    CIFAR10_TRAIN_FILES,
)
from trainables.classification.two_d import (
    POINT_DATASETS,
    check_points,
    generate,
    is_point_dataset,
    noise_of,
    pool_size,
)

DATASET_DEFAULTS: dict[str, Any] = {
    "name": "digits",
    # torchvision root directory (fashion_mnist, cifar10); the folder holding train_dir and val_dir (image_folder)
    "root": None,
    "path": None,  # .npz with `images` (uint8) and `labels` (fashion_mnist, cifar10)
    "download": False,  # let torchvision download into `root` when it is missing
    "train_size": 1000,  # samples (image_folder: null = every file)
    "val_size": 500,  # samples (image_folder: null = every file; synthetic: also the test size)
    "seed": 0,  # seed of the shuffle that picks the splits (synthetic: also of the generated data)
    "image_size": None,  # pixels, side of the square images are resized to (image_folder; null: 64)
    "train_dir": "train",  # image_folder: the training class folders, relative to root
    "val_dir": "val",  # image_folder: the validation class folders, relative to root
    # image_folder: DataLoader processes decoding images per trial (0: the trial's own; others ignore it)
    "loader_workers": 2,
    "shape": [3, 32, 32],  # synthetic: [channels, height, width] of an image, pixels
    "num_classes": 10,  # synthetic: classes
    "n_samples": None,  # moons / circles / spirals: points generated (null: train_size + 2 × val_size)
    "noise": None,  # moons / circles / spirals: Gaussian noise std (null: 0.1 / 0.05 / 0.2; two_d.py)
}
# Options deciding the data of some datasets only; elsewhere they must keep their defaults (see above).
OWN_KEYS: dict[str, tuple[str, ...]] = {
    "image_size": ("image_folder",),
    "train_dir": ("image_folder",),
    "val_dir": ("image_folder",),
    "shape": ("synthetic",),
    "num_classes": ("synthetic",),
    "n_samples": POINT_DATASETS,
    "noise": POINT_DATASETS,
}
IMAGE_FOLDER_SIZE = 64  # pixels: image_folder's image_size when null (Tiny-ImageNet's own size)

Arrays = dict[str, Any]
DATASETS: Registry[Callable[[Mapping[str, Any]], Arrays]] = Registry("dataset")

# Samples each source holds, for checking sizes before any data is read (None: only known on load).
DIGITS_SAMPLES = 1797
FASHION_MNIST_TRAIN_SAMPLES = 60_000
CIFAR10_TRAIN_SAMPLES = 50_000


def load_dataset(cfg: Mapping[str, Any]) -> Arrays:
    """Load the dataset named by ``cfg["name"]`` (``cfg`` is the ``dataset`` config mapping)."""
    cfg = {**DATASET_DEFAULTS, **cfg}
    return DATASETS.get(cfg["name"], "dataset.name")(cfg)


def check_dataset(cfg: Mapping[str, Any]) -> None:
    """Reject a ``dataset`` config whose values cannot load, looking at no file (``expgrid show``
    runs it where the data is not; :func:`check_dataset_files` looks at the files)."""
    cfg = {**DATASET_DEFAULTS, **cfg}
    name = cfg["name"]
    DATASETS.get(name, "dataset.name")
    for key in ("train_size", "val_size"):
        value = cfg[key]
        if value is None and name == "image_folder":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            every = " (or null: every file)" if name == "image_folder" else ""
            raise ConfigError(f"dataset.{key}", f"an integer number of samples >= 1{every}", value)
    if isinstance(cfg["seed"], bool) or not isinstance(cfg["seed"], int):
        raise ConfigError("dataset.seed", "an integer", cfg["seed"])
    if not isinstance(cfg["download"], bool):
        raise ConfigError("dataset.download", "true or false", cfg["download"])
    workers = cfg["loader_workers"]
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError("dataset.loader_workers", "an integer number of processes >= 0", workers)
    _check_own_keys(cfg)
    available = {"digits": DIGITS_SAMPLES}.get(name)
    if name == "fashion_mnist":
        if _source_kind(cfg) == "root":  # raises when neither a file nor a root is given
            available = FASHION_MNIST_TRAIN_SAMPLES
    elif name == "cifar10":
        if _source_kind(cfg) == "root":
            available = CIFAR10_TRAIN_SAMPLES
    elif name == "image_folder":
        _check_image_folder_options(cfg)
    elif name == "synthetic":
        _check_synthetic(cfg)
    elif is_point_dataset(name):
        check_points(cfg)
    if available is not None:
        _check_sizes(cfg, available)


def _check_own_keys(cfg: Mapping[str, Any]) -> None:
    """Dataset-specific options other than their defaults on a dataset that would ignore them."""
    for key, users in OWN_KEYS.items():
        value, default = cfg[key], DATASET_DEFAULTS[key]
        same = list(value) == default if isinstance(value, (list, tuple)) else value == default
        if cfg["name"] not in users and not same:
            raise ConfigError(
                f"dataset.{key}",
                f"the default {default!r}: {key} applies to dataset {' or '.join(users)} only, not {cfg['name']}",
                value,
            )


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


def _source_kind(cfg: Mapping[str, Any]) -> str:
    """Which source the values name: "path" (an .npz) or "root" (a torchvision root)."""
    if cfg["path"] is not None:
        if not isinstance(cfg["path"], (str, Path)):
            raise ConfigError("dataset.path", "the path of an .npz file with `images` and `labels`", cfg["path"])
        return "path"
    if cfg["root"] is None:
        raise ConfigError(
            "dataset.path",
            f"an .npz file (dataset.path) or a torchvision root directory (dataset.root) for {cfg['name']}",
            None,
        )
    if not isinstance(cfg["root"], (str, Path)):
        raise ConfigError("dataset.root", f"the path of a torchvision root directory for {cfg['name']}", cfg["root"])
    return "root"


def _npz_or_root(cfg: Mapping[str, Any], present: Callable[[Path], bool], layout: str) -> tuple[str, Path]:
    """("path", file) or ("root", directory); raises ConfigError when it cannot be read.

    ``present(root)``: whether the root holds the dataset's files (stat calls only); ``layout``
    says what it should hold, for the error."""
    if _source_kind(cfg) == "path":
        path = Path(cfg["path"]).expanduser()
        if not path.is_file():
            raise ConfigError("dataset.path", "an existing .npz file with `images` and `labels`", str(path))
        return "path", path
    root = Path(cfg["root"]).expanduser()
    if not cfg["download"] and not present(root):
        raise ConfigError(
            "dataset.root",
            f"a directory holding {layout}; set dataset.download: true to download them there, "
            "or give dataset.path (an .npz with images and labels)",
            str(root),
        )
    return "root", root


def _fashion_mnist_present(root: Path) -> bool:
    raw = root / "FashionMNIST" / "raw"
    needed = [raw / f"{s}-{k}-ubyte" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]
    legacy = [root / "FashionMNIST" / "processed" / f for f in ("training.pt", "test.pt")]  # older torchvision
    return all(p.is_file() for p in needed) or all(p.is_file() for p in legacy)


def _fashion_mnist_source(cfg: Mapping[str, Any]) -> tuple[str, Path]:
    return _npz_or_root(cfg, _fashion_mnist_present, "torchvision's FashionMNIST/raw files")


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``images`` and ``labels`` of an .npz file (ConfigError naming dataset.path otherwise)."""
    with np.load(path) as npz:
        missing = {"images", "labels"} - set(npz.files)
        if missing:
            raise ConfigError("dataset.path", f"an .npz with arrays {sorted(missing)}", str(path))
        images, labels = npz["images"], npz["labels"]
    if len(images) != len(labels):
        raise ConfigError("dataset.path", "as many labels as images", f"{len(labels)} labels, {len(images)} images")
    return images, labels


@DATASETS.register("fashion_mnist")
def fashion_mnist(cfg: Mapping[str, Any]) -> Arrays:
    """Fashion-MNIST (28×28 grey images, 10 classes), from an .npz file or a torchvision root.

    ``path``: one pool (e.g. a subset of the test set) split into train / val / test (the rest).
    ``root``: train and val drawn from the 60,000 training images, test = the 10,000 test images.
    Pixel values are 0..255, scaled to [0, 1]."""
    kind, where = _fashion_mnist_source(cfg)
    if kind == "path":
        images, labels = _read_npz(where)
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


def _cifar10_present(root: Path) -> bool:
    folder = root / CIFAR10_FOLDER
    return all((folder / name).is_file() for name in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE))


def _cifar10_source(cfg: Mapping[str, Any]) -> tuple[str, Path]:
    return _npz_or_root(
        cfg, _cifar10_present, f"torchvision's {CIFAR10_FOLDER}/ (data_batch_1 … data_batch_5, test_batch)"
    )


def _read_cifar10_batches(root: Path, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 3, 32, 32) images and int64 labels of CIFAR-10 pickle batches, in file order.

    Read here rather than through torchvision's ``CIFAR10``, which insists on the real files' MD5
    sums (so generated test files could not be read); the format is the same. Like torchvision,
    this unpickles the files: only point ``dataset.root`` at files you trust."""
    images, labels = [], []
    for name in names:
        try:
            with open(root / CIFAR10_FOLDER / name, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            # Rows are 3072 bytes, channel-major (1024 red, 1024 green, 1024 blue): already C, H, W.
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(entry["labels"], dtype=np.int64))
        except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as e:
            raise ConfigError(
                "dataset.root", f"readable CIFAR-10 pickle batches ({CIFAR10_FOLDER}/{name}: {e!r})", str(root)
            ) from None
    return np.concatenate(images), np.concatenate(labels)


def _cifar10_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The .npz pool as uint8 (N, 3, 32, 32) (a transposed view when stored N, 32, 32, 3) and labels."""
    images, labels = _read_npz(path)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] not in ((32, 32, 3), (3, 32, 32)):
        got = f"{images.dtype} images of shape {images.shape}"
        raise ConfigError("dataset.path", "uint8 images of shape N×32×32×3 or N×3×32×32", got)
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ConfigError("dataset.path", "labels 0..9", f"labels {labels.min()}..{labels.max()}")
    # A view: split_shuffled gathers and converts only the samples it keeps.
    return (images.transpose(0, 3, 1, 2) if images.shape[-1] == 3 else images), labels


@DATASETS.register("cifar10")
def cifar10(cfg: Mapping[str, Any]) -> Arrays:
    """CIFAR-10 (32×32 RGB images, 10 classes), from an .npz file or a torchvision root.

    ``path``: an .npz with ``images`` (uint8 N×32×32×3 or N×3×32×32) and ``labels``, one pool split
    into train / val / test (the rest). ``root``: torchvision's layout,
    ``<root>/cifar-10-batches-py/data_batch_1`` … ``data_batch_5`` and ``test_batch``; train and
    val drawn from the 50,000 training images, test = the 10,000 test images. With
    ``download: true`` and the files missing, torchvision downloads (and checks) them first.
    Pixel values are 0..255, scaled to [0, 1]."""
    kind, where = _cifar10_source(cfg)
    if kind == "path":
        images, labels = _cifar10_npz(where)
        return {**split_shuffled(images, labels, cfg, num_classes=10, scale=1 / 255), "classes": list(CIFAR10_CLASSES)}
    if not _cifar10_present(where):  # download: true (checked by _cifar10_source)
        from torchvision.datasets import CIFAR10

        try:
            CIFAR10(str(where), train=True, download=True)
        except (RuntimeError, OSError) as e:
            raise ConfigError(
                "dataset.root", f"a root torchvision can download CIFAR-10 into ({e})", str(where)
            ) from None
    images, labels = _read_cifar10_batches(where, CIFAR10_TRAIN_FILES)
    out = split_shuffled(images, labels, cfg, num_classes=10, scale=1 / 255, keep_rest=False)
    test_images, test_labels = _read_cifar10_batches(where, (CIFAR10_TEST_FILE,))
    out["x_test"] = to_unit(test_images, 1 / 255)
    out["y_test"] = test_labels
    out["classes"] = list(CIFAR10_CLASSES)
    return out


def image_folder_layout(cfg: Mapping[str, Any]) -> str:
    """What an image_folder root must hold, for error messages."""
    return (
        f"a folder in torchvision's ImageFolder layout: <root>/{cfg['train_dir']}/<class>/<image> for training "
        f"and <root>/{cfg['val_dir']}/<class>/<image> for validation, the same class folders in both "
        "(e.g. train/cat/001.png, val/cat/101.png)"
    )


def class_folders(folder: Path) -> list[str]:
    """The sorted names of ``folder``'s sub-folders (ImageFolder's classes); one directory listing."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir())


def _check_image_folder_options(cfg: Mapping[str, Any]) -> None:
    size = cfg["image_size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ConfigError("dataset.image_size", "an integer number of pixels >= 1, or null (64)", size)
    for key in ("train_dir", "val_dir"):
        if not isinstance(cfg[key], str) or not cfg[key]:
            raise ConfigError(f"dataset.{key}", "a folder name relative to dataset.root", cfg[key])
    if cfg["train_dir"] == cfg["val_dir"]:
        raise ConfigError(
            "dataset.val_dir", "a folder other than train_dir (validation needs unseen images)", cfg["val_dir"]
        )
    if not isinstance(cfg["root"], (str, Path)):
        raise ConfigError("dataset.root", image_folder_layout(cfg), cfg["root"])


def _image_folder_root(cfg: Mapping[str, Any]) -> tuple[Path, list[str]]:
    """(absolute root, class names) after checking the options and the two folders' classes.

    Lists only the top level of each split folder (no image files). The root is made absolute
    because trials run in another working directory."""
    _check_image_folder_options(cfg)
    layout = image_folder_layout(cfg)
    root = Path(cfg["root"]).expanduser().resolve()
    classes = {}
    for key in ("train_dir", "val_dir"):
        folder = root / cfg[key]
        found = class_folders(folder) if folder.is_dir() else []
        if not found:
            problem = "has no class folders" if folder.is_dir() else "is missing"
            raise ConfigError("dataset.root", f"{layout} ({cfg[key]}/ {problem})", str(root))
        classes[key] = found
    if classes["train_dir"] != classes["val_dir"]:
        only_train = sorted(set(classes["train_dir"]) - set(classes["val_dir"]))
        only_val = sorted(set(classes["val_dir"]) - set(classes["train_dir"]))
        raise ConfigError(
            "dataset.root",
            f"{layout} (classes only in {cfg['train_dir']}/: {only_train[:5]}, only in {cfg['val_dir']}/: {only_val[:5]})",
            str(root),
        )
    return root, classes["train_dir"]


@DATASETS.register("image_folder")
def image_folder(cfg: Mapping[str, Any]) -> Arrays:
    """The file lists of ``<root>/<train_dir>`` and ``<root>/<val_dir>``, class folders in both.

    Any torchvision ``ImageFolder`` layout works. Tiny-ImageNet's ``train/`` does as it is; its
    ``val/`` (images/ plus val_annotations.txt) must first be arranged into one folder per class.
    Images are not read here: each trial decodes them with ``loader_workers`` DataLoader workers,
    resized to ``image_size`` × ``image_size`` (RGB, [0, 1]). So the paths must be readable where
    the trials run (one machine, or a shared file system). ``train_size`` / ``val_size``: a random
    subset of that many files (seeded by ``dataset.seed``), or null for all. A ``test/`` folder
    of the same class folders, when there is one, is the test split (every file; ``test: best``);
    without it there is no test split."""
    from torchvision.datasets import ImageFolder

    root, classes = _image_folder_root(cfg)
    out: Arrays = {
        "num_classes": len(classes),
        "classes": classes,
        "image_size": IMAGE_FOLDER_SIZE if cfg["image_size"] is None else int(cfg["image_size"]),
        "loader_workers": int(cfg["loader_workers"]),
    }
    rng = np.random.default_rng(cfg["seed"])
    for split, dir_key, size_key in (("train", "train_dir", "train_size"), ("val", "val_dir", "val_size")):
        try:
            folder = ImageFolder(str(root / cfg[dir_key]))  # lists files; decodes none
        except (FileNotFoundError, OSError) as e:  # e.g. a class folder without images
            raise ConfigError("dataset.root", f"{image_folder_layout(cfg)} ({e})", str(root)) from None
        paths = np.array([path for path, _ in folder.samples], dtype=object)
        labels = np.array([target for _, target in folder.samples], dtype=np.int64)
        order = rng.permutation(len(paths))  # drawn even when unused: val's subset does not depend on train_size
        size = cfg[size_key]
        if size is not None:
            if size > len(paths):
                raise ConfigError(
                    f"dataset.{size_key}", f"at most the {len(paths)} images in {root / cfg[dir_key]}, or null", size
                )
            keep = np.sort(order[:size])  # file order: neighbouring files are read together
            paths, labels = paths[keep], labels[keep]
        out[f"paths_{split}"] = paths.tolist()
        out[f"y_{split}"] = labels
    test = root / "test"  # the test split (test: best), every file, when the folder is there
    if test.is_dir():
        try:
            folder = ImageFolder(str(test))
        except (FileNotFoundError, OSError) as e:
            raise ConfigError("dataset.root", f"{image_folder_layout(cfg)} ({e})", str(root)) from None
        if folder.classes != classes:
            raise ConfigError("dataset.root", f"{image_folder_layout(cfg)} (test/ with the class folders of "
                              f"{cfg['train_dir']}/)", str(root))  # fmt: skip
        out["paths_test"] = [path for path, _ in folder.samples]
        out["y_test"] = np.array([target for _, target in folder.samples], dtype=np.int64)
    return out


def _check_synthetic(cfg: Mapping[str, Any]) -> None:
    shape = cfg["shape"]
    if (
        not isinstance(shape, (list, tuple))
        or len(shape) != 3
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape)
    ):
        raise ConfigError("dataset.shape", "[channels, height, width]: three integers >= 1", shape)
    classes = cfg["num_classes"]
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
        raise ConfigError("dataset.num_classes", "an integer >= 2", classes)


@DATASETS.register("synthetic")
def synthetic(cfg: Mapping[str, Any]) -> Arrays:
    """Generated data (``synthetic.py``) for tests and smoke runs: ``num_classes`` smooth random
    templates of ``shape`` plus noise, learnable by a small model in a few epochs.

    ``train_size``, ``val_size`` and a test split of ``val_size`` samples, balanced classes, all
    fixed by ``dataset.seed``."""
    _check_synthetic(cfg)
    n_train, n_val = int(cfg["train_size"]), int(cfg["val_size"])
    from trainables.classification.synthetic import synthetic_pool  # torch: only when generating

    x, y = synthetic_pool(n_train + 2 * n_val, cfg["shape"], int(cfg["num_classes"]), int(cfg["seed"]))
    out: Arrays = {"num_classes": int(cfg["num_classes"])}
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(x))}
    for split, (lo, hi) in bounds.items():
        out[f"x_{split}"] = np.ascontiguousarray(x[lo:hi])
        out[f"y_{split}"] = y[lo:hi]
    return out


def _points(cfg: Mapping[str, Any]) -> Arrays:
    """A generated 2-D point dataset (``two_d.py``), split like the others (``split_shuffled``)."""
    check_points(cfg)
    x, y = generate(cfg["name"], pool_size(cfg), noise_of(cfg), int(cfg["seed"]))
    return split_shuffled(x, y, cfg, num_classes=2, scale=1.0)


for _name in POINT_DATASETS:
    DATASETS.register(_name, _points)


# ---------------------------------------------------------------------------------------------
# The files, checked before a run (``check_data``): what the loaders above would read, looked at
# cheaply — headers, listings and sizes, and the labels of an .npz (small), never the images.


def check_dataset_files(cfg: Mapping[str, Any]) -> None:
    """Reject a ``dataset`` config whose files are missing or not what its loader reads.

    .npz (``path``): arrays ``images`` and ``labels`` of equal length, integer labels (0..9),
    images N×H×W or N×C×H×W of numbers (cifar10: uint8 N×32×32×3 or N×3×32×32), at least
    train_size + val_size of them. torchvision roots: Fashion-MNIST's four IDX files (magic
    numbers, 28×28, as many labels as images, sizes matching their headers; not checked when
    ``download: true`` will fetch them), CIFAR-10's six pickle batches (each a complete pickle:
    valid first opcode, STOP last). image_folder: the layout, images in every class folder,
    train_size / val_size within the counts, and every file's image header
    (``trainables.datafiles``). digits, synthetic and the point datasets have no files."""
    cfg = {**DATASET_DEFAULTS, **cfg}
    name = cfg["name"]
    if name == "fashion_mnist":
        kind, where = _fashion_mnist_source(cfg)
        if kind == "path":
            _check_pool_npz(where, cfg, cifar=False)
        elif all(p.is_file() for p in _idx_files(where)):  # else torchvision's legacy files, or a download
            _check_idx_files(where)
    elif name == "cifar10":
        if _source_kind(cfg) == "root":
            _check_cifar10_folder(Path(cfg["root"]).expanduser(), bool(cfg["download"]))
        kind, where = _cifar10_source(cfg)
        if kind == "path":
            _check_pool_npz(where, cfg, cifar=True)
    elif name == "image_folder":
        _check_image_folder_files(cfg)


def _check_pool_npz(path: Path, cfg: Mapping[str, Any], cifar: bool) -> None:
    from trainables.datafiles import npz_arrays

    shapes = "uint8 images of shape N×32×32×3 or N×3×32×32" if cifar else "images of shape N×H×W or N×C×H×W"
    expected = f"an .npz with arrays `images` ({shapes}) and `labels` (N integers 0..9)"
    try:
        arrays = npz_arrays(path)
    except ValueError as e:
        raise ConfigError("dataset.path", expected, f"{path} ({e})") from None
    if not {"images", "labels"} <= set(arrays):
        raise ConfigError("dataset.path", expected, f"{path} (arrays: {', '.join(sorted(arrays)) or 'none'})")
    (images, image_type), (labels, label_type) = arrays["images"], arrays["labels"]
    if cifar:
        good_images = image_type == np.uint8 and len(images) == 4 and images[1:] in ((32, 32, 3), (3, 32, 32))
    else:
        good_images = image_type.kind in "uif" and len(images) in (3, 4)
    if not good_images:
        raise ConfigError("dataset.path", expected, f"{path} (images: {image_type} of shape {images})")
    if label_type.kind not in "ui" or len(labels) != 1:
        raise ConfigError("dataset.path", expected, f"{path} (labels: {label_type} of shape {labels})")
    if labels[0] != images[0]:
        raise ConfigError("dataset.path", expected, f"{path} ({images[0]} images, {labels[0]} labels)")
    with np.load(path) as npz:  # the labels only: N integers, a small part of the file
        values = npz["labels"]
    if len(values) and (values.min() < 0 or values.max() > 9):
        raise ConfigError("dataset.path", expected, f"{path} (labels {values.min()}..{values.max()})")
    need = cfg["train_size"] + cfg["val_size"]
    if need > images[0]:
        raise ConfigError("dataset.train_size", f"train_size + val_size <= {images[0]} (the images in {path})",
                          f"{cfg['train_size']} + {cfg['val_size']} = {need}")  # fmt: skip


def _idx_files(root: Path) -> list[Path]:
    raw = root / "FashionMNIST" / "raw"
    return [
        raw / f"{split}-{kind}" for split in ("train", "t10k") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
    ]


def _check_idx_files(root: Path) -> None:
    """Fashion-MNIST's IDX files: a big-endian header (magic number, then the sizes) and the bytes."""
    expected = "Fashion-MNIST IDX files as torchvision keeps them (FashionMNIST/raw/, uncompressed)"
    for images_path, labels_path in zip(*[iter(_idx_files(root))] * 2):
        counts = []
        for path, magic, dims in ((images_path, 0x0803, 3), (labels_path, 0x0801, 1)):
            with open(path, "rb") as f:
                header = f.read(4 + 4 * dims)
            if len(header) < 4 + 4 * dims:
                raise ConfigError("dataset.root", expected, f"{path} (a {len(header)}-byte file: no IDX header)")
            values = [int(v) for v in np.frombuffer(header, dtype=">i4")]
            if values[0] != magic:
                raise ConfigError("dataset.root", expected, f"{path} (magic number {values[0]:#06x}, not {magic:#06x})")
            if dims == 3 and values[2:] != [28, 28]:
                raise ConfigError("dataset.root", expected, f"{path} (images of {values[2]}×{values[3]}, not 28×28)")
            size, want = path.stat().st_size, 4 + 4 * dims + int(np.prod(values[1:]))
            if size != want:
                raise ConfigError("dataset.root", expected, f"{path} ({size} bytes; its header says {want})")
            counts.append(values[1])
        if counts[0] != counts[1]:
            raise ConfigError("dataset.root", expected, f"{images_path} ({counts[0]} images, {counts[1]} labels)")


def _check_cifar10_folder(root: Path, download: bool) -> None:
    import pickletools

    folder = root / CIFAR10_FOLDER
    names = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
    missing = [name for name in names if not (folder / name).is_file()]
    if missing and download:
        return  # torchvision downloads them
    layout = f"torchvision's {CIFAR10_FOLDER}/ with data_batch_1 … data_batch_5 and test_batch (Python pickles)"
    if missing and len(missing) < len(names):
        raise ConfigError("dataset.root", layout, f"{folder} (missing: {', '.join(missing)})")
    if missing:
        return  # nothing there: _cifar10_source says what to do
    for name in names:
        path = folder / name
        try:
            with open(path, "rb") as f:
                next(pickletools.genops(f))  # a pickle's first opcode (ValueError / StopIteration otherwise)
                f.seek(-1, os.SEEK_END)
                complete = f.read(1) == b"."  # every pickle ends with STOP
        except (ValueError, StopIteration, OSError) as e:
            raise ConfigError("dataset.root", layout, f"{path} (not a pickle: {e or 'empty'})") from None
        if not complete:
            raise ConfigError("dataset.root", layout, f"{path} (cut short: no pickle STOP at its end)")


def _check_image_folder_files(cfg: Mapping[str, Any]) -> None:
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    from trainables.datafiles import check_image_headers

    root, classes = _image_folder_root(cfg)
    layout = image_folder_layout(cfg)
    for dir_key, size_key in (("train_dir", "train_size"), ("val_dir", "val_size")):
        folder = root / cfg[dir_key]
        # ImageFolder's own listing (the loader's), so both see the same files.
        samples = make_dataset(str(folder), {c: i for i, c in enumerate(classes)}, IMG_EXTENSIONS, allow_empty=True)
        counts = np.bincount([target for _, target in samples], minlength=len(classes))
        empty = [folder / classes[i] for i in np.flatnonzero(counts == 0)]
        if empty:
            also = f"; {len(empty) - 1} more" if len(empty) > 1 else ""
            raise ConfigError(
                "dataset.root", f"{layout}, images ({', '.join(IMG_EXTENSIONS)}) in every class folder",
                f"{empty[0]} (no image files{also})",
            )  # fmt: skip
        size = cfg[size_key]
        if size is not None and size > len(samples):
            raise ConfigError(f"dataset.{size_key}", f"at most the {len(samples)} images in {folder}, or null", size)
        check_image_headers((path for path, _ in samples), "dataset.root", "image files")
