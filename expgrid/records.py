"""What a section's trials did, as plain data: kept on disk so nothing run is lost.

``<results>/sections/<id>/trials.jsonl`` gets one line per trial as it ends (so a crash keeps
the finished ones); ``section.json`` is written when the section ends and is what a re-run
reads to skip the section and carry its best values forward. A trial's ``history`` holds its
epoch rows exactly as the trainable reported them; why it stopped early is its ``stop``.

Results written before typed trial messages (``expgrid.wire``) kept the stop reason (and
artifact files) inside the rows; :func:`_old_row` converts such rows as they are read, so
resume, report and sync read both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from expgrid import durable
from expgrid.durable import Warn
from expgrid.stopping import (
    ASHA_STOPPED,
    COMPLETED,
    DIVERGED,
    EARLY_STOPPED,
    FAILED,
    INTERRUPTED,
    SCORED,
    is_finite_number,
    selection_value,
)
from expgrid.study_types import Selection

RUNNING = "running"
PENDING = "pending"
__all__ = ["ASHA_STOPPED", "COMPLETED", "DIVERGED", "EARLY_STOPPED", "FAILED", "INTERRUPTED", "PENDING", "RUNNING",
           "TrialRecord"]  # fmt: skip


@dataclasses.dataclass
class TrialRecord:
    index: int
    swept: dict[str, Any]
    config: dict[str, Any]
    status: str = PENDING
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    error: str | None = None
    retries: int = 0
    started: float | None = None  # unix seconds
    ended: float | None = None
    nodes: list[str] = dataclasses.field(default_factory=list)  # Ray nodes it ran on, in order
    artifacts: list[str] = dataclasses.field(default_factory=list)  # files in trial_dir(), by name
    # Why it stopped before its last epoch: diverged / early_stopped (the trial said so) or
    # asha_stopped (the scheduler cut it); None when it ran to its end, failed or still runs.
    stop: str | None = None
    # The carried configuration it started from (``inherit: {…, top: k}``): ``carry.Parent``'s
    # JSON, {"section", "trial", "values", "score"}; None for a section without ``top``.
    parent: dict[str, Any] | None = None

    @property
    def last_epoch(self) -> int:
        return int(self.history[-1].get("epoch", len(self.history))) if self.history else 0

    @property
    def seconds(self) -> float | None:
        return None if self.started is None or self.ended is None else self.ended - self.started

    def add_row(self, row: dict[str, Any]) -> None:
        """Append an epoch's report. A retry resumed from a checkpoint older than the last report
        repeats epochs: the rerun's rows replace those reported before the failure."""
        epoch = row.get("epoch")
        if self.history and isinstance(epoch, int) and epoch <= int(self.history[-1].get("epoch", 0)):
            self.history[:] = [r for r in self.history if int(r.get("epoch", 0)) < epoch]
        self.history.append(row)

    def selected(self, metric: str, mode: str, select: str | Selection) -> dict[str, Any] | None:
        """The epoch that represents this trial: its last (when it reports a finite ``metric``),
        or its best by the select monitor (``metric`` unless ``select`` names another) among the
        epochs reporting both as finite numbers; the first of equal ones."""
        select = Selection.of(select)
        if select.best_epoch:
            monitor, monitor_mode = select.by(metric, mode)
            rows = [(v, r) for r in self.history if (v := selection_value(r, metric, monitor)) is not None]
            if not rows:
                return None
            return (max if monitor_mode == "max" else min)(rows, key=lambda vr: vr[0])[1]
        rows = [r for r in self.history if is_finite_number(r.get(metric))]
        return rows[-1] if rows and self.history[-1] is rows[-1] else None

    def score(self, metric: str, mode: str, select: str | Selection) -> float | None:
        """The study metric at the selected epoch (None for a trial that cannot compete)."""
        row = self.selected(metric, mode, select) if self.status in SCORED else None
        return None if row is None else float(row[metric])

    def to_json(self) -> dict[str, Any]:
        # Shallow: the values are plain data already, and dataclasses.asdict's deep copy of
        # every history row cost the driver ~4 ms per trial (0.4 s for a section of 100).
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrialRecord:
        return cls(**data)


