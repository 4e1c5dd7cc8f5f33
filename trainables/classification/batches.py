"""Batch sources for ``classify``: one interface over in-memory tensors and image folders.

The training loop asks a split for an epoch of batches and gets ``(x, y)`` pairs on the device:
``x`` float32 (N, C, H, W) in [0, 1], ``y`` int64 (N,). Two sources implement it:

* :class:`TensorBatches` — a dataset held whole as arrays (``digits``, ``fashion_mnist``,
  ``cifar10``, ``synthetic``). Copied to the device once; per epoch one shuffled gather into
  buffers kept across epochs, and batches are views of them: no DataLoader, no per-sample Python
  (at 1,000 MNIST-sized samples a step is well under a millisecond, so this matters).
* :class:`FolderBatches` — image files (``image_folder``), decoded and resized by DataLoader
  worker processes, moved to the device as uint8 (4× less to copy) and scaled there.

Both shuffle with ``torch.randperm`` on torch's global CPU generator, so ``torch.manual_seed``
fixes the order on any device, and a checkpoint of that generator's state resumes it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from trainables.datafiles import unreadable_image

Batch = tuple[Tensor, Tensor]


@runtime_checkable
class Batches(Protocol):
    """One split as batches on the device."""

    num_samples: int
    num_classes: int
    sample_shape: tuple[int, int, int]  # C, H, W

    def epoch(self, batch_size: int, *, shuffle: bool, drop_last_single: bool = False) -> Iterator[Batch]:
        """One pass over the split in batches of ``batch_size`` (the last one may be smaller).

        ``shuffle``: a fresh order from ``torch.randperm`` (global CPU generator), else file /
        array order. ``drop_last_single``: drop a final batch of one sample (BatchNorm cannot
        normalise a single sample in training mode). A batch may be a view of a buffer reused by
        the next ``epoch()`` call: finish one epoch (or copy) before starting the next."""
        ...


def _order(n: int, batch_size: int, shuffle: bool, drop_last_single: bool) -> list[Tensor]:
    """Index batches for one epoch (CPU int64), the same rule for every source."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = torch.randperm(n) if shuffle else torch.arange(n)
    parts = list(order.split(batch_size))
    if drop_last_single and parts and len(parts[-1]) == 1:
        parts.pop()
    return parts


class TensorBatches:
    """A split held whole as tensors on the device; batches are slices (see the module docstring).

    ``x``: float32 (N, C, H, W) in [0, 1], ``y``: int64 (N,), NumPy or torch. With ``lazy``, the
    copy to the device waits for the first :meth:`epoch`, so a split never iterated (the test split
    while tuning) costs no memory; otherwise it happens here, outside any timed epoch."""

    def __init__(
        self,
        x: np.ndarray | Tensor,
        y: np.ndarray | Tensor,
        device: torch.device | str,
        num_classes: int | None = None,
        *,
        lazy: bool = False,
    ):
        if len(x) != len(y):
            raise ValueError(f"{len(x)} samples but {len(y)} labels")
        self.device = torch.device(device)
        self.num_samples = len(y)
        self.sample_shape = tuple(int(s) for s in x.shape[1:])  # type: ignore[assignment]
        self.num_classes = int(num_classes) if num_classes is not None else int(y.max()) + 1
        self._source: tuple[Any, Any] | None = (x, y)
        self._x: Tensor | None = None
        self._y: Tensor | None = None
        self._x_epoch: Tensor | None = None  # the shuffled order's buffers, kept across epochs
        self._y_epoch: Tensor | None = None
        if not lazy:
            self._tensors()

    def _tensors(self) -> tuple[Tensor, Tensor]:
        if self._x is None or self._y is None:
            assert self._source is not None
            # torch.tensor copies: arrays from Ray's object store are read-only (from_numpy warns).
            x, y = (torch.tensor(np.asarray(a)) if not isinstance(a, Tensor) else a for a in self._source)
            self._x = x.to(self.device, torch.float32)
            self._y = y.to(self.device, torch.int64)
            self._source = None
        return self._x, self._y

    def epoch(self, batch_size: int, *, shuffle: bool, drop_last_single: bool = False) -> Iterator[Batch]:
        x, y = self._tensors()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if shuffle:
            if self._x_epoch is None or self._y_epoch is None:
                self._x_epoch, self._y_epoch = torch.empty_like(x), torch.empty_like(y)
            # The permutation comes from the CPU generator, so a seed gives the same order on any
            # device. index_select is ~5x faster than x[order]; writing into kept buffers spares a
            # fresh multi-MB allocation (and its page faults) every epoch.
            order = torch.randperm(self.num_samples).to(self.device)
            torch.index_select(x, 0, order, out=self._x_epoch)
            torch.index_select(y, 0, order, out=self._y_epoch)
            x, y = self._x_epoch, self._y_epoch
        xs, ys = x.split(batch_size), y.split(batch_size)
        count = len(ys)
        if drop_last_single and count and len(ys[-1]) == 1:
            count -= 1
        for i in range(count):
            yield xs[i], ys[i]


