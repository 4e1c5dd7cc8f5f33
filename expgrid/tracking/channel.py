"""The driver's end of the MLflow writer process (:mod:`expgrid.tracking.writer`): start it,
send it calls without ever blocking, read its replies, end it.

A fresh interpreter (``python -m expgrid.tracking.writer``), not multiprocessing: spawn would
re-run the caller's main script in the child, fork would copy Ray's threads. It runs in a
session of its own, so the terminal's Ctrl-C goes to the driver's process group, not to it.
Calls go down its stdin through a feeder thread (the driver never blocks on a full pipe);
replies come back on a pipe of their own, read by a thread (the writer never blocks on it
either). Imports no MLflow.
"""

from __future__ import annotations

import os
import pickle
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

WRITER_MODULE = "expgrid.tracking.writer"


class WriterProcess:
    """``on_runs``: called (on the reply thread) with each ``{key: run id}`` the writer sends;
    every other reply goes to :attr:`answers`, and ``None`` there once the writer has ended."""

    def __init__(self, env: Mapping[str, str], on_runs: Callable[[dict[Any, str]], None]):
        read_replies, write_replies = os.pipe()
        self._process = subprocess.Popen(
            [sys.executable, "-m", WRITER_MODULE, str(os.getpid()), str(write_replies)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=(write_replies,), env=dict(env),
            start_new_session=True,
        )  # fmt: skip
        os.close(write_replies)
        self._replies = os.fdopen(read_replies, "rb")
        self._on_runs = on_runs
        self.answers: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._read_replies, name="expgrid-mlflow-replies", daemon=True).start()
        self._outbox: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._feed, name="expgrid-mlflow-feeder", daemon=True).start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def send(self, call: tuple[str, tuple[Any, ...]] | None) -> None:
        """Queue a call (``None``: the last; stdin is closed after it). Never blocks."""
        self._outbox.put(call)

    def poll(self) -> int | None:
        return self._process.poll()

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    def end(self, grace: float) -> None:
        """Wait ``grace`` seconds for the writer to exit, then kill it."""
        try:
            self._process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _feed(self) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        while True:
            call = self._outbox.get()
            try:
                pickle.dump(call, stdin, protocol=pickle.HIGHEST_PROTOCOL)
                if self._outbox.empty():
                    stdin.flush()
            except (BrokenPipeError, OSError):
                return  # the writer is gone; the Tracker's finish reports it
            if call is None:
                stdin.close()
                return

    def _read_replies(self) -> None:
        while True:
            try:
                kind, payload = pickle.load(self._replies)
            except (EOFError, OSError, pickle.UnpicklingError, ValueError):
                self._replies.close()  # here: closing it from another thread would wait for this read
                self.answers.put(None)  # the writer has ended
                return
            if kind == "runs":
                self._on_runs(payload)
            else:
                self.answers.put((kind, payload))
