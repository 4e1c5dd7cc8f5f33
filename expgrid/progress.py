"""One live line per section instead of Ray's tables.

On a terminal the line is redrawn in place; in a log file (CI, ``ray submit``) a line is
printed each time a trial ends, so logs stay short and readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressLine:
    def __init__(self, label: str, total: int, metric: str, stream: TextIO | None = None):
        self.label = label
        self.total = total
        self.metric = metric
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.done = 0
        self.running = 0
        self.failed = 0
        self.retries = 0
        self.best: str = ""
        self._start = time.monotonic()
        self._last_draw = 0.0

    def update(self, *, done: int, running: int, failed: int, retries: int, best: str, trial_ended: bool) -> None:
        self.done, self.running, self.failed, self.retries, self.best = done, running, failed, retries, best
        if self.tty:
            now = time.monotonic()
            if trial_ended or now - self._last_draw > 0.2:  # redraw at most 5× a second
                self._last_draw = now
                self.stream.write("\r\033[K" + self.text())
                self.stream.flush()
        elif trial_ended:
            self.stream.write(self.text() + "\n")
            self.stream.flush()

    def text(self) -> str:
        width = 20
        filled = int(width * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        failed = f" · {self.failed} failed" if self.failed else ""
        failed += f" · {self.retries} retried" if self.retries else ""
        best = f" · best {self.metric} {self.best}" if self.best else ""
        elapsed = time.monotonic() - self._start
        return f"  {self.label} [{bar}] {self.done}/{self.total} done · {self.running} running{failed}{best} · {elapsed:.0f}s"

    def close(self, note: str | None = None) -> None:
        """End the line; ``note`` (e.g. "interrupted (Ctrl-C)") is added to its last state."""
        if note:
            self.stream.write(("\r\033[K" if self.tty else "") + f"{self.text()} · {note}\n")
        elif self.tty:
            self.stream.write("\n")
        self.stream.flush()