def ending(stop: str | None, error: str | None) -> str:
    """How a trial ended: failed (an error), why it was stopped (diverged / early_stopped by
    itself, asha_stopped by the scheduler), or completed."""
    if error:
        return FAILED
    return stop or COMPLETED


def best_trial(trials: list[TrialRecord], metric: str, mode: str, select: str | Selection) -> TrialRecord | None:
    """The best-scoring trial that was not failed or diverged, by the study ``metric`` at each
    trial's selected epoch (whatever monitor selected it); ties go to the earlier trial."""
    scored = [(t.score(metric, mode, select), t) for t in trials]
    scored = [(s, t) for s, t in scored if s is not None]
    if not scored:
        return None
    sign = 1.0 if mode == "max" else -1.0
    return max(scored, key=lambda st: (sign * st[0], -st[1].index))[1]


# ---------------------------------------------------------------------------------------------
# Files


def section_dir(results: Path, section_id: str) -> Path:
    return results / "sections" / section_id


def trial_dir(results: Path, section_id: str, index: int) -> Path:
    """Where a trial's artifact files are kept (see ``expgrid.reporter``)."""
    return section_dir(results, section_id) / "trials" / str(index)


def write_artifacts(results: Path, section_id: str, trial: TrialRecord, files: dict[str, Any]) -> dict[str, Path]:
    """Write a trial's artifact files (text, bytes, or JSON) and list them on its record."""
    folder = trial_dir(results, section_id, trial.index)
    written = {}
    for name, content in files.items():
        path = folder / name
        with durable.naming(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content if isinstance(content, str) else json.dumps(content, indent=1, default=str))
        written[name] = path
        if name not in trial.artifacts:
            trial.artifacts.append(name)
    return written


def append_trial(results: Path, section_id: str, trial: TrialRecord) -> None:
    durable.append_line(section_dir(results, section_id) / "trials.jsonl", trial.to_json())


