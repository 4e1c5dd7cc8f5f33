"""Reports of a real run: a toy study on the real local Ray, tracked in a real SQLite MLflow store;
then `expgrid report` on its results directory, in a fresh process."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from expgrid.records import read_trials
from expgrid.runner import RunOptions, prepare, run_study
from expgrid.wording import print_summary

STUDY = """
study: toy-reports
trainable: toy
metric: score
mode: max
report: [loss]
defaults: {epochs: 4}
sections:
  - id: "1"
    name: X
    grid: {x: [0, 2, 4]}
  - id: "2"
    name: X and Y
    inherit: none
    grid: {x: [1, 2], y: [-1, 0, 1]}
    early_stopping: {monitor: score, mode: max, patience: 1, min_delta: 0.2}
"""


def _run(path, results):
    study, spec = prepare(path)
    stream = io.StringIO()
    outcome = run_study(study, spec, RunOptions(results_dir=results, stream=stream))
    print_summary(study, outcome, stream)
    return outcome, stream.getvalue()


@pytest.fixture(scope="module")
def finished(ray_session, tmp_path_factory):
    folder = tmp_path_factory.mktemp("report-run")
    path = folder / "study.yaml"
    path.write_text(STUDY)
    outcome, printed = _run(path, folder / "results")
    return path, outcome, printed


def _summary_block(text: str) -> str:
    start = text.index("Best configuration per section")
    return text[start:].split("\n\n")[0].rstrip("\n") + "\n"


def test_each_section_table_matches_its_trial_records(finished):
    _, outcome, _ = finished
    results = outcome.results_dir
    for sid in ("1", "2"):
        trials = {t.index: t for t in read_trials(results, sid)}
        rows = list(csv.DictReader(open(results / "sections" / sid / "report" / "table.csv")))
        assert [int(r["trial"]) for r in rows] == sorted(trials)
        for row in rows:
            t = trials[int(row["trial"])]
            assert float(row["score"]) == t.history[-1]["score"]
            assert int(row["epochs_run"]) == t.last_epoch and row["status"] == t.status
            assert float(row["trial_seconds"]) == pytest.approx(t.seconds)
    one = list(csv.DictReader(open(results / "sections/1/report/table.csv")))
    # x=0 is the toy's default: the reference row; x=2 is best: score (1 - 1/10)·(1 - 1/2⁴) against (1 - 5/10)·(…)
    assert [r["note"] for r in one] == ["reference", "best", ""]
    assert float(one[1]["delta_score"]) == pytest.approx(0.4 * (1 - 0.5**4))
    two = (results / "sections/2/report/table.md").read_text()
    assert "no trial of this grid has the section's base configuration (x=0, y=0)" in two
    assert "early_stopped" in two
    names = {p.name for p in (results / "sections/2/report").iterdir()}
    assert names == {"table.md", "table.csv", "curves.png", "heatmap.png"}
    assert "value_curve.png" in {p.name for p in (results / "sections/1/report").iterdir()}


def test_the_summary_counts_what_early_stopping_saved(finished):
    _, outcome, printed = finished
    one, two = outcome.summary.rows
    assert (one.epochs_run, one.epochs_full, one.best) == (12, 12, {"x": 2})
    assert (two.epochs_run, two.epochs_full, two.best) == (15, 24, {"x": 2, "y": -1})
    assert two.saved == pytest.approx(9 / 24)
    trials = read_trials(outcome.results_dir, "2")
    assert two.cpu_hours == pytest.approx(sum(t.seconds for t in trials) / 3600)  # 1 CPU per trial
    assert two.gpu_hours == 0
    assert "38%" in _summary_block(printed)


def test_expgrid_report_prints_the_summary_the_run_printed_without_starting_ray(finished):
    _, outcome, printed = finished
    code = (
        "import sys; from expgrid.cli import main; rc = main(['report', sys.argv[1]]);"
        "print('RAY_IMPORTED' if 'ray' in sys.modules else '', end=''); sys.exit(rc)"
    )
    before = (outcome.results_dir / "report" / "summary.txt").stat().st_mtime_ns
    proc = subprocess.run([sys.executable, "-c", code, str(outcome.results_dir)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == _summary_block(printed)
    assert (outcome.results_dir / "report" / "summary.txt").stat().st_mtime_ns > before  # rebuilt, not just read
    assert "report files in" in proc.stderr


def test_section_and_study_runs_carry_the_report_as_artifacts(finished):
    _, outcome, _ = finished
    client = MlflowClient(outcome.tracking_uri)
    experiment = client.get_experiment_by_name("toy-reports")
    runs = client.search_runs([experiment.experiment_id], "tags.`expgrid.kind` != 'trial'")
    by_name = {r.info.run_name: r.info.run_id for r in runs}
    listed = {name: sorted(a.path for a in client.list_artifacts(run_id, "report")) for name, run_id in by_name.items()}
    assert listed["1 X"] == ["report/curves.png", "report/table.csv", "report/table.md", "report/value_curve.png"]
    assert listed["2 X and Y"] == ["report/curves.png", "report/heatmap.png", "report/table.csv", "report/table.md"]
    assert listed["toy-reports"] == ["report/report.md", "report/summary.csv", "report/summary.md",
                                     "report/summary.txt", "report/trials.parquet"]  # fmt: skip
    local = client.download_artifacts(by_name["1 X"], "report/table.md")
    assert open(local).read() == (outcome.results_dir / "sections/1/report/table.md").read_text()


def test_a_rerun_that_skips_every_section_prints_the_same_summary(finished):
    path, first, printed = finished
    outcome, again = _run(path, first.results_dir)
    assert all(s.skipped for s in outcome.sections)
    assert _summary_block(again) == _summary_block(printed)
