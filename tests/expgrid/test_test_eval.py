"""`test: best` (expgrid/test_eval.py, cluster/test_eval.py): a section's best trial evaluated
once on the test split, at its selected epoch's checkpoint, in a Ray task; the numbers equal a
direct evaluation of that checkpoint in this process, and they reach section.json, the section
table, the summary, the Parquet store and the section's MLflow run. A run stopped before the
evaluation ran leaves it pending, and the next run runs it. Validation: one line each."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import expgrid.reporter as reporter
from expgrid import records
from expgrid.runner import RunOptions, prepare, run_study
from expgrid.stopping import TrialRules

REPO = Path(__file__).resolve().parents[2]

STUDY = """
study: test-eval
trainable: classify
metric: val_accuracy
mode: max
test: best
defaults:
  dataset: {name: digits, train_size: 600, val_size: 300}
  model: {name: mlp, hidden: [16]}
  optimizer: {name: sgd, lr: 0.05}
  epochs: 4
sections:
  - id: "1"
    name: Learning rate
    grid: {optimizer.lr: [0.05, 0.5]}
  - id: "2"
    name: Best epoch
    select: best_epoch
    grid: {optimizer.momentum: [0.0, 0.9]}
  - id: "3"
    name: No test
    test: none
    grid: {model.dropout: [0.0]}
"""


def _run(path: Path, results: Path) -> tuple[object, str]:
    study, spec = prepare(path)
    stream = io.StringIO()
    outcome = run_study(study, spec, RunOptions(results_dir=results, stream=stream))
    return outcome, stream.getvalue()


def _direct(results: Path, section_id: str, trial: records.TrialRecord, epoch: int) -> dict[str, float]:
    """The test metrics of the trial's checkpoint of ``epoch``, computed here, not in Ray."""
    from trainables.classification.evaluate import evaluate
    from trainables.classification.train import load_data

    states = []
    for path in (results / "tune" / f"section-{section_id}" / f"trial_{trial.index:04d}").rglob("expgrid_state.pkl"):
        with open(path, "rb") as f:
            states.append(pickle.load(f))
    state = next(s for s in states if s["epoch"] == epoch)
    assert state["user"]["epoch"] == epoch  # classify's own record of it agrees
    return evaluate(trial.config, state["user"], load_data(trial.config))


@pytest.fixture(scope="module")
def finished(ray_session, tmp_path_factory):
    folder = tmp_path_factory.mktemp("test-eval")
    path = folder / "study.yaml"
    path.write_text(STUDY)
    outcome, text = _run(path, folder / "results")
    return path, folder / "results", text


def test_the_tested_metrics_equal_a_direct_evaluation_of_the_selected_checkpoint(finished):
    _, results, text = finished
    for section_id, select in (("1", "last_epoch"), ("2", "best_epoch")):
        saved = records.read_section(results, section_id)
        trials = records.read_trials(results, section_id)
        best = next(t for t in trials if t.index == saved["best"]["index"])
        selected = best.selected("val_accuracy", "max", select)
        test = saved["test"]
        assert (test["trial"], test["epoch"]) == (best.index, selected["epoch"])
        direct = _direct(results, section_id, best, selected["epoch"])
        assert set(test["metrics"]) == {"test_loss", "test_accuracy", "test_error", "test_top5_accuracy",
                                        "test_top5_error", "test_samples"}  # fmt: skip
        for name, value in direct.items():
            assert math.isclose(test["metrics"][name], value, rel_tol=1e-6, abs_tol=1e-7), (section_id, name)
        assert test["metrics"]["test_samples"] == 1797 - 600 - 300
        assert math.isclose(test["metrics"]["test_error"], 1 - test["metrics"]["test_accuracy"], abs_tol=1e-12)
        assert f"{section_id} " in text and f"test (trial {best.index}, epoch {selected['epoch']})" in text
    assert "test" not in records.read_section(results, "3")  # test: none


def test_test_metrics_are_in_the_table_summary_and_parquet_apart_from_validation(finished):
    _, results, _ = finished
    test = records.read_section(results, "1")["test"]
    rows = list(csv.DictReader((results / "sections" / "1" / "report" / "table.csv").open()))
    tested = [r for r in rows if "tested" in (r["note"] or "")]
    assert len(tested) == 1 and int(tested[0]["trial"]) == test["trial"]
    assert float(tested[0]["test_accuracy"]) == pytest.approx(test["metrics"]["test_accuracy"], rel=1e-12)
    assert all(r["test_accuracy"] == "" for r in rows if r is not tested[0])
    assert "test_accuracy" not in (results / "sections" / "3" / "report" / "table.csv").read_text()
    assert "tested** trial" in (results / "sections" / "1" / "report" / "table.md").read_text()

    summary = {r["section"]: r for r in csv.DictReader((results / "report" / "summary.csv").open())}
    assert float(summary["1"]["test_accuracy"]) == pytest.approx(test["metrics"]["test_accuracy"], rel=1e-12)
    assert float(summary["1"]["val_accuracy"]) == pytest.approx(records.read_section(results, "1")["best"]["metrics"]["val_accuracy"])
    assert summary["3"]["test_accuracy"] == ""
    assert "test_top5_error" in (results / "report" / "summary.txt").read_text()

    import pandas as pd

    frame = pd.read_parquet(results / "report" / "trials.parquet")
    marked = frame[frame.tested]
    assert list(marked.section) == ["1", "2"]  # one row per tested section: its trial at the tested epoch
    row = marked[marked.section == "1"].iloc[0]
    assert (row.trial, row.epoch, bool(row.best), bool(row.selected)) == (test["trial"], test["epoch"], True, True)
    assert row.test_loss == pytest.approx(test["metrics"]["test_loss"], rel=1e-12)
    assert frame[~frame.tested].test_loss.isna().all()


