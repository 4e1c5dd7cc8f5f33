"""Re-ID evaluation: CMC and mAP against hand computations, the protocol's removals, blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.reid.metrics import evaluate, evaluate_distances, squared_distances

# A gallery of six images: (vehicle id, camera) each.
G_PIDS = np.array([1, 1, 2, 1, 3, 2])
G_CAMS = np.array([1, 2, 1, 3, 2, 2])
# Four queries: q0 and q1 have true matches; q2's only same-id image shares its camera (removed,
# so no true match left); q3's identity is not in the gallery. q2 and q3 must not count.
Q_PIDS = np.array([1, 2, 3, 4])
Q_CAMS = np.array([1, 2, 2, 1])
DIST = torch.tensor(
    [
        # g0    g1    g2    g3    g4    g5
        [0.10, 0.50, 0.20, 0.90, 0.30, 0.70],  # q0 (id 1, cam 1): g0 is same id + same cam → removed
        [0.40, 0.80, 0.10, 0.60, 0.20, 0.05],  # q1 (id 2, cam 2): g5 is same id + same cam → removed
        [0.30, 0.20, 0.60, 0.10, 0.50, 0.40],  # q2 (id 3, cam 2): g4 removed → no true match
        [0.60, 0.50, 0.40, 0.30, 0.20, 0.10],  # q3 (id 4): no such id in the gallery
    ]
)


def test_map_and_cmc_match_a_hand_computation():
    # q0 ranking after removing g0: g2 (id 2), g4 (id 3), g1 (id 1, hit at rank 3), g5 (id 2), g3 (id 1, hit at 5)
    #   AP = (1/3 + 2/5) / 2;  first hit at rank 3
    # q1 ranking after removing g5: g2 (id 2, hit at rank 1), g4, g0, g3, g1;  AP = 1;  first hit at rank 1
    ap_q0 = (1 / 3 + 2 / 5) / 2
    result = evaluate_distances(DIST, 4, Q_PIDS, Q_CAMS, G_PIDS, G_CAMS)
    assert result["num_valid_queries"] == 2
    assert result["mAP"] == pytest.approx((ap_q0 + 1.0) / 2)
    assert result["rank1"] == pytest.approx(0.5)  # only q1 hits at rank 1
    assert result["rank5"] == result["rank10"] == result["rank20"] == pytest.approx(1.0)


def test_same_id_same_camera_images_are_removed_not_counted_as_hits():
    # Without the removal q0 would hit at rank 1 (g0) and q1 too (g5); with it neither g0 nor g5 counts.
    cams_elsewhere = np.array([5, 5, 5, 5, 5, 5])  # no gallery image shares a query's camera
    unremoved = evaluate_distances(DIST, 2, Q_PIDS[:2], Q_CAMS[:2], G_PIDS, cams_elsewhere)
    assert unremoved["rank1"] == 1.0
    removed = evaluate_distances(DIST, 2, Q_PIDS[:2], Q_CAMS[:2], G_PIDS, G_CAMS)
    assert removed["rank1"] == 0.5


def test_queries_without_a_true_match_are_excluded_and_all_missing_is_an_error():
    with_invalid = evaluate_distances(DIST, 4, Q_PIDS, Q_CAMS, G_PIDS, G_CAMS)
    valid_only = evaluate_distances(DIST[:2], 2, Q_PIDS[:2], Q_CAMS[:2], G_PIDS, G_CAMS)
    assert with_invalid == valid_only
    with pytest.raises(ValueError, match="no query has a true match"):
        evaluate_distances(DIST[2:], 2, Q_PIDS[2:], Q_CAMS[2:], G_PIDS, G_CAMS)


def reference(dist: np.ndarray, q_pids, q_cams, g_pids, g_cams, max_rank: int = 20) -> dict[str, float]:
    """A plain per-query loop, written independently of the vectorised code."""
    aps, cmcs = [], []
    for i in range(len(dist)):
        order = np.argsort(dist[i], kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i]))
        hits = (g_pids[order] == q_pids[i])[keep]
        if not hits.any():
            continue
        positions = np.flatnonzero(hits) + 1
        aps.append(np.mean(np.arange(1, len(positions) + 1) / positions))
        cmcs.append([positions[0] <= k for k in (1, 5, 10, 20)])
    cmc = np.mean(cmcs, axis=0)
    return {"mAP": float(np.mean(aps)), "rank1": cmc[0], "rank5": cmc[1], "rank10": cmc[2], "rank20": cmc[3]}


@pytest.mark.parametrize("block", [1, 3, 7, 1000])
def test_blocked_computation_equals_unblocked_and_a_plain_loop(block):
    gen = torch.Generator().manual_seed(0)
    q, g = (
        torch.randn(23, 8, generator=gen, dtype=torch.float64),
        torch.randn(61, 8, generator=gen, dtype=torch.float64),
    )
    q_pids, g_pids = (
        torch.randint(0, 6, (23,), generator=gen).numpy(),
        torch.randint(0, 6, (61,), generator=gen).numpy(),
    )
    q_cams, g_cams = (
        torch.randint(0, 3, (23,), generator=gen).numpy(),
        torch.randint(0, 3, (61,), generator=gen).numpy(),
    )
    whole = evaluate(q, g, q_pids, q_cams, g_pids, g_cams, block=len(q))
    blocked = evaluate(q, g, q_pids, q_cams, g_pids, g_cams, block=block)
    assert blocked == whole
    expected = reference(squared_distances(q, g).numpy(), q_pids, q_cams, g_pids, g_cams)
    for key, value in expected.items():
        assert whole[key] == pytest.approx(value, abs=1e-12), key


def test_squared_distances_are_squared_euclidean():
    gen = torch.Generator().manual_seed(1)
    q, g = torch.randn(5, 4, generator=gen, dtype=torch.float64), torch.randn(7, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(squared_distances(q, g), torch.cdist(q, g) ** 2)
