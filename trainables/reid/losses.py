"""Re-identification losses: cross-entropy over training identities plus batch-hard triplet.

    loss = xent_weight · CE(logits, labels; label smoothing ε) + htri_weight · triplet(embeddings)

Batch-hard triplet loss (Hermans et al., "In Defense of the Triplet Loss", as torchreid's
TripletLoss): with Euclidean distances d between the batch's embeddings, for each anchor a

    max(0, d(a, hardest positive) - d(a, hardest negative) + margin)

where the hardest positive is the farthest sample with a's identity (a itself included, at
distance ~0, so an anchor alone with its identity in the batch still counts: it then only pushes
the nearest negative beyond the margin) and the hardest negative the nearest sample with
another identity; the loss is the mean over anchors. An anchor with no other identity in the
batch has no negative and is left out of the mean (0 when there is none at all).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812 - the conventional name

from trainables.reid.options import LOSS_DEFAULTS  # noqa: F401 - re-exported


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (N, N) between the rows of ``x``, clamped at 1e-6 (sqrt's gradient is
    infinite at 0, and a sample's distance to itself is 0)."""
    squared = x.pow(2).sum(1)
    d2 = squared[:, None] + squared[None, :] - 2 * x @ x.T
    return d2.clamp(min=1e-12).sqrt()


def hardest_pairs(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(hardest positive distance, hardest negative distance, anchor has a negative) per anchor."""
    d = pairwise_distances(embeddings)
    same = labels[:, None] == labels[None, :]
    hardest_positive = d.masked_fill(~same, float("-inf")).amax(1)
    hardest_negative = d.masked_fill(same, float("inf")).amin(1)
    return hardest_positive, hardest_negative, (~same).any(1)


def gather_batch(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's embeddings and labels, concatenated in rank order (the global batch, as
    ``samplers.rank_batches`` slices it); unchanged without torch.distributed or with one rank.

    ``all_gather`` returns copies that carry no gradient: this rank's slot is replaced by its own
    ``embeddings``, so a loss of the result backpropagates into this rank's model. Every rank
    must call it with the same number of rows (``rank_batches`` gives equal shares)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return embeddings, labels
    world, rank = dist.get_world_size(), dist.get_rank()
    parts = [torch.empty_like(embeddings) for _ in range(world)]
    dist.all_gather(parts, embeddings.detach().contiguous())
    parts[rank] = embeddings
    label_parts = [torch.empty_like(labels) for _ in range(world)]
    dist.all_gather(label_parts, labels.contiguous())
    return torch.cat(parts), torch.cat(label_parts)


def batch_hard_triplet(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """The batch-hard triplet loss (see the module docstring), a 0-d tensor."""
    positive, negative, has_negative = hardest_pairs(embeddings, labels)
    if not bool(has_negative.any()):
        return embeddings.sum() * 0  # keeps the graph (DDP expects every output to take part)
    return F.relu(positive - negative + margin)[has_negative].mean()


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy with targets (1-ε)·one-hot + ε/classes (torchreid's CrossEntropyLabelSmooth)."""
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
