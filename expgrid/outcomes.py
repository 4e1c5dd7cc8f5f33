"""What a run hands back: a :class:`SectionOutcome` per section, a :class:`StudyOutcome` per study."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from expgrid.records import TrialRecord
from expgrid.study_types import Section, Study

if TYPE_CHECKING:  # the reports package loads pandas and matplotlib: not for a type name
    from expgrid.reports import StudySummary


@dataclasses.dataclass
class SectionOutcome:
    section: Section
    trials: list[TrialRecord]
    best: TrialRecord | None
    skipped: bool  # finished in an earlier run and read back
    seconds: float


@dataclasses.dataclass
class StudyOutcome:
    study: Study
    results_dir: Path
    tracking_uri: str
    sections: list[SectionOutcome]
    summary: StudySummary | None = None  # None when the report could not be written
    experiment_id: str | None = None  # the study's MLflow experiment (None: the mirror did not say)
