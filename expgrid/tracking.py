"""MLflow tracking: study → section → trial nested runs, written from the driver only.

Trials never talk to MLflow: their reports reach the driver through Tune, and one writer
process (``expgrid.mlflow_writer``) turns them into MLflow calls, merging queued per-epoch
metrics into few ``log_batch`` calls. So the tracking server only has to be reachable from the
driver, trials do not wait on it, and a slow or dead server does not slow a section down.

Layout in MLflow: one experiment per study (named after it); a study run (artifacts
``summary.json`` and, under ``report/``, the summary and ``trials.parquet``); under it a run per
section (tags ``expgrid.section_id`` / ``expgrid.section_name``; params: the section's fixed
config; metric ``best_<metric>``; artifacts ``best_config.json`` and, under ``report/``, the
section's table and plots); under each section a run per trial (params: its full config,
dotted; metrics per epoch with step = epoch; FAILED when the trial failed). Nesting uses
MLflow's ``mlflow.parentRunId`` tag, which the UI shows as a tree. Which run holds what is
kept in ``<results>/mlflow.json`` (``expgrid.mlflow_ledger``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from expgrid.mlflow_ledger import Ledger
from expgrid.mlflow_store import (  # noqa: F401  (re-exported: the store helpers used to live here)
    PARENT_TAG,
    _cache_dir,
    _params,
    bounded_http_env,
    epoch_points,
    is_http,
    log_run_data,
    longest_call,
    seed_sqlite_store,
    server_answers,
)

# The longest the study's end waits for the MLflow mirror (seconds). What is not written by
# then is counted and printed with the `expgrid sync` command that adds it.
MIRROR_WAIT = 60.0


def default_tracking_uri(results_dir: Path) -> str:
    """A SQLite store beside the results (MLflow 3 refuses new file stores by default)."""
    return f"sqlite:///{(results_dir / 'mlflow.db').resolve()}"


def preflight(uri: str, timeout: float = 5.0) -> None:
    """Fail at once, naming the URI, when a tracking server does not answer (checked before Ray
    starts, so nothing runs). Opening the store itself happens later, in the background."""
    import urllib.request

    from expgrid.errors import StudyFailed

    if is_http(uri):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as reply:
                reply.read()
        except (OSError, ValueError) as e:
            raise StudyFailed(
                f"MLflow tracking server {uri} does not answer ({e}). Start it, or leave out "
                "--tracking-uri / MLFLOW_TRACKING_URI to track into the results folder."
            ) from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as e:
            raise StudyFailed(f"MLflow tracking store {uri} cannot be written: {e}") from None


def trial_run_name(section_id: str, index: int, swept: Mapping[str, Any]) -> str:
    """A trial run's name: ``<section>/<index> <swept values>`` (what the UI lists)."""

    def short(value: Any) -> str:
        return f"{value:g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, list) else str(value)

    return (f"{section_id}/{index} " + " ".join(f"{k}={short(v)}" for k, v in swept.items()))[:250]


@dataclasses.dataclass
class MirrorReport:
    """How the MLflow mirror of a run ended (:meth:`Tracker.finish`)."""

    uri: str
    study_run_id: str | None
    complete: bool
    why: str | None = None  # what stopped it (the store unreachable, the deadline, the writer lost)
    runs: dict[str, int] = dataclasses.field(default_factory=dict)  # kind → runs lacking data
    points: int = 0  # metric points not written
    artifacts: int = 0  # artifacts not written
    errors: list[str] = dataclasses.field(default_factory=list)
    counted: bool = True  # False: the writer did not say what it had written

    def warning(self, results: Path) -> list[str]:
        """The lines to print at the study's end: none when the mirror is complete (but for a
        problem with the ledger, which only costs `expgrid sync` its shortcut)."""
        if self.complete:
            return [f"warning: MLflow: {error}" for error in self.errors[:1]]
        if self.counted:
            runs = _and([_count(n, f"{kind} run") for kind, n in self.runs.items() if n]) or "no run"
            lost = _and([_count(n, what) for n, what in ((self.points, "metric point"), (self.artifacts, "artifact")) if n])
            verb = "lacks" if runs.startswith("1 ") and " and " not in runs else "lack"
            head = f"MLflow mirror incomplete: {runs} {verb} data" + (f": {lost} not written" if lost else "")
        else:
            head = "MLflow mirror incomplete: what it lacks is unknown"
        reasons = [self.why] if self.why else []
        if self.errors and not self.why:
            reasons.append(f"{len(self.errors)} failed call{'s' * (len(self.errors) != 1)}, the first: {self.errors[0]}")
        lines = [f"{head} ({'; '.join(reasons)})." if reasons else f"{head}."]
        lines.append("The results directory holds everything; once the store answers, complete the mirror with:")
        lines.append(f"  expgrid sync {results} --tracking-uri {self.uri}")
        return lines


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' * (n != 1)}"


