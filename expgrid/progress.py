"""One live line per section instead of Ray's tables.

On a terminal the line is redrawn in place; in a log file (CI, ``ray submit``) a line is
printed each time a trial ends, so logs stay short and readable. In a Jupyter notebook
(:class:`NotebookProgress`) each section gets one display that is updated in place: a stream of
lines in a cell would grow by one per ended trial, and ``\\r`` does not redraw there.
:func:`section_progress` picks the one that fits where the output goes.
"""

from __future__ import annotations

import html
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from expgrid import jupyter

REDRAW_S = 0.2  # a live view is redrawn at most 5× a second (and whenever a trial ends)


def section_progress(label: str, total: int, metric: str, stream: TextIO | None = None) -> ProgressLine:
    """The section's progress: a notebook display when the run's output goes to a Jupyter
    kernel's cell (``stream`` None or the kernel's stdout), the line otherwise (a terminal, a
    log file, a stream the caller gave)."""
    if (stream is None or stream is sys.stdout) and jupyter.in_kernel():
        return NotebookProgress(label, total, metric)
    return ProgressLine(label, total, metric, stream)


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
            if self._redraw_due(trial_ended):
                self.stream.write("\r\033[K" + self.text())
                self.stream.flush()
        elif trial_ended:
            self.stream.write(self.text() + "\n")
            self.stream.flush()

    def _redraw_due(self, trial_ended: bool) -> bool:
        now = time.monotonic()
        if trial_ended or now - self._last_draw > REDRAW_S:
            self._last_draw = now
            return True
        return False

    def text(self) -> str:
        width = 20
        filled = int(width * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        return f"  {self.label} [{bar}] {self.facts()}"

    def facts(self) -> str:
        """The line without its label and bar: ``1/4 done · 2 running · best score 0.93 · 7s``."""
        failed = f" · {self.failed} failed" if self.failed else ""
        failed += f" · {self.retries} retried" if self.retries else ""
        best = f" · best {self.metric} {self.best}" if self.best else ""
        elapsed = time.monotonic() - self._start
        return f"{self.done}/{self.total} done · {self.running} running{failed}{best} · {elapsed:.0f}s"

    def close(self, note: str | None = None) -> None:
        """End the line; ``note`` (e.g. "interrupted (Ctrl-C)") is added to its last state."""
        if note:
            self.stream.write(("\r\033[K" if self.tty else "") + f"{self.text()} · {note}\n")
        elif self.tty:
            self.stream.write("\n")
        self.stream.flush()


# ---------------------------------------------------------------------------------------------
# In a Jupyter notebook


class NotebookView:
    """What a notebook shows of a section at one moment: HTML (a small bar and the line's facts)
    and, for a viewer without HTML, the terminal's line as text/plain."""

    def __init__(self, text: str, html_text: str):
        self.text, self.html = text, html_text

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": self.text, "text/html": self.html}

    def __repr__(self) -> str:
        return self.text


class NotebookProgress(ProgressLine):
    """The section as one display in the notebook cell, updated in place through IPython's
    display handle (``display(view, display_id=True)``, then ``handle.update(view)``): at most
    5× a second, at every ended trial, and once more when the section ends. It appears when the
    section starts (0 done). ``display``: IPython's, unless a test gives another."""

    def __init__(self, label: str, total: int, metric: str, display: Callable[..., Any] | None = None):
        super().__init__(label, total, metric, stream=sys.stdout)
        self.tty = False
        self.note: str | None = None
        self.closed = False
        if display is None:
            from IPython.display import display
        self._handle = display(self.view(), display_id=True)
        self._last_draw = time.monotonic()

    def update(self, *, done: int, running: int, failed: int, retries: int, best: str, trial_ended: bool) -> None:
        self.done, self.running, self.failed, self.retries, self.best = done, running, failed, retries, best
        if self._redraw_due(trial_ended):
            self._handle.update(self.view())

    def close(self, note: str | None = None) -> None:
        self.note, self.closed = note, True
        self._handle.update(self.view())

    def text(self) -> str:
        return super().text() + (f" · {self.note}" if self.note else "")

    def view(self) -> NotebookView:
        return NotebookView(self.text(), self.html())

    def html(self) -> str:
        share = min(self.done / self.total, 1.0) if self.total else 0.0
        if self.note:
            colour = "#d9822b"  # stopped short (interrupted, a full disk): not a finished section
        elif self.closed:
            colour = "#2f9e44"
        else:
            colour = "#3b82f6"
        facts = html.escape(self.facts() + (f" · {self.note}" if self.note else ""))
        bar = (
            f'<span role="progressbar" aria-valuemin="0" aria-valuemax="{self.total}" aria-valuenow="{self.done}" '
            'style="display:inline-block;width:12em;height:0.75em;border:1px solid #9ca3af;border-radius:3px;'
            'overflow:hidden;vertical-align:middle;background:#f3f4f6">'
            f'<span style="display:block;height:100%;width:{100 * share:.1f}%;background:{colour}"></span></span>'
        )
        return (
            '<div class="expgrid-progress" style="font-family:monospace;line-height:1.6">'
            f"<b>{html.escape(self.label)}</b> {bar} {facts}</div>"
        )
