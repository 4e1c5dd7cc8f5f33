"""`expgrid sync` makes a store equal to a results directory, and a second sync changes nothing:
into an empty store, into the run's own store, into a store that holds another study run of
the same name, repairing partial runs; a bad results directory is one line, exit 2.

One small study runs once (real local Ray, the run's own SQLite store); each test syncs a copy
of its results into real SQLite stores."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from expgrid.cli import main
from expgrid.locking import hold
from expgrid.runner import RunOptions, prepare, run_study

_spec = importlib.util.spec_from_file_location("mlflow_checks", Path(__file__).with_name("mlflow_checks.py"))
checks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(checks)

STUDY = textwrap.dedent("""
    study: sync
    trainable: toy
    metric: score
    defaults: {epochs: 3, artifacts: true}
    sections:
      - {id: a, grid: {x: [0, 2]}}
      - {id: b, grid: {nan_at_epoch: [null, 2]}}   # trial 1 diverges: NaN losses in its history
""")


@pytest.fixture(scope="module")
def finished(ray_session, tmp_path_factory) -> Path:
    """The results of one healthy run (its MLflow store is results/mlflow.db)."""
    root = tmp_path_factory.mktemp("sync-run")
    (root / "study.yaml").write_text(STUDY)
    study, spec = prepare(root / "study.yaml")
    run_study(study, spec, RunOptions(results_dir=root / "results", tracking_uri=None, stream=io.StringIO()))
    return root / "results"


@pytest.fixture
def results(finished, tmp_path, monkeypatch) -> Path:
    """A copy of the healthy run's results, store included (sync may change both)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    copy = tmp_path / "results"
    shutil.copytree(finished, copy)
    state = json.loads((copy / "study.json").read_text())
    own = f"sqlite:///{copy / 'mlflow.db'}"  # the copy's own store, under the copy's name
    ledger = json.loads((copy / "mlflow.json").read_text())
    ledger["stores"] = {own: ledger["stores"][state["tracking_uri"]]}
    (copy / "mlflow.json").write_text(json.dumps(ledger))
    (copy / "study.json").write_text(json.dumps({**state, "tracking_uri": own}))
    return copy


def _sync(results: Path, uri: str, capsys) -> str:
    code = main(["sync", str(results), "--tracking-uri", uri])
    out, err = capsys.readouterr()
    assert code == 0 and err == "", err
    return out


def _experiment(uri: str) -> tuple[MlflowClient, str]:
    client = MlflowClient(uri)
    return client, client.get_experiment_by_name("sync").experiment_id


def test_the_runs_own_store_needs_nothing_after_a_healthy_run(results, capsys):
    uri = f"sqlite:///{results / 'mlflow.db'}"
    client, experiment = _experiment(uri)
    before = checks.snapshot(client, experiment)
    assert "nothing to do" in _sync(results, uri, capsys)
    assert checks.snapshot(client, experiment) == before
    checks.assert_store_matches(client, results, uri)


def test_sync_fills_an_empty_store_and_a_second_sync_changes_nothing(results, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'other.db'}"
    out = _sync(results, uri, capsys)
    assert "created 1 study, 2 section and 4 trial runs; repaired 0 study, 0 section and 0 trial runs" in out
    client, experiment = _experiment(uri)
    checks.assert_store_matches(client, results, uri)

    before = checks.snapshot(client, experiment)
    assert "nothing to do" in _sync(results, uri, capsys)
    assert checks.snapshot(client, experiment) == before  # byte for byte what the store returns

    lost = checks.ledger_of(results, uri)["trials"]["a"]["1"]
    client.delete_run(lost)  # a trial run gone from the store
    assert "created 0 study, 0 section and 1 trial runs" in _sync(results, uri, capsys)
    assert checks.ledger_of(results, uri)["trials"]["a"]["1"] != lost
    checks.assert_store_matches(client, results, uri)


def test_sync_attaches_to_its_own_study_run_never_another_of_the_same_name(results, tmp_path, capsys):
    own = f"sqlite:///{results / 'mlflow.db'}"
    client, experiment = _experiment(own)
    decoy = client.create_run(experiment, run_name="sync", tags={"expgrid.kind": "study"}).info.run_id  # newer
    assert "nothing to do" in _sync(results, own, capsys)
    assert checks.descendants(client, experiment, decoy) == []

    # Another results directory of the same study (another run of it) and a store that already
    # holds this one's runs: it gets a study run of its own, the first one's is left alone.
    other_store = f"sqlite:///{tmp_path / 'shared.db'}"
    _sync(results, other_store, capsys)
    second = tmp_path / "second"
    shutil.copytree(results, second)
    (second / "mlflow.json").unlink()
    state = json.loads((second / "study.json").read_text())
    (second / "study.json").write_text(json.dumps({**state, "mlflow_run_id": None}))
    shared, shared_experiment = _experiment(other_store)
    first_tree = checks.snapshot(shared, shared_experiment)
    assert "created 1 study, 2 section and 4 trial runs" in _sync(second, other_store, capsys)
    after = checks.snapshot(shared, shared_experiment)
    assert {k: after[k] for k in first_tree} == first_tree
    assert checks.ledger_of(second, other_store)["study"] != checks.ledger_of(results, other_store)["study"]
    checks.assert_store_matches(shared, second, other_store)
    assert "nothing to do" in _sync(second, other_store, capsys)  # it finds its own through its ledger
    assert "nothing to do" in _sync(results, other_store, capsys)


