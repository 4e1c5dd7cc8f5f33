"""The study and section runs as the MLflow UI shows them (expgrid.tracking.notes), read back
from a real store: their descriptions, a section's best value and best configuration, the study's
result, the experiment's landing view; `expgrid sync` writes the same into an empty store, and
finds nothing to add to the one the run wrote. (The view in a browser: test_ui.py.)"""

from __future__ import annotations

import io
import json
import textwrap

from mlflow.tracking import MlflowClient

from expgrid.cli import main
from expgrid.runner import RunOptions, prepare, run_study
from expgrid.tracking.notes import NOTE_TAG, VIEW_TAG
from expgrid.tracking.ui import ui_url

STUDY = """
    study: notes
    trainable: toy
    metric: score
    mode: max
    defaults: {epochs: 2, y: 0}
    sections:
      - {id: a, name: X sweep, grid: {x: [0, 2, 1]}}
      - {id: b, name: Y sweep, grid: {y: [-1, 1]}}
"""


def _runs(uri: str) -> tuple[MlflowClient, str, dict[str, object]]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("notes").experiment_id
    runs = client.search_runs([experiment], "tags.`expgrid.kind` != 'trial'")
    return client, experiment, {r.data.tags.get("expgrid.section_id", "study"): r for r in runs}


def _toy_best(results, section_id: str) -> dict:
    return json.loads((results / "sections" / section_id / "section.json").read_text())["best"]


def test_study_and_section_runs_carry_their_plan_and_result(ray_session, write_study, tmp_path, capsys):
    study, spec = prepare(write_study(textwrap.dedent(STUDY)))
    results = tmp_path / "r"
    outcome = run_study(study, spec, RunOptions(results_dir=results, stream=io.StringIO()))
    uri = outcome.tracking_uri
    client, experiment, runs = _runs(uri)
    assert set(runs) == {"study", "a", "b"}

    for section_id, swept, values in (("a", "x", "0, 2, 1"), ("b", "y", "-1, 1")):
        run = runs[section_id]
        best = _toy_best(results, section_id)
        value = best["metrics"]["score"]
        note = run.data.tags[NOTE_TAG]
        first = note.splitlines()[0]
        # The first line (what the table's Description column shows): the result, then the sweep.
        assert first == f"best score = {value:.4g} at {swept}={best['swept'][swept]} — sweeps {swept} over {values}", note
        assert f"- Sweeps: {swept} over {values} (" in note and "- Inherits: " in note
        assert run.data.metrics["best_score"] == value
        # Its params: the base configuration and the best trial's swept value, i.e. the best
        # trial's whole configuration, in the same columns as the trials' params.
        trial = client.search_runs([experiment], f"tags.`expgrid.section_id` = '{section_id}' and "
                                                 f"tags.`expgrid.trial_index` = '{best['index']}'")[0]  # fmt: skip
        assert run.data.params == trial.data.params
    assert "- Inherits: nothing (the study's defaults)" in runs["a"].data.tags[NOTE_TAG]
    assert "- Inherits: the best of section a" in runs["b"].data.tags[NOTE_TAG]

    study_run = runs["study"]
    note = study_run.data.tags[NOTE_TAG]
    best_a, best_b = (_toy_best(results, s)["metrics"]["score"] for s in "ab")
    assert note.splitlines()[0] == f"a X sweep: {best_a:.4g} · b Y sweep: {best_b:.4g} (score, best per section)"
    assert "- Trainable: toy" in note and "- Metric: score (max)" in note
    assert "  - a X sweep: sweeps x over 0, 2, 1; inherits nothing (the study's defaults)" in note
    assert study_run.data.metrics["best_score"] == best_b  # the last section's best: where the study ends

    # The landing view the printed URL opens.
    view = json.loads(client.get_experiment(experiment).tags[VIEW_TAG])
    assert view["selectedColumns"] == ["attributes.`Description`", "metrics.`best_score`", "metrics.`score`",
                                       "params.`x`", "params.`y`"]  # fmt: skip
    assert view["orderByKey"] == "tags.`mlflow.runName`" and view["orderByAsc"] is True
    assert outcome.experiment_id == experiment
    assert ui_url(uri, experiment).endswith(
        f"/#/experiments/{experiment}/runs?workflowType=machine_learning&viewStateShareKey=expgrid")

    # sync: the run's own store needs nothing; an empty store gets the same descriptions,
    # metrics, params and view.
    assert main(["sync", str(results)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    target = f"sqlite:///{tmp_path / 'other.db'}"
    assert main(["sync", str(results), "--tracking-uri", target]) == 0
    capsys.readouterr()
    other, other_experiment, synced = _runs(target)
    for key, run in runs.items():
        assert synced[key].data.tags[NOTE_TAG] == run.data.tags[NOTE_TAG]
        assert synced[key].data.metrics == run.data.metrics and synced[key].data.params == run.data.params
    assert other.get_experiment(other_experiment).tags[VIEW_TAG] == client.get_experiment(experiment).tags[VIEW_TAG]
    assert main(["sync", str(results), "--tracking-uri", target]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_plans_say_what_each_section_sweeps_and_inherits(write_study):
    """The plans' wording for sampled, zipped and `top` sections (no Ray: from the study alone)."""
    from expgrid.study import load_study
    from expgrid.tracking.notes import section_note, study_plan

    study = load_study(write_study(textwrap.dedent("""
        study: plans
        trainable: toy
        metric: score
        defaults: {epochs: 1}
        sections:
          - {id: a, name: Sampled, sample: {x: {loguniform: [0.001, 1]}}, num_samples: 4}
          - {id: b, name: Zipped, zip: {x: [0, 1, 1], y: [5, 5, 6]}, inherit: none}
          - {id: c, name: Top, grid: {y: [1, 2]}, inherit: {from: [a], top: 2}, description: "Two parents."}
    """)))
    plan = study_plan(study)
    assert [(s["sweeps"], s["inherits"]) for s in plan["sections"]] == [
        ("x over loguniform(0.001, 1), 4 samples", "nothing (the study's defaults)"),
        ("x over 0, 1; y over 5, 6", "nothing (the study's defaults)"),
        ("y over 1, 2", "the best of section a, crossing its sweep with the 2 best configurations of section a"),
    ]
    assert plan["swept"] == ["x", "y"]
    note = section_note({"id": "c", "name": "Top", "sweeps": "y over 1, 2", "trials": 4, "inherits": "…",
                         "description": "Two parents."}, None, "plans")  # fmt: skip
    assert note.splitlines() == ["sweeps y over 1, 2", "", "**Section c · Top** of study plans", "", "Two parents.", "",
                                 "- Sweeps: y over 1, 2 (4 trials)", "- Inherits: …"]  # fmt: skip
