"""The tracking store: a new local store is a copy of an empty one made once; SQLite's write-ahead
log is set on the file while the writer writes and folded back by the driver once it has exited."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing

import pytest
from mlflow.tracking import MlflowClient

from expgrid.tracking import Tracker
from expgrid.tracking.mounts import on_local_disk
from expgrid.tracking.store import experiment_id, seed_sqlite_store, use_write_ahead_log


def test_a_new_sqlite_store_is_a_copy_of_an_empty_one_made_once(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first, second = tmp_path / "a" / "mlflow.db", tmp_path / "b" / "mlflow.db"
    assert seed_sqlite_store(f"sqlite:///{first}")
    templates = list((tmp_path / "cache" / "expgrid").glob("mlflow-*-empty.db"))
    assert len(templates) == 1
    made = templates[0].stat().st_mtime_ns
    assert seed_sqlite_store(f"sqlite:///{second}")
    assert templates[0].stat().st_mtime_ns == made  # reused, not rebuilt
    assert not seed_sqlite_store(f"sqlite:///{second}")  # an existing store is left alone
    assert not seed_sqlite_store("http://127.0.0.1:5000")

    uri = f"sqlite:///{second}"
    client = MlflowClient(uri)
    study = experiment_id(client, "x", uri, tmp_path / "b" / "art")
    assert client.get_experiment(study).artifact_location == (tmp_path / "b" / "art").resolve().as_uri()
    assert experiment_id(client, "x", uri, tmp_path / "elsewhere") == study  # found, not made again
    run = client.create_run(study)
    client.log_metric(run.info.run_id, "m", 1.0)
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}


def _journal_mode(database) -> str:
    with closing(sqlite3.connect(database)) as db:
        return db.execute("PRAGMA journal_mode").fetchone()[0]


def test_the_write_ahead_log_is_used_while_writing_and_folded_back_once_the_writer_exits(tmp_path):
    if not on_local_disk(tmp_path):
        pytest.skip("the temporary directory is not on a local disk here")
    database = tmp_path / "mlflow.db"
    tracker = Tracker(f"sqlite:///{database}", "wal", results_dir=tmp_path)
    tracker.start_study("wal", {"seed": 0})
    tracker.start_section("a", "A", {})
    tracker.start_trial("a", 0, "a/0", {"x": 1}, {}, time.time())
    tracker.log_epoch("a", 0, {"epoch": 1, "score": 0.5})
    tracker.end_trial("a", 0, "FINISHED", {}, time.time())
    assert tracker.flush()
    assert _journal_mode(database) == "wal"  # set on the file: every connection uses it
    assert tracker.finish().complete
    assert not (tmp_path / "mlflow.db-wal").exists()
    assert _journal_mode(database) == "delete"  # the file alone holds everything
    with closing(sqlite3.connect(database)) as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 3  # study, section, trial


def test_the_write_ahead_log_is_left_off_where_it_cannot_be_used(tmp_path):
    assert use_write_ahead_log(f"sqlite:///{tmp_path / 'absent.db'}") is None  # no store yet
    assert use_write_ahead_log("http://127.0.0.1:5000") is None
    database = tmp_path / "held.db"
    with closing(sqlite3.connect(database)) as other:  # another process's open transaction holds the file
        other.execute("CREATE TABLE t (x)")
        other.execute("BEGIN EXCLUSIVE")
        if on_local_disk(tmp_path):
            assert use_write_ahead_log(f"sqlite:///{database}") is None
        other.rollback()
    assert _journal_mode(database) == "delete"
