"""Opening an MLflow store and writing to it, shared by the writer process and ``expgrid sync``.

Nothing here imports MLflow at module level: the driver imports this module, and MLflow's store
code belongs in the writer process (and in ``sync``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sqlite3
import sys
import tempfile
import urllib.request
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from expgrid.config import flatten
from expgrid.study import is_number

PARENT_TAG = "mlflow.parentRunId"
SUPERSEDED_TAG = "expgrid.superseded"
_PARAM_MAX = 6000  # MLflow's limit on a param value's length
_BATCH_MAX = 1000  # MLflow's limit on the entries (metrics, params, tags) of one log_batch

# MLflow's HTTP client retries a failed request 7 times with a backoff factor of 2 and waits up
# to 120 s for each answer (MLflow 3.17's defaults, mlflow/environment_variables.py): about four
# minutes per call against a server that is gone. Whoever writes for expgrid (the writer
# process, `expgrid sync`) uses these instead, unless the user set them: a refused connection
# then fails in about 3 s, a server that accepts but never answers in about 34 s.
HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # an int in MLflow: sleeps 0, 2 s between the 3 tries
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",  # seconds without an answer, per try
}


def bounded_http_env(environ: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """``environ`` with :data:`HTTP_BOUNDS` set where the user has not set them."""
    for name, value in HTTP_BOUNDS.items():
        environ.setdefault(name, value)
    return environ


def longest_call(environ: Mapping[str, str]) -> float:
    """An upper bound, in seconds, on one MLflow HTTP call under ``environ``'s settings: every
    try waits its timeout, and urllib3 sleeps ``factor · 2^(n-1)`` (plus MLflow's jitter, at
    most 1 s) before the n-th retry after the first (capped at 120 s)."""

    def number(name: str, default: float) -> float:
        try:
            return float(environ.get(name, default))
        except ValueError:
            return default

    retries = int(number("MLFLOW_HTTP_REQUEST_MAX_RETRIES", 7))
    factor = number("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", 2)
    jitter = number("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", 1.0)
    timeout = number("MLFLOW_HTTP_REQUEST_TIMEOUT", 120)
    sleeps = sum(min(120.0, factor * 2 ** (n - 1)) + jitter for n in range(2, retries + 1))
    return (retries + 1) * timeout + sleeps


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def server_answers(uri: str, timeout: float = 3.0) -> bool:
    """Whether an MLflow tracking server answers its health check (``GET /health``)."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as reply:
            reply.read()
        return True
    except (OSError, ValueError):
        return False


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


def experiment_id(client: Any, name: str, uri: str, artifact_root: Path | None) -> str:
    """The id of the experiment ``name``, created when the store lacks it (a local store keeps
    its artifacts beside the results, not in the current directory)."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None
    if artifact_root is not None and not is_http(uri) and not uri.startswith("databricks"):
        location = artifact_root.resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


# --- what a run holds ----------------------------------------------------------------------------


def live_run(client: Any, run_id: str | None, experiment_id: str | None) -> Any | None:
    """The run ``run_id`` when the store has it, not deleted, in ``experiment_id`` (any
    experiment when None); else None."""
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    if run.info.lifecycle_stage != "active" or (experiment_id and run.info.experiment_id != experiment_id):
        return None
    return run


def params_of(config: Mapping[str, Any]) -> dict[str, str]:
    """A config as MLflow params: dotted names, values as text (JSON for lists, maps, bools)."""
    return {k: _param_text(v) for k, v in flatten(config).items()}


def _params(config: Mapping[str, Any]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(k, v) for k, v in params_of(config).items()]


def _param_text(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)
    return text[:_PARAM_MAX]


def epoch_points(row: Mapping[str, Any]) -> tuple[int, list[tuple[str, float]]]:
    """One epoch report as MLflow metric points: its step (the epoch) and (name, value) pairs
    of its numbers (strings such as a stop reason are not metrics)."""
    step = int(row.get("epoch", 0))
    return step, [(k, float(v)) for k, v in row.items() if is_number(v) and k != "epoch"]


def stored_value(value: float) -> float:
    """A metric value as MLflow returns it: its stores keep ±inf as ±the largest float."""
    if math.isinf(value):
        return math.copysign(sys.float_info.max, value)
    return value


def point_key(step: int, value: float) -> tuple[int, Any]:
    """A comparable (step, value) with every NaN equal to every other."""
    value = stored_value(float(value))
    return step, ("nan" if math.isnan(value) else value)


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


def log_file(client: Any, run_id: str, name: str, path: Path) -> None:
    """Upload ``path`` as the run's artifact ``name`` (``folder/file``): MLflow names an
    artifact after its file, so one whose name differs goes through a renamed copy."""
    folder, _, file_name = name.rpartition("/")
    if file_name == path.name:
        client.log_artifact(run_id, str(path), folder or None)
        return
    with tempfile.TemporaryDirectory() as tmp:
        renamed = Path(tmp) / file_name
        shutil.copyfile(path, renamed)
        client.log_artifact(run_id, str(renamed), folder or None)


def artifact_text(content: Any) -> str:
    """How a non-file artifact is written: text as it is, anything else as indented JSON."""
    return content if isinstance(content, str) else json.dumps(content, indent=2, default=str)


# --- SQLite's write-ahead log --------------------------------------------------------------------

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
    results on disk hold everything: ``expgrid sync`` re-uploads). ``fold_write_ahead_log``
    folds the log back into the file. Other databases (the empty-store template) are left alone."""
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


def fold_write_ahead_log(client: Any, database: Path) -> None:
    """Back to a plain journal (the file alone holds everything) when no one else has the store
    open; else the log is emptied into the file and stays, for the other reader."""
    with contextlib.suppress(Exception):
        client._tracking_client.store.engine.dispose()  # its pooled connections
    with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(database)) as db:
        if db.execute("PRAGMA journal_mode=DELETE").fetchone()[0] != "delete":
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
