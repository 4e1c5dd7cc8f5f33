"""The study summary: per section, the hyperparameter(s) it swept, the best configuration and its
metrics (the re-ID coursework's "Section 4" table), and what the section cost: CPU- and GPU-hours
(trial wall time × the resources reserved for it) and the trial-epochs run against the full grid
(every trial to its planned last epoch), whose difference is what early stopping and ASHA saved.

``expgrid run`` prints :meth:`StudySummary.to_text` at its end and ``expgrid report`` prints the
same text rebuilt from the results directory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from expgrid.reports.results import SectionResults, StudyFacts
from expgrid.reports.text import assignments, csv_text, markdown_table, short, text_table
from expgrid.study import is_number


@dataclasses.dataclass(frozen=True)
class SummaryRow:
    section: str
    name: str
    hyperparameters: tuple[str, ...]
    best: dict[str, Any] | None  # the best trial's swept values
    metrics: dict[str, Any]  # the study metric and the secondary ones, at the best trial's selected epoch
    trials: int
    epochs_run: int  # trial-epochs run: the sum of each trial's last epoch
    epochs_full: int  # trial-epochs of the full grid: the sum of each trial's planned epochs
    cpu_hours: float | None  # None: the resources are not recorded
    gpu_hours: float | None
    # ``inherit: {…, top: k}``: the parent configurations carried (``carry.Parent`` JSON), in order.
    carried: tuple[dict[str, Any], ...] = ()
    # The best trial's test metrics (test: best), apart from the validation metrics that chose it
    test: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def saved(self) -> float | None:
        """The share of the full grid's trial-epochs that was not run."""
        return None if not self.epochs_full else 1.0 - self.epochs_run / self.epochs_full

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "hyperparameters": list(self.hyperparameters), "saved": self.saved,
                "carried": [dict(p) for p in self.carried]}  # fmt: skip

    def carried_line(self) -> str | None:
        """``section 2 carried the 2 best of section 1: 1/3 (optimizer.name=adam), 1/5 (…)``."""
        if not self.carried:
            return None
        k = len(self.carried)
        each = ", ".join(f"{p['section']}/{p['trial']} ({assignments(p.get('values'))})" for p in self.carried)
        best = f"the {k} best" if k > 1 else "the best"
        return f"section {self.section} carried {best} of section {self.carried[0]['section']}: {each}"


def summary_row(facts: StudyFacts, section: SectionResults) -> SummaryRow:
    best = section.best
    selected = best.selected(facts.metric, facts.mode, section.select) if best else None
    seconds = sum(t.seconds or 0.0 for t in section.trials)
    resources = section.resources
    return SummaryRow(
        section=section.id,
        name=section.name,
        hyperparameters=section.swept,
        best=dict(best.swept) if best else None,
        metrics={m: (selected or {}).get(m) for m in dict.fromkeys((facts.metric, *facts.report))},
        trials=len(section.trials),
        epochs_run=sum(t.last_epoch for t in section.trials),
        epochs_full=sum(section.planned_epochs(t) for t in section.trials),
        cpu_hours=None if resources is None else seconds * resources.get("cpu", 0.0) / 3600.0,
        gpu_hours=None if resources is None else seconds * resources.get("gpu", 0.0) / 3600.0,
        carried=tuple(section.carried or ()),
        test=section.test_metrics,
    )


