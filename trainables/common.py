"""Helpers both built-in trainers (``classify``, ``reid``) use in the trial process.

Value checks of a config are in ``checks.py``; this module holds what a trainer needs around
its training loop: the key by which trials share a loaded dataset, the per-trial thread count,
and the checkpoint copy of live tensors.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch

from trainables.checks import dataset_key  # noqa: F401 - lives there, torch-free (expgrid validate)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op CPU threads set to ``threads`` (0: left as they are) while the block runs.

    The setting is per process and Ray reuses a worker process for later trials, so the caller's
    value comes back afterwards."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def to_cpu(obj: Any) -> Any:
    """A detached CPU copy of every tensor in ``obj``: a checkpoint must not alias live state."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return copy.deepcopy(obj)
