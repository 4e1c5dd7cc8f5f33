"""Opening a tracking store: a new local SQLite store seeded from a cached empty one, the
study's experiment, a run looked up by id, and SQLite's write-ahead log set on the file and
folded back.

Everything goes through MLflow's public client (``MlflowClient``) or, for the write-ahead log,
through ``sqlite3`` on the database file while MLflow does not have it open. MLflow is imported
inside the functions: the driver imports this package, MLflow's store code belongs in the writer
process (and in ``expgrid sync``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from expgrid.tracking.mounts import on_local_disk
from expgrid.tracking.server import is_http


def sqlite_path(uri: str) -> Path | None:
    """The database file of a local SQLite store's URI, else None."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def cache_dir() -> Path:
    """Where expgrid caches what it makes once per machine (the empty store)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "expgrid"


def empty_store_template(mlflow_version: str) -> Path:
    """The cached empty store of that MLflow version."""
    return cache_dir() / f"mlflow-{mlflow_version}-empty.db"


def seed_sqlite_store(uri: str) -> bool:
    """Create a new SQLite store as a copy of an empty one made once per MLflow version.

    MLflow builds a new SQLite store by running its whole chain of schema migrations, which
    takes seconds (3 to 10 s on a 2-CPU machine) — longer than a section of small trials.
    A copy of an empty store made by the same MLflow version is the same database. Returns
    whether the store was seeded (False: not a new local SQLite store).

    The copy's default experiment ("0") keeps the artifact location MLflow gave it where the
    template was made (MLflow's own default: ``mlruns/0`` under the directory it was made
    from). expgrid never writes to it: every study gets an experiment of its own with its
    artifacts beside the results (:func:`experiment_id`)."""
    target = sqlite_path(uri)
    if target is None or target.exists():
        return False
    import mlflow
    from mlflow.tracking import MlflowClient

    template = empty_store_template(mlflow.__version__)
    if not template.exists():
        template.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=template.parent) as tmp:
            fresh = Path(tmp) / "empty.db"
            MlflowClient(f"sqlite:///{fresh}").search_experiments()  # creates the schema
            os.replace(fresh, template)  # atomic: a concurrent run sees no half-made template
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".db.partial")
    shutil.copyfile(template, partial)
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


# --- SQLite's write-ahead log --------------------------------------------------------------------
#
# In SQLite's default rollback journal every MLflow call's commit syncs the disk several times;
# with a write-ahead log a commit appends to the log and syncs it once. The journal mode is a
# property of the database file (it stays set for every connection, whoever opens it), so it is
# set with sqlite3 before MLflow opens the store and set back by the writer's parent once the
# writer has exited. A crash loses nothing committed; the log is folded in by whoever opens the
# store next.


def use_write_ahead_log(uri: str) -> Path | None:
    """Switch a local SQLite store on a local disk to a write-ahead log. Returns its file (for
    :func:`fold_write_ahead_log`), or None where the default journal stays: not a local SQLite
    store, a network filesystem (the log needs shared memory every process can map), or a store
    another process holds (the mode changes only while no one else has it open)."""
    database = sqlite_path(uri)
    if database is None or not database.exists() or not on_local_disk(database):
        return None
    try:
        with contextlib.closing(sqlite3.connect(database, timeout=5.0)) as db:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    except sqlite3.Error:
        return None
    return database if mode == "wal" else None


def fold_write_ahead_log(database: Path) -> None:
    """Fold the log back into the file and return it to the default journal, so that the file
    alone holds everything. Only once every writer has closed the store (the writer process has
    exited); a reader that still has it open (``mlflow ui``) keeps the log, emptied."""
    with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(database, timeout=5.0)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA journal_mode=DELETE")  # refused (the mode stays) while another connection is open