@dataclasses.dataclass(frozen=True)
class StudySummary:
    facts: StudyFacts
    rows: tuple[SummaryRow, ...]
    # Set when the run was stopped before its end (Ctrl-C, SIGTERM): what stopped it, and where.
    interrupted: str | None = None

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys((self.facts.metric, *self.facts.report)))

    @property
    def test_metrics(self) -> list[str]:
        """The test metrics any section reports, in their first order (empty: no test: sections)."""
        return list(dict.fromkeys(m for r in self.rows for m in r.test))

    def total(self) -> dict[str, Any]:
        def add(key: str) -> float | None:
            values = [getattr(r, key) for r in self.rows]
            return None if any(v is None for v in values) else sum(values)

        run, full = sum(r.epochs_run for r in self.rows), sum(r.epochs_full for r in self.rows)
        return {"trials": sum(r.trials for r in self.rows), "epochs_run": run, "epochs_full": full,
                "saved": 1.0 - run / full if full else None, "cpu_hours": add("cpu_hours"), "gpu_hours": add("gpu_hours")}  # fmt: skip

    # --- as text ------------------------------------------------------------------------------

    def header(self) -> list[str]:
        return ["section", "name", "hyperparameters", "best configuration", *self.metrics, *self.test_metrics,
                "trials", "trial-epochs", "saved", "CPU-h", "GPU-h"]  # fmt: skip

    def cells(self) -> list[list[str]]:
        rows = []
        for r in self.rows:
            best = "none" if r.best is None else assignments(r.best) or "(no sweep)"
            rows.append([r.section, r.name, ", ".join(r.hyperparameters), best,
                         *(short(r.metrics.get(m)) for m in self.metrics),
                         *(short(r.test.get(m)) for m in self.test_metrics), str(r.trials),
                         f"{r.epochs_run} of {r.epochs_full}", _share(r.saved), _hours(r.cpu_hours), _hours(r.gpu_hours)])  # fmt: skip
        if len(self.rows) > 1:
            t = self.total()
            rows.append(["total", "", "", "", *("" for _ in self.metrics), *("" for _ in self.test_metrics), str(t["trials"]),
                         f"{t['epochs_run']} of {t['epochs_full']}", _share(t["saved"]), _hours(t["cpu_hours"]),
                         _hours(t["gpu_hours"])])  # fmt: skip
        return rows

    def to_text(self) -> str:
        """What ``expgrid run`` prints at its end and ``expgrid report`` prints again."""
        return (f"Best configuration per section ({self.facts.metric}, {self.facts.mode}):\n"
                + text_table(self.header(), self.cells()) + self._carried_lines("  ") + self._interrupted_line())  # fmt: skip

    def _carried_lines(self, indent: str) -> str:
        return "".join(f"{indent}{line}\n" for r in self.rows if (line := r.carried_line()))

    def _interrupted_line(self) -> str:
        if self.interrupted is None:
            return ""
        return f"interrupted: {self.interrupted}\n"

    def to_markdown(self) -> str:
        return (
            f"## {self.facts.name}: best configuration per section\n\n"
            f"Best by `{self.facts.metric}` ({self.facts.mode}). *trial-epochs*: run of the full grid (every trial to "
            f"its last epoch); *saved*: the share early stopping and ASHA did not run; CPU-/GPU-hours: trial wall "
            f"time × the resources reserved per trial.\n\n" + markdown_table(self.header(), self.cells())
            + ("\n" + self._carried_lines("- ") if any(r.carried for r in self.rows) else "")
            + (f"\n**{self._interrupted_line().strip()}**\n" if self.interrupted else "")
        )

    def to_csv(self) -> str:
        header = ["section", "name", "hyperparameters", "best", *self.metrics, *self.test_metrics, "trials", "epochs_run",
                  "epochs_full", "saved", "cpu_hours", "gpu_hours", "carried"]  # fmt: skip
        rows = [[r.section, r.name, list(r.hyperparameters), r.best, *(r.metrics.get(m) for m in self.metrics),
                 *(r.test.get(m) for m in self.test_metrics), r.trials,
                 r.epochs_run, r.epochs_full, r.saved, r.cpu_hours, r.gpu_hours,
                 [f"{p['section']}/{p['trial']}" for p in r.carried] or None] for r in self.rows]  # fmt: skip
        return csv_text(header, rows)

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.rows]


def study_summary(facts: StudyFacts, sections: Sequence[SectionResults], interrupted: str | None = None) -> StudySummary:
    return StudySummary(facts, tuple(summary_row(facts, s) for s in sections), interrupted)


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.0%}"


def _hours(value: float | None) -> str:
    return "" if not is_number(value) else "0" if value == 0 else f"{value:.3g}"
