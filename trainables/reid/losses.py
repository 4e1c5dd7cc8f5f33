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

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name

LOSS_DEFAULTS: dict[str, Any] = {
    "xent_weight": 1.0,  # λ_xent: weight of the cross-entropy (identity classification) loss
    "htri_weight": 1.0,  # λ_htri: weight of the batch-hard triplet loss
    "margin": 0.3,  # triplet margin, in embedding (Euclidean distance) units
    "label_smoothing": 0.1,  # ε of the cross-entropy (torchreid's label smoothing; 0: none)
}


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


def batch_hard_triplet(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """The batch-hard triplet loss (see the module docstring), a 0-d tensor."""
    positive, negative, has_negative = hardest_pairs(embeddings, labels)
    if not bool(has_negative.any()):
        return embeddings.sum() * 0  # keeps the graph (DDP expects every output to take part)
    return F.relu(positive - negative + margin)[has_negative].mean()


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.1) -> torch.Tensor:
    """Mean cross-entropy with targets (1-ε)·one-hot + ε/classes (torchreid's CrossEntropyLabelSmooth)."""
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