class RowLog:
    """``<section>/rows.jsonl``: every epoch row as the driver receives it, so a section resumed
    after the driver was killed still has the histories of the trials that were running.

    Rows are written as they come and flushed once per Tune result (:meth:`flush`), not once
    per row: a pack of small trials delivers dozens of rows in one result."""

    def __init__(self, results: Path, section_id: str):
        self.path = section_dir(results, section_id) / "rows.jsonl"
        with durable.naming(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a")

    def append(self, index: int, row: dict[str, Any]) -> None:
        with durable.naming(self.path):
            self._file.write(json.dumps({"trial": index, "row": row}, default=str) + "\n")

    def append_rows(self, index: int, rows: list[dict[str, Any]]) -> None:
        """Several rows of one trial in one write (a pack's result carries many)."""
        if rows:
            with durable.naming(self.path):
                self._file.write("".join(json.dumps({"trial": index, "row": row}, default=str) + "\n" for row in rows))

    def stopped(self, index: int, reason: str) -> None:
        """Why the trial stopped (a line of its own: ``{"trial": 3, "stop": "diverged"}``)."""
        with durable.naming(self.path):
            self._file.write(json.dumps({"trial": index, "stop": reason}) + "\n")

    def flush(self) -> None:
        with durable.naming(self.path):
            self._file.flush()

    def close(self) -> None:
        with durable.naming(self.path), contextlib.suppress(OSError):
            self._file.close()  # what it could not write has failed a flush already


_TRIAL_LINE = "a trial record per line (JSON Lines) written by expgrid"
_ROW_LINE = "an epoch row per line (JSON Lines) written by expgrid"


def _unfinished_fix(section_id: str) -> str:
    return (f"move it away and run again without --resume to rerun section {section_id} from the start, "
            "or restore it from a copy")  # fmt: skip


def read_progress(results: Path, section_id: str, trials: list[TrialRecord], *, warn: Warn) -> set[int]:
    """Fill ``trials`` from an interrupted attempt: ended trials from trials.jsonl, the others'
    histories from rows.jsonl. Returns the indices of the trials that had ended.

    A cut last line of either file is dropped (and cut off the file, which is appended to next).
    A trial whose end record was that cut line is rebuilt from its rows when they show how it
    ended (its last planned epoch, or a stop), so a completed trial stays completed; otherwise
    it continues as a running trial would. Trials interrupted by a stop are not ended."""
    by_index = {t.index: t for t in trials}
    last, cut = _trial_log(results, section_id, warn, repair=True)
    ended = {i for i, record in last.items() if i in by_index and record.status != INTERRUPTED}
    for index in ended:
        by_index[index].__dict__.update(last[index].__dict__)
    for index, row, stop in _row_log(results, section_id, warn, repair=True):
        if index in by_index and index not in ended:
            if row is not None:
                by_index[index].add_row(row)
            if stop is not None and by_index[index].stop is None:
                by_index[index].stop = stop
    index = _index_of_cut_record(cut)
    if index in by_index and index not in ended:
        trial = by_index[index]
        path = section_dir(results, section_id) / "trials.jsonl"
        if _rebuild_ending(trial, ended_at=path.stat().st_mtime):
            append_trial(results, section_id, trial)
            ended.add(index)
            warn(f"{path}: trial {index}'s record rebuilt from rows.jsonl ({trial.status})")
    return ended


def ended_trials(results: Path, section_id: str) -> list[TrialRecord]:
    """The last record of each trial in an unfinished section's trials.jsonl, by index (trials a
    stop cut short among them, with status ``interrupted``); read only."""
    last, _ = _trial_log(results, section_id, lambda text: None, repair=False)
    return [last[i] for i in sorted(last)]


def rows_of(results: Path, section_id: str) -> list[tuple[int, dict[str, Any]]]:
    """Every (trial index, epoch row) of a section's rows.jsonl, in order; read only."""
    return [(index, row) for index, row, _ in _row_log(results, section_id, lambda text: None, repair=False)
            if row is not None]  # fmt: skip


def _trial_log(results: Path, section_id: str, warn: Warn, repair: bool) -> tuple[dict[int, TrialRecord], str | None]:
    path = section_dir(results, section_id) / "trials.jsonl"
    fix = _unfinished_fix(section_id)
    lines, cut = durable.read_jsonl(path, _TRIAL_LINE, fix, warn, repair=repair)
    last: dict[int, TrialRecord] = {}
    for number, line in enumerate(lines, start=1):
        record = _trial_from_json(line, path, f"line {number}", fix)
        last[record.index] = record
    return last, cut


def _row_log(results: Path, section_id: str, warn: Warn,
             repair: bool) -> list[tuple[int, dict[str, Any] | None, str | None]]:  # fmt: skip
    """(trial index, epoch row, stop reason) per line of rows.jsonl: a line holds a row
    (``{"trial": 3, "row": {...}}``) or a stop (``{"trial": 3, "stop": "diverged"}``)."""
    path = section_dir(results, section_id) / "rows.jsonl"
    lines, _ = durable.read_jsonl(path, _ROW_LINE, _unfinished_fix(section_id), warn, repair=repair)
    entries: list[tuple[int, dict[str, Any] | None, str | None]] = []
    for number, line in enumerate(lines, start=1):
        is_row = isinstance(line, dict) and isinstance(line.get("row"), dict)
        is_stop = isinstance(line, dict) and isinstance(line.get("stop"), str)
        if not (isinstance(line, dict) and isinstance(line.get("trial"), int) and (is_row or is_stop)):
            raise durable.RecordError(path, f"{_ROW_LINE} (line {number})", f"{str(line)[:40]!r}",
                                      _unfinished_fix(section_id))  # fmt: skip
        if is_row:
            row, stop = _old_row(line["row"])
            entries.append((line["trial"], row, stop))
        else:
            entries.append((line["trial"], None, line["stop"]))
    return entries


def _index_of_cut_record(text: str | None) -> int | None:
    """The trial index at the start of a cut trials.jsonl line (``{"index": 3, ...``)."""
    match = re.match(r'\s*\{\s*"index"\s*:\s*(\d+)', text or "")
    return int(match.group(1)) if match else None


def _rebuild_ending(trial: TrialRecord, ended_at: float) -> bool:
    """Give ``trial`` the ending its rows show, if they show one (a stop, or its last epoch)."""
    if not trial.history:
        return False
    planned = trial.config.get("epochs")
    if trial.stop is None and not (isinstance(planned, int) and trial.last_epoch >= planned):
        return False
    trial.status, trial.ended = ending(trial.stop, None), ended_at
    return True


def _trial_from_json(data: Any, path: Path, where: str, fix: str) -> TrialRecord:
    try:
        record = TrialRecord.from_json(data)
        if not isinstance(record.index, int) or not isinstance(record.history, list):
            raise TypeError("not a trial record")
        if "stop" not in data:  # written before typed trial messages: the stop rode in the rows
            converted = [_old_row(row) for row in record.history]
            record.history = [row for row, _ in converted]
            stops = [stop for _, stop in converted if stop is not None]
            record.stop = stops[-1] if stops else ASHA_STOPPED if record.status == ASHA_STOPPED else None
        return record
    except (TypeError, ValueError, AttributeError):
        raise durable.RecordError(path, f"{_TRIAL_LINE} ({where})", f"{str(data)[:40]!r}", fix) from None


# The control keys that rows held before typed trial messages (``expgrid.wire``).
_OLD_STOP_KEY, _OLD_ARTIFACTS_KEY = "expgrid_stop", "expgrid_artifacts"


def _old_row(row: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A row as read: the user's metrics, and the stop reason a row of results written before
    typed trial messages carried (its artifact files, if any, were written to disk already)."""
    if _OLD_STOP_KEY not in row and _OLD_ARTIFACTS_KEY not in row:
        return row, None
    metrics = {k: v for k, v in row.items() if k not in (_OLD_STOP_KEY, _OLD_ARTIFACTS_KEY)}
    stop = row.get(_OLD_STOP_KEY)
    return metrics, str(stop) if stop else None


def write_json(path: Path, data: Any) -> None:
    """Write atomically: a crash mid-write leaves the old file, never half of the new one."""
    durable.write_json(path, data)


def read_study_state(results: Path) -> dict[str, Any] | None:
    """``study.json`` (None when there is none)."""
    path = results / "study.json"
    fix = ("delete it to start the study's record afresh (finished sections are found again from their own "
           "records), or restore it from a copy")  # fmt: skip
    data = durable.read_json(path, "a study record (JSON) written by expgrid", fix)
    if data is not None and not isinstance(data, dict):
        raise durable.RecordError(path, "a study record (JSON) written by expgrid", f"{str(data)[:40]!r}", fix)
    return data


def write_section(results: Path, section_id: str, summary: dict[str, Any], trials: list[TrialRecord]) -> None:
    folder = section_dir(results, section_id)
    write_json(folder / "trials.json", [t.to_json() for t in trials])
    write_json(folder / "section.json", summary)  # last: its presence means "finished"


def write_section_test(results: Path, section_id: str, test: dict[str, Any]) -> None:
    """Add a finished section's test evaluation (``expgrid.test_eval``) to its ``section.json``."""
    saved = read_section(results, section_id)
    if saved is None:
        raise FileNotFoundError(section_dir(results, section_id) / "section.json")
    write_json(section_dir(results, section_id) / "section.json", {**saved, "test": test})


def read_section(results: Path, section_id: str) -> dict[str, Any] | None:
    """A finished section's ``section.json`` (None when the section has not finished)."""
    path = section_dir(results, section_id) / "section.json"
    expected = "a section record (JSON) written by expgrid"
    fix = f"delete it to run section {section_id} again, or restore it from a copy"
    data = durable.read_json(path, expected, fix)
    if data is not None and not (isinstance(data, dict) and "id" in data and "best" in data):
        raise durable.RecordError(path, expected, f"{str(data)[:40]!r}", fix)
    return data


def read_trials(results: Path, section_id: str) -> list[TrialRecord]:
    """A finished section's trial records: ``trials.json``, or, when it is missing, the last
    record of each trial in ``trials.jsonl`` (which holds every trial by the section's end)."""
    folder = section_dir(results, section_id)
    fix = "delete it: expgrid rebuilds it from trials.jsonl"
    data = durable.read_json(folder / "trials.json", "a list of trial records (JSON) written by expgrid", fix)
    if data is not None:
        if not isinstance(data, list):
            raise durable.RecordError(folder / "trials.json", "a list of trial records", f"{str(data)[:40]!r}", fix)
        return [_trial_from_json(d, folder / "trials.json", f"item {i}", fix) for i, d in enumerate(data)]
    return ended_trials(results, section_id)
