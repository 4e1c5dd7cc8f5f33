"""Re-ID losses: batch-hard triplet on a hand-made batch, label-smoothed cross-entropy."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.reid.losses import batch_hard_triplet, cross_entropy, hardest_pairs


def points(*xs: float) -> torch.Tensor:
    """Embeddings on a line (second coordinate 0), so distances are |x_i - x_j|."""
    return torch.tensor([[x, 0.0] for x in xs], requires_grad=True)


def test_batch_hard_triplet_picks_the_farthest_positive_and_nearest_negative():
    x = points(0, 3, 1, 10)
    labels = torch.tensor([0, 0, 1, 1])
    positive, negative, has_negative = hardest_pairs(x, labels)
    # anchor 0 (x=0): positives at 0 (itself), 3 → 3; negatives at 1, 10 → 1
    # anchor 1 (x=3): positive 0 → 3; negatives 1, 10 → 2
    # anchor 2 (x=1): positive 10 → 9; negatives 0, 3 → 1
    # anchor 3 (x=10): positive 1 → 9; negatives 0, 3 → 7
    torch.testing.assert_close(positive, torch.tensor([3.0, 3.0, 9.0, 9.0]))
    torch.testing.assert_close(negative, torch.tensor([1.0, 2.0, 1.0, 7.0]))
    assert has_negative.all()
    loss = batch_hard_triplet(x, labels, margin=0.3)
    expected = ((3 - 1 + 0.3) + (3 - 2 + 0.3) + (9 - 1 + 0.3) + (9 - 7 + 0.3)) / 4
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_separated_identities_cost_nothing_and_the_margin_counts():
    x = points(0, 0.1, 5, 5.1)
    labels = torch.tensor([0, 0, 1, 1])
    assert batch_hard_triplet(x, labels, margin=0.3).item() == 0.0
    # margin 5: anchors 0 and 3 pay 0.1 - 5 + 5, anchors 1 and 2 pay 0.1 - 4.9 + 5
    assert batch_hard_triplet(x, labels, margin=5.0).item() == pytest.approx((0.1 + 0.2 + 0.2 + 0.1) / 4, abs=1e-5)


def test_anchor_alone_with_its_identity_uses_itself_and_no_negative_means_zero():
    x = points(0, 2, 2.5)
    labels = torch.tensor([0, 1, 1])
    positive, negative, _ = hardest_pairs(x, labels)
    assert positive[0].item() == pytest.approx(0, abs=1e-5)  # itself (clamped distance)
    assert negative[0].item() == pytest.approx(2)
    same = points(0, 1, 1)  # duplicate points: the clamp keeps the gradient finite
    loss = batch_hard_triplet(same, torch.tensor([0, 0, 0]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(same.grad).all()


def test_label_smoothed_cross_entropy_is_the_smoothed_target_formula():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    labels = torch.tensor([0, 2])
    eps, classes = 0.1, 3
    log_p = torch.log_softmax(logits, 1)
    targets = torch.full((2, classes), eps / classes)
    targets[torch.arange(2), labels] += 1 - eps
    expected = -(targets * log_p).sum(1).mean()
    assert cross_entropy(logits, labels, eps).item() == pytest.approx(expected.item())
    plain = -log_p[torch.arange(2), labels].mean()
    assert cross_entropy(logits, labels, 0.0).item() == pytest.approx(plain.item())
    assert not math.isclose(expected.item(), plain.item())
