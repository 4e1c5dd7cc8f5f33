"""The coursework's section log: ``<results>/logs/log_sec{S}_q{Q}.txt`` (the ``section_log`` hook
of reid's spec; the core names the file, see ``expgrid.logfiles.log_name``).

A log holds, per trial and written as the trial ends (so a crash keeps every finished trial): its
swept values and resolved config, one line per epoch with every reported metric, and, at each
epoch that reports ``mAP``, a test block in torchreid's format (mAP and Rank-k as percentages).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from expgrid.durable import naming
from expgrid.records import TrialRecord

_RANK = re.compile(r"rank(\d+)$")


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
    """The log file of one section run at ``path``, started afresh when the section (re)starts."""

    def __init__(self, path: Path, study_name: str, section_id: str, section_name: str, metric: str, mode: str):
        self.path = path
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