def test_the_section_mlflow_run_holds_the_test_metrics(finished):
    from mlflow.tracking import MlflowClient

    _, results, _ = finished
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("test-eval")
    runs = client.search_runs([experiment.experiment_id], "tags.`expgrid.kind` = 'section'")
    by_id = {r.data.tags["expgrid.section_id"]: r for r in runs}
    for section_id in ("1", "2"):
        test = records.read_section(results, section_id)["test"]["metrics"]
        logged = {k: v for k, v in by_id[section_id].data.metrics.items() if k.startswith("test_")}
        assert logged == pytest.approx(test, rel=1e-12)
        assert "best_val_accuracy" in by_id[section_id].data.metrics  # the validation value beside it
    assert not any(k.startswith("test_") for k in by_id["3"].data.metrics)


def test_a_finished_section_keeps_its_test_and_a_pending_one_runs_at_the_next_run(finished, tmp_path):
    path, results, _ = finished
    kept = records.read_section(results, "1")["test"]
    # As if the run had been stopped during section 2's evaluation: section.json without "test".
    section = results / "sections" / "2" / "section.json"
    saved = json.loads(section.read_text())
    wanted = saved.pop("test")
    section.write_text(json.dumps(saved))
    _, text = _run(path, results)
    assert "1 Learning rate: finished earlier" in text and "2 Best epoch: finished earlier" in text
    assert "test (trial" in text and text.count("test (trial") == 1  # section 2's only
    assert records.read_section(results, "1")["test"] == kept
    again = records.read_section(results, "2")["test"]
    assert (again["trial"], again["epoch"]) == (wanted["trial"], wanted["epoch"])
    assert again["metrics"] == pytest.approx(wanted["metrics"], rel=1e-6)
    rows = list(csv.DictReader((results / "sections" / "2" / "report" / "table.csv").open()))
    assert [r["trial"] for r in rows if "tested" in (r["note"] or "")] == [str(wanted["trial"])]


# ---------------------------------------------------------------------------------------------
# Validation: one line, exit 2, before anything starts


def _validate(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "expgrid", "validate", str(path), "--results", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ})  # fmt: skip


@pytest.mark.parametrize(
    "setting, expected",
    [
        ("test: maybe", "test: expected one of best, none (best: evaluate the section's best trial on the test split), got 'maybe'"),
        ("test: best\ndefaults: {dataset: {name: image_folder, root: IMAGES, train_size: null, val_size: null}}",
         "test: expected data with a test split (or test: none), got best on image_folder without a test/ folder (in IMAGES)"),
        ("test: best\ndefaults: {dataset: {name: digits, train_size: 1500, val_size: 297}}",
         "test: expected data with a test split (or test: none), got best on digits with train_size + val_size = 1797 of "
         "its 1797 images (none left to test)"),
    ],
)  # fmt: skip
def test_a_study_asking_for_a_test_it_cannot_have_gets_one_line(tmp_path, setting, expected):
    from trainables.classification.synthetic import write_fake_image_folder

    images = tmp_path / "images"
    write_fake_image_folder(images, classes=3, per_class=2, size=8)  # train/ and val/, no test/
    setting, expected = setting.replace("IMAGES", str(images)), expected.replace("IMAGES", str(images))
    proc = _validate(tmp_path, f"study: s\ntrainable: classify\nmetric: val_accuracy\n{setting}\n"
                               "sections:\n  - id: '1'\n    grid: {optimizer.lr: [0.1]}\n")  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr == f"error: {tmp_path / 's.yaml'}: {expected}\n"
    assert not (tmp_path / "r").exists()


def test_a_section_asking_a_trainable_without_an_evaluate_hook_gets_one_line(tmp_path):
    proc = _validate(tmp_path, "study: s\ntrainable: toy\nmetric: score\nsections:\n"
                               "  - id: '1'\n    test: best\n    grid: {x: [1]}\n")  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr == (f"error: {tmp_path / 's.yaml'}: sections[0].test: expected none, or a trainable with an "
                           f"`evaluate` hook (TrainableSpec.evaluate), got best (trainable 'toy' has none)\n")  # fmt: skip


