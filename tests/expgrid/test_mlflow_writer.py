"""The MLflow writer process's store work (``expgrid.mlflow_writer._Writer``), on a real SQLite store:
a trial's run written at its end holds what a run written while it ran holds; a run's data goes
in batches within MLflow's limits; the store's write-ahead log is folded back at the end."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param, RunTag

from expgrid.mlflow_store import _on_local_disk, log_run_data
from expgrid.mlflow_writer import _Writer


def _writer(tmp_path: Path) -> _Writer:
    writer = _Writer()
    writer.open(f"sqlite:///{tmp_path / 'mlflow.db'}", "study", tmp_path / "art")
    writer.start_study("study", {"seed": 0}, None)
    writer.start_section("a", "lr", {"epochs": 2}, None)
    return writer


def _trial(writer: _Writer, index: int, idle: bool) -> None:
    """The calls the driver makes for one trial; ``idle``: the writer catches up between them
    (a slow trial), else they queue up and the run is only created at the trial's end."""
    writer.start_trial("a", index, f"a/{index} lr={index}", {"lr": index, "optimizer": {"name": "sgd"}}, {},
                       started=1_000_000 + index, history=[], recorded=None)  # fmt: skip
    if idle:
        writer.write_pending()
    for epoch in (1, 2):
        writer.log_epoch("a", index, epoch, 2_000_000 + epoch, [("score", float(epoch * index))])
        if idle:
            writer.write_pending()
    writer.end_trial("a", index, "FINISHED", {"expgrid.status": "completed"}, ended=3_000_000 + index)


def test_a_run_written_at_the_trial_end_holds_what_a_run_written_as_it_ran_holds(tmp_path):
    writer = _writer(tmp_path)
    _trial(writer, 1, idle=True)
    _trial(writer, 2, idle=False)
    client = writer.client
    runs = client.search_runs([writer.experiment_id], "tags.`expgrid.kind` = 'trial'")
    assert sorted(r.data.tags["expgrid.trial_index"] for r in runs) == ["1", "2"]
    for run in runs:
        index = int(run.data.tags["expgrid.trial_index"])
        assert run.info.run_name == f"a/{index} lr={index}"
        assert run.info.status == "FINISHED"
        assert (run.info.start_time, run.info.end_time) == (1_000_000 + index, 3_000_000 + index)
        assert run.data.params == {"lr": str(index), "optimizer.name": "sgd"}
        assert run.data.tags["expgrid.status"] == "completed"
        assert run.data.tags["mlflow.parentRunId"] == writer._runs["a"]
        history = client.get_metric_history(run.info.run_id, "score")
        assert sorted((m.step, m.value) for m in history) == [(1, float(index)), (2, 2.0 * index)]


def test_a_running_trial_shows_in_the_store_once_the_writer_is_idle(tmp_path):
    writer = _writer(tmp_path)
    writer.start_trial("a", 0, "a/0", {"lr": 0.1}, {}, started=5_000, history=[], recorded=None)
    assert writer.client.search_runs([writer.experiment_id], "tags.`expgrid.kind` = 'trial'") == []
    writer.write_pending()
    [run] = writer.client.search_runs([writer.experiment_id], "tags.`expgrid.kind` = 'trial'")
    assert (run.info.status, run.info.start_time, run.data.params) == ("RUNNING", 5_000, {"lr": "0.1"})


def test_run_data_goes_in_batches_within_mlflows_limits(tmp_path):
    writer = _writer(tmp_path)
    run_id = writer.client.create_run(writer.experiment_id).info.run_id
    params = [Param(f"p{i}", str(i)) for i in range(250)]
    tags = [RunTag(f"t{i}", str(i)) for i in range(150)]
    metrics = [Metric("m", float(i), 0, i) for i in range(2500)]
    log_run_data(writer.client, run_id, params=params, metrics=metrics, tags=tags)  # MLflow refuses bigger batches
    run = writer.client.get_run(run_id)
    assert len(run.data.params) == 250
    assert sum(k.startswith("t") for k in run.data.tags) == 150
    assert len(writer.client.get_metric_history(run_id, "m")) == 2500


def test_the_write_ahead_log_is_used_while_writing_and_folded_back_at_the_end(tmp_path):
    if not _on_local_disk(tmp_path):
        pytest.skip("the temporary directory is not on a local disk here")
    writer = _writer(tmp_path)
    _trial(writer, 1, idle=False)
    database = tmp_path / "mlflow.db"
    with closing(sqlite3.connect(database)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    writer.close()
    assert not (tmp_path / "mlflow.db-wal").exists()
    with closing(sqlite3.connect(database)) as db:  # the file alone holds everything
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 3  # study, section, trial


def test_only_local_filesystems_count_as_local_disks(tmp_path):
    mounts = "\n".join([
        "/dev/vda1 / ext4 rw 0 0",
        "server:/export /mnt/shared nfs4 rw 0 0",
        "/dev/vdb /mnt/shared/local\\040disk xfs rw 0 0",
    ])  # fmt: skip
    assert _on_local_disk(Path("/home/me/results"), mounts)
    assert not _on_local_disk(Path("/mnt/shared/results"), mounts)
    assert _on_local_disk(Path("/mnt/shared/local disk/results"), mounts)
    assert _on_local_disk(Path("/mnt/sharedother"), mounts)  # on /, not under /mnt/shared
