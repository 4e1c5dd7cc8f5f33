"""Admitting a section's trials to the cluster: whether one fits at all, and how many
data-parallel trials may run at once.

A trial (or, for a data-parallel trial of ``workers`` processes, each worker process) must fit
on some node, and a data-parallel trial's workers together in the cluster; otherwise the section
is refused before launch, with the numbers. Tune would start every data-parallel trial at once
(each reserves only a token CPU), and their Ray Train runs would wait on each other's workers:
only as many are admitted as the cluster holds.
"""

from __future__ import annotations

import math

from expgrid.errors import StudyFailed
from expgrid.study_types import Section


def check_fits(section: Section, per_trial: dict[str, float], nodes: list[dict[str, float]],
               total: dict[str, float], workers: int = 1) -> None:  # fmt: skip
    """Refuse a section one of whose trials (or, for data-parallel trials, one of whose worker
    processes) fits on no node, or whose data-parallel trial needs more than the cluster has."""
    what = "one trial" if workers == 1 else "one worker process"
    if not any(all(node[k] >= per_trial[k] for k in per_trial) for node in nodes):
        largest = max(nodes, key=lambda n: (n["gpu"], n["cpu"]), default={"cpu": 0, "gpu": 0})
        raise StudyFailed(
            f"section {section.id}: {what} asks for {per_trial['cpu']:g} CPU and {per_trial['gpu']:g} GPU, but no node "
            f"of this Ray cluster has that much (largest node: {largest['cpu']:g} CPU, {largest['gpu']:g} GPU; cluster "
            f"total: {total['cpu']:g} CPU, {total['gpu']:g} GPU). Lower `resources` or add nodes."
        )
    if workers > 1 and any(workers * per_trial[k] > total[k] + 1e-9 for k in per_trial):
        raise StudyFailed(
            f"section {section.id}: a data-parallel trial of {workers} workers at {per_trial['cpu']:g} CPU and "
            f"{per_trial['gpu']:g} GPU each needs {workers * per_trial['cpu']:g} CPU and {workers * per_trial['gpu']:g} "
            f"GPU, but this Ray cluster has {total['cpu']:g} CPU and {total['gpu']:g} GPU. Lower `workers` or "
            "`resources`, or add nodes."
        )


def concurrent_slots(per_trial: dict[str, float], available: dict[str, float], max_concurrent: int | None) -> int:
    """How many trials of ``per_trial`` resources the cluster runs at once (at least 1)."""
    fits = [math.floor(available.get(k, 0.0) / v + 1e-9) for k, v in per_trial.items() if v > 0]
    slots = max(1, min(fits, default=1))
    return min(slots, max_concurrent) if max_concurrent else slots


def admitted_at_once(max_concurrent: int | None, per_worker: dict[str, float], available: dict[str, float],
                     workers: int) -> int | None:  # fmt: skip
    """The section's cap on trials at once: ``max_concurrent`` as given, and for data-parallel
    trials (``workers`` > 1) at most as many as the cluster holds all the workers of."""
    if workers <= 1:
        return max_concurrent
    fit = concurrent_slots({k: v * workers for k, v in per_worker.items()}, available, None)
    return min(max_concurrent or fit, fit)

