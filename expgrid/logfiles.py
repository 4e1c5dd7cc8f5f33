"""Log files of a run: each section's log (written by its trainable's hook) and Ray's own lines.

A section's log lives at ``<results>/logs/log_sec{S}_q{Q}.txt``: the part of the section id
before the first dot is the section, the rest the question (``3.1`` → ``log_sec3_q1.txt``,
``3.1.2`` → ``log_sec3_q1_2.txt``); an id without a dot has no question part (``1`` →
``log_sec1.txt``, ``lr`` → ``log_seclr.txt``); characters other than letters and digits become
``_``. The core names the file (so the section's MLflow run and ``expgrid sync`` find it); what
goes in it is the trainable's: its spec's ``section_log`` hook (reid's:
``trainables.reid.section_log``). A trainable without the hook leaves no section log.

``<results>/ray.log`` gets Ray Tune's and Ray Train's own log lines during a run
(:func:`tune_logs_to`).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from expgrid.records import TrialRecord
from expgrid.trainable_spec import TrainableSpec


def log_name(section_id: str) -> str:
    section, _, question = section_id.partition(".")

    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")

    return f"log_sec{clean(section)}" + (f"_q{clean(question)}" if question else "") + ".txt"


def log_path(results: Path, section_id: str) -> Path:
    return results / "logs" / log_name(section_id)


class SectionLog(Protocol):
    """What a trainable's ``section_log`` hook returns; ``path`` is None when there is no file."""

    path: Path | None

    def trial_ended(self, trial: TrialRecord) -> None: ...

    def section_ended(self, best: TrialRecord | None, metric: str) -> None: ...


class NoSectionLog:
    """The section log of a trainable without a ``section_log`` hook: nothing is written."""

    path: Path | None = None

    def trial_ended(self, trial: TrialRecord) -> None:
        pass

    def section_ended(self, best: TrialRecord | None, metric: str) -> None:
        pass


def open_section_log(spec: TrainableSpec, results: Path, study_name: str, section_id: str, section_name: str,
                     metric: str, mode: str) -> SectionLog:  # fmt: skip
    """The section's log, started afresh (a rerun or resumed section writes it again)."""
    if spec.section_log is None:
        return NoSectionLog()
    return spec.section_log(log_path(results, section_id), study_name, section_id, section_name, metric, mode)  # type: ignore[operator]


def log_artifacts(log: SectionLog) -> dict[str, Any]:
    """The section run's ``logs/`` artifact, when there is a log file."""
    return {} if log.path is None else {f"logs/{log.path.name}": log.path}


# ---------------------------------------------------------------------------------------------
# Ray's own log lines during a run


class _QuietFileHandler(logging.FileHandler):
    """A log file that never complains on the terminal it is there to keep clean (a full disk)."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass

    def _open(self):  # noqa: ANN202 - logging's own
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            super().close()


@contextlib.contextmanager
def tune_logs_to(path: Path) -> Iterator[None]:
    """Ray Tune's and Ray Train's own log lines go to ``path`` for the run, not to the terminal:
    expgrid reports trials, failures and stops itself (the progress line, the records), and Tune's
    tracebacks of a trial error or a failed state save would bury them."""
    handler = _QuietFileHandler(path, delay=True)  # made with its folder by the first line
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in ("ray.tune", "ray.train")]
    saved = [(logger.propagate, logger.level) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for logger, (propagate, level) in zip(loggers, saved):
            logger.removeHandler(handler)
            logger.propagate = propagate
            logger.setLevel(level)
        handler.close()
