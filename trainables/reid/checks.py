"""``reid``'s config checks, without torch: what ``expgrid validate`` runs per trial config.

The checks read the tables of ``options.py``, never a registry of torch objects; a pretrained
model's weights file is looked up by the name torchvision gives it, written out in
``trainables.pretrained_files`` (torch-free too). The torch modules re-export
these checks under their old names (``models.check_model``, ``data.check_dataset`` …).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from expgrid.config import merge
from expgrid.errors import ConfigError, UnknownNameError
from trainables.checks import dataset_key as _dataset_key
from trainables.checks import require_int, require_mappings, require_seed
from trainables.pretrained_files import weights_file
from trainables.reid.options import (
    AUGMENTATIONS,
    DATASET_DEFAULTS,
    DATASETS,
    DEFAULT_AUGMENTATIONS,
    IMAGE_SUFFIXES,
    LOSS_DEFAULTS,
    MIN_SIDE,
    MODEL_DEFAULTS,
    MODELS,
    NAME_PATTERN,
    OPTIMIZER_DEFAULTS,
    OPTIMIZERS,
    REID_DEFAULTS,
    SAMPLER_DEFAULTS,
    SAMPLERS,
    SCHEDULE_DEFAULTS,
    SPLITS,
    VERI_LAYOUT,
)


def require_name(name: Any, valid: tuple[str, ...], kind: str, field: str) -> None:
    """UnknownNameError (as a registry's ``get`` raises it) unless ``name`` is one of ``valid``."""
    if not isinstance(name, str) or name not in valid:
        raise UnknownNameError(kind, name, list(valid), field)


def full_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` over the defaults (so direct calls may give only what differs)."""
    return merge(REID_DEFAULTS, config)


def _check_loss(cfg: Mapping[str, Any]) -> None:
    cfg = {**LOSS_DEFAULTS, **cfg}
    for key in ("xent_weight", "htri_weight", "margin"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"loss.{key}", "a number >= 0", value)
    if cfg["xent_weight"] == 0 and cfg["htri_weight"] == 0:
        raise ConfigError("loss.htri_weight", "a weight > 0 when loss.xent_weight is 0 (something to train)", 0)
    eps = cfg["label_smoothing"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < 1:
        raise ConfigError("loss.label_smoothing", "a number in [0, 1)", eps)


def check_config(config: Mapping[str, Any]) -> None:
    """Raise ConfigError (dotted field path) for a config ``reid`` cannot run.

    Runs on the driver for every trial config before Ray starts: names (with the valid ones and
    close matches), value ranges, and whether weights files exist. The dataset's files are
    :func:`check_data`'s, which `expgrid show` does not run."""
    cfg = full_config(config)
    require_mappings(cfg, ("dataset", "model", "optimizer", "lr_schedule", "loss", "sampler"))
    check_model(cfg["model"])
    check_optimizer(cfg["optimizer"])
    check_schedule(cfg["lr_schedule"])
    _check_loss(cfg["loss"])
    require_name(cfg["sampler"]["name"], SAMPLERS, "sampler", "sampler.name")
    check_augmentations(cfg["augmentations"])
    if not isinstance(cfg["sync_bn"], bool):
        raise ConfigError("sync_bn", "true or false", cfg["sync_bn"])
    for key, minimum in (
        ("epochs", 1),
        ("test_batch", 1),
        ("eval_freq", 0),
        ("loader_workers", 0),
        ("threads", 0),
        ("workers", 1),
    ):
        require_int(cfg, key, minimum)
    require_seed(cfg)
    gpus = cfg["gpu_per_worker"]
    if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or gpus < 0:
        raise ConfigError("gpu_per_worker", "a number of GPUs >= 0", gpus)
    # Each rank's share of a batch must be whole, hold 2+ images (BatchNorm in training mode),
    # and for the identity sampler whole K-image groups.
    workers, batch = cfg["workers"], require_int(cfg, "train_batch", 2)
    group = cfg["sampler"].get("instances", SAMPLER_DEFAULTS["instances"])
    if isinstance(group, bool) or not isinstance(group, int) or group < 1:
        raise ConfigError("sampler.instances", "an integer >= 1 (images per identity in a batch)", group)
    per_rank = workers * (group if cfg["sampler"]["name"] == "identity" else 1)
    if batch % per_rank or batch // workers < 2:
        what = f"{workers} workers × sampler.instances {group}" if per_rank != workers else f"{workers} workers"
        raise ConfigError("train_batch", f"a multiple of {what}, at least 2 images per worker", batch)
    check_dataset(cfg["dataset"])


def dataset_key(config: Mapping[str, Any]) -> Hashable:
    """Configs with equal keys share one loaded index (root, image size, preload limit)."""
    return _dataset_key(full_config(config))


def check_data(config: Mapping[str, Any]) -> None:
    """The files ``config["dataset"]`` names, checked before a run (``data.check_dataset_files``)."""
    check_dataset_files(full_config(config)["dataset"])


# --- model, optimizer, augmentations ---


def architecture(name: str) -> str:
    """The torchvision architecture under model ``name`` (whose ImageNet weights it loads)."""
    return name.removesuffix("_fc512")


def check_model(model_cfg: Mapping[str, Any]) -> None:
    """Reject a ``model`` config that cannot build; reads nothing but whether a weights file exists."""
    name = model_cfg.get("name")
    require_name(name, MODELS, "model", "model.name")
    pretrained = model_cfg.get("pretrained", MODEL_DEFAULTS["pretrained"])
    if not isinstance(pretrained, bool):
        raise ConfigError("model.pretrained", "true or false", pretrained)
    weights = model_cfg.get("weights")
    if weights is not None and not isinstance(weights, str):
        raise ConfigError("model.weights", "a file path (or null for torchvision's cache)", weights)
    if pretrained:
        weights_file(architecture(name), weights)  # torchvision's file name, from a torch-free table


def _number(
    cfg: Mapping[str, Any], key: str, field: str, low: float, high: float | None = None, low_open: bool = False
) -> None:
    value = cfg[key]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value > low if low_open else value >= low) and (high is None or value < high)
    if not ok:
        bound = f"> {low}" if low_open else f">= {low}"
        raise ConfigError(f"{field}.{key}", f"a number {bound}" + (f" and < {high}" if high is not None else ""), value)


def check_optimizer(cfg: Mapping[str, Any]) -> None:
    cfg = {**OPTIMIZER_DEFAULTS, **cfg}
    require_name(cfg["name"], OPTIMIZERS, "optimizer", "optimizer.name")
    _number(cfg, "lr", "optimizer", 0, low_open=True)
    _number(cfg, "weight_decay", "optimizer", 0)
    _number(cfg, "momentum", "optimizer", 0, 1)


def check_schedule(cfg: Mapping[str, Any]) -> None:
    cfg = {**SCHEDULE_DEFAULTS, **cfg}
    milestones = cfg["milestones"]
    if not isinstance(milestones, (list, tuple)) or any(
        isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in milestones
    ):
        raise ConfigError("lr_schedule.milestones", "a list of epochs (integers >= 1)", milestones)
    _number(cfg, "gamma", "lr_schedule", 0, low_open=True)


def check_augmentations(names: object, field: str = "augmentations") -> list[str]:
    """The names as a list; ConfigError (with the index in the field) for anything unknown."""
    if not isinstance(names, (list, tuple)):
        raise ConfigError(field, f"a list of augmentation names (e.g. {DEFAULT_AUGMENTATIONS})", names)
    for i, name in enumerate(names):
        require_name(name, AUGMENTATIONS, "augmentation", f"{field}[{i}]")
    return list(names)


# --- dataset ---


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


def check_dataset(cfg: Mapping[str, Any]) -> None:
    """Reject a ``dataset`` config whose values cannot load, looking at no file (``expgrid show``
    runs it where the data is not; :func:`check_dataset_files` looks at the files)."""
    cfg = {**DATASET_DEFAULTS, **cfg}
    require_name(cfg["name"], DATASETS, "dataset", "dataset.name")
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
