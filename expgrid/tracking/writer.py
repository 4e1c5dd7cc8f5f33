"""The MLflow writer process a :class:`expgrid.tracking.Tracker` starts (through
:mod:`expgrid.tracking.channel`): ``python -m expgrid.tracking.writer DRIVER_PID REPLY_FD``.

It reads calls (pickled tuples) from stdin and turns them into MLflow writes; it answers on
``REPLY_FD`` with the run ids it created (``("runs", {key: id})``, as they come) and its state
(``("state", …)`` for a flush, ``("final", …)`` before it exits).

It runs in a session of its own and ignores SIGINT: a Ctrl-C in the terminal is for the
driver, which then ends the study and lets this process finish its writes. It exits when the
driver is gone (it polls its parent's PID).

Failures stay bounded. Every HTTP call is bounded by the driver's settings of MLflow's retry
variables (``expgrid.tracking.server.HTTP_BOUNDS``). A call that fails is followed by a health check
of the store; a store that does not answer stops the mirror for the rest of the run: every later
call is only counted — which runs lack data, how many metric points and artifacts were not
written — so that the study's end costs nothing more and can say exactly what
``expgrid sync`` will have to add. Once the driver gives it a deadline (the study's end waits
``tracking.MIRROR_WAIT`` for each call to finish, ``tracking.MIRROR_WAIT_MAX`` in all), the same
happens to whatever is still queued when it passes. Meanwhile it tells the driver, about once a
second, that it is still finishing calls (``("progress", None)``).

MLflow is imported inside the functions that call it, as everywhere in the core (which imports
no MLflow at module level); this process pays for the import when it opens the store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from expgrid.study import is_number
from expgrid.tracking.batches import log_file, log_run_data, param_entities
from expgrid.tracking.layout import PARENT_TAG, SUPERSEDED_TAG, artifact_text, params_of, point_key
from expgrid.tracking.notes import VIEW_TAG
from expgrid.tracking.server import is_http, server_answers
from expgrid.tracking.store import experiment_id, live_run, seed_sqlite_store, use_write_ahead_log

_IDS_EVERY = 1.0  # seconds: new run ids reach the driver's ledger at least this often while busy
# Seconds between two catch-up writes of an idle writer (trials' runs created, gathered metrics
# written). Catching up whenever the queue was empty wrote every epoch in a log_batch of its own
# and created every trial's run at its start: 44 ms of writer CPU per 10-epoch no-op trial
# against 11 ms for a run written whole at its end (3 calls: create, log_batch, terminate), so
# a section of many short trials left the writer a backlog that the study's end then waited
# for. A running trial still shows in MLflow, and its metrics move, within about this long.
_CATCH_UP_EVERY = 1.0
_MAX_ERRORS = 20  # error messages kept (the counts cover every failure)

Points = list[tuple[int, list[tuple[str, float]]]]  # (step, [(metric, value)]) per epoch


def serve(parent: int, reply_fd: int) -> None:
    """Do each call read from stdin; write gathered metrics whenever no call is waiting; exit
    when stdin ends (after a last state reply) or when the driver is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # besides its own session: a SIGINT sent to it alone
    calls: queue.Queue[Any] = queue.Queue()
    writer = Writer()

    def read() -> None:
        while True:
            try:
                call = pickle.load(sys.stdin.buffer)
            except (EOFError, OSError, pickle.UnpicklingError):
                calls.put(None)
                return
            if call is not None and call[0] == "deadline":
                # Read here, not in turn: it is for the calls queued before it.
                writer.deadline = Deadline.of(*call[1])
                continue
            calls.put(call)
            if call is None:
                return

    threading.Thread(target=read, daemon=True).start()
    replies = _Replies(reply_fd)
    caught_up = time.monotonic()  # the last catch-up write (see _CATCH_UP_EVERY)
    writer.on_progress = lambda: replies.send("progress", None)
    while True:
        due = caught_up + _CATCH_UP_EVERY - time.monotonic() if writer.has_pending() else 1.0
        try:
            call = calls.get(timeout=min(max(due, 0.0), 1.0))
        except queue.Empty:
            if os.getppid() != parent:
                os._exit(0)  # the driver is gone
            if writer.has_pending() and time.monotonic() - caught_up >= _CATCH_UP_EVERY:
                writer.write_pending()
                caught_up = time.monotonic()
                replies.send("runs", writer.take_new_ids())
            continue
        if call is None:
            writer.write_pending()
            replies.send("runs", writer.take_new_ids())
            replies.send("final", writer.state())
            # Every write is committed. Exit without interpreter teardown: the stdin reader
            # thread may be blocked in a read, and MLflow's exit hooks would only cost time.
            os._exit(0)
        method, args = call
        if method == "flush":
            writer.write_pending()
            replies.send("runs", writer.take_new_ids())
            replies.send("state", writer.state())
            continue
        writer.do(method, args)
        if calls.empty() and time.monotonic() - caught_up >= _CATCH_UP_EVERY:
            writer.write_pending()  # idle: write what has gathered
            caught_up = time.monotonic()
        if calls.empty() or writer.ids_due():
            replies.send("runs", writer.take_new_ids())