class _Images(Dataset):
    """Item i: (uint8 (3, size, size) RGB image, label). Runs in DataLoader workers."""

    def __init__(self, paths: Sequence[str], labels: np.ndarray, size: int):
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        try:
            with Image.open(self.paths[i]) as image:
                image = image.convert("RGB")  # grey, palette and RGBA files alike
        except Exception as e:  # noqa: BLE001 - any decoding failure: the trial's error names the file
            raise unreadable_image(self.paths[i], e) from e
        if image.size != (self.size, self.size):
            # Bilinear with PIL's antialiasing when shrinking; square, so the aspect is not kept.
            image = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8))
        return pixels.permute(2, 0, 1), int(self.labels[i])


class _EpochSampler(Sampler[list[int]]):
    """Yields the index batches set for the current epoch (``batches``), in the main process."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class FolderBatches:
    """Image files decoded by a DataLoader with ``workers`` worker processes (0: in this process).

    One DataLoader for the split's lifetime (persistent workers when ``workers > 0``, so they are
    not restarted every epoch); each :meth:`epoch` hands it that epoch's index batches, drawn like
    :class:`TensorBatches`' from the global CPU generator. Workers draw no random numbers (the
    augmentation runs on the device), so worker seeding does not affect a run. Pinned memory on
    CUDA lets the uint8 batches copy asynchronously."""

    def __init__(
        self,
        paths: Sequence[str],
        labels: np.ndarray,
        num_classes: int,
        image_size: int,
        device: torch.device | str,
        workers: int = 2,
    ):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} files but {len(labels)} labels")
        self.device = torch.device(device)
        self.num_samples = len(paths)
        self.num_classes = int(num_classes)
        self.sample_shape = (3, int(image_size), int(image_size))
        self._sampler = _EpochSampler()
        self._loader = DataLoader(
            _Images(paths, labels, int(image_size)),
            batch_sampler=self._sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            # Its own generator, so creating worker seeds does not advance the global one.
            generator=torch.Generator().manual_seed(0),
        )

    def epoch(self, batch_size: int, *, shuffle: bool, drop_last_single: bool = False) -> Iterator[Batch]:
        self._sampler.batches = [b.tolist() for b in _order(self.num_samples, batch_size, shuffle, drop_last_single)]
        for images, labels in self._loader:
            x = images.to(self.device, non_blocking=True).to(torch.float32).div_(255)
            yield x, labels.to(self.device, non_blocking=True)


def make_splits(
    data: Mapping[str, Any], device: torch.device | str, *, loader_workers: int | None = None
) -> dict[str, Batches]:
    """A batch source per split in ``data`` (from ``data.load_dataset``): "train", "val", and
    "test" when present (lazy: copied to the device only if iterated).

    Arrays (``x_<split>``) give :class:`TensorBatches`, file lists (``paths_<split>``)
    :class:`FolderBatches` with ``loader_workers`` workers (default: the dataset's setting)."""
    device = torch.device(device)
    num_classes = int(data["num_classes"])
    splits: dict[str, Batches] = {}
    for split in ("train", "val", "test"):
        if f"x_{split}" in data:
            splits[split] = TensorBatches(
                data[f"x_{split}"], data[f"y_{split}"], device, num_classes, lazy=split == "test"
            )
        elif f"paths_{split}" in data:
            workers = int(data.get("loader_workers", 2) if loader_workers is None else loader_workers)
            splits[split] = FolderBatches(
                data[f"paths_{split}"], data[f"y_{split}"], num_classes, int(data["image_size"]), device, workers
            )
    missing = {"train", "val"} - set(splits)
    if missing:
        raise KeyError(f"data has no {sorted(missing)} split (keys: {sorted(data)})")
    return splits
