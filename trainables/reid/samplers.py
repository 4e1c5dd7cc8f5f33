"""Training samplers: the order of one epoch's training images, and each rank's batches of it.

    random    a random permutation of the training set (the coursework's default)
    identity  P × K: each batch holds P = batch / K identities with K images each (K =
              ``instances``, 4), so every anchor of the triplet loss has positives in its batch
              (torchreid's RandomIdentitySampler)

A sampler takes the training labels, a ``torch.Generator``, the global batch size and K, and
returns the epoch's order (indices into the training set). The generator is seeded from (seed, epoch) alone, so every
rank of a data-parallel trial draws the same order without communicating, and a resumed trial
draws the order it would have drawn.

:func:`rank_batches` then cuts the order into global batches of ``batch_size`` (a partial last
batch is dropped, as torchreid's training loader does: it would be a small, noisy step, and for
the triplet loss a batch with few identities) and gives each of ``world`` ranks an equal
contiguous slice of every global batch. Every rank thus takes the same number of steps of the
same size, the ranks' slices partition the epoch, and for ``identity`` each slice holds whole
K-image identity groups when ``batch_size / world`` is a multiple of K.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from expgrid.registry import Registry
from trainables.reid.options import SAMPLER_DEFAULTS  # noqa: F401 - re-exported

Sampler = Callable[[np.ndarray, torch.Generator, int, int], list[int]]
SAMPLERS: Registry[Sampler] = Registry("sampler")


@SAMPLERS.register("random")
def random_order(labels: np.ndarray, generator: torch.Generator, batch_size: int, instances: int = 4) -> list[int]:
    """A random permutation of the training set (``batch_size`` and ``instances`` unused)."""
    return torch.randperm(len(labels), generator=generator).tolist()


@SAMPLERS.register("identity")
def identity_order(labels: np.ndarray, generator: torch.Generator, batch_size: int, instances: int = 4) -> list[int]:
    """P × K order, batch after batch: each batch P = batch_size / K distinct identities, K images each.

    As torchreid's RandomIdentitySampler: each identity's images are shuffled and cut into
    groups of K (an identity with fewer than K images is filled up by drawing its images again;
    a remainder under K is left out this epoch); then each batch draws P distinct identities
    among those with groups left and takes one group of each, until fewer than P identities have
    groups left. The order's length is a multiple of ``batch_size``."""
    if batch_size % instances:
        raise ValueError(f"batch size {batch_size} is not a multiple of {instances} instances per identity")
    per_batch = batch_size // instances
    by_id: dict[int, list[int]] = {}
    for i, label in enumerate(np.asarray(labels).tolist()):
        by_id.setdefault(label, []).append(i)
    groups: dict[int, list[list[int]]] = {}
    for label, members in by_id.items():
        idx = torch.tensor(members)
        if len(members) < instances:
            extra = torch.randint(len(members), (instances - len(members),), generator=generator)
            idx = torch.cat([idx, idx[extra]])
        idx = idx[torch.randperm(len(idx), generator=generator)].tolist()
        groups[label] = [idx[s : s + instances] for s in range(0, len(idx) - instances + 1, instances)]
    order: list[int] = []
    while len(groups) >= per_batch:
        available = sorted(groups)
        for j in torch.randperm(len(available), generator=generator)[:per_batch].tolist():
            label = available[j]
            order.extend(groups[label].pop())
            if not groups[label]:
                del groups[label]
    return order


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of epoch ``epoch``'s order: a function of (seed, epoch) only."""
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


def rank_batches(order: list[int], batch_size: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """Rank ``rank``'s batches: its slice of each full global batch of ``order`` (see the module
    docstring). ``batch_size`` is the global batch; it must be a multiple of ``world``."""
    if batch_size % world:
        raise ValueError(f"batch size {batch_size} is not a multiple of the {world} ranks")
    per_rank = batch_size // world
    full = len(order) // batch_size * batch_size
    return [order[start + rank * per_rank : start + (rank + 1) * per_rank] for start in range(0, full, batch_size)]
