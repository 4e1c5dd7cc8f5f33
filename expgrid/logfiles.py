"""Log files of a run: each section's log (written by its trainable's hook) and Ray's own lines.

A section's log lives at ``<results>/logs/log_sec{S}_q{Q}.txt``: the part of the section id
before the first dot is the section, the rest the question (``3.1`` → ``log_sec3_q1.txt``,
``3.1.2`` → ``log_sec3_q1_2.txt``); an id without a dot has no question part (``1`` →
``log_sec1.txt``, ``lr`` → ``log_seclr.txt``); characters other than letters and digits become
``_``. The core names the file (so the section's MLflow run and ``expgrid sync`` find it); what
goes in it is the trainable's: its spec's ``section_log`` hook (reid's:
``trainables.reid.section_log``). A trainable without the hook leaves no section log.

``<results>/ray.log`` gets Ray Tune's and Ray Train's own log lines during a run
(:func:`tune_logs_to`); in a Jupyter kernel also the rest of Ray's driver-side log lines and the
Python warnings libraries raise in the driver (:func:`notebook_logs_to`), which would otherwise
land in the notebook cell. What a trial prints goes to Ray's worker logs, as anywhere
(``log_to_driver=False``, cluster/connect.py).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from expgrid import jupyter
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


# ---------------------------------------------------------------------------------------------
# In a Jupyter kernel: Ray's other lines and the libraries' warnings, kept out of the cell

# Logs, while `import ray` runs in a notebook, that installing ipywidgets would give Ray's objects
# a richer display (twice, at INFO): before any code of ours could take Ray's console handler off.
RAY_IMPORT_NOTES = "ray.widgets.util"


class _NotebookRoute:
    """One run's routing: Ray's ``ray`` logger writes to stderr through its own console handler
    (put there when ``ray`` is imported), and a kernel's stderr is the cell. While the run lasts
    that handler is set aside and the file's put in its place; warnings shown by the driver's
    libraries (``warnings.showwarning``) go to the file as well."""

    def __init__(self, handler: logging.Handler):
        self.handler = handler
        self.set_aside: list[logging.Handler] = []
        self.taken = False

    def take_ray_logger(self) -> None:
        if self.taken or "ray" not in sys.modules:
            return
        self.taken = True
        logger = logging.getLogger("ray")
        self.set_aside = [h for h in logger.handlers if not isinstance(h, logging.FileHandler)]
        for handler in self.set_aside:
            logger.removeHandler(handler)
        logger.addHandler(self.handler)

    def give_back_ray_logger(self) -> None:
        if not self.taken:
            return
        logger = logging.getLogger("ray")
        logger.removeHandler(self.handler)
        for handler in self.set_aside:
            if handler not in logger.handlers:
                logger.addHandler(handler)

    def show_warning(self, message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001 - warnings' signature
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
        self.handler.handle(logging.LogRecord("py.warnings", logging.WARNING, filename, lineno, text, None, None))


_routes: list[_NotebookRoute] = []  # the runs of this process under way (one, in practice)


def ray_imported() -> None:
    """Called once ``ray`` is imported (cluster/connect.py): a run that began before (a
    kernel's first) takes Ray's console handler from here on, before Ray starts."""
    for route in _routes:
        route.take_ray_logger()


@contextlib.contextmanager
def notebook_logs_to(path: Path) -> Iterator[None]:
    """In a Jupyter kernel, for the run: Ray's log lines (all of its ``ray`` logger, Tune and
    Train included) and the warnings the driver's libraries show go to ``path``, not to the
    cell; expgrid's own lines (progress, ``warning: …``, the summary) are printed as ever.
    Outside a kernel it changes nothing (a terminal shows Ray's warnings as before)."""
    if not jupyter.in_kernel():
        yield
        return
    handler = _QuietFileHandler(path, delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    route = _NotebookRoute(handler)
    notes = logging.getLogger(RAY_IMPORT_NOTES)
    notes_saved = notes.propagate
    notes.addHandler(handler)
    notes.propagate = False
    shown = warnings.showwarning
    warnings.showwarning = route.show_warning
    _routes.append(route)
    route.take_ray_logger()
    try:
        yield
    finally:
        _routes.remove(route)
        route.give_back_ray_logger()
        if warnings.showwarning == route.show_warning:
            warnings.showwarning = shown
        notes.removeHandler(handler)
        notes.propagate = notes_saved
        handler.close()
