"""The trials' part of a run's wall time, from its results directory, so that benchmarks can
print the fixed part (start-up, scheduling, reports, shut-down) apart from it.

The trials' part of a section is how long its trials' epochs would take with nothing else to
pay: each trial's epoch seconds (as the trial measured them) summed, the trials placed in index
order on ``slots`` parallel slots, each on the slot free first (a list schedule). The fixed
part is the wall time less the sum over sections.
"""

from __future__ import annotations

import heapq
import json
from pathlib import Path


def trial_seconds(results: Path, section: str) -> list[float]:
    trials = json.loads((results / "sections" / section / "trials.json").read_text())
    trials.sort(key=lambda t: t["index"])
    return [sum(float(row.get("seconds") or 0.0) for row in t.get("history") or []) for t in trials]


def list_schedule(durations: list[float], slots: int) -> float:
    free = [0.0] * max(1, min(slots, len(durations)))
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free) if durations else 0.0


def epochs_wall(results: Path, slots: int) -> float:
    """Σ over the run's sections of the list-scheduled epoch seconds of their trials."""
    sections = sorted(p.name for p in (results / "sections").iterdir() if (p / "trials.json").is_file())
    return sum(list_schedule(trial_seconds(results, s), slots) for s in sections)
