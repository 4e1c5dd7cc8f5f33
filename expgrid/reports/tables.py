"""A section's table: one row per trial, as the coursework tabulates a sweep.

Columns: the trial's index, the parent configuration it started from (a section with
``inherit: {…, top: k}``: ``<section>/<trial>`` of the parent, whose carried values come first
among the swept ones) and its swept value(s); the study metric and every other reported
metric at the trial's selected epoch, with the difference (Δ) of the study metric and the
secondary metrics from the reference row; how the trial ended, at which epoch of how many, its
time; and a note marking the best and the reference rows. The reference row is the trial run
with the section's base configuration (defaults ⊕ inherited best values ⊕ fixed), when the
grid holds it: the row the other values are compared with.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from expgrid.reports.results import SectionResults, StudyFacts, metric_names, number, shown_row
from expgrid.reports.text import assignments, csv_text, markdown_table, short, signed
from expgrid.study import is_number

BEST = "best"
REFERENCE = "reference"
TESTED = "tested"


@dataclasses.dataclass
class SectionTable:
    title: str
    columns: list[str]  # keys of each row, and the CSV header
    rows: list[dict[str, Any]]  # raw values (numbers unrounded)
    notes: list[str]

    def column(self, key: str) -> list[Any]:
        return [row.get(key) for row in self.rows]

    def to_markdown(self) -> str:
        header = [_title(c) for c in self.columns]
        body = [[_cell(c, row.get(c)) for c in self.columns] for row in self.rows]
        notes = "".join(f"\n{note}\n" for note in self.notes)
        return f"### {self.title}\n\n{markdown_table(header, body)}{notes}"

    def to_csv(self) -> str:
        return csv_text(self.columns, [[row.get(c) for c in self.columns] for row in self.rows])


def section_table(facts: StudyFacts, section: SectionResults) -> SectionTable:
    shown = {t.index: shown_row(facts, section, t) or {} for t in section.trials}
    compared = [facts.metric, *(m for m in facts.report if m != facts.metric)]
    present = {k for row in shown.values() for k, v in row.items() if is_number(v)}
    metrics = [m for m in metric_names(facts, [section]) if m == facts.metric or m in present]
    monitor = section.select.monitor
    if monitor is not None:  # the metric that chose each trial's epoch, beside the one that ranks trials
        metrics = [facts.metric, monitor, *(m for m in metrics if m not in (facts.metric, monitor))]
    reference = section.reference_trial
    best = section.best

    parented = any(t.parent for t in section.trials)
    columns = ["trial", *(["parent"] if parented else []), *section.swept]
    for m in metrics:
        columns += [m, f"delta_{m}"] if m in compared else [m]
    # `trial_seconds`, not `seconds`: a trainable may report a metric of that name (classify does)
    # The test metrics of the evaluated trial (test: best), apart from the validation ones that chose it
    test_columns = list(section.test_metrics)
    columns += test_columns
    columns += ["epoch", "status", "epochs_run", "epochs_planned", "trial_seconds", "note"]
    tested = section.tested

    rows = []
    for trial in sorted(section.trials, key=lambda t: t.index):
        values = shown[trial.index]
        row: dict[str, Any] = {"trial": trial.index}
        if parented:
            row["parent"] = f"{trial.parent['section']}/{trial.parent['trial']}" if trial.parent else None
        row.update({name: trial.swept.get(name) for name in section.swept})
        for m in metrics:
            row[m] = values.get(m) if is_number(values.get(m)) else None
            if m in compared:
                row[f"delta_{m}"] = _difference(row[m], shown[reference.index].get(m)) if reference else None
        for m in test_columns:
            row[m] = section.test_metrics[m] if trial is tested else None
        row.update(
            epoch=values.get("epoch"),
            status=trial.status,
            epochs_run=trial.last_epoch,
            epochs_planned=section.planned_epochs(trial),
            trial_seconds=trial.seconds,
            note=", ".join(n for n, t in ((BEST, best), (REFERENCE, reference), (TESTED, tested)) if t is trial) or None,
        )
        rows.append(row)
    return SectionTable(f"Section {section.id} — {section.name}", columns, rows, _notes(facts, section))


def _difference(value: Any, reference: Any) -> float | None:
    if value is None or not is_number(reference):
        return None
    difference = number(value) - number(reference)
    return None if math.isnan(difference) else difference


def _notes(facts: StudyFacts, section: SectionResults) -> list[str]:
    epoch = section.select.words(facts.metric, facts.mode)
    if section.select.monitor is not None:
        epoch = epoch.replace(section.select.monitor, f"`{section.select.monitor}`")
    goal = "highest" if facts.mode == "max" else "lowest"
    notes = [f"Each trial at {epoch} (*epoch*); **best**: the {goal} `{facts.metric}` at that epoch among trials "
             f"that did not fail or diverge; *epochs run* of *planned*: where the trial ended; *time*: its wall time."]  # fmt: skip
    if section.carried:
        notes.append(carried_note(section.carried, facts.metric))
    reference = section.reference_trial
    if reference is not None:
        notes.append(f"Δ: difference from the **reference** row, trial {reference.index} "
                     f"({assignments(reference.swept) or 'no sweep'}), the section's base configuration.")  # fmt: skip
    elif section.reference is None:
        notes.append("Δ left blank: these results do not record the section's base configuration.")
    else:
        notes.append(f"Δ left blank: no trial of this grid has the section's base configuration "
                     f"({assignments(section.reference)}).")  # fmt: skip
    test = section.test or {}
    if section.test_metrics:
        notes.append(f"test_*: the **tested** trial {test.get('trial')} at epoch {test.get('epoch')}, its selected "
                     f"epoch's checkpoint, evaluated once on the test split after the section; the validation "
                     f"metrics chose it.")  # fmt: skip
    elif test.get("error"):
        notes.append(f"Test evaluation of trial {test.get('trial')} gave no metrics: {test['error']}")
    return notes


def carried_note(carried: list[dict[str, Any]], metric: str) -> str:
    """What the *parent* column means, naming each parent configuration carried."""
    def one(p: dict[str, Any]) -> str:
        score = f"; {metric} {short(p['score'])}" if p.get("score") is not None else ""
        return f"trial {p['trial']} ({assignments(p.get('values')) or 'no sweep'}{score})"

    best = f"its {len(carried)} best configurations" if len(carried) > 1 else "its best configuration"
    return (f"*parent*: the trial of section {carried[0]['section']} each trial starts from ({best}, "
            f"each crossed with this section's sweep): {', '.join(one(p) for p in carried)}.")  # fmt: skip


def _title(column: str) -> str:
    if column.startswith("delta_"):
        return f"Δ {column[len('delta_'):]}"
    return {"epochs_run": "epochs run", "epochs_planned": "planned", "trial_seconds": "time (s)"}.get(column, column)


def _cell(column: str, value: Any) -> str:
    if column.startswith("delta_"):
        return signed(value)
    if column == "trial_seconds":
        return "" if value is None else f"{value:.1f}"
    if column == "note":
        return f"**{value}**" if value else ""
    return short(value)
