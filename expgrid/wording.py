"""Words for people: how a value, a trial and a study's end are written on the terminal."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from expgrid.outcomes import StudyOutcome
from expgrid.records import TrialRecord
from expgrid.study_types import Study


def short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, list) else str(value)


def describe(study: Study, trial: TrialRecord | None, select: str | None = None) -> str:
    """A trial as the progress line and the section's end show it: its score and swept values."""
    if trial is None:
        return "none"
    score = trial.score(study.metric, study.mode, select or "last_epoch")
    if score is None and trial.history:
        score = trial.history[-1].get(study.metric)
    swept = ", ".join(f"{k}={short(v)}" for k, v in trial.swept.items())
    if not swept:  # a section that sweeps nothing: its one trial
        return short(score) if score is not None else f"trial {trial.index}"
    return f"{short(score)} ({swept})" if score is not None else f"({swept})"


def print_summary(study: Study, outcome: StudyOutcome, stream: TextIO | None = None) -> None:
    """The study summary, as ``expgrid report`` prints it again from the results."""
    out = stream or sys.stdout
    if outcome.summary is not None:
        print("\n" + outcome.summary.to_text(), end="", file=out)
