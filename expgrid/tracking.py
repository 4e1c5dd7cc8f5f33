"""MLflow tracking: study → section → trial nested runs, written from the driver only.

Trials never talk to MLflow: their reports reach the driver through Tune, and one writer
process here turns them into MLflow calls, merging queued per-epoch metrics into few
``log_batch`` calls. So the tracking server only has to be reachable from the driver, trials
do not wait on it, and a slow server does not slow a section down.

Layout in MLflow: one experiment per study (named after it); a study run (artifacts
``summary.json`` and, under ``report/``, the summary and ``trials.parquet``); under it a run per
section (tags ``expgrid.section_id`` / ``expgrid.section_name``; params: the section's fixed
config; metric ``best_<metric>``; artifacts ``best_config.json`` and, under ``report/``, the
section's table and plots); under each section a run per trial (params: its full config,
dotted; metrics per epoch with step = epoch; FAILED when the trial failed). Nesting uses
MLflow's ``mlflow.parentRunId`` tag, which the UI shows as a tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import queue
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from expgrid.config import flatten
from expgrid.study import is_number

PARENT_TAG = "mlflow.parentRunId"
_PARAM_MAX = 6000  # MLflow's limit on a param value's length
_BATCH_MAX = 1000  # MLflow's limit on the entries (metrics, params, tags) of one log_batch


def default_tracking_uri(results_dir: Path) -> str:
    """A SQLite store beside the results (MLflow 3 refuses new file stores by default)."""
    return f"sqlite:///{(results_dir / 'mlflow.db').resolve()}"


def preflight(uri: str, timeout: float = 5.0) -> None:
    """Fail at once, naming the URI, when a tracking server does not answer (checked before Ray
    starts, so nothing runs). Opening the store itself happens later, in the background."""
    from expgrid.errors import StudyFailed

    if uri.startswith(("http://", "https://")):
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


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "expgrid"


def seed_sqlite_store(uri: str, artifact_root: Path | None = None) -> bool:
    """Create a new SQLite store as a copy of an empty one made once per MLflow version.

    MLflow builds a new SQLite store by running its whole chain of schema migrations, which
    takes seconds (3 to 10 s on a 2-CPU machine) — longer than a section of small trials.
    A copy of an empty store made by the same MLflow version is the same database. Returns
    whether the store was seeded (False: not a new local SQLite store)."""
    if not uri.startswith("sqlite:///"):
        return False
    target = Path(uri[len("sqlite:///"):])
    if target.exists():
        return False
    import mlflow
    from mlflow.tracking import MlflowClient

    template = _cache_dir() / f"mlflow-{mlflow.__version__}-empty.db"
    if not template.exists():
        template.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=template.parent) as tmp:
            fresh = Path(tmp) / "empty.db"
            MlflowClient(f"sqlite:///{fresh}").search_experiments()  # creates the schema
            os.replace(fresh, template)  # atomic: a concurrent run sees no half-made template
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".db.partial")
    shutil.copyfile(template, partial)
    if artifact_root is not None:
        # MLflow's default experiment ("0") points at where the template was made.
        with contextlib.closing(sqlite3.connect(partial)) as db, db:
            db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                       (artifact_root.resolve().as_uri(),))  # fmt: skip
    os.replace(partial, target)
    return True


class Tracker:
    """Writes one study's runs from a separate process. Methods return at once; :meth:`flush`
    waits for the writes.

    MLflow's store costs 25-50 ms of Python per trial (several SQL statements per call); in
    the driver's process that competes for the interpreter with Tune's event loop and the
    section reports. A writer process runs it on another core instead, and the driver never
    imports MLflow's store code. Calls travel as plain data over a queue; whenever the writer
    is idle it creates the runs of started trials and merges queued per-epoch metrics into few
    ``log_batch`` calls; with a backlog, a trial's run is written whole at its end. If the driver
    dies, the writer notices within a second and exits (the results on disk are complete;
    ``expgrid sync`` uploads what MLflow lacks)."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None = None):
        self.uri = tracking_uri
        self.errors: list[str] = []
        self._state: dict[str, Any] = {}
        self._closed = False
        # A fresh interpreter (``python -m expgrid.mlflow_writer``), not multiprocessing: spawn
        # would re-run the caller's main script in the child, fork would copy Ray's threads.
        # Calls go down its stdin through a feeder thread (so the driver never blocks on a full
        # pipe); replies come back on a pipe of their own.
        read_replies, write_replies = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or "." for p in sys.path)}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "expgrid.mlflow_writer", str(os.getpid()), str(write_replies)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=(write_replies,), env=env,
        )  # fmt: skip
        os.close(write_replies)
        self._replies = os.fdopen(read_replies, "rb")
        self._outbox: queue.Queue[Any] = queue.Queue()
        self._feeder = threading.Thread(target=self._feed, name="expgrid-mlflow-feeder", daemon=True)
        self._feeder.start()
        # Opening (or creating) the store takes seconds; it happens in the writer while the
        # caller goes on (e.g. starts Ray).
        self._call("open", tracking_uri, experiment, artifact_root)

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
                return  # the writer is gone; flush() reports it
            if call is None:
                stdin.close()
                return

    def _call(self, method: str, *args: Any) -> None:
        if not self._closed:
            self._outbox.put((method, args))

    # --- runs (each queued; see _Writer for what they do) -----------------------------------

    def start_study(self, name: str, params: Mapping[str, Any], run_id: str | None = None) -> None:
        """Create the study run, or reopen ``run_id`` when a study is continued."""
        self._call("start_study", name, dict(params), run_id)

    def study_run_id(self) -> str | None:
        self.flush()
        return self._state.get("study")

    @property
    def opened(self) -> bool:
        self.flush()
        return bool(self._state.get("opened"))

    def start_section(self, section_id: str, name: str, params: Mapping[str, Any]) -> None:
        """Create the section's run under the study run (trials need not wait for it)."""
        self._call("start_section", section_id, name, dict(params))

    def start_trial(
        self, section_id: str, index: int, name: str, config: Mapping[str, Any], tags: Mapping[str, str], started: float
    ) -> None:
        """``started``: the trial's start (epoch seconds); the writer may create the run later."""
        self._call("start_trial", section_id, index, name, dict(config), dict(tags), int(started * 1000))

    def log_epoch(self, section_id: str, index: int, metrics: Mapping[str, Any]) -> None:
        step = int(metrics.get("epoch", 0))
        values = [(k, float(v)) for k, v in metrics.items() if is_number(v) and k != "epoch"]
        self._call("log_epoch", section_id, index, step, int(time.time() * 1000), values)

    def log_trial_artifacts(self, section_id: str, index: int, files: Mapping[str, Path]) -> None:
        """Upload a trial's artifact files (already written under the results directory)."""
        self._call("log_trial_artifacts", section_id, index, dict(files))

    def end_trial(self, section_id: str, index: int, status: str, tags: Mapping[str, str], ended: float) -> None:
        self._call("end_trial", section_id, index, status, dict(tags), int(ended * 1000))

    def end_section(
        self, section_id: str, status: str, metrics: Mapping[str, float], artifacts: Mapping[str, Any], tags: Mapping[str, str]
    ) -> None:
        # No wait here: the next section starts while the writes drain (end_study waits).
        self._call("end_section", section_id, status, dict(metrics), dict(artifacts), dict(tags))

    def end_study(self, status: str, artifacts: Mapping[str, Any] | None = None) -> None:
        self._call("end_study", status, dict(artifacts or {}))
        self.flush()

    # --- waiting for the writer ---------------------------------------------------------------

    def flush(self) -> None:
        """Wait until the writer has done every call made so far (and read its state)."""
        if self._closed:
            return
        self._outbox.put(("flush", ()))
        try:
            self._state = pickle.load(self._replies)
        except (EOFError, OSError, pickle.UnpicklingError):
            self._lost()
            return
        self.errors = list(self._state.get("errors", []))

    def close(self) -> None:
        self.flush()
        if self._closed:
            return
        self._closed = True
        self._outbox.put(None)
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
        self._replies.close()

    def _lost(self) -> None:
        self._closed = True
        code = self._process.poll()
        self.errors.append(f"the MLflow writer process ended (exit code {code}); "
                           "`expgrid sync RESULTS_DIR` uploads what is missing")  # fmt: skip