class _Replies:
    """The pipe back to the driver; a driver that is gone only costs the replies."""

    def __init__(self, fd: int):
        self._file = os.fdopen(fd, "wb")

    def send(self, kind: str, payload: Any) -> None:
        if self._file is None or (kind == "runs" and not payload):
            return
        try:
            pickle.dump((kind, payload), self._file, protocol=pickle.HIGHEST_PROTOCOL)
            self._file.flush()
        except OSError:
            self._file = None


@dataclasses.dataclass
class Deadline:
    """When the writer starts no new call: ``idle`` seconds after the last call it finished (a
    store that stopped answering), and at ``last`` whatever the progress; ``why`` says so."""

    idle: float
    last: float  # monotonic time
    why: str
    progressed: float  # monotonic time of the last call finished

    @classmethod
    def of(cls, idle: float, why: str, longest: float | None = None) -> Deadline:
        now = time.monotonic()
        return cls(idle, now + (idle if longest is None else max(longest, idle)), why, now)

    def passed(self) -> bool:
        now = time.monotonic()
        return now > self.last or now > self.progressed + self.idle


class _StoreDown(Exception):
    """The store stopped answering: the rest of the run is only counted."""


class Writer:
    """The MLflow calls behind :class:`expgrid.tracking.Tracker`, and the count of what could not
    be written."""

    def __init__(self) -> None:
        self._runs: dict[Any, str] = {}  # (section id, trial index) / section id / "study" → run id
        self._new_ids: dict[Any, str] = {}  # not yet sent to the driver
        self._ids_sent = time.monotonic()
        # Trials whose run is created when the writer is idle or at the trial's end:
        # key → (name, config, tags, started, run id of an earlier attempt to supersede)
        self._unopened: dict[tuple[str, int], tuple[str, Mapping[str, Any], Mapping[str, str], int, str | None]] = {}
        self._pending_metrics: dict[tuple[str, int], list[Any]] = {}
        # Resumed trials: (metric, step) → the value their run holds, so that epochs reported
        # again with the same values are not logged twice.
        self._known: dict[tuple[str, int], dict[tuple[str, int], Any]] = {}
        self.uri = ""
        self.errors: list[str] = []
        self.opened = False
        self.stopped: str | None = None  # why the mirror stopped (the store down, the deadline)
        self.deadline: Deadline | None = None  # set by the driver at the study's end
        # Called about once a second while calls finish after the deadline was set: the driver
        # waits for a writer that makes progress (see tracking.Tracker.finish).
        self.on_progress: Callable[[], None] | None = None
        self._told = 0.0
        self.incomplete: set[Any] = set()  # keys of runs that lack data
        self.lost_points = 0
        self.lost_artifacts = 0

    def state(self) -> dict[str, Any]:
        kinds = {"study": 0, "section": 0, "trial": 0}
        for key in self.incomplete:
            kinds["study" if key == "study" else "section" if isinstance(key, str) else "trial"] += 1
        return {"study": self._runs.get("study"), "experiment": getattr(self, "experiment_id", None), "opened": self.opened, "errors": list(self.errors),
                "stopped": self.stopped, "incomplete": kinds, "lost_points": self.lost_points,
                "lost_artifacts": self.lost_artifacts}  # fmt: skip

    def take_new_ids(self) -> dict[Any, str]:
        new, self._new_ids = self._new_ids, {}
        self._ids_sent = time.monotonic()
        return new

    def ids_due(self) -> bool:
        return bool(self._new_ids) and time.monotonic() - self._ids_sent > _IDS_EVERY

    def _record(self, key: Any, run_id: str) -> None:
        self._runs[key] = run_id
        self._new_ids[key] = run_id

    # --- every call goes through here -----------------------------------------------------------

    def do(self, method: str, args: tuple[Any, ...]) -> None:
        self._check_deadline()
        key, points, artifacts = self._carried(method, args)
        if self.stopped is not None:
            self._lose(key, points, artifacts)
            return
        try:
            getattr(self, method)(*args)
        except _StoreDown:
            pass  # counted where it was found
        except Exception as e:  # a tracking hiccup must not end the study; the results stay on disk
            with contextlib.suppress(_StoreDown):
                self._failed(method, e, key, points, artifacts)
        if self.stopped is None:
            self._progressed()  # the call ended (a failed one too: the store answered the check after it)

    def _check_deadline(self) -> None:
        if self.stopped is None and self.deadline is not None and self.deadline.passed():
            self._stop(self.deadline.why)

    def _progressed(self) -> None:
        if self.deadline is None:
            return
        self.deadline.progressed = now = time.monotonic()
        if self.on_progress is not None and now - self._told >= 1.0:
            self._told = now
            self.on_progress()

    def _carried(self, method: str, args: tuple[Any, ...]) -> tuple[Any, int, int]:
        """The run a call is for, and the metric points and artifacts it carries (lost if it fails)."""
        if method == "open":
            return None, 0, 0
        if method in ("start_study", "end_study"):
            if method == "start_study":
                return "study", 0, 0
            return "study", len(args[3]) if len(args) > 3 and args[3] else 0, len(args[1])
        if method in ("start_section", "end_section"):
            if method == "start_section":
                return args[0], 0, 0
            return args[0], sum(is_number(v) for v in args[2].values()), len(args[3])
        key = (args[0], args[1])
        if method == "start_trial":
            return key, sum(len(values) for _, values in args[6]), 0
        if method == "log_epoch":
            return key, len(args[4]), 0
        if method == "log_trial_artifacts":
            return key, 0, len(args[2])
        return key, len(self._pending_metrics.get(key, [])), 0  # end_trial: what has gathered goes with it

    def _lose(self, key: Any, points: int, artifacts: int) -> None:
        if key is not None:
            self.incomplete.add(key)
        self.lost_points += points
        self.lost_artifacts += artifacts

    def _failed(self, what: str, error: Exception, key: Any, points: int = 0, artifacts: int = 0) -> None:
        """Count a failed write; a store that no longer answers stops the mirror."""
        self._lose(key, points, artifacts)
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append(f"{what}: {type(error).__name__}: {str(error)[:500]}")
        if not self._answers():
            self._stop(f"{'server' if is_http(self.uri) else 'store'} {self.uri} unreachable")
            raise _StoreDown from None

    def _answers(self) -> bool:
        if not self.opened:
            return False
        if is_http(self.uri):
            return server_answers(self.uri)
        try:
            self.client.get_experiment(self.experiment_id)
            return True
        except Exception:
            return False

    def _stop(self, why: str) -> None:
        """Write nothing more: what is gathered counts as lost, later calls are only counted."""
        self.stopped = why
        for key, metrics in self._pending_metrics.items():
            self._lose(key, len(metrics), 0)
        self._pending_metrics.clear()
        self.incomplete.update(self._unopened)

    # --- the calls ---------------------------------------------------------------------------------

    def open(self, uri: str, experiment: str, artifact_root: Path | None) -> None:
        import logging

        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "creating tables" chatter
        self.uri = uri
        try:
            seed_sqlite_store(uri)
            # On the file, before MLflow opens it; the Tracker folds it back once this process has exited.
            use_write_ahead_log(uri)
            self.client = MlflowClient(uri)
            self.experiment_id = experiment_id(self.client, experiment, uri, artifact_root)
        except Exception as e:
            if len(self.errors) < _MAX_ERRORS:
                self.errors.append(f"open: {type(e).__name__}: {str(e)[:500]}")
            reason = "unreachable" if is_http(uri) and not server_answers(uri) else "did not open"
            self._stop(f"{'server' if is_http(uri) else 'store'} {uri} {reason}")
            return
        self.opened = True

    def start_study(self, name: str, params: Mapping[str, Any], run_id: str | None,
                    tags: Mapping[str, str] | None = None, view: str | None = None) -> None:  # fmt: skip
        """``tags``: its description (:mod:`.notes`); ``view``: the experiment's landing view."""
        if view is not None:
            self.client.set_experiment_tag(self.experiment_id, VIEW_TAG, view)
        if self._live_run(run_id) is not None:
            self.client.update_run(run_id, status="RUNNING")
            self._record("study", run_id)
            self._set_tags(run_id, tags)
            return
        run_id = self.client.create_run(self.experiment_id, run_name=name,
                                        tags={"expgrid.kind": "study", **(tags or {})}).info.run_id  # fmt: skip
        self._record("study", run_id)
        log_run_data(self.client, run_id, params=param_entities(params))

    def start_section(self, section_id: str, name: str, params: Mapping[str, Any], recorded: str | None,
                      tags: Mapping[str, str] | None = None) -> None:  # fmt: skip
        """Reopen the section's run of an earlier attempt that never ended (a driver killed or
        interrupted mid-section), else create one; an earlier attempt's run that ended is
        superseded by the new one. ``tags``: its description (:mod:`.notes`)."""
        earlier = self._live_run(recorded)
        wanted = params_of(params)
        if (earlier is not None and earlier.info.status in ("RUNNING", "KILLED")
                and earlier.data.tags.get(PARENT_TAG) == self._runs["study"] and _agree(earlier.data.params, wanted)):  # fmt: skip
            self.client.update_run(recorded, status="RUNNING")
            self._record(section_id, recorded)
            self._log_missingparam_entities(recorded, earlier.data.params, wanted)
            self._set_tags(recorded, tags)
            return
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{section_id} {name}",
            tags={
                PARENT_TAG: self._runs["study"],
                "expgrid.kind": "section",
                "expgrid.section_id": section_id,
                "expgrid.section_name": name,
                **(tags or {}),
            },
        )
        self._record(section_id, run.info.run_id)
        log_run_data(self.client, run.info.run_id, params=param_entities(params))
        if earlier is not None:
            self._supersede(earlier)

    # A trial's run is created when the writer is idle (so running trials show in the UI), or
    # else at the trial's end together with all its data: when trials end faster than the store
    # takes them (many small trials), a trial costs three writes instead of five.

    def start_trial(self, section_id: str, index: int, name: str, config: Mapping[str, Any], tags: Mapping[str, str],
                    started: int, history: Points, recorded: str | None) -> None:  # fmt: skip
        """``history``: the epochs a resumed trial had reported before the driver stopped (the
        run reopened, or made anew, holds every one of them); ``recorded``: its run so far."""
        key = (section_id, index)
        if not history:
            self._unopened[key] = (name, config, tags, started, recorded)
            return
        earlier = self._live_run(recorded)
        wanted = params_of(config)
        have: set[tuple[str, int, Any]] = set()
        if earlier is not None and earlier.data.tags.get(PARENT_TAG) == self._runs[section_id] \
                and _agree(earlier.data.params, wanted):  # fmt: skip
            self.client.update_run(recorded, status="RUNNING")
            self._record(key, recorded)
            self._log_missingparam_entities(recorded, earlier.data.params, wanted)
            for metric in {k for _, values in history for k, _ in values}:
                have.update((metric, *point_key(m.step, m.value)) for m in self.client.get_metric_history(recorded, metric))
        else:
            self._unopened[key] = (name, config, tags, started, recorded)
            self._trial_run(key)
        from mlflow.entities import Metric

        when = int(time.time() * 1000)
        known = self._known.setdefault(key, {})
        for step, values in history:
            for metric, value in values:
                known[(metric, step)] = point_key(step, value)
                if (metric, *point_key(step, value)) not in have:
                    self._pending_metrics.setdefault(key, []).append(Metric(metric, value, when, step))

    def _create_trial_run(self, key: tuple[str, int], tags: Mapping[str, str]) -> str:
        name, config, start_tags, started, earlier = self._unopened[key]
        section_id, index = key
        run = self.client.create_run(
            self.experiment_id,
            start_time=started,
            run_name=name,
            tags={PARENT_TAG: self._runs[section_id], "expgrid.kind": "trial", "expgrid.section_id": section_id,
                  "expgrid.trial_index": str(index), **start_tags, **tags},
        )  # fmt: skip
        del self._unopened[key]
        self._record(key, run.info.run_id)
        if earlier is not None and earlier != run.info.run_id:
            with contextlib.suppress(Exception):  # housekeeping: `expgrid sync` does it too
                old = self._live_run(earlier)
                if old is not None:
                    self._supersede(old)
        return run.info.run_id

    def _trial_run(self, key: tuple[str, int]) -> str:
        if key in self._unopened:
            config = self._unopened[key][1]
            run_id = self._create_trial_run(key, {})
            log_run_data(self.client, run_id, params=param_entities(config))
        return self._runs[key]

    def log_epoch(self, section_id: str, index: int, step: int, when: int, values: list[tuple[str, float]]) -> None:
        from mlflow.entities import Metric

        key = (section_id, index)
        known = self._known.get(key)
        if known is not None:  # a resumed trial: an epoch reported again with the same values is there already
            fresh = [(k, v) for k, v in values if known.get((k, step)) != point_key(step, v)]
            known.update({(k, step): point_key(step, v) for k, v in fresh})
            values = fresh
        self._pending_metrics.setdefault(key, []).extend(Metric(k, v, when, step) for k, v in values)

    def log_trial_artifacts(self, section_id: str, index: int, files: Mapping[str, Path]) -> None:
        self._log_artifacts((section_id, index), self._trial_run((section_id, index)), files)

    def end_trial(self, section_id: str, index: int, status: str, tags: Mapping[str, str], ended: int) -> None:
        from mlflow.entities import RunTag

        key = (section_id, index)
        metrics = self._pending_metrics.pop(key, [])
        if key in self._unopened:
            config = self._unopened[key][1]
            run_id = self._create_trial_run(key, tags)
            log_run_data(self.client, run_id, params=param_entities(config), metrics=metrics)
        else:
            run_id = self._runs[key]
            log_run_data(self.client, run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(run_id, status, end_time=ended)
        self._known.pop(key, None)

    def end_section(
        self, section_id: str, status: str, metrics: Mapping[str, float], artifacts: Mapping[str, Any], tags: Mapping[str, str],
        params: Mapping[str, str] | None = None,
    ) -> None:
        """``params``: the best trial's swept values (its base configuration was logged at its start)."""
        run_id = self._runs[section_id]
        for key, value in metrics.items():
            if is_number(value):
                self.client.log_metric(run_id, key, float(value))
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)
        if params:
            log_run_data(self.client, run_id, params=param_entities(params))
        self._log_artifacts(section_id, run_id, artifacts)
        self.client.set_terminated(run_id, status)

    def end_study(self, status: str, artifacts: Mapping[str, Any], tags: Mapping[str, str] | None = None,
                  metrics: Mapping[str, float] | None = None) -> None:  # fmt: skip
        """``metrics``: logged unless the run holds that value already (a continued study's run
        would otherwise hold it twice, and `expgrid sync` could not repair it)."""
        run_id = self._runs["study"]
        self._set_tags(run_id, tags)
        if metrics:
            have = self.client.get_run(run_id).data.metrics
            for key, value in metrics.items():
                if have.get(key) != value:
                    self.client.log_metric(run_id, key, float(value), step=0)
        self._log_artifacts("study", run_id, artifacts)
        self.client.set_terminated(run_id, status)

    def _set_tags(self, run_id: str, tags: Mapping[str, str] | None) -> None:
        for key, value in (tags or {}).items():
            self.client.set_tag(run_id, key, value)

    def _log_artifacts(self, key: Any, run_id: str, artifacts: Mapping[str, Any]) -> None:
        """``artifacts``: the path in the run (``report/table.md``) → a file (Path), text, or
        anything JSON can write. Each artifact is tried on its own: one that fails (and is
        counted) does not keep the others out of MLflow — unless the store is gone."""
        for number, (name, content) in enumerate(artifacts.items()):
            try:
                if isinstance(content, Path):
                    log_file(self.client, run_id, name, content)
                else:
                    self.client.log_text(run_id, artifact_text(content), name)
            except Exception as e:
                try:
                    self._failed(f"artifact {name}", e, key, artifacts=1)
                except _StoreDown:
                    self._lose(key, 0, len(artifacts) - number - 1)
                    raise

    def has_pending(self) -> bool:
        """Whether a catch-up write has anything to do: a started trial without its run, metrics gathered."""
        return self.stopped is None and self.opened and bool(self._unopened or self._pending_metrics)

    def write_pending(self) -> None:
        """Create the runs of started trials and write their gathered metrics (when idle)."""
        if self.stopped is not None or not self.opened:
            return
        try:
            for key in list(self._unopened):
                self._check_deadline()
                if self.stopped is not None:
                    return
                try:
                    self._trial_run(key)
                    self._progressed()
                except Exception as e:
                    self._failed("create trial run", e, key)  # its end creates it again
            for key in list(self._pending_metrics):
                if key not in self._runs:
                    continue  # a trial whose run does not exist (yet): its end takes them
                self._check_deadline()
                if self.stopped is not None:
                    return
                metrics = self._pending_metrics.pop(key)
                try:
                    log_run_data(self.client, self._runs[key], metrics=metrics)
                    self._progressed()
                except Exception as e:
                    self._failed("log metrics", e, key, points=len(metrics))
        except _StoreDown:
            pass

    # --- helpers --------------------------------------------------------------------------------

    def _live_run(self, run_id: str | None) -> Any | None:
        return live_run(self.client, run_id, self.experiment_id)

    def _log_missingparam_entities(self, run_id: str, have: Mapping[str, str], wanted: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        missing = [Param(k, v) for k, v in wanted.items() if k not in have]
        if missing:
            log_run_data(self.client, run_id, params=missing)

    def _supersede(self, run: Any) -> None:
        """An earlier attempt's run that no record stands for any more."""
        self.client.set_tag(run.info.run_id, SUPERSEDED_TAG, "true")
        if run.info.status == "RUNNING":
            self.client.set_terminated(run.info.run_id, "KILLED")


def _agree(have: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """Whether a run's params can be completed to ``wanted`` (MLflow params cannot change)."""
    return all(wanted.get(k) == v for k, v in have.items())


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