def test_sync_repairs_partial_runs(results, tmp_path, capsys):
    """A store holding part of the record (as when the server died mid-run): a trial run left
    RUNNING with its last epoch missing, a section run without its report, a trial whose stored
    value differs from the record (only a new run can hold the recorded one)."""
    partial = tmp_path / "partial"
    shutil.copytree(results, partial)
    trials_file = partial / "sections" / "a" / "trials.json"
    trials = json.loads(trials_file.read_text())
    trials[0]["history"] = trials[0]["history"][:-1]
    trials[1]["history"][0]["score"] += 1.0
    trials_file.write_text(json.dumps(trials))
    shutil.rmtree(partial / "sections" / "b" / "report")
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    _sync(partial, uri, capsys)
    client, experiment = _experiment(uri)
    ledger = checks.ledger_of(partial, uri)
    client.update_run(ledger["trials"]["a"]["0"], status="RUNNING")
    shutil.copy(partial / "mlflow.json", results / "mlflow.json")  # the full record, the same runs

    out = _sync(results, uri, capsys)
    full = json.loads((results / "sections" / "a" / "trials.json").read_text())
    missing = len(full[0]["history"][-1]) - 1  # every number of the dropped epoch but the epoch itself
    anew = sum(len(row) - 1 for row in full[1]["history"])  # the replaced trial's run gets all its points
    # The study run too: its summary.json (made from the records) differs.
    assert "created 0 study, 0 section and 1 trial runs; repaired 1 study, 1 section and 1 trial runs" in out, out
    assert f"added {missing + anew} metric points" in out, out
    assert "replaced 1 and superseded 1 runs" in out, out
    checks.assert_store_matches(client, results, uri)
    replaced = client.get_run(ledger["trials"]["a"]["1"])
    assert (replaced.info.status, replaced.data.tags["expgrid.superseded"]) == ("FINISHED", "true")

    before = checks.snapshot(client, experiment)
    assert "nothing to do" in _sync(results, uri, capsys)
    assert checks.snapshot(client, experiment) == before


def _one_error_line(argv: list[str], capsys) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == "", (code, out, err)
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("case", ["missing", "a file", "no study.json", "garbage study.json", "a list",
                                  "no study name", "garbage trials.json", "garbage mlflow.json"])  # fmt: skip
def test_a_bad_results_directory_is_one_line_and_touches_no_store(case, results, tmp_path, capsys):
    target = tmp_path / "target"
    if case == "missing":
        target = tmp_path / "nowhere"
    elif case == "a file":
        target.write_text("x")
    else:
        shutil.copytree(results, target)
        study_json = target / "study.json"
        if case == "no study.json":
            study_json.unlink()
        elif case == "garbage study.json":
            study_json.write_text('{"study": "sync", "sec')
        elif case == "a list":
            study_json.write_text("[1, 2]")
        elif case == "no study name":
            study_json.write_text(json.dumps({"tracking_uri": "sqlite:///x.db"}))
        elif case == "garbage trials.json":
            (target / "sections" / "b" / "trials.json").write_text("\x00\x01 not json")
        else:
            (target / "mlflow.json").write_text('{"stores": [')
    store = tmp_path / "untouched.db"
    err = _one_error_line(["sync", str(target), "--tracking-uri", f"sqlite:///{store}"], capsys)
    assert ": expected " in err and ", got " in err, err
    assert not store.exists()


def test_sync_refuses_a_results_directory_in_use(results, tmp_path, capsys):
    store = tmp_path / "untouched.db"
    with hold(results, "run"):
        err = _one_error_line(["sync", str(results), "--tracking-uri", f"sqlite:///{store}"], capsys)
    assert "in use by `expgrid run`" in err
    assert not store.exists()


def test_an_interrupted_section_is_synced_as_far_as_its_records_go(results, tmp_path, capsys):
    """A section whose run was stopped (no section.json): the trials that had ended as recorded,
    a running one with the epochs rows.jsonl holds, it and the section's run KILLED."""
    folder = results / "sections" / "b"
    (folder / "section.json").unlink()
    (folder / "trials.json").unlink()
    lines = (folder / "trials.jsonl").read_text().splitlines()
    ended = [json.loads(line) for line in lines if json.loads(line)["index"] == 0]
    (folder / "trials.jsonl").write_text("".join(json.dumps(t) + "\n" for t in ended) + '{"index": 1, "swe')  # cut
    running = [json.loads(line)["row"] for line in (folder / "rows.jsonl").read_text().splitlines()
               if json.loads(line)["trial"] == 1 and "row" in json.loads(line)]  # a stop has a line of its own
    uri = f"sqlite:///{tmp_path / 'other.db'}"
    assert "created 1 study, 2 section and 4 trial runs" in _sync(results, uri, capsys)
    client, experiment = _experiment(uri)
    ledger = checks.ledger_of(results, uri)
    assert client.get_run(ledger["sections"]["b"]).info.status == "KILLED"
    assert client.get_run(ledger["trials"]["b"]["0"]).info.status == "FINISHED"
    stopped = client.get_run(ledger["trials"]["b"]["1"])
    assert stopped.info.status == "KILLED" and stopped.data.params == {}
    history = sorted((m.step, m.value) for m in client.get_metric_history(stopped.info.run_id, "score"))
    assert history == [(row["epoch"], row["score"]) for row in running]
    before = checks.snapshot(client, experiment)
    assert "nothing to do" in _sync(results, uri, capsys)
    assert checks.snapshot(client, experiment) == before
