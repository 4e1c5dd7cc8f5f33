"""Every trial of a study in one Parquet file, for pandas: ``<results>/report/trials.parquet``.

One row per trial-epoch (a trial that reported nothing still has one row, with no epoch):
``section``, ``section_name``, ``trial``, ``status``, ``retries``, ``error``, ``trial_seconds``,
``best`` (the section's best trial), ``reference`` (the section's reference trial), ``selected``
(the epoch that represents the trial), ``swept`` (its swept values as JSON), ``epoch``, ``stop``
(on a trial's last epoch: why it stopped early, as its record's ``stop``; else empty), one
column per reported metric, and one ``config.<dotted name>`` column per parameter of its config.
With ``test: best``: ``tested`` (the row of the trial-epoch evaluated on the test split: the
section's best trial at its selected epoch) and one ``test_*`` column per test metric, set on that
row only (empty elsewhere), apart from the validation metrics that chose it::

    df = pandas.read_parquet("results/digits-demo/report/trials.parquet")
    df[df.selected].pivot_table(index="config.optimizer.lr", values="val_accuracy")
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from expgrid.config import flatten
from expgrid.reports.results import SectionResults, StudyFacts, epoch_rows, metric_names
from expgrid.study import is_number

FILE_NAME = "trials.parquet"


def trial_rows(facts: StudyFacts, sections: Sequence[SectionResults]) -> list[dict[str, Any]]:
    metrics = metric_names(facts, sections)
    tests = list(dict.fromkeys(m for s in sections for m in s.test_metrics))
    rows = []
    for section in sections:
        best, reference, tested = section.best, section.reference_trial, section.tested
        tested_epoch = (section.test or {}).get("epoch")
        for trial in sorted(section.trials, key=lambda t: t.index):
            selected = trial.selected(facts.metric, facts.mode, section.select)
            selected_epoch = None if selected is None else selected.get("epoch")
            head = {
                "section": section.id,
                "section_name": section.name,
                "trial": trial.index,
                "status": trial.status,
                "retries": trial.retries,
                "error": trial.error,
                "trial_seconds": trial.seconds,
                "best": trial is best,
                "reference": trial is reference,
                "swept": json.dumps(trial.swept, default=str),
                "parent": f"{trial.parent['section']}/{trial.parent['trial']}" if trial.parent else None,
            }
            config = {f"config.{k}": _cell(v) for k, v in flatten(trial.config).items()}
            reports = epoch_rows(trial) or [{}]
            for report in reports:
                epoch = report.get("epoch")
                values = {m: float(report[m]) if is_number(report.get(m)) else None for m in metrics}
                test_row = trial is tested and epoch is not None and epoch == tested_epoch
                test = {m: section.test_metrics.get(m) if test_row else None for m in tests}
                extra = {"tested": test_row, **test} if tests else {}
                rows.append({**head, "selected": epoch is not None and epoch == selected_epoch, "epoch": epoch,
                             "stop": trial.stop if report is reports[-1] else None, **values, **extra, **config})  # fmt: skip
    return rows


def trials_frame(facts: StudyFacts, sections: Sequence[SectionResults]) -> Any:
    """The DataFrame the Parquet file holds (``expgrid.open(...).trials()`` too)."""
    import pandas as pd

    frame = pd.DataFrame(trial_rows(facts, sections))
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = _one_type(frame[column])
    return frame


def write_trials(path: Path, facts: StudyFacts, sections: Sequence[SectionResults]) -> Path:
    frame = trials_frame(facts, sections)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)  # a reader never sees half a file
    return path


def read_trials(path: Path) -> Any:
    import pandas as pd

    return pd.read_parquet(path)


def _cell(value: Any) -> Any:
    """Config values as Parquet can hold them: lists and mappings as JSON text."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _one_type(column: Any) -> Any:
    """Parquet columns hold one type. A parameter that is a number in one section and a string
    in another (e.g. ``model.hidden`` of 64 or "[64, 32]") becomes text; numbers of mixed int and
    float stay numbers."""
    kinds = {type(v) for v in column if v is not None}
    if kinds <= {int, float} and kinds:
        return column.astype("float64") if float in kinds else column.astype("Int64")
    if len(kinds) <= 1:
        return column
    return column.map(lambda v: None if v is None else v if isinstance(v, str) else json.dumps(v, default=str))
