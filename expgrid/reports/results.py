"""What a report is built from: the study's key facts and each section's stored trials.

Everything here is read from the results directory (``study.json``, ``sections/<id>/section.json``
and ``trials.json``), so a report can be rebuilt from the results alone, even after the study
file moved or changed. The runner writes the facts there (:meth:`StudyFacts.to_json`,
:func:`section_facts`) and builds its own report through the same readers, so ``expgrid run``
and ``expgrid report`` cannot disagree.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from expgrid import records
from expgrid.config import get_path
from expgrid.errors import ResultsError
from expgrid.records import TrialRecord
from expgrid.study import Selection, is_number


@dataclasses.dataclass(frozen=True)
class StudyFacts:
    """The study-level facts a report needs, kept in ``study.json``."""

    name: str
    metric: str
    mode: str
    report: tuple[str, ...] = ()  # secondary metrics of the summary
    metrics: tuple[str, ...] | None = None  # what the trainable declares it reports; None: unknown

    @classmethod
    def from_study(cls, study: Any, spec: Any = None) -> StudyFacts:
        declared = getattr(spec, "metrics", None)
        return cls(study.name, study.metric, study.mode, tuple(study.report), None if declared is None else tuple(declared))

    def to_json(self) -> dict[str, Any]:
        return {"study": self.name, "metric": self.metric, "mode": self.mode, "report": list(self.report),
                "metrics": None if self.metrics is None else list(self.metrics)}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StudyFacts:
        metrics = data.get("metrics")
        return cls(data["study"], data["metric"], data["mode"], tuple(data.get("report") or ()),
                   None if metrics is None else tuple(metrics))  # fmt: skip


@dataclasses.dataclass
class SectionResults:
    """One finished section: its facts and its trial records."""

    id: str
    name: str
    swept: tuple[str, ...]
    select: Selection  # also given as its JSON form (section.json's "select"), read into a Selection
    # Swept name → its value in the section's base configuration (defaults + inherited best
    # values + fixed); None when unknown (results written before reports existed).
    reference: dict[str, Any] | None
    resources: dict[str, float] | None  # per trial, as reserved from Ray; None when unknown
    seconds: float
    best_index: int | None
    trials: list[TrialRecord]
    # With ``inherit: {…, top: k}``: the parent configurations its trials crossed with
    # (``carry.Parent`` JSON: section, trial, values, score), in order; None otherwise.
    carried: list[dict[str, Any]] | None = None
    # The best trial's test evaluation (section.json "test", see expgrid.test_eval): trial, epoch,
    # metrics (test_*) or error; None when the section asked for none.
    test: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.select = Selection.of(self.select)

    @property
    def test_metrics(self) -> dict[str, float]:
        return dict((self.test or {}).get("metrics") or {})

    @property
    def tested(self) -> TrialRecord | None:
        """The trial the test metrics are of."""
        index = (self.test or {}).get("trial")
        return next((t for t in self.trials if t.index == index), None) if self.test_metrics else None

    @property
    def best(self) -> TrialRecord | None:
        return next((t for t in self.trials if t.index == self.best_index), None)

    @property
    def reference_trial(self) -> TrialRecord | None:
        """The trial run with the base configuration's values, when the grid holds one."""
        if self.reference is None:
            return None
        missing = object()
        for trial in self.trials:
            if all(get_path(trial.config, name, missing) == value for name, value in self.reference.items()):
                return trial
        return None

    def planned_epochs(self, trial: TrialRecord) -> int:
        """The epochs a trial was given (its ``epochs`` parameter); for a trainable without one,
        the most any trial of the section ran."""
        epochs = trial.config.get("epochs")
        if is_number(epochs):
            return int(epochs)
        return max((t.last_epoch for t in self.trials), default=0)


