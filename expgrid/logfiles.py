"""Per-section log files, as the coursework hands them in: ``<results>/logs/log_sec{S}_q{Q}.txt``.

The file name comes from the section id: the part before the first dot is the section, the rest
the question (``3.1`` → ``log_sec3_q1.txt``, ``3.1.2`` → ``log_sec3_q1_2.txt``); an id without a
dot has no question part (``1`` → ``log_sec1.txt``, ``lr`` → ``log_seclr.txt``); characters other
than letters and digits become ``_``.

A log holds, per trial and written as the trial ends (so a crash keeps every finished trial): its
swept values and resolved config, one line per epoch with every reported metric, and, at each
epoch that reports ``mAP``, a test block in torchreid's format (mAP and Rank-k as percentages).

``<results>/ray.log`` gets Ray Tune's and Ray Train's own log lines during a run
(:func:`tune_logs_to`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from expgrid.durable import naming
from expgrid.records import TrialRecord

_RANK = re.compile(r"rank(\d+)$")


def log_name(section_id: str) -> str:
    section, _, question = section_id.partition(".")

    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")

    return f"log_sec{clean(section)}" + (f"_q{clean(question)}" if question else "") + ".txt"


def log_path(results: Path, section_id: str) -> Path:
    return results / "logs" / log_name(section_id)


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def epoch_line(row: dict[str, Any], epochs: Any) -> str:
    rest = "  ".join(f"{k} {_value(v)}" for k, v in row.items() if k != "epoch" and not k.startswith("expgrid_"))
    return f"Epoch {row.get('epoch', '?')}/{epochs}  {rest}"


def test_block(row: dict[str, Any]) -> list[str]:
    """torchreid's result block for a row that reports mAP (fractions printed as percentages)."""
    if "mAP" not in row:
        return []
    lines = ["** Results **", f"mAP: {100 * float(row['mAP']):.1f}%", "CMC curve"]
    ranks = sorted((int(m.group(1)), k) for k in row if (m := _RANK.match(k)))
    lines += [f"Rank-{r:<3}: {100 * float(row[k]):.1f}%" for r, k in ranks]
    return lines


class SectionLog:
    """The log file of one section run, started afresh when the section (re)starts."""

    def __init__(self, results: Path, study_name: str, section_id: str, section_name: str, metric: str, mode: str):
        self.path = log_path(results, section_id)
        self._write(f"Study {study_name} · section {section_id} {section_name} · metric {metric} ({mode})\n", "w")

    def trial_ended(self, trial: TrialRecord) -> None:
        swept = ", ".join(f"{k}={json.dumps(v)}" for k, v in trial.swept.items())
        seconds = f"{trial.seconds:.1f} s" if trial.seconds is not None else "time unknown"
        lines = [
            "",
            f"=== Trial {trial.index} ({swept}): {trial.status} at epoch {trial.last_epoch}, {seconds}, "
            f"{trial.retries} retries",
            "config: " + json.dumps(trial.config, sort_keys=True, default=str),
        ]
        epochs = trial.config.get("epochs", "?")
        for row in trial.history:
            lines.append(epoch_line(row, epochs))
            lines += test_block(row)
        if trial.error:
            lines.append(f"error: {trial.error}")
        self._write("\n".join(lines) + "\n")

    def section_ended(self, best: TrialRecord | None, metric: str) -> None:
        text = "none (every trial failed or diverged)" if best is None else (
            f"trial {best.index} " + ", ".join(f"{k}={json.dumps(v)}" for k, v in best.swept.items())
        )
        self._write(f"\nBest by {metric}: {text}\n")

    def _write(self, text: str, mode: str = "a") -> None:
        with naming(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, mode) as f:
                f.write(text)


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
