"""How the MLflow mirror of a run ended, and the lines the study's end prints about it."""

from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass
class MirrorReport:
    """How the MLflow mirror of a run ended (:meth:`expgrid.tracking.Tracker.finish`)."""

    uri: str
    study_run_id: str | None
    complete: bool
    why: str | None = None  # what stopped it (the store unreachable, the deadline, the writer lost)
    runs: dict[str, int] = dataclasses.field(default_factory=dict)  # kind → runs lacking data
    points: int = 0  # metric points not written
    artifacts: int = 0  # artifacts not written
    errors: list[str] = dataclasses.field(default_factory=list)
    counted: bool = True  # False: the writer did not say what it had written
    experiment_id: str | None = None  # the study's experiment in the store (None: the writer did not say)

    def warning(self, results: Path) -> list[str]:
        """The lines to print at the study's end: none when the mirror is complete (but for a
        problem with the ledger, which only costs `expgrid sync` its shortcut)."""
        if self.complete:
            return [f"warning: MLflow: {error}" for error in self.errors[:1]]
        if self.counted:
            runs = _and([_count(n, f"{kind} run") for kind, n in self.runs.items() if n]) or "no run"
            lost = _and([_count(n, what) for n, what in ((self.points, "metric point"), (self.artifacts, "artifact")) if n])
            verb = "lacks" if runs.startswith("1 ") and " and " not in runs else "lack"
            head = f"MLflow mirror incomplete: {runs} {verb} data" + (f": {lost} not written" if lost else "")
        else:
            head = "MLflow mirror incomplete: what it lacks is unknown"
        reasons = [self.why] if self.why else []
        if self.errors and not self.why:
            reasons.append(f"{len(self.errors)} failed call{'s' * (len(self.errors) != 1)}, the first: {self.errors[0]}")
        lines = [f"{head} ({'; '.join(reasons)})." if reasons else f"{head}."]
        lines.append("The results directory holds everything; once the store answers, complete the mirror with:")
        lines.append(f"  expgrid sync {results} --tracking-uri {self.uri}")
        return lines


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' * (n != 1)}"


def _and(items: list[str]) -> str:
    return ", ".join(items[:-1]) + (" and " if len(items) > 1 else "") + (items[-1] if items else "")
