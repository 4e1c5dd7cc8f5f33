"""Stopping a study on purpose: Ctrl-C, SIGTERM, or a fault that makes going on pointless.

The first SIGINT (Ctrl-C) or SIGTERM asks for a clean stop. Tune is told to end its experiment
the way it documents for SIGUSR1 (it saves its experiment state, so ``--resume`` restores it
exactly as after a SIGKILL); the trials that were running are recorded as ``interrupted``; the
section is not marked finished and nothing is carried forward; the study ends with exit code 130.
A second signal ends the process at once with one line: everything the trials reported is on
disk already (rows are made durable before Tune registers a checkpoint).

Tune's own SIGINT handler is turned off (``TUNE_DISABLE_SIGINT_HANDLER``, a documented Tune
setting) so that expgrid alone decides what a Ctrl-C means; ``ray.init`` replaces the SIGTERM
handler with one that exits, so :func:`reinstall` puts expgrid's back after connecting.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator

from expgrid.errors import EXIT_INTERRUPTED, ExpgridError

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(ExpgridError):
    """The study stopped before it finished; what ran is in the results directory."""

    shown_as = "interrupted"

    def __init__(self, message: str, section: str | None = None, exit_code: int = EXIT_INTERRUPTED):
        super().__init__(message)
        self.section = section  # the section it cut short (None: between sections)
        self.exit_code = exit_code
        self.outcome = None  # the runner's StudyOutcome of what did run (its summary), once recorded


class StopRequest:
    """Whether, and why, the running study was asked to stop."""

    def __init__(self) -> None:
        self.reason: str | None = None  # e.g. "Ctrl-C", "SIGTERM"
        self.exit_code = EXIT_INTERRUPTED
        self.resume_hint = "--resume"  # how the user continues; set by the runner

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def request(self, reason: str, exit_code: int = EXIT_INTERRUPTED) -> bool:
        """Ask for a stop; True when this is the first request."""
        if self.reason is not None:
            return False
        self.reason, self.exit_code = reason, exit_code
        ask_tune_to_stop()
        return True


_active: StopRequest | None = None


def current() -> StopRequest | None:
    """The stop request of the study running in this process (None outside ``catching``)."""
    return _active


def stop_requested() -> bool:
    return _active is not None and _active.requested


def ask_tune_to_stop() -> None:
    """Send Tune the signal it ends an experiment on (SIGUSR1), if a Tune run is listening. Tune
    then saves its experiment state one last time and returns from ``fit()``. Outside a Tune run
    nothing is sent; the runner checks the request between sections and before each run."""
    handler = signal.getsignal(signal.SIGUSR1)
    if callable(handler) and handler is not _on_signal and threading.current_thread() is threading.main_thread():
        os.kill(os.getpid(), signal.SIGUSR1)


def _say(text: str) -> None:
    # os.write, not print: a signal handler may run while the main thread is inside a write to
    # the same buffered stream, and re-entering it is a fatal error in CPython.
    with contextlib.suppress(OSError):
        os.write(2, text.encode())


def _on_signal(signum: int, _frame: object) -> None:
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    request = _active
    if request is None:
        return
    if request.request(name):
        _say(f"\n{name}: stopping the study; the running trials are kept for {request.resume_hint} "
             f"({'Ctrl-C' if signum == signal.SIGINT else name} again to exit at once)\n")  # fmt: skip
        return
    _say(f"\n{name} again: exiting now; {request.resume_hint} continues from the trials' last checkpoints\n")
    os._exit(EXIT_INTERRUPTED)


class _QuietTuneStop(logging.Filter):
    """Tune's messages about a stop expgrid asked for name Tune's own restore call; expgrid says
    what to do (``--resume``) itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not stop_requested()


@contextlib.contextmanager
def catching() -> Iterator[StopRequest]:
    """Handle SIGINT and SIGTERM as a clean stop for the ``with`` block (main thread only; in
    another thread signals cannot be handled and the block runs without)."""
    global _active
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread() or _active is not None:
        yield request
        return
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    tune_setting = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    quiet = _QuietTuneStop()
    tune_logger = logging.getLogger("ray.tune.tune")
    tune_logger.addFilter(quiet)
    _active = request
    try:
        reinstall()
        yield request
    finally:
        _active = None
        tune_logger.removeFilter(quiet)
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        if tune_setting is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = tune_setting


def reinstall() -> None:
    """Put expgrid's handlers back (``ray.init`` sets a SIGTERM handler that exits at once)."""
    if _active is None or threading.current_thread() is not threading.main_thread():
        return
    for s in _SIGNALS:
        signal.signal(s, _on_signal)


def leave_quietly_on_signals() -> None:
    """Once a study has ended (its results complete), a Ctrl-C or SIGTERM while the process
    prints its summary or Ray shuts down (at exit) ends it at once, without a traceback."""
    if threading.current_thread() is threading.main_thread():
        for s in _SIGNALS:
            signal.signal(s, lambda _signum, _frame: os._exit(EXIT_INTERRUPTED))
