"""What a section's trials did, as plain data: kept on disk so nothing run is lost.

``<results>/sections/<id>/trials.jsonl`` gets one line per trial as it ends (so a crash keeps
the finished ones); ``section.json`` is written when the section ends and is what a re-run
reads to skip the section and carry its best values forward.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from expgrid.stopping import (
    ASHA_STOPPED,
    COMPLETED,
    DIVERGED,
    EARLY_STOPPED,
    FAILED,
    SCORED,
    STOP_KEY,
    is_finite_number,
)

RUNNING = "running"
PENDING = "pending"
__all__ = ["ASHA_STOPPED", "COMPLETED", "DIVERGED", "EARLY_STOPPED", "FAILED", "PENDING", "RUNNING", "TrialRecord"]


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

    def selected(self, metric: str, mode: str, select: str) -> dict[str, Any] | None:
        """The epoch that represents this trial: its last, or its best by ``metric``."""
        rows = [r for r in self.history if is_finite_number(r.get(metric))]
        if not rows:
            return None
        if select == "best_epoch":
            return (max if mode == "max" else min)(rows, key=lambda r: r[metric])
        return rows[-1] if self.history[-1] is rows[-1] else None

    def score(self, metric: str, mode: str, select: str) -> float | None:
        row = self.selected(metric, mode, select) if self.status in SCORED else None
        return None if row is None else float(row[metric])

    def to_json(self) -> dict[str, Any]:
        # Shallow: the values are plain data already, and dataclasses.asdict's deep copy of
        # every history row cost the driver ~4 ms per trial (0.4 s for a section of 100).
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrialRecord:
        return cls(**data)


def ending(history: list[dict[str, Any]], error: str | None, planned_epochs: int | None, asha: bool) -> str:
    """How a trial ended, from its reports: failed, diverged / early_stopped (the trial said so
    in its last report), asha_stopped (ended before its last epoch under ASHA), or completed."""
    if error:
        return FAILED
    stop = history[-1].get(STOP_KEY) if history else None
    if stop:
        return str(stop)
    last = int(history[-1].get("epoch", 0)) if history else 0
    if asha and planned_epochs is not None and last < planned_epochs:
        return ASHA_STOPPED
    return COMPLETED


def best_trial(trials: list[TrialRecord], metric: str, mode: str, select: str) -> TrialRecord | None:
    """The best-scoring trial that was not failed or diverged; ties go to the earlier trial."""
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
    path = section_dir(results, section_id) / "trials.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(trial.to_json(), default=str) + "\n")


class RowLog:
    """``<section>/rows.jsonl``: every epoch row as the driver receives it, so a section resumed
    after the driver was killed still has the histories of the trials that were running.

    Rows are written as they come and flushed once per Tune result (:meth:`flush`), not once
    per row: a pack of small trials delivers dozens of rows in one result."""

    def __init__(self, results: Path, section_id: str):
        path = section_dir(results, section_id) / "rows.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a")

    def append(self, index: int, row: dict[str, Any]) -> None:
        self._file.write(json.dumps({"trial": index, "row": row}, default=str) + "\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_progress(results: Path, section_id: str, trials: list[TrialRecord]) -> set[int]:
    """Fill ``trials`` from an interrupted attempt: ended trials from trials.jsonl, the others'
    histories from rows.jsonl. Returns the indices of the trials that had ended."""
    folder = section_dir(results, section_id)
    by_index = {t.index: t for t in trials}
    ended: set[int] = set()
    for line in _lines(folder / "trials.jsonl"):
        record = TrialRecord.from_json(line)
        if record.index in by_index:
            by_index[record.index].__dict__.update(record.__dict__)
            ended.add(record.index)
    for line in _lines(folder / "rows.jsonl"):
        if line["trial"] in by_index and line["trial"] not in ended:
            by_index[line["trial"]].add_row(line["row"])
    return ended


def _lines(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # the last line of a file being written when the driver was killed
    return out


def write_json(path: Path, data: Any) -> None:
    """Write atomically: a crash mid-write leaves the old file, never half of the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_section(results: Path, section_id: str, summary: dict[str, Any], trials: list[TrialRecord]) -> None:
    folder = section_dir(results, section_id)
    write_json(folder / "trials.json", [t.to_json() for t in trials])
    write_json(folder / "section.json", summary)  # last: its presence means "finished"


def read_section(results: Path, section_id: str) -> dict[str, Any] | None:
    return read_json(section_dir(results, section_id) / "section.json")


def read_trials(results: Path, section_id: str) -> list[TrialRecord]:
    data = read_json(section_dir(results, section_id) / "trials.json") or []
    return [TrialRecord.from_json(d) for d in data]
