"""The MLflow writer process's store work (``expgrid.tracking.writer.Writer``), on a real SQLite store:
a trial's run written at its end holds what a run written while it ran holds; a resumed trial's
run ends with every epoch once; a backlog is written while calls keep finishing. And the process (through ``Tracker``): it does
not get the terminal's Ctrl-C, it exits when the driver dies, and a server that is gone or never
answers costs a bounded wait and a count of what was not written."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
from mlflow.tracking import MlflowClient

from expgrid.cli import main
from expgrid.tracking import MIRROR_WAIT, Tracker
from expgrid.tracking.writer import Deadline, Writer


def _writer(tmp_path: Path) -> Writer:
    writer = Writer()
    writer.open(f"sqlite:///{tmp_path / 'mlflow.db'}", "study", tmp_path / "art")
    writer.start_study("study", {"seed": 0}, None)
    writer.start_section("a", "lr", {"epochs": 2}, None)
    return writer


def _trial(writer: Writer, index: int, idle: bool) -> None:
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


# --- the writer process: signals, a dead driver, a dead or silent server, a resumed trial -------------


_CTRL_C_DRIVER = textwrap.dedent("""
    import json, os, signal, sys, time
    from pathlib import Path
    from expgrid.tracking import Tracker

    signal.signal(signal.SIGINT, lambda *_: None)  # this driver lives on; the writer is what is tested
    root = Path(sys.argv[1])
    tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}", "ctrl-c", artifact_root=root / "art")
    tracker.start_study("ctrl-c", {"seed": 0})
    tracker.start_section("a", "A", {"epochs": 2})
    tracker.start_trial("a", 0, "a/0", {"x": 1}, {}, time.time())
    tracker.log_epoch("a", 0, {"epoch": 1, "score": 0.5})
    assert tracker.flush()
    os.killpg(0, signal.SIGINT)  # what a Ctrl-C in the terminal does: SIGINT to the foreground group
    os.kill(tracker.writer_pid, signal.SIGINT)  # and to the writer itself
    time.sleep(1.0)
    tracker.log_epoch("a", 0, {"epoch": 2, "score": 0.7})
    tracker.end_trial("a", 0, "FINISHED", {"expgrid.status": "completed"}, time.time())
    tracker.end_section("a", "FINISHED", {}, {}, {})
    tracker.end_study("FINISHED")
    pgid = os.getpgid(tracker.writer_pid)
    report = tracker.finish()
    print(json.dumps({"complete": report.complete, "errors": report.errors, "writer_group": pgid,
                      "driver_group": os.getpgid(0), "writer_exit": tracker.writer.returncode}))
""")


def _driver(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # its own group: the SIGINT stays in it  # fmt: skip


def test_the_writer_does_not_get_the_terminals_ctrl_c(tmp_path):
    driver = _driver(_CTRL_C_DRIVER, str(tmp_path))
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err
    seen = json.loads(out)
    assert seen["writer_group"] != seen["driver_group"]
    assert (seen["complete"], seen["errors"], seen["writer_exit"]) == (True, [], 0)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    ledger = json.loads((tmp_path / "mlflow.json").read_text())["stores"][f"sqlite:///{tmp_path / 'mlflow.db'}"]
    trial = ledger["trials"]["a"]["0"]
    assert client.get_run(trial).info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(trial, "score")] == [(1, 0.5), (2, 0.7)]


_IDLE_DRIVER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from expgrid.tracking import Tracker

    root = Path(sys.argv[1])
    tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}", "idle", artifact_root=root / "art")
    assert tracker.flush()
    print(tracker.writer_pid, flush=True)
    time.sleep(600)
""")


