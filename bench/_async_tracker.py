"""The alternative to expgrid's MLflow writer process that ``bench/overhead.py --mlflow async``
measures: MLflow's own asynchronous logging (``MlflowClient.log_batch(..., synchronous=False)``)
in the driver's process.

The same store logic as the writer process (``expgrid.tracking.writer.Writer``: runs, reopening,
counting what fails), called on the driver's thread instead of through a pipe: a trial's run is
created when the trial starts (``create_run`` has no asynchronous form), each epoch's metrics go
to MLflow's queue with ``synchronous=False``, and the study's end waits for the queued batches
(``RunOperations.wait``). Bench-only: expgrid keeps the writer process (see the README's
"MLflow" section for the numbers and why).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from expgrid.tracking import MIRROR_WAIT, MirrorReport, Tracker
from expgrid.tracking.ledger import Ledger
from expgrid.tracking.store import sqlite_path
from expgrid.tracking.writer import Writer


class AsyncWriter(Writer):
    def __init__(self) -> None:
        super().__init__()
        self.operations: list[tuple[Any, int, Any]] = []  # (run key, metric points, RunOperations)

    def start_trial(self, section_id, index, name, config, tags, started, history, recorded):  # noqa: ANN001
        super().start_trial(section_id, index, name, config, tags, started, history, recorded)
        if (section_id, index) in self._unopened:
            self._trial_run((section_id, index))  # now: the metrics that follow need the run

    def log_epoch(self, section_id, index, step, when, values):  # noqa: ANN001
        super().log_epoch(section_id, index, step, when, values)
        self._send((section_id, index))

    def write_pending(self) -> None:
        for key in list(self._pending_metrics):
            self._send(key)

    def _send(self, key: Any) -> None:
        if key not in self._runs or self.stopped is not None:
            return
        metrics = self._pending_metrics.pop(key, [])
        if metrics:
            self.operations.append((key, len(metrics), self.client.log_batch(self._runs[key], metrics=metrics,
                                                                             synchronous=False)))  # fmt: skip

    def wait_for_queue(self, deadline: float) -> None:
        """Wait for every queued batch (each wait unbounded in MLflow: a thread bounds it here)."""
        done = threading.Event()

        def wait_all() -> None:
            for key, points, operation in self.operations:
                try:
                    operation.wait()
                except Exception as e:  # a batch MLflow could not write: counted
                    self._lose(key, points, 0)
                    self.errors.append(f"log metrics: {type(e).__name__}: {str(e)[:200]}")
            done.set()

        threading.Thread(target=wait_all, daemon=True).start()
        if not done.wait(max(deadline - time.monotonic(), 0.0)):
            self.stopped = "MLflow's async queue did not drain in time"


class AsyncTracker(Tracker):
    """:class:`expgrid.tracking.Tracker`'s interface, MLflow in the driver's process."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None = None,
                 results_dir: Path | None = None):  # fmt: skip
        self.uri = tracking_uri
        self.errors = []
        if results_dir is None and artifact_root is not None:
            results_dir = artifact_root.parent
        self.ledger = Ledger.read(results_dir) if results_dir is not None else None
        self._state, self._closed, self._report, self._ledger_error = {}, False, None, None
        self._writer = AsyncWriter()
        self.call_seconds = 0.0  # the driver's time inside MLflow calls (its own thread blocked)
        # As the writer process does: the store opens (MLflow's import, the seeding) in the
        # background while the caller goes on; the first call waits for it.
        self._opening = threading.Thread(target=self._writer.open, args=(tracking_uri, experiment, artifact_root),
                                         daemon=True)  # fmt: skip
        self._opening.start()

    @property
    def writer_pid(self) -> int:
        raise AttributeError("no writer process: MLflow runs in the driver")

    def _call(self, method: str, *args: Any) -> None:
        if self._closed:
            return
        started = time.perf_counter()
        self._opening.join()
        self._writer.do(method, args)
        self._remember(self._writer.take_new_ids())
        self.call_seconds += time.perf_counter() - started

    def flush(self, timeout: float = MIRROR_WAIT) -> bool:
        self._opening.join()
        self._writer.wait_for_queue(time.monotonic() + timeout)
        self._state = self._writer.state()
        return True

    def finish(self, wait: float = MIRROR_WAIT) -> MirrorReport:
        if self._report is not None:
            return self._report
        self._closed = True
        self._opening.join()
        self._writer.wait_for_queue(time.monotonic() + wait)
        final = self._writer.state()
        database = sqlite_path(self.uri)
        if database is not None and database.exists():
            import contextlib
            import sqlite3

            # MLflow's engine keeps its connections open in this process: the log can be emptied
            # into the file, not switched off.
            with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(database)) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if self.ledger is not None:
            self._remember({})
        self._report = self._report_from(final, None)
        self.errors = list(self._report.errors)
        return self._report
