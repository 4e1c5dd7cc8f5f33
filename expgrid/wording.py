"""Words for people: how a value, a trial and a study's end are written on the terminal."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from expgrid.outcomes import StudyOutcome
from expgrid.records import TrialRecord
from expgrid.study_types import Selection, Study


def short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, list) else str(value)


def describe(study: Study, trial: TrialRecord | None, select: str | Selection | None = None) -> str:
    """A trial as the progress line and the section's end show it: its score and swept values;
    in a best-epoch section also the epoch that scored, and the monitor that chose it when that
    is not the study metric (``0.84 at epoch 7, lowest val_loss 0.41 (optimizer.lr=0.01)``)."""
    if trial is None:
        return "none"
    select = Selection.of(select or "last_epoch")
    scored = score = trial.score(study.metric, study.mode, select)
    if score is None and trial.history:
        score = trial.history[-1].get(study.metric)
    swept = ", ".join(f"{k}={short(v)}" for k, v in trial.swept.items())
    if score is None:
        return f"({swept})" if swept else f"trial {trial.index}"
    row = trial.selected(study.metric, study.mode, select) if select.best_epoch and scored is not None else None
    where = ""
    if row is not None and "epoch" in row:
        where = f" at epoch {row['epoch']}"
        if select.monitor is not None:
            where += f", {'highest' if select.mode == 'max' else 'lowest'} {select.monitor} {short(row[select.monitor])}"
    if not swept:  # a section that sweeps nothing: its one trial
        return f"{short(score)}{where}"
    return f"{short(score)}{where} ({swept})"


def print_summary(study: Study, outcome: StudyOutcome, stream: TextIO | None = None) -> None:
    """The study summary, as ``expgrid report`` prints it again from the results."""
    out = stream or sys.stdout
    if outcome.summary is not None:
        print("\n" + outcome.summary.to_text(), end="", file=out)
