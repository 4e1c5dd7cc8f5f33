"""A study end to end on a real local Ray, tracked in a real MLflow store in a temp dir."""

from __future__ import annotations

import io
import json

import pytest
from mlflow.tracking import MlflowClient

from expgrid.records import read_section, read_trials
from expgrid.runner import RunOptions, prepare, run_study

STUDY = """
study: toy-runner
trainable: toy
metric: score
mode: max
report: [loss]
defaults: {epochs: 3}
sections:
  - id: "1"
    name: X
    grid: {x: [0, 2, 4]}
  - id: "2"
    name: Y
    grid: {y: [-1, 1]}
  - id: "3"
    name: Fresh
    inherit: none
    grid: {y: [0]}
"""


def _run(path, tmp_path, **kw):
    study, spec = prepare(path)
    stream = io.StringIO()
    outcome = run_study(study, spec, RunOptions(results_dir=tmp_path / "results", stream=stream, **kw))
    return outcome, stream.getvalue()


@pytest.fixture
def finished_study(ray_session, write_study, tmp_path):
    path = write_study(STUDY)
    outcome, text = _run(path, tmp_path)
    return path, outcome, text


def test_sections_run_in_order_and_carry_the_best_value(finished_study, tmp_path):
    _, outcome, text = finished_study
    assert [s.section.id for s in outcome.sections] == ["1", "2", "3"]
    assert text.index("1 X: best") < text.index("2 Y: best") < text.index("3 Fresh: best")
    results = tmp_path / "results"
    assert read_section(results, "1")["best"]["swept"] == {"x": 2}
    # every trial of section 2 starts from x=2, the best of section 1; section 3 inherits nothing
    assert {t.config["x"] for t in read_trials(results, "2")} == {2}
    assert read_section(results, "2")["best"]["swept"] == {"y": -1}
    assert {t.config["x"] for t in read_trials(results, "3")} == {0.0}
    assert all(len(t.history) == 3 and t.status == "completed" for t in read_trials(results, "1"))


def test_mlflow_holds_study_section_and_trial_runs(finished_study):
    _, outcome, _ = finished_study
    client = MlflowClient(outcome.tracking_uri)
    experiment = client.get_experiment_by_name("toy-runner")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    by_kind = {}
    for run in runs:
        by_kind.setdefault(run.data.tags["expgrid.kind"], []).append(run)
    assert len(by_kind["study"]) == 1 and len(by_kind["section"]) == 3 and len(by_kind["trial"]) == 6
    study_id = by_kind["study"][0].info.run_id
    sections = {r.data.tags["expgrid.section_id"]: r for r in by_kind["section"]}
    assert all(r.data.tags["mlflow.parentRunId"] == study_id for r in sections.values())
    for trial in by_kind["trial"]:
        section = sections[trial.data.tags["expgrid.section_id"]]
        assert trial.data.tags["mlflow.parentRunId"] == section.info.run_id
        assert trial.info.status == "FINISHED"
        history = client.get_metric_history(trial.info.run_id, "score")
        assert [m.step for m in history] == [1, 2, 3]
    # section 2 fixed x=2 (inherited) as a param; its best value and config are recorded
    assert sections["2"].data.params["x"] == "2"
    assert sections["1"].data.metrics["best_score"] == pytest.approx(0.7875)
    local = client.download_artifacts(sections["1"].info.run_id, "best_config.json")
    assert json.load(open(local))["swept"] == {"x": 2}


def test_a_rerun_skips_finished_sections(finished_study, tmp_path):
    path, first, _ = finished_study
    outcome, text = _run(path, tmp_path)
    assert all(s.skipped for s in outcome.sections)
    assert text.count("finished earlier") == 3
    client = MlflowClient(outcome.tracking_uri)
    experiment = client.get_experiment_by_name("toy-runner")
    sections = client.search_runs([experiment.experiment_id], "tags.`expgrid.kind` = 'section'")
    assert len(sections) == 3  # nothing was run again


def test_a_changed_section_reruns_with_those_after_it(finished_study, tmp_path, write_study):
    path, _, _ = finished_study
    changed = write_study(STUDY.replace("grid: {y: [-1, 1]}", "grid: {y: [-1, 1, 3]}"))
    outcome, text = _run(changed, tmp_path)
    assert [s.skipped for s in outcome.sections] == [True, False, True]
    assert len(outcome.sections[1].trials) == 3


USER_TRAINABLE = '''
import expgrid

@expgrid.trainable(defaults={"lr": 0.1, "epochs": 2}, metrics=["epoch", "acc"])
def train(config):
    if config["lr"] > 1:
        raise ValueError("lr too large for this model")
    for epoch in range(1, config["epochs"] + 1):
        expgrid.report({"epoch": epoch, "acc": config["lr"] * epoch})
'''


def test_a_user_trainable_by_import_path_runs_and_a_failed_trial_is_recorded(ray_session, tmp_path, monkeypatch):
    (tmp_path / "my_trainables.py").write_text(USER_TRAINABLE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "user.yaml"
    path.write_text(
        "study: user-study\ntrainable: my_trainables:train\nmetric: acc\n"
        "sections:\n  - {id: lr, grid: {lr: [0.1, 0.3, 5.0]}}\n"
    )
    outcome, text = _run(path, tmp_path)
    trials = outcome.sections[0].trials
    assert [t.status for t in trials] == ["completed", "completed", "failed"]
    assert "lr too large" in trials[2].error
    assert trials[1].history[-1]["acc"] == pytest.approx(0.6)
    assert outcome.sections[0].best.swept == {"lr": 0.3}
    client = MlflowClient(outcome.tracking_uri)
    failed = client.search_runs(
        [client.get_experiment_by_name("user-study").experiment_id], "attributes.status = 'FAILED'"
    )
    assert len(failed) == 1 and failed[0].data.params["lr"] == "5.0"
