"""What each MLflow run of a results directory must hold, read from the results alone.

``expgrid sync`` makes a store equal to this; it is what the writer process writes during a
run (same names, tags, params, metrics, artifacts, statuses), so a store a healthy run wrote
needs nothing. Finished sections come from ``section.json`` / ``trials.json``; a section whose
run was interrupted (no ``section.json``) from ``trials.jsonl`` (trials that had ended) and
``rows.jsonl`` (the epochs of the trials that were running): its run and those trials' runs are
KILLED, and what the results do not say (its name, a running trial's config) is not compared.

A file that is there but cannot be read raises :class:`expgrid.durable.RecordError` naming it
(the readers of :mod:`expgrid.records`).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from expgrid import records
from expgrid.config import flatten
from expgrid.logfiles import log_path
from expgrid.records import TrialRecord
from expgrid.stopping import INTERRUPTED, MLFLOW_STATUS, section_mlflow_status
from expgrid.study import is_number
from expgrid.tracking import notes
from expgrid.tracking.layout import artifact_text, carried_tags, epoch_points, params_of, parent_tags, trial_run_name
from expgrid.tracking.ledger import Ledger


@dataclasses.dataclass
class Artifact:
    """One artifact of a run: a file of the results directory, or text made from them."""

    path: Path | None = None
    text: str | None = None

    @property
    def size(self) -> int:
        return self.path.stat().st_size if self.path is not None else len((self.text or "").encode())


@dataclasses.dataclass
class RunRecord:
    """One run as the results say it must be. ``None`` for what they do not say."""

    key: Any  # "study", a section id, or (section id, trial index): its place in the ledger
    kind: str  # study | section | trial
    name: str | None
    status: str  # FINISHED | FAILED | KILLED
    params: dict[str, str] | None
    tags: dict[str, str]  # without the parent's run id (known once the parent is in the store)
    metrics: dict[str, list[tuple[int, float]]]  # name → every (step, value), in order
    artifacts: dict[str, Artifact]  # path in the run → content
    start_time: int | None = None  # ms
    end_time: int | None = None
    children: list[RunRecord] = dataclasses.field(default_factory=list)

    def points(self) -> int:
        return sum(len(v) for v in self.metrics.values())


def study_record(results: Path, state: dict[str, Any], ledger: Ledger) -> RunRecord:
    """The study run and, under it, every section's and trial's (``state``: ``study.json``)."""
    study = str(state["study"])
    sections = [_section_record(results, sid, ledger, study) for sid in _section_ids(results, state)]
    sections = [s for s in sections if s is not None]
    params = ledger.study_params or {k: state[k] for k in ("study_file", "metric", "mode") if k in state}
    artifacts: dict[str, Artifact] = {}
    report = results / "report"
    rows = None
    if (report / "summary.txt").is_file():
        rows = _summary_json(results)
        artifacts["summary.json"] = Artifact(text=artifact_text(rows))
        artifacts.update({f"report/{p.name}": Artifact(p) for p in sorted(report.iterdir()) if p.is_file()})
    status = state.get("status")
    if status not in ("FINISHED", "FAILED", "KILLED"):
        listed = [s for s in sections if s.key in (state.get("sections") or [])]
        status = "FINISHED" if listed and all(s.status == "FINISHED" for s in listed) else "FAILED"
    tags = {"expgrid.kind": "study"}
    metrics: dict[str, list[tuple[int, float]]] = {}
    plan = ledger.plan("study")
    if plan is not None:  # as the writer describes it (expgrid.tracking.notes)
        tags[notes.NOTE_TAG] = notes.study_note(plan, rows, plan["metric"])
        metrics = {k: [(0, v)] for k, v in notes.study_metrics(rows, plan["metric"], state.get("status") == "FINISHED").items()}
    return RunRecord("study", "study", study, status, params_of(params), tags, metrics, artifacts, children=sections)


def _summary_json(results: Path) -> Any:
    from expgrid import reports

    facts, sections = reports.load_results(results)
    return reports.study_summary(facts, sections).to_json()


def _section_ids(results: Path, state: dict[str, Any]) -> list[str]:
    listed = [str(s) for s in state.get("sections") or []]
    folder = results / "sections"
    on_disk = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return list(dict.fromkeys([*listed, *on_disk]))


def _section_record(results: Path, section_id: str, ledger: Ledger, study: str) -> RunRecord | None:
    saved = records.read_section(results, section_id)
    if saved is None:
        plan = ledger.plan(section_id)
        return _interrupted_section(results, section_id, None if plan is None else notes.section_note(plan, None, study))
    trials = records.read_trials(results, section_id)
    best = saved.get("best")
    metric = saved.get("metric")
    swept = saved.get("swept")
    if swept is None:
        swept = list(trials[0].swept) if trials else []
    fixed = {k: v for k, v in flatten(trials[0].config).items() if k not in swept} if trials else {}
    name = str(saved.get("name", section_id))
    metrics: dict[str, list[tuple[int, float]]] = {}
    best_value = ((best or {}).get("metrics") or {}).get(metric, math.nan)
    test = ((saved.get("test") or {}).get("metrics") or {}) if isinstance(saved.get("test"), dict) else {}
    for key, value in ((f"best_{metric}", best_value), ("seconds", saved.get("seconds")), *test.items()):
        if is_number(value):  # as the writer logs them at the section's end (NaN included)
            metrics[key] = [(0, float(value))]
    artifacts = {"best_config.json": Artifact(text=artifact_text(best or {}))}
    artifacts.update(_log_and_report(results, section_id))
    tags = {"expgrid.kind": "section", "expgrid.section_id": section_id, "expgrid.section_name": name,
            "expgrid.best_trial": str(best["index"]) if best else "none", **carried_tags(saved.get("carried")),
            notes.NOTE_TAG: notes.section_note(ledger.plan(section_id), saved, study)}  # fmt: skip
    params = {**params_of(fixed), **notes.section_best_params(saved)}
    return RunRecord(section_id, "section", f"{section_id} {name}", section_mlflow_status(bool(best)), params,
                     tags, metrics, artifacts, children=[_trial_record(results, section_id, t) for t in trials])  # fmt: skip


def _interrupted_section(results: Path, section_id: str, note: str | None) -> RunRecord | None:
    ended = {t.index: t for t in records.ended_trials(results, section_id)}
    running: dict[int, TrialRecord] = {}
    for index, row in records.rows_of(results, section_id):
        if index not in ended:
            running.setdefault(index, TrialRecord(index=index, swept={}, config={})).add_row(row)
    if not ended and not running:
        return None
    children = [_trial_record(results, section_id, t) for t in ended.values()]
    for trial in running.values():
        child = _trial_record(results, section_id, trial)
        child.name, child.params, child.status = None, None, MLFLOW_STATUS[INTERRUPTED]  # as the runner ends them
        child.tags = {k: child.tags[k] for k in ("expgrid.kind", "expgrid.section_id", "expgrid.trial_index")}
        children.append(child)
    children.sort(key=lambda c: c.key[1])
    tags = {"expgrid.kind": "section", "expgrid.section_id": section_id, **({notes.NOTE_TAG: note} if note else {})}
    return RunRecord(section_id, "section", None, "KILLED", None, tags, {}, _log_and_report(results, section_id),
                     children=children)  # fmt: skip


def _log_and_report(results: Path, section_id: str) -> dict[str, Artifact]:
    artifacts = {}
    log = log_path(results, section_id)
    if log.is_file():
        artifacts[f"logs/{log.name}"] = Artifact(log)
    report = records.section_dir(results, section_id) / "report"
    if report.is_dir():
        artifacts.update({f"report/{p.name}": Artifact(p) for p in sorted(report.iterdir()) if p.is_file()})
    return artifacts


def _trial_record(results: Path, section_id: str, trial: TrialRecord) -> RunRecord:
    metrics: dict[str, list[tuple[int, float]]] = {}
    for row in trial.history:
        step, values = epoch_points(row)
        for name, value in values:
            metrics.setdefault(name, []).append((step, value))
    tags = {"expgrid.kind": "trial", "expgrid.section_id": section_id, "expgrid.trial_index": str(trial.index),
            "expgrid.status": trial.status, "expgrid.retries": str(trial.retries),
            "expgrid.last_epoch": str(trial.last_epoch), **parent_tags(trial.parent)}  # fmt: skip
    if trial.error:
        tags["expgrid.error"] = trial.error[:5000]
    folder = records.trial_dir(results, section_id, trial.index)
    artifacts = {name: Artifact(folder / name) for name in trial.artifacts if (folder / name).is_file()}
    return RunRecord((section_id, trial.index), "trial", trial_run_name(section_id, trial.index, trial.swept),
                     MLFLOW_STATUS.get(trial.status, "FAILED"), params_of(trial.config), tags, metrics, artifacts,
                     start_time=_ms(trial.started), end_time=_ms(trial.ended))  # fmt: skip


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)