def _and(items: list[str]) -> str:
    return ", ".join(items[:-1]) + (" and " if len(items) > 1 else "") + (items[-1] if items else "")


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
        self.errors: list[str] = []
        if results_dir is None and artifact_root is not None:
            results_dir = artifact_root.parent
        self.ledger = Ledger.read(results_dir) if results_dir is not None else None
        self._state: dict[str, Any] = {}
        self._closed = False
        self._report: MirrorReport | None = None
        self._ledger_error: str | None = None
        # A fresh interpreter (``python -m expgrid.mlflow_writer``), not multiprocessing: spawn
        # would re-run the caller's main script in the child, fork would copy Ray's threads.
        # Its own session: the terminal's Ctrl-C goes to the driver's process group, not to it.
        # Calls go down its stdin through a feeder thread (so the driver never blocks on a full
        # pipe); replies come back on a pipe of their own, read by a thread (so the writer
        # never blocks on it either).
        read_replies, write_replies = os.pipe()
        env = bounded_http_env({**os.environ, "PYTHONPATH": os.pathsep.join(p or "." for p in sys.path)})
        self._longest_call = longest_call(env) if is_http(tracking_uri) else 10.0
        self._process = subprocess.Popen(
            [sys.executable, "-m", "expgrid.mlflow_writer", str(os.getpid()), str(write_replies)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=(write_replies,), env=env,
            start_new_session=True,
        )  # fmt: skip
        os.close(write_replies)
        self._replies = os.fdopen(read_replies, "rb")
        self._answers: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._read_replies, name="expgrid-mlflow-replies", daemon=True).start()
        self._outbox: queue.Queue[Any] = queue.Queue()
        self._feeder = threading.Thread(target=self._feed, name="expgrid-mlflow-feeder", daemon=True)
        self._feeder.start()
        # Opening (or creating) the store takes seconds; it happens in the writer while the
        # caller goes on (e.g. starts Ray).
        self._call("open", tracking_uri, experiment, artifact_root)

    @property
    def writer_pid(self) -> int:
        return self._process.pid

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
                return  # the writer is gone; finish() reports it
            if call is None:
                stdin.close()
                return

    def _read_replies(self) -> None:
        while True:
            try:
                kind, payload = pickle.load(self._replies)
            except (EOFError, OSError, pickle.UnpicklingError, ValueError):
                self._replies.close()  # here: closing it from another thread would wait for this read
                self._answers.put(None)  # the writer has ended
                return
            if kind == "runs":
                self._remember(payload)
            else:
                self._answers.put((kind, payload))

    def _remember(self, ids: dict[Any, str]) -> None:
        if self.ledger is None:
            return
        self.ledger.set_run_ids(self.uri, ids)
        try:
            self.ledger.save()
        except OSError as e:  # the mirror's bookkeeping only: `expgrid sync` matches runs by their tags
            self._ledger_error = f"{self.ledger.path}: {e}"

    def _call(self, method: str, *args: Any) -> None:
        if not self._closed:
            self._outbox.put((method, args))

    def _recorded(self, key: Any) -> str | None:
        return self.ledger.run_id(self.uri, key) if self.ledger is not None else None

    # --- runs (each queued; see mlflow_writer._Writer for what they do) ------------------------

    def start_study(self, name: str, params: Mapping[str, Any], run_id: str | None = None) -> None:
        """Create the study run, or reopen ``run_id`` (or the one the ledger has for this store)
        when a study is continued."""
        if self.ledger is not None:
            self.ledger.set_study_params(json.loads(json.dumps(dict(params), default=str)))
        self._call("start_study", name, dict(params), run_id or self._recorded("study"))

    def study_run_id(self) -> str | None:
        self.flush()
        return self._state.get("study")

    @property
    def opened(self) -> bool:
        self.flush()
        return bool(self._state.get("opened"))

    def start_section(self, section_id: str, name: str, params: Mapping[str, Any]) -> None:
        """Create the section's run under the study run (trials need not wait for it), or reopen
        the one of an earlier attempt that never ended."""
        self._call("start_section", section_id, name, dict(params), self._recorded(section_id))

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
        # No wait here: the next section starts while the writes drain (finish waits).
        self._call("end_section", section_id, status, dict(metrics), dict(artifacts), dict(tags))

    def end_study(self, status: str, artifacts: Mapping[str, Any] | None = None) -> None:
        """Queue the study run's end; :meth:`finish` waits for it."""
        self._call("end_study", status, dict(artifacts or {}))

    # --- waiting for the writer ---------------------------------------------------------------

    def flush(self, timeout: float = MIRROR_WAIT) -> bool:
        """Wait until the writer has done every call made so far (and read its state), at most
        ``timeout`` seconds. Returns whether it answered."""
        if self._closed:
            return False
        self._outbox.put(("flush", ()))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                answer = self._answers.get(timeout=left)
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

    def finish(self, wait: float = MIRROR_WAIT) -> MirrorReport:
        """End the writer: it writes what is queued for at most ``wait`` seconds in all, then
        says what it could not write (see :class:`MirrorReport`). Never raises, never waits
        longer; a writer that does not answer in time is killed."""
        if self._report is not None:
            return self._report
        started = time.monotonic()
        final: dict[str, Any] | None = None
        if not self._closed:
            self._closed = True
            # The writer stops starting calls early enough that the one under way ends in time
            # (with the default bounds: after 24 s of the 60).
            stop_after = max(wait - self._longest_call - 2.0, 0.0)
            self._outbox.put(("deadline", (stop_after, f"not written within the {wait:g} s the study's end waits for it")))
            self._outbox.put(None)
            while (left := started + wait - time.monotonic()) > 0:
                try:
                    answer = self._answers.get(timeout=left)
                except queue.Empty:
                    break
                if answer is None:
                    break  # it ended without its last word
                if answer[0] == "final":
                    final = answer[1]
                    break
        why = None
        if final is None:
            code = self._process.poll()
            why = (f"the MLflow writer did not finish within {wait:g} s and was stopped" if code is None
                   else f"the MLflow writer process ended (exit code {code})")  # fmt: skip
        self._end_process(grace=5.0 if final is not None else 0.0)
        if self.ledger is not None:
            self._remember({})  # the study params, and ids read since the last save
        self._report = self._report_from(final, why)
        self.errors = list(self._report.errors) or ([why] if why else [])
        return self._report

    def close(self) -> None:
        self.finish()

    def _end_process(self, grace: float) -> None:
        try:
            self._process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

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
                            runs=runs, points=final["lost_points"], artifacts=final["lost_artifacts"],
                            errors=errors)  # fmt: skip

    def _lost(self) -> None:
        self._closed = True
        code = self._process.poll()
        self.errors.append(f"the MLflow writer process ended (exit code {code}); "
                           "`expgrid sync RESULTS_DIR` uploads what is missing")  # fmt: skip