def test_the_writer_exits_when_the_driver_dies(tmp_path):
    driver = _driver(_IDLE_DRIVER, str(tmp_path))
    writer = psutil.Process(int(driver.stdout.readline()))
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + 60  # it polls for its parent every second; this is a fault bound
    while writer.is_running() and writer.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the writer outlived its driver"
        time.sleep(0.2)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _calls(tracker: Tracker, tmp_path: Path) -> None:
    """A study of one section and two trials of three epochs (two metrics each) and one artifact."""
    (tmp_path / "f.txt").write_text("x")
    tracker.start_study("s", {"seed": 0})
    tracker.start_section("a", "A", {})
    for index in (0, 1):
        tracker.start_trial("a", index, f"a/{index}", {"x": index}, {}, time.time())
        for epoch in (1, 2, 3):
            tracker.log_epoch("a", index, {"epoch": epoch, "score": 0.1 * epoch, "loss": -0.1 * epoch})
        tracker.end_trial("a", index, "FINISHED", {}, time.time())
    tracker.log_trial_artifacts("a", 1, {"f.txt": tmp_path / "f.txt"})
    tracker.end_section("a", "FINISHED", {"best_score": 0.3}, {}, {})
    tracker.end_study("FINISHED", {})


def test_a_server_that_is_gone_costs_seconds_and_the_missing_data_is_counted(tmp_path):
    uri = f"http://127.0.0.1:{_closed_port()}"
    tracker = Tracker(uri, "s", results_dir=tmp_path)
    _calls(tracker, tmp_path)
    started = time.monotonic()
    report = tracker.finish()
    assert time.monotonic() - started < MIRROR_WAIT  # the bound the study's end documents
    assert (report.complete, report.counted, report.why) == (False, True, f"server {uri} unreachable")
    assert (report.runs, report.points, report.artifacts) == ({"study": 1, "section": 1, "trial": 2}, 13, 1)
    text = "\n".join(report.warning(tmp_path))
    assert "1 study run, 1 section run and 2 trial runs lack data: 13 metric points and 1 artifact not written" in text
    assert f"expgrid sync {tmp_path} --tracking-uri {uri}" in text