def serve(parent: int, reply_fd: int) -> None:
    """The writer process (``python -m expgrid.mlflow_writer``): do each call read from stdin;
    write gathered metrics whenever no call is waiting; exit when the driver is gone."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the driver's to handle
    calls: queue.Queue[Any] = queue.Queue()

    def read() -> None:
        while True:
            try:
                calls.put(pickle.load(sys.stdin.buffer))
            except (EOFError, OSError, pickle.UnpicklingError):
                calls.put(None)
                return

    threading.Thread(target=read, daemon=True).start()
    replies = os.fdopen(reply_fd, "wb")
    writer = _Writer()
    while True:
        try:
            call = calls.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                os._exit(0)  # the driver is gone
            continue
        if call is None:
            # Every write is committed. Exit without interpreter teardown: the stdin reader
            # thread is blocked in a read, and MLflow's exit hooks would only cost time.
            writer.close()
            os._exit(0)
        method, args = call
        if method == "flush":
            with contextlib.suppress(Exception):
                writer.write_pending()
            pickle.dump(writer.state(), replies)
            replies.flush()
            continue
        if method != "open" and not writer.opened:
            continue  # the store did not open: that error is recorded once, not for every call
        try:
            getattr(writer, method)(*args)
            if calls.empty():
                writer.write_pending()  # idle: write what has gathered
        except Exception as e:  # a tracking hiccup must not end the study; the results stay on disk
            writer.errors.append(f"{method}: {type(e).__name__}: {e}")


class _Writer:
    """The MLflow calls behind :class:`Tracker`, in the writer process."""

    def __init__(self) -> None:
        self._runs: dict[Any, str] = {}  # (section id, trial index) / section id / "study" → run id
        self._unopened: dict[tuple[str, int], tuple[str, Mapping[str, Any], Mapping[str, str], int]] = {}
        self._unlogged_params: dict[tuple[str, int], Mapping[str, Any]] = {}
        self._pending_metrics: dict[tuple[str, int], list[Any]] = {}
        self._wal_path: Path | None = None
        self.errors: list[str] = []
        self.opened = False

    def state(self) -> dict[str, Any]:
        return {"study": self._runs.get("study"), "opened": self.opened, "errors": list(self.errors)}

    def open(self, uri: str, experiment: str, artifact_root: Path | None) -> None:
        import logging

        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "creating tables" chatter
        seed_sqlite_store(uri, artifact_root)
        if uri.startswith("sqlite:///") and _on_local_disk(Path(uri[len("sqlite:///"):])):
            self._wal_path = Path(uri[len("sqlite:///"):])
            _write_ahead_log(self._wal_path)
        self.client = MlflowClient(uri)
        existing = self.client.get_experiment_by_name(experiment)
        if existing is not None:
            self.experiment_id = existing.experiment_id
        else:
            # A local store keeps artifacts beside the results, not in the current directory.
            location = None
            if artifact_root is not None and not uri.startswith(("http://", "https://", "databricks")):
                location = artifact_root.resolve().as_uri()
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        self.opened = True

    def start_study(self, name: str, params: Mapping[str, Any], run_id: str | None) -> None:
        if run_id is not None and self._exists(run_id):
            self.client.update_run(run_id, status="RUNNING")
            self._runs["study"] = run_id
        else:
            tags = {"expgrid.kind": "study"}
            self._runs["study"] = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
            self._log_params(self._runs["study"], params)

    def start_section(self, section_id: str, name: str, params: Mapping[str, Any]) -> None:
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{section_id} {name}",
            tags={
                PARENT_TAG: self._runs["study"],
                "expgrid.kind": "section",
                "expgrid.section_id": section_id,
                "expgrid.section_name": name,
            },
        )
        self._runs[section_id] = run.info.run_id
        self._log_params(run.info.run_id, params)

    # A trial's run is created when the writer is idle (so running trials show in the UI), or
    # else at the trial's end together with all its data: when trials end faster than the store
    # takes them (many small trials), a trial costs three writes instead of five.

    def start_trial(self, section_id: str, index: int, name: str, config: Mapping[str, Any], tags: Mapping[str, str],
                    started: int) -> None:  # fmt: skip
        self._unopened[(section_id, index)] = (name, config, tags, started)

    def _create_trial_run(self, key: tuple[str, int], tags: Mapping[str, str]) -> str:
        name, config, start_tags, started = self._unopened.pop(key)
        section_id, index = key
        run = self.client.create_run(
            self.experiment_id,
            start_time=started,
            run_name=name,
            tags={PARENT_TAG: self._runs[section_id], "expgrid.kind": "trial", "expgrid.section_id": section_id,
                  "expgrid.trial_index": str(index), **start_tags, **tags},
        )  # fmt: skip
        self._runs[key] = run.info.run_id
        self._unlogged_params[key] = config
        return run.info.run_id

    def _trial_run(self, key: tuple[str, int]) -> str:
        if key in self._unopened:
            run_id = self._create_trial_run(key, {})
            log_run_data(self.client, run_id, params=_params(self._unlogged_params.pop(key)))
        return self._runs[key]

    def log_epoch(self, section_id: str, index: int, step: int, when: int, values: list[tuple[str, float]]) -> None:
        from mlflow.entities import Metric

        self._pending_metrics.setdefault((section_id, index), []).extend(Metric(k, v, when, step) for k, v in values)

    def log_trial_artifacts(self, section_id: str, index: int, files: Mapping[str, Path]) -> None:
        self._log_artifacts(self._trial_run((section_id, index)), files)

    def end_trial(self, section_id: str, index: int, status: str, tags: Mapping[str, str], ended: int) -> None:
        from mlflow.entities import RunTag

        key = (section_id, index)
        metrics = self._pending_metrics.pop(key, [])
        if key in self._unopened:
            run_id = self._create_trial_run(key, tags)
            log_run_data(self.client, run_id, params=_params(self._unlogged_params.pop(key)), metrics=metrics)
        else:
            run_id = self._runs[key]
            log_run_data(self.client, run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(run_id, status, end_time=ended)

    def end_section(
        self, section_id: str, status: str, metrics: Mapping[str, float], artifacts: Mapping[str, Any], tags: Mapping[str, str]
    ) -> None:
        run_id = self._runs[section_id]
        for key, value in metrics.items():
            if is_number(value):
                self.client.log_metric(run_id, key, float(value))
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)
        self._log_artifacts(run_id, artifacts)
        self.client.set_terminated(run_id, status)

    def end_study(self, status: str, artifacts: Mapping[str, Any]) -> None:
        if "study" not in self._runs:
            return  # the store never opened; the error is in self.errors
        run_id = self._runs["study"]
        self._log_artifacts(run_id, artifacts)
        self.client.set_terminated(run_id, status)

    def _log_artifacts(self, run_id: str, artifacts: Mapping[str, Any]) -> None:
        """``artifacts``: the path in the run (``report/table.md``) → a file (Path), text, or
        anything JSON can write. Each artifact is tried on its own: one that fails (and is
        recorded in ``errors``) does not keep the others out of MLflow."""
        for name, content in artifacts.items():
            try:
                if isinstance(content, Path):
                    self._log_file(run_id, name, content)
                else:
                    text = content if isinstance(content, str) else json.dumps(content, indent=2, default=str)
                    self.client.log_text(run_id, text, name)
            except Exception as e:
                self.errors.append(f"artifact {name}: {type(e).__name__}: {e}")

    def _log_file(self, run_id: str, name: str, path: Path) -> None:
        folder, _, file_name = name.rpartition("/")
        if file_name == path.name:
            self.client.log_artifact(run_id, str(path), folder or None)
            return
        with tempfile.TemporaryDirectory() as tmp:  # MLflow names an artifact after its file
            renamed = Path(tmp) / file_name
            shutil.copyfile(path, renamed)
            self.client.log_artifact(run_id, str(renamed), folder or None)

    def write_pending(self) -> None:
        """Create the runs of started trials and write their gathered metrics (when idle)."""
        if not self.opened:
            return
        for key in list(self._unopened):
            self._trial_run(key)
        pending, self._pending_metrics = self._pending_metrics, {}
        for key, metrics in pending.items():
            if key in self._runs:  # else a trial whose start this writer never saw (cannot have a run)
                log_run_data(self.client, self._runs[key], metrics=metrics)

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        log_run_data(self.client, run_id, params=_params(params))

    def close(self) -> None:
        """Fold the write-ahead log back into the database file (see ``_write_ahead_log``)."""
        if self._wal_path is None:
            return
        with contextlib.suppress(Exception):
            self.client._tracking_client.store.engine.dispose()  # its pooled connections
        with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(self._wal_path)) as db:
            # Back to a plain journal when no one else has the store open (else the log is
            # emptied into the file and stays, for the other reader).
            if db.execute("PRAGMA journal_mode=DELETE").fetchone()[0] != "delete":
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
            return True
        except Exception:
            return False


def _params(config: Mapping[str, Any]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(k, _param_text(v)) for k, v in flatten(config).items()]


def log_run_data(client: Any, run_id: str, params: Sequence[Any] = (), metrics: Sequence[Any] = (),
                 tags: Sequence[Any] = ()) -> None:  # fmt: skip
    """A run's params, metrics and tags in as few ``log_batch`` calls as MLflow allows (each
    call: at most 100 params, 100 tags and 1000 entries in all)."""
    params, metrics, tags = list(params), list(metrics), list(tags)
    while params or metrics or tags:
        batch_params, params = params[:100], params[100:]
        batch_tags, tags = tags[:100], tags[100:]
        room = _BATCH_MAX - len(batch_params) - len(batch_tags)
        batch_metrics, metrics = metrics[:room], metrics[room:]
        client.log_batch(run_id, metrics=batch_metrics, params=batch_params, tags=batch_tags)


# Filesystems where SQLite's write-ahead log must not be used: it needs shared memory that
# every process opening the database can map, which network filesystems do not provide.
_NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre",
                                  "gpfs", "beegfs", "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "afs"})  # fmt: skip


def _on_local_disk(path: Path, mounts: str | None = None) -> bool:
    """Whether ``path`` is on a local filesystem, by the mount table (``mounts``: the text of
    /proc/self/mounts; read when not given). False where there is none (not Linux)."""
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            return False
    target, best, kind = str(path.resolve()), "", ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")  # the table writes a space in a path as \040
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return bool(best) and kind not in _NETWORK_FILESYSTEMS


def _write_ahead_log(database: Path) -> None:
    """Every SQLite connection this process opens to ``database`` uses a write-ahead log and
    syncs at checkpoints only. In the default rollback journal every MLflow call's commit syncs
    the disk several times: a third of the writer's time. A crash of this process loses
    nothing committed; a power cut can lose the last commits, never the database (and the
    results on disk hold everything: ``expgrid sync`` re-uploads). ``_Writer.close`` folds the
    log back into the file. Other databases (the empty-store template) are left alone."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    wanted = os.path.realpath(database)

    def pragmas(connection: Any, _record: Any) -> None:
        if not isinstance(connection, sqlite3.Connection):
            return
        opened = connection.execute("PRAGMA database_list").fetchone()  # (0, "main", its file)
        if opened is not None and opened[2] and os.path.realpath(opened[2]) == wanted:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")

    event.listen(Engine, "connect", pragmas)


def _param_text(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)
    return text[:_PARAM_MAX]
