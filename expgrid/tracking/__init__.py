"""MLflow tracking: study → section → trial nested runs, written from the driver only.

Trials never talk to MLflow: their reports reach the driver through Tune, and one writer
process (:mod:`expgrid.tracking.writer`) turns them into MLflow calls, merging queued per-epoch
metrics into few ``log_batch`` calls. So the tracking server only has to be reachable from the
driver, trials do not wait on it, and a slow or dead server does not slow a section down.
Which run holds what is kept in ``<results>/mlflow.json`` (:mod:`expgrid.tracking.ledger`);
``expgrid sync`` (:mod:`expgrid.tracking.sync`) makes a store equal to a results directory.

The modules, one concept each: ``preflight`` (is the store usable, before Ray starts),
``server`` (a server's health, bounded HTTP retries), ``layout`` (run names, tags, params,
metric points), ``batches`` (MLflow's per-call limits), ``store`` (seeding, the experiment,
SQLite's write-ahead log), ``mounts`` (local or network disk), ``channel`` (the driver's end of
the writer process), ``writer`` (the writer process), ``mirror`` (how the mirror ended),
``ledger``, ``notes`` (the runs' descriptions, a section's best params, the landing view),
``record`` (what each run must hold) and ``sync``.

May import: the core (``expgrid.*``), never ``cluster`` or ``trainables``. MLflow only inside
functions of ``store``, ``batches``, ``writer`` and ``sync``: the driver imports this package
and must not pay for MLflow (nor run its store code) on its own core.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from expgrid import records
from expgrid.durable import RecordError
from expgrid.tracking import notes
from expgrid.tracking.channel import WriterProcess
from expgrid.tracking.layout import carried_tags, epoch_points, parent_tags, trial_run_name
from expgrid.tracking.ledger import Ledger
from expgrid.tracking.mirror import MirrorReport
from expgrid.tracking.preflight import preflight
from expgrid.tracking.server import bounded_http_env, is_http, longest_call
from expgrid.tracking.store import fold_write_ahead_log, sqlite_path

__all__ = ["MIRROR_WAIT", "MIRROR_WAIT_MAX", "MirrorReport", "Tracker", "carried_tags", "default_tracking_uri", "parent_tags", "preflight",
           "trial_run_name"]

# How long the study's end waits for the MLflow mirror (seconds): at most MIRROR_WAIT for the
# writer to finish its next call, at most MIRROR_WAIT_MAX in all. A section of many short trials
# can leave a backlog that a healthy store takes minutes to write (three MLflow calls per trial's
# run, about 12 ms on SQLite: 10,000 no-op trials end in ~30 s, their runs take ~2 min); a store
# that stopped answering costs MIRROR_WAIT. What is not written then is counted and printed with
# the `expgrid sync` command that adds it.
MIRROR_WAIT = 60.0
MIRROR_WAIT_MAX = 600.0

# The ledger is one JSON file rewritten whole (7 ms at 10,000 trials, 70 ms at 100,000): saved
# for every reply of new run ids, a section of many short trials spent O(trials) per trial on it.
# The next save waits 10 × the last one's duration (saving takes at most a tenth of the time),
# at least LEDGER_SAVE_MIN and at most LEDGER_SAVE_MAX seconds; ids that arrive meanwhile are
# saved by a timer then.
LEDGER_SAVE_SHARE = 0.1
LEDGER_SAVE_MIN = 0.2
LEDGER_SAVE_MAX = 1.0


def default_tracking_uri(results_dir: Path) -> str:
    """A SQLite store beside the results (MLflow 3 refuses new file stores by default)."""
    return f"sqlite:///{(results_dir / 'mlflow.db').resolve()}"


class Tracker:
    """Writes one study's runs from a separate process. Methods return at once; :meth:`finish`
    waits for the writes, at most :data:`MIRROR_WAIT` seconds.

    MLflow's store costs 25-50 ms of Python per trial (several SQL statements per call); in
    the driver's process that competes for the interpreter with Tune's event loop and the
    section reports. A writer process runs it on another core instead, and the driver never
    imports MLflow's store code. Calls travel as plain data over a pipe; whenever the writer
    is idle it creates the runs of started trials and merges queued per-epoch metrics into few
    ``log_batch`` calls; with a backlog, a trial's run is written whole at its end. The run ids
    it creates come back and go into the results' ledger (``mlflow.json``), so that a resumed
    section or trial reopens its run. If the driver dies, the writer notices within a second
    and exits (the results on disk are complete; ``expgrid sync`` uploads what MLflow lacks).

    ``results_dir``: the results directory whose ``mlflow.json`` keeps the run ids; by default the
    folder that holds ``artifact_root`` (the runner passes ``<results>/mlartifacts``). Raises
    :class:`expgrid.errors.ResultsError`, before starting anything, when that file is garbage."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None = None,
                 results_dir: Path | None = None):  # fmt: skip
        self.uri = tracking_uri
        self.experiment = experiment
        self.errors: list[str] = []
        if results_dir is None and artifact_root is not None:
            results_dir = artifact_root.parent
        self.ledger = Ledger.read(results_dir) if results_dir is not None else None
        self._state: dict[str, Any] = {}
        self._closed = False
        self._report: MirrorReport | None = None
        self._ledger_error: str | None = None
        self._next_save = 0.0  # monotonic time before which the ledger is not saved again
        self._save_timer: threading.Timer | None = None
        self._save_lock = threading.Lock()
        env = bounded_http_env({**os.environ, "PYTHONPATH": os.pathsep.join(p or "." for p in sys.path)})
        self._longest_call = longest_call(env) if is_http(tracking_uri) else 10.0
        self.writer = WriterProcess(env, on_runs=self._remember)
        # Opening (or creating) the store takes seconds; it happens in the writer while the
        # caller goes on (e.g. starts Ray).
        self._call("open", tracking_uri, experiment, artifact_root)

    @property
    def writer_pid(self) -> int:
        return self.writer.pid

    def _remember(self, ids: dict[Any, str], now: bool = False) -> None:
        """Keep run ids in the ledger (on the reply thread); ``now``: save it at once (the end)."""
        if self.ledger is None:
            return
        self.ledger.set_run_ids(self.uri, ids)
        with self._save_lock:
            wait = self._next_save - time.monotonic()
            if wait > 0 and not now:
                if self._save_timer is None:
                    self._save_timer = threading.Timer(wait, self._save_ledger)
                    self._save_timer.daemon = True
                    self._save_timer.start()
                return
        self._save_ledger()

    def _save_ledger(self) -> None:
        assert self.ledger is not None
        with self._save_lock:
            if self._save_timer is not None:
                self._save_timer.cancel()  # this save takes what it would have saved
                self._save_timer = None
            started = time.monotonic()
            try:
                self.ledger.save()
            except OSError as e:  # the mirror's bookkeeping only: `expgrid sync` matches runs by their tags
                self._ledger_error = f"{self.ledger.path}: {e}"
            took = time.monotonic() - started
            self._next_save = started + min(max(took / LEDGER_SAVE_SHARE, LEDGER_SAVE_MIN), LEDGER_SAVE_MAX)

    def _call(self, method: str, *args: Any) -> None:
        if not self._closed:
            self.writer.send((method, args))

    def _recorded(self, key: Any) -> str | None:
        return self.ledger.run_id(self.uri, key) if self.ledger is not None else None

    # --- runs (each queued; see writer.Writer for what they do) --------------------------------

    def start_study(self, name: str, params: Mapping[str, Any], run_id: str | None = None,
                    plan: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        """Create the study run, or reopen ``run_id`` (or the one the ledger has for this store)
        when a study is continued. ``plan``: :func:`expgrid.tracking.notes.study_plan`, for its
        description and the experiment's landing view."""
        if self.ledger is not None:
            self.ledger.set_study_params(json.loads(json.dumps(dict(params), default=str)))
            if plan is not None:
                self.ledger.set_plan("study", json.loads(json.dumps(dict(plan), default=str)))
        plan = plan if plan is not None else self._plan("study")
        tags, view = {}, None
        if plan is not None:
            tags = {notes.NOTE_TAG: notes.study_note(plan, None, plan["metric"])}
            view = notes.view_state(plan["metric"], plan.get("swept") or [])
        self._call("start_study", name, dict(params), run_id or self._recorded("study"), tags, view)

    def study_run_id(self) -> str | None:
        self.flush()
        return self._state.get("study")

    @property
    def opened(self) -> bool:
        self.flush()
        return bool(self._state.get("opened"))

    def start_section(self, section_id: str, name: str, params: Mapping[str, Any],
                      plan: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        """Create the section's run under the study run (trials need not wait for it), or reopen
        the one of an earlier attempt that never ended. ``plan``:
        :func:`expgrid.tracking.notes.section_plan` (else the ledger's), for its description."""
        if plan is not None and self.ledger is not None:
            self.ledger.set_plan(section_id, json.loads(json.dumps(dict(plan), default=str)))
        plan = plan if plan is not None else self._plan(section_id)
        tags = {notes.NOTE_TAG: notes.section_note(plan, None, self.experiment)} if plan is not None else {}
        self._call("start_section", section_id, name, dict(params), self._recorded(section_id), tags)

    def start_trial(self, section_id: str, index: int, name: str, config: Mapping[str, Any], tags: Mapping[str, str],
                    started: float, history: Sequence[Mapping[str, Any]] = ()) -> None:  # fmt: skip
        """``started``: the trial's start (epoch seconds); the writer may create the run later.
        ``history``: the epoch rows a resumed trial already has in its record; its run (the
        earlier one, reopened, or a new one) gets every one of them, and epochs the trial
        reports again with the same values are not logged twice."""
        points = [epoch_points(row) for row in history]  # converted now: the caller's rows keep changing
        self._call("start_trial", section_id, index, name, dict(config), dict(tags), int(started * 1000), points,
                   self._recorded((section_id, index)))  # fmt: skip

    def log_epoch(self, section_id: str, index: int, metrics: Mapping[str, Any]) -> None:
        step, values = epoch_points(metrics)
        self._call("log_epoch", section_id, index, step, int(time.time() * 1000), values)

    def log_trial_artifacts(self, section_id: str, index: int, files: Mapping[str, Path]) -> None:
        """Upload a trial's artifact files (already written under the results directory)."""
        self._call("log_trial_artifacts", section_id, index, dict(files))

    def end_trial(self, section_id: str, index: int, status: str, tags: Mapping[str, str], ended: float) -> None:
        self._call("end_trial", section_id, index, status, dict(tags), int(ended * 1000))

    def end_section(
        self, section_id: str, status: str, metrics: Mapping[str, float], artifacts: Mapping[str, Any], tags: Mapping[str, str]
    ) -> None:
        """A section that finished (its ``section.json`` written) also gets its description with
        its result and its best configuration's swept values as params (:mod:`.notes`)."""
        tags, params = dict(tags), {}
        saved = self._saved_section(section_id) if status != "KILLED" else None
        if saved is not None:
            tags[notes.NOTE_TAG] = notes.section_note(self._plan(section_id), saved, self.experiment)
            params = notes.section_best_params(saved)
        # No wait here: the next section starts while the writes drain (finish waits).
        self._call("end_section", section_id, status, dict(metrics), dict(artifacts), tags, params)

    def end_study(self, status: str, artifacts: Mapping[str, Any] | None = None) -> None:
        """Queue the study run's end; :meth:`finish` waits for it. Its description gets the best
        per section from ``artifacts["summary.json"]`` (the summary's rows)."""
        artifacts = dict(artifacts or {})
        plan = self._plan("study")
        tags: dict[str, str] = {}
        metrics: dict[str, float] = {}
        if plan is not None:
            rows = artifacts.get("summary.json") if isinstance(artifacts.get("summary.json"), list) else None
            tags[notes.NOTE_TAG] = notes.study_note(plan, rows, plan["metric"])
            metrics = notes.study_metrics(rows, plan["metric"], status == "FINISHED")
        self._call("end_study", status, artifacts, tags, metrics)

    def _plan(self, key: str) -> dict[str, Any] | None:
        return self.ledger.plan(key) if self.ledger is not None else None

    def _saved_section(self, section_id: str) -> dict[str, Any] | None:
        if self.ledger is None:
            return None
        try:
            return records.read_section(self.ledger.path.parent, section_id)
        except (OSError, RecordError):  # a damaged record: the run keeps the description it has
            return None

    # --- waiting for the writer ---------------------------------------------------------------

    def flush(self, timeout: float = MIRROR_WAIT) -> bool:
        """Wait until the writer has done every call made so far (and read its state), at most
        ``timeout`` seconds. Returns whether it answered."""
        if self._closed:
            return False
        self.writer.send(("flush", ()))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                answer = self.writer.answers.get(timeout=left)
            except queue.Empty:
                return False
            if answer is None:
                self._lost()
                return False
            kind, state = answer
            if kind == "state":
                self._state = state
                self.errors = list(state.get("errors", []))
                return True
        return False

    def finish(self, wait: float = MIRROR_WAIT, longest: float = MIRROR_WAIT_MAX) -> MirrorReport:
        """End the writer: it writes what is queued while it keeps finishing calls (at most
        ``wait`` seconds without one, ``longest`` in all), then says what it could not write (see
        :class:`MirrorReport`). Never raises, never waits longer; a writer that does not answer
        in time is killed."""
        if self._report is not None:
            return self._report
        started = time.monotonic()
        final: dict[str, Any] | None = None
        if not self._closed:
            self._closed = True
            # The writer stops starting calls early enough that the one under way ends in time
            # (with the default bounds: 24 s after the last call it finished, of the 60).
            stop_after = max(wait - self._longest_call - 2.0, 0.0)
            last_call = max(longest - self._longest_call - 2.0, stop_after)
            late = f"not written within the time the study's end waits for it ({wait:g} s for a call, {longest:g} s in all)"
            self.writer.send(("deadline", (stop_after, late, last_call)))
            self.writer.send(None)
            progressed = started  # the writer says so about once a second while it finishes calls
            while (left := min(progressed + wait, started + max(longest, wait)) - time.monotonic()) > 0:
                try:
                    answer = self.writer.answers.get(timeout=left)
                except queue.Empty:
                    break
                if answer is None:
                    break  # it ended without its last word
                if answer[0] == "progress":
                    progressed = time.monotonic()
                elif answer[0] == "final":
                    final = answer[1]
                    break
        why = None
        if final is None:
            code = self.writer.poll()
            waited = wait if time.monotonic() - started < max(longest, wait) else max(longest, wait)
            why = (f"the MLflow writer did not finish within {waited:g} s and was stopped" if code is None
                   else f"the MLflow writer process ended (exit code {code})")  # fmt: skip
        self.writer.end(grace=5.0 if final is not None else 0.0)
        database = sqlite_path(self.uri)
        if database is not None and database.exists():
            fold_write_ahead_log(database)  # the writer has exited: its connections are closed
        if self.ledger is not None:
            self._remember({}, now=True)  # the study params, and ids read since the last save
        self._report = self._report_from(final, why)
        self.errors = list(self._report.errors) or ([why] if why else [])
        return self._report

    def close(self) -> None:
        self.finish()

    def _report_from(self, final: dict[str, Any] | None, why: str | None) -> MirrorReport:
        recorded = self._recorded("study")
        if final is None:
            return MirrorReport(self.uri, recorded, complete=False, why=why, counted=False)
        runs = dict(final.get("incomplete") or {})
        complete = not any(runs.values()) and not final["lost_points"] and not final["lost_artifacts"]
        errors = list(final.get("errors") or [])
        if self._ledger_error:
            errors.append(f"run ids not kept: {self._ledger_error}")
        return MirrorReport(self.uri, final.get("study") or recorded, complete=complete, why=final.get("stopped"),
                            experiment_id=final.get("experiment"),
                            runs=runs, points=final["lost_points"], artifacts=final["lost_artifacts"],
                            errors=errors)  # fmt: skip

    def _lost(self) -> None:
        self._closed = True
        code = self.writer.poll()
        self.errors.append(f"the MLflow writer process ended (exit code {code}); "
                           "`expgrid sync RESULTS_DIR` uploads what is missing")  # fmt: skip