def test_a_writer_stuck_in_a_call_is_stopped_at_the_deadline(tmp_path, monkeypatch):
    """A server that accepts and never answers, and a user's MLflow timeout longer than the wait:
    the writer cannot end its call in time, so the study's end stops it at the deadline."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        silent.settimeout(120)
        tracker = Tracker(f"http://127.0.0.1:{silent.getsockname()[1]}", "s", results_dir=tmp_path)
        _calls(tracker, tmp_path)
        connection, _ = silent.accept()  # the writer is in its first call (opening the store)
        started = time.monotonic()
        report = tracker.finish(wait=5.0)
        waited = time.monotonic() - started
        connection.close()
    assert waited < 5.0 + 30  # stopped at the deadline (the slack is for a loaded machine)
    assert (report.complete, report.counted) == (False, False)
    assert "did not finish within 5 s" in report.why
    assert tracker.writer.poll() is not None
    assert "what it lacks is unknown" in report.warning(tmp_path)[0]


def test_a_resumed_trial_reopens_its_run_and_it_ends_with_every_epoch_once(tmp_path):
    first = _writer(tmp_path)
    # The first driver: trial 0 heard of epochs 1-3, the store got 1-2 when the driver was killed.
    first.start_trial("a", 0, "a/0", {"lr": 0.1}, {}, started=1_000, history=[], recorded=None)
    for epoch in (1, 2):
        first.log_epoch("a", 0, epoch, 2_000 + epoch, [("score", epoch / 10)])
    first.start_trial("a", 1, "a/1", {"lr": 0.2}, {}, started=1_000, history=[], recorded=None)
    first.write_pending()
    ids = first.take_new_ids()
    study, section, trial, other = ids["study"], ids["a"], ids[("a", 0)], ids[("a", 1)]

    resumed = Writer()  # the resumed driver's writer, on the same store
    resumed.open(f"sqlite:///{tmp_path / 'mlflow.db'}", "study", tmp_path / "art")
    resumed.start_study("study", {"seed": 0}, study)
    resumed.start_section("a", "lr", {"epochs": 2}, section)
    history = [(epoch, [("score", epoch / 10)]) for epoch in (1, 2, 3)]  # rows.jsonl of trial 0
    resumed.start_trial("a", 0, "a/0", {"lr": 0.1}, {}, started=5_000, history=history, recorded=trial)
    resumed.log_epoch("a", 0, 3, 6_003, [("score", 0.3)])  # from its checkpoint at epoch 2: epoch 3 again
    resumed.log_epoch("a", 0, 4, 6_004, [("score", 0.4)])
    resumed.end_trial("a", 0, "FINISHED", {"expgrid.status": "completed"}, ended=7_000)
    # Trial 1 had reported nothing: it starts again from its first epoch, in a run of its own.
    resumed.start_trial("a", 1, "a/1", {"lr": 0.2}, {}, started=5_000, history=[], recorded=other)
    resumed.end_trial("a", 1, "FINISHED", {"expgrid.status": "completed"}, ended=7_000)
    assert resumed.errors == []
    assert (resumed._runs["study"], resumed._runs["a"], resumed._runs[("a", 0)]) == (study, section, trial)
    client = resumed.client
    assert client.get_run(trial).info.status == "FINISHED"
    points = sorted((m.step, round(m.value, 6)) for m in client.get_metric_history(trial, "score"))
    assert points == [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4)]
    assert resumed._runs[("a", 1)] != other
    superseded = client.get_run(other)
    assert (superseded.info.status, superseded.data.tags.get("expgrid.superseded")) == ("KILLED", "true")


def test_a_garbage_run_id_ledger_is_one_line_before_anything_starts(tmp_path, write_study, capsys):
    study = write_study("study: s\ntrainable: toy\nmetric: score\nsections:\n  - {id: a, grid: {x: [1]}}\n")
    results = tmp_path / "r"
    results.mkdir()
    (results / "mlflow.json").write_text("{not json")
    assert main(["run", str(study), "--results", str(results)]) == 2
    out, err = capsys.readouterr()
    assert err == f"error: {results / 'mlflow.json'}: expected the MLflow run-id ledger expgrid writes (JSON with " \
                  "\"stores\"), got unreadable content ('{not json'); delete the file to have `expgrid sync` match " \
                  "runs by their tags\n"
    # No store, no writer, no Ray: only the lock the refused run held while it read the records.
    assert sorted(p.name for p in results.iterdir()) == ["expgrid.lock", "mlflow.json"]


# --- the study's end: a backlog written while the writer keeps finishing calls ------------------


def _backlog(writer: Writer, trials: int) -> None:
    """The calls of ``trials`` short trials, queued faster than the store takes them."""
    for index in range(trials):
        writer.do("start_trial", ("a", index, f"a/{index}", {"lr": index}, {}, 1_000, [], None))
        for epoch in (1, 2):
            writer.do("log_epoch", ("a", index, epoch, 2_000 + epoch, [("score", float(epoch))]))
        writer.do("end_trial", ("a", index, "FINISHED", {"expgrid.status": "completed"}, 3_000))


def test_a_backlog_longer_than_the_wait_for_one_call_is_written_while_calls_finish(tmp_path):
    """The study's end waits for each call (``idle``), not for the whole backlog: 300 trials' runs
    take seconds, each call milliseconds. The same backlog with a bound on the whole (``longest``
    far below it) stops with what it lacks counted: the bound is what ends it."""
    writer = _writer(tmp_path)
    progress: list[float] = []
    writer.on_progress = lambda: progress.append(time.monotonic())
    writer.deadline = Deadline.of(2.0, "too late", longest=600.0)
    _backlog(writer, 300)
    assert (writer.stopped, writer.incomplete, writer.errors) == (None, set(), [])
    runs = writer.client.search_runs([writer.experiment_id], "tags.`expgrid.kind` = 'trial'", max_results=1000)
    assert len(runs) == 300 and {r.info.status for r in runs} == {"FINISHED"}
    assert progress  # the driver hears that the writer is still finishing calls

    bounded = _writer(tmp_path / "bounded")
    bounded.deadline = Deadline.of(2.0, "too late", longest=0.2)
    _backlog(bounded, 300)
    assert bounded.stopped == "too late" and len(bounded.incomplete) > 0