def test_an_image_folder_with_a_test_folder_validates(tmp_path):
    from trainables.classification.synthetic import write_fake_image_folder

    images = tmp_path / "images"
    write_fake_image_folder(images, classes=3, per_class=2, size=8)
    write_fake_image_folder(tmp_path / "t", classes=3, per_class=2, size=8)
    (tmp_path / "t" / "val").rename(images / "test")
    proc = _validate(tmp_path, f"study: s\ntrainable: classify\nmetric: val_accuracy\ntest: best\n"
                               f"defaults: {{dataset: {{name: image_folder, root: {images}, train_size: null, val_size: null}}}}\n"
                               "sections:\n  - id: '1'\n    grid: {optimizer.lr: [0.1]}\n")  # fmt: skip
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------------------------
# Which epochs a `test:` section checkpoints (expgrid/reporter.py)


class _Kept(reporter.Session):
    def __init__(self, rules):
        super().__init__(rules)
        self.states = []

    def _deliver(self, messages, state):
        if state is not None:
            self.states.append(state)

    def _load(self):
        return None


@pytest.mark.parametrize(
    "keep, scores, stopping, expected",
    [
        (False, [1, 2, 3, 4, 5, 6], {}, [4]),  # every 4th epoch only: epoch 6 has none
        (True, [1, 2, 3, 4, 5, 6], {}, [4, 6]),  # ... and the last planned epoch
        (True, [5, 4, 3, 2, 1, 0], {"monitor": "score", "monitor_mode": "max", "patience": 2}, [3]),  # early stop at 3
        (True, [1, 2, 3, 4, 5, 6], {"flush_epochs": frozenset({3})}, [3, 4, 6]),  # an ASHA rung
    ],
)
def test_a_test_section_checkpoints_the_epoch_a_trial_may_end_at(keep, scores, stopping, expected):
    session = _Kept(TrialRules(metric="score", mode="max", report_interval=1e9, checkpoint_every=4, last_epoch=6,
                               keep_last_checkpoint=keep, **stopping))  # fmt: skip
    try:
        for epoch, score in enumerate(scores, start=1):
            session.report({"epoch": epoch, "score": score}, checkpoint=lambda epoch=epoch: {"at": epoch})
    except reporter.StopTrial:
        pass
    assert [s["epoch"] for s in session.states] == expected
    assert [s["user"]["at"] for s in session.states] == expected


# ---------------------------------------------------------------------------------------------
# Which checkpoint is tested, for any trainable: a best epoch before the last (Tune keeps it
# beside the latest), a last epoch no `checkpoint_every` falls on, the epoch early stopping ends at

CURVES = '''
import expgrid

SCORES = {"peak": [1.0, 5.0, 2.0, 3.0], "rise": [1.0, 2.0, 3.0, 4.0, 5.0], "stall": [3.0, 1.0, 1.0, 1.0, 1.0, 1.0]}


@expgrid.trainable(evaluate="curves:evaluate")
def train(config):
    state = expgrid.restore()
    for epoch in range((state or {"epoch": 0})["epoch"] + 1, config["epochs"] + 1):
        expgrid.report({"epoch": epoch, "score": SCORES[config["curve"]][epoch - 1]},
                       checkpoint=lambda epoch=epoch: {"epoch": epoch, "w": 10 * epoch})


def evaluate(config, checkpoint, data):
    return {"test_w": checkpoint["w"], "test_curve_length": len(SCORES[config["curve"]])}

'''

CURVES_STUDY = """
study: curves
trainable: curves:train
metric: score
test: best
sections:
  - id: best
    select: best_epoch
    epochs: 4
    grid: {curve: [peak]}
  - id: last
    epochs: 5
    checkpoint_every: 2
    grid: {curve: [rise]}
  - id: stop
    epochs: 6
    checkpoint_every: 4
    early_stopping: {monitor: score, mode: max, patience: 2}
    grid: {curve: [stall]}
"""


def test_the_selected_epochs_checkpoint_is_the_one_tested(ray_session, tmp_path, monkeypatch):
    (tmp_path / "curves.py").write_text(CURVES)
    (tmp_path / "study.yaml").write_text(CURVES_STUDY)
    monkeypatch.chdir(tmp_path)  # the trainable's module beside the study, as a user runs it
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    _run(tmp_path / "study.yaml", tmp_path / "results")
    tests = {sid: records.read_section(tmp_path / "results", sid)["test"] for sid in ("best", "last", "stop")}
    assert {sid: (t["epoch"], t["metrics"]["test_w"]) for sid, t in tests.items()} == {
        "best": (2, 20.0),  # the best epoch, not the latest (4)
        "last": (5, 50.0),  # checkpoint_every 2 alone would have kept epoch 4
        "stop": (3, 30.0),  # patience ran out at epoch 3
    }
    assert records.read_trials(tmp_path / "results", "stop")[0].status == "early_stopped"