def section_facts(swept: Sequence[str], reference: Mapping[str, Any] | None, resources: Mapping[str, float],
                  carried: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    """The keys the runner adds to ``section.json`` so that a report can be rebuilt from it;
    ``carried``: the parents of a ``top`` carry (written only when there are some)."""
    facts = {"swept": list(swept), "reference": None if reference is None else dict(reference),
             "resources": {k: float(v) for k, v in resources.items()}}  # fmt: skip
    if carried:
        facts["carried"] = [dict(p) for p in carried]
    return facts


def section_from_saved(saved: Mapping[str, Any], trials: list[TrialRecord]) -> SectionResults:
    """A section from its ``section.json`` content and its trial records."""
    swept = saved.get("swept")
    if swept is None:  # written before reports existed: the trials say what was swept
        swept = list(trials[0].swept) if trials else []
    best = saved.get("best")
    return SectionResults(
        id=str(saved["id"]),
        name=str(saved.get("name", saved["id"])),
        swept=tuple(swept),
        select=Selection.of(saved.get("select", "last_epoch")),  # old ones: "last_epoch" / "best_epoch"
        reference=saved.get("reference"),
        resources=saved.get("resources"),
        seconds=float(saved.get("seconds") or 0.0),
        best_index=None if best is None else int(best["index"]),
        trials=trials,
        carried=saved.get("carried"),
        test=saved.get("test") if isinstance(saved.get("test"), Mapping) else None,
    )


def load_section(results: Path, section_id: str) -> SectionResults | None:
    saved = records.read_section(results, section_id)
    if saved is None:
        return None
    return section_from_saved(saved, records.read_trials(results, section_id))


def load_results(results: Path) -> tuple[StudyFacts, list[SectionResults]]:
    """The facts and finished sections of a results directory, in the order the run listed them.

    Raises :class:`ResultsError` when ``results`` is not a results directory."""
    results = Path(results)
    if not results.is_dir():
        raise ResultsError(str(results), "an existing results directory (written by `expgrid run`)", "no such directory")
    state = records.read_study_state(results)
    if state is None:
        raise ResultsError(str(results), "a results directory written by `expgrid run` (with a readable study.json)",
                           "no study.json")  # fmt: skip
    if "metric" in state:
        facts = StudyFacts.from_json(state)
        ids = [str(i) for i in state.get("sections", [])]
    else:
        facts, ids = _facts_from_study_file(results, state)
    sections = [s for s in (load_section(results, sid) for sid in ids) if s is not None]
    return facts, sections


def _facts_from_study_file(results: Path, state: Mapping[str, Any]) -> tuple[StudyFacts, list[str]]:
    """Results written before ``study.json`` held the study's facts: read the study file."""
    from expgrid.errors import StudyFileError
    from expgrid.study import load_study

    path = state.get("study_file")
    try:
        study = load_study(path) if path else None
    except StudyFileError as e:
        raise ResultsError(str(results), "a study.json that names the study (or a readable study file)", str(e)) from None
    if study is None:
        raise ResultsError(str(results), "a study.json that names the study file", "none")
    ids = [s.id for s in study.sections if records.read_section(results, s.id) is not None]
    return StudyFacts.from_study(study), ids


# ---------------------------------------------------------------------------------------------
# Metrics as a report sees them


def epoch_rows(trial: TrialRecord) -> list[dict[str, Any]]:
    """The trial's reports, one per epoch: a retried trial reports some epochs twice (from its
    last checkpoint on); the later report of an epoch is the one that counts."""
    by_epoch: dict[Any, dict[str, Any]] = {}
    for position, row in enumerate(trial.history, start=1):
        by_epoch[row.get("epoch", position)] = row
    return list(by_epoch.values())


def shown_row(facts: StudyFacts, section: SectionResults, trial: TrialRecord) -> dict[str, Any] | None:
    """The epoch that stands for a trial in tables and value curves: the selected one (last or
    best epoch); for a trial that has none (failed, diverged), its last report."""
    row = trial.selected(facts.metric, facts.mode, section.select)
    if row is None and trial.history:
        row = trial.history[-1]
    return row


def metric_names(facts: StudyFacts, sections: Sequence[SectionResults]) -> list[str]:
    """The metrics to show, in order: the study metric, the secondary ones, then the rest the
    trainable reports (as declared, else as found in the histories)."""
    if facts.metrics is not None:
        rest = list(facts.metrics)
    else:
        seen: dict[str, None] = {}
        for section in sections:
            for trial in section.trials:
                for row in trial.history:
                    seen.update((k, None) for k, v in row.items() if is_number(v))
        rest = sorted(seen)
    ordered = [facts.metric, *facts.report, *rest]
    return [m for i, m in enumerate(ordered) if m != "epoch" and m not in ordered[:i]]


def number(value: Any) -> float:
    """A metric value as a float; NaN for anything missing or not a number."""
    return float(value) if is_number(value) else math.nan
