"""Re-identification evaluation: CMC and mAP of query features against gallery features.

The protocol of VeRi-776 and Market-1501 (torchreid's ``eval_market1501``): queries are ranked
against the gallery by squared Euclidean distance; for each query, gallery images with its
identity *and* its camera are removed (finding the same vehicle in the same camera is too easy);
the remaining gallery images with its identity are the true matches. A query left with no true
match is skipped. Over the other queries:

    rank-k (CMC)  fraction of queries with a true match among the k nearest remaining images
    mAP           mean over queries of the average precision of the ranking, i.e. the mean over
                  the query's true matches of (true matches up to it) / (its 1-based rank)

All values are fractions in [0, 1] (the coursework's 54.54 mAP is 0.5454 here).

The distances are computed and ranked in blocks of ``block`` queries, so the full query ×
gallery matrix and its sort are never held at once: for VeRi's 1,678 × 11,579, ranking all
queries together would take ~1.3 GB of temporaries (indices, gathered ids, cumulative counts,
8 bytes per pair each), a block of 256 queries ~200 MB. Ties in distance are broken by gallery
order (a stable sort), so the result does not depend on the block size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from trainables.reid.options import RANKS  # the CMC ranks reported

DEFAULT_BLOCK = 256  # queries per block


def squared_distances(query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """(Q, G) squared Euclidean distances ‖q‖² + ‖g‖² − 2 q·g, in float64 when the inputs are."""
    return query.pow(2).sum(1)[:, None] + gallery.pow(2).sum(1)[None, :] - 2 * query @ gallery.T


def rank_metrics(
    distances: torch.Tensor,
    query_pids: torch.Tensor,
    query_camids: torch.Tensor,
    gallery_pids: torch.Tensor,
    gallery_camids: torch.Tensor,
    ranks: Sequence[int] = RANKS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per query of one block: (has a true match, average precision, hit within each rank (Q, len(ranks))).

    ``distances``: (Q, G), smaller is more similar."""
    order = torch.sort(distances, dim=1, stable=True).indices
    pids, camids = gallery_pids[order], gallery_camids[order]
    same_id = pids == query_pids[:, None]
    kept = ~(same_id & (camids == query_camids[:, None]))
    match = same_id & kept
    position = torch.cumsum(kept, dim=1)  # 1-based rank among the kept images (at kept places)
    matches_so_far = torch.cumsum(match, dim=1)
    num_matches = match.sum(1)
    valid = num_matches > 0
    precision_at_hits = torch.where(match, matches_so_far.double() / position.clamp(min=1), 0.0)
    average_precision = precision_at_hits.sum(1) / num_matches.clamp(min=1)
    big = torch.iinfo(position.dtype).max
    first_hit = torch.where(match, position, big).amin(1)
    hits = first_hit[:, None] <= torch.tensor(list(ranks), device=first_hit.device)[None, :]
    return valid, average_precision, hits


def evaluate(
    query: torch.Tensor,
    gallery: torch.Tensor,
    query_pids: np.ndarray | torch.Tensor,
    query_camids: np.ndarray | torch.Tensor,
    gallery_pids: np.ndarray | torch.Tensor,
    gallery_camids: np.ndarray | torch.Tensor,
    block: int = DEFAULT_BLOCK,
    ranks: Sequence[int] = RANKS,
) -> dict[str, float]:
    """``{"mAP": …, "rank1": …, …}`` of query features (Q, D) against gallery features (G, D).

    Also ``num_valid_queries``, the queries that kept a true match (the others are skipped)."""
    return evaluate_distances(
        lambda start, stop: squared_distances(query[start:stop], gallery),
        len(query), query_pids, query_camids, gallery_pids, gallery_camids, block, ranks,
    )  # fmt: skip


def evaluate_distances(
    distances: torch.Tensor | Callable[[int, int], torch.Tensor],
    num_queries: int,
    query_pids: np.ndarray | torch.Tensor,
    query_camids: np.ndarray | torch.Tensor,
    gallery_pids: np.ndarray | torch.Tensor,
    gallery_camids: np.ndarray | torch.Tensor,
    block: int = DEFAULT_BLOCK,
    ranks: Sequence[int] = RANKS,
) -> dict[str, float]:
    """As :func:`evaluate`, from ``distances``: a (Q, G) tensor, or a function (start, stop) →
    the distances of queries start..stop-1 (so a caller can produce them block by block)."""
    if isinstance(distances, torch.Tensor):
        matrix = distances
        distances = lambda start, stop: matrix[start:stop]  # noqa: E731 - a one-line adapter
    # torch.tensor copies: arrays from Ray's object store are read-only, which from_numpy warns about.
    q_pids, q_cams = torch.tensor(np.asarray(query_pids)), torch.tensor(np.asarray(query_camids))
    g_pids, g_cams = torch.tensor(np.asarray(gallery_pids)), torch.tensor(np.asarray(gallery_camids))
    # Per-query values are kept and summed once at the end, so the sum's rounding, and thus the
    # result, does not depend on the block size.
    valid_aps: list[torch.Tensor] = []
    hits_total = torch.zeros(len(ranks), dtype=torch.int64)
    for start in range(0, num_queries, block):
        stop = min(start + block, num_queries)
        d = distances(start, stop)
        dev = d.device
        valid, ap, hits = rank_metrics(
            d, q_pids[start:stop].to(dev), q_cams[start:stop].to(dev), g_pids.to(dev), g_cams.to(dev), ranks
        )
        valid_aps.append(ap[valid].cpu())
        hits_total += hits[valid].sum(0).cpu()
    valid_total = sum(len(a) for a in valid_aps)
    if valid_total == 0:
        raise ValueError("no query has a true match in the gallery (same id, another camera): nothing to evaluate")
    out = {"mAP": float(torch.cat(valid_aps).sum()) / valid_total}
    out.update({f"rank{k}": float(h) / valid_total for k, h in zip(ranks, hits_total.tolist())})
    out["num_valid_queries"] = valid_total
    return out
