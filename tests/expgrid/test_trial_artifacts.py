"""Files a trial leaves beside its metrics (``expgrid.report(..., artifacts=...)``): built only
when due, carried with the report, written under the trial's results folder and to its MLflow run,
whether the trial ran alone, in a pack, or was cut by ASHA."""

from __future__ import annotations

import io
import json
import textwrap

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import expgrid.reporter as reporter
from expgrid.runner import RunOptions, prepare, run_study
from expgrid.stopping import TrialRules

HEAD = "trainable: toy\nmetric: score\nmode: max\n"


def _trainable(calls: list[int], epochs: int = 4, loss_nan_at: int | None = None):
    def train(config):
        for epoch in range(1, epochs + 1):
            loss = float("nan") if epoch == loss_nan_at else 1.0 / epoch

            def files(epoch=epoch):
                calls.append(epoch)
                return {"last.json": {"epoch": epoch}, "sub/notes.txt": f"epoch {epoch}", "raw.bin": b"\x00\x01"}

            reporter.report({"epoch": epoch, "loss": loss, "score": epoch}, artifacts=files)

    return train


def test_a_callable_is_built_only_at_the_last_planned_epoch_and_kept_off_the_rows():
    calls: list[int] = []
    session = reporter.LocalSession(TrialRules(metric="score", mode="max", last_epoch=4))
    reporter.run_locally(_trainable(calls), {}, session=session)
    assert calls == [4]
    assert session.artifacts == {"last.json": {"epoch": 4}, "sub/notes.txt": "epoch 4", "raw.bin": b"\x00\x01"}
    assert all(set(row) == {"epoch", "loss", "score"} for row in session.history)


def test_a_report_that_stops_the_trial_carries_the_files():
    calls: list[int] = []
    session = reporter.LocalSession(TrialRules(metric="score", mode="max", last_epoch=4))
    reporter.run_locally(_trainable(calls, loss_nan_at=2), {}, session=session)
    assert calls == [2] and session.artifacts["last.json"] == {"epoch": 2}


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/passwd", "", "a\\b"])
def test_names_outside_the_trial_folder_are_refused(name):
    with pytest.raises(ValueError, match="relative file name"):
        reporter.checked_artifacts({name: "x"})


def _run(write_study, tmp_path, text):
    study, spec = prepare(write_study(text))
    return run_study(study, spec, RunOptions(results_dir=tmp_path / "r", stream=io.StringIO()))


def test_files_of_packed_and_asha_cut_trials_reach_the_results_folder_and_mlflow(ray_session, write_study, tmp_path):
    outcome = _run(write_study, tmp_path, HEAD + textwrap.dedent("""
        study: files
        defaults: {epochs: 6, artifacts: true}
        sections:
          - id: packed
            grid: {x: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]}
          - id: cut
            inherit: none
            max_concurrent: 1
            grid: {x: [2, -6, -8]}
            scheduler: {asha: {grace_period: 2, reduction_factor: 3}}
          - id: stops
            inherit: none
            grid: {nan_at_epoch: [null, 2]}
    """))
    results = tmp_path / "r"
    assert list((results / "tune" / "section-packed").glob("pack_*")), "the 16 small trials should run in packs"
    for section in outcome.sections:
        for trial in section.trials:
            folder = results / "sections" / section.section.id / "trials" / str(trial.index)
            assert sorted(trial.artifacts) == ["curves/score.csv", "summary.json"]
            summary = json.loads((folder / "summary.json").read_text())
            # The files of the trial's last report that carried any: its end, or its last ASHA rung.
            assert summary == {"x": trial.config["x"], "y": 0.0, "epoch": trial.last_epoch}
            curve = (folder / "curves" / "score.csv").read_text().splitlines()
            assert len(curve) == 1 + trial.last_epoch
            assert all("expgrid_artifacts" not in row for row in trial.history)
    cut = [t for t in outcome.sections[1].trials if t.status == "asha_stopped"]
    assert cut and all(t.last_epoch == 2 and t.stop == "asha_stopped" for t in cut)  # cut at the grace-period rung
    assert [(t.status, t.stop) for t in outcome.sections[2].trials] == [("completed", None), ("diverged", "diverged")]

    # The user's metrics only, everywhere: the records' rows, the Parquet store, MLflow.
    for section in ("packed", "cut", "stops"):
        lines = (results / "sections" / section / "trials.jsonl").read_text().splitlines()
        keys = {k for line in lines for row in json.loads(line)["history"] for k in row}
        assert keys == {"epoch", "score", "loss", "resumed_from", "world_size"}, (section, keys)
    columns = pd.read_parquet(results / "report" / "trials.parquet").columns
    assert not [c for c in columns if "expgrid" in c] and "stop" in columns

    client = MlflowClient(outcome.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("files").experiment_id], "tags.`expgrid.kind` = 'trial'")
    assert len(runs) == 21
    assert {name for run in runs for name in run.data.metrics} == {"score", "loss", "resumed_from", "world_size"}
    for run in runs:
        listed = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"summary.json", "curves"} <= listed, (run.info.run_name, listed)
        assert [a.path for a in client.list_artifacts(run.info.run_id, "curves")] == ["curves/score.csv"]
