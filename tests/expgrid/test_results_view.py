"""``expgrid.run`` / ``expgrid.open`` and :class:`expgrid.results_view.Results` on the results
directory of one small real run (an inline study dict of the toy trainable, on the session's
real local Ray, tracked in a real SQLite MLflow store): its DataFrames hold what the report's
files hold, its figures are the report's, and every mistake is one line."""

from __future__ import annotations

import io
import json
import threading

import pandas as pd
import pytest

import expgrid
from expgrid.errors import ResultsError, StudyFileError
from expgrid.results_view import Results, ResultsLookupError

STUDY = {
    "study": "view-toy",
    "trainable": "toy",
    "metric": "score",
    "mode": "max",
    "report": ["loss"],
    "defaults": {"epochs": 2},
    "sections": [
        {"id": "1", "name": "X", "grid": {"x": [0, 2, 4]}},
        {"id": "2.b", "name": "X and Y", "inherit": "none", "grid": {"x": [1, 2], "y": [-1, 0]}},
    ],
}


@pytest.fixture(scope="module")
def results(ray_session, tmp_path_factory):
    folder = tmp_path_factory.mktemp("results-view")
    stream = io.StringIO()
    found = expgrid.run(STUDY, results_dir=folder / "results", stream=stream)
    return found, stream.getvalue()


def test_run_returns_results_and_prints_where_they_are_not_the_summary(results):
    found, printed = results
    assert isinstance(found, Results)
    assert found.sections == ["1", "2.b"] and found.status == "FINISHED"
    end = printed.splitlines()[-2:]
    assert end[0].startswith(f"Results: {found.results_dir}")
    assert end[1].startswith("MLflow UI: mlflow ui --backend-store-uri sqlite:///")
    assert "Best configuration per section" not in printed  # the returned object shows it


def test_summary_has_the_rows_and_columns_of_summary_csv(results):
    found, _ = results
    frame = found.summary()
    csv = pd.read_csv(found.results_dir / "report" / "summary.csv", dtype={"section": str})
    assert list(frame.columns) == list(csv.columns)
    assert list(frame["section"]) == list(csv["section"]) == ["1", "2.b"]
    assert frame["score"].tolist() == pytest.approx(csv["score"].tolist())
    assert frame["best"].tolist() == [json.loads(b) for b in csv["best"]]
    assert frame.loc[0, "best"] == {"x": 2}  # the toy's best x


@pytest.mark.parametrize("section", ["1", "2.b"])
def test_table_has_the_columns_and_values_of_table_csv(results, section):
    found, _ = results
    frame = found.table(section)
    csv = pd.read_csv(found.results_dir / "sections" / section / "report" / "table.csv")
    assert list(frame.columns) == list(csv.columns)
    assert frame["trial"].tolist() == csv["trial"].tolist()
    assert frame["score"].tolist() == pytest.approx(csv["score"].tolist())
    assert frame["status"].tolist() == csv["status"].tolist()


def test_trials_equal_the_parquet(results):
    found, _ = results
    parquet = pd.read_parquet(found.results_dir / "report" / "trials.parquet")
    pd.testing.assert_frame_equal(found.trials(), parquet)
    assert len(parquet) == 3 * 2 + 4 * 2  # every trial-epoch


def test_best_is_the_chosen_configuration_and_sections_go_by_id_or_name(results):
    found, _ = results
    saved = json.loads((found.results_dir / "sections" / "1" / "section.json").read_text())
    assert found.best("1") == saved["best"]["config"]
    assert found.best("X") == found.best(1) == found.best("1")
    assert found.best("x and y") == found.best("2.b")
    assert found.best("2.b")["x"] == 2 and found.best("2.b")["y"] == -1


def test_an_unknown_section_is_one_line_naming_the_known_ones(results):
    found, _ = results
    with pytest.raises(ResultsLookupError) as caught:
        found.table("9")
    line = caught.value.one_line()
    assert line == f"error: {found.results_dir}: expected a section these results hold: 1 (X), 2.b (X and Y), got '9'"
    assert caught.value._render_traceback_() == [line]
    assert isinstance(caught.value, ValueError)


def test_plots_are_the_reports_figures_kept_out_of_pyplot(results):
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    found, _ = results
    before = plt.get_fignums()
    curves, value, heatmap = found.plot("1"), found.plot("1", kind="value"), found.plot("2.b", "heatmap")
    assert all(isinstance(f, Figure) for f in (curves, value, heatmap))
    assert plt.get_fignums() == before  # not registered with pyplot: a notebook shows each once
    assert value.axes[0].get_xlabel() == "x"
    assert heatmap.axes[0].get_ylabel() == "x" and heatmap.axes[0].get_xlabel() == "y"


def test_a_kind_the_section_cannot_draw_is_one_line_naming_those_it_can(results):
    found, _ = results
    with pytest.raises(ValueError) as caught:
        found.plot("1", kind="heatmap")
    assert (
        caught.value.one_line() == "error: section 1: expected a kind of plot it can draw: curves, value, got 'heatmap'"
    )
    with pytest.raises(ValueError) as caught:
        found.plot("2.b", kind="bars")
    assert caught.value.one_line() == ("error: section 2.b: expected a kind of plot it can draw: curves, heatmap "
                                       "(kinds: curves, value, heatmap), got 'bars'")  # fmt: skip


def test_html_and_repr_show_the_summary(results):
    found, _ = results
    page = found._repr_html_()
    assert page.count("<tr>") == 1 + 2 + 1  # header, two sections, total
    assert "<td>x=2</td>" in page and "<td>2.b</td>" in page
    text = repr(found)
    assert text.startswith("<expgrid.Results 'view-toy': 2 sections (finished)")
    assert "Best configuration per section (score, max):" in text


def test_mlflow_ui_names_the_store_and_the_experiments_runs(results):
    from mlflow.tracking import MlflowClient

    from expgrid.tracking.ui import ui_url

    found, _ = results
    ui = found.mlflow_ui()
    uri = f"sqlite:///{found.results_dir / 'mlflow.db'}"
    assert ui.command == f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"
    experiment = MlflowClient(uri).get_experiment_by_name("view-toy")
    assert ui.url.startswith(f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs?")
    assert ui.url == ui_url(uri, experiment.experiment_id)  # the runs table `expgrid run` prints


def test_open_reads_the_same_results_and_refuses_other_directories(results, tmp_path):
    found, _ = results
    again = expgrid.open(found.results_dir)
    pd.testing.assert_frame_equal(again.trials(), found.trials())
    with pytest.raises(ResultsError) as caught:
        expgrid.open(tmp_path)
    assert caught.value.one_line() == (f"error: {tmp_path}: expected a results directory written by `expgrid run` "
                                       "(with a readable study.json), got no study.json")  # fmt: skip


def test_a_rerun_skips_the_finished_sections(results):
    found, _ = results
    stream = io.StringIO()
    expgrid.run(STUDY, results_dir=found.results_dir, stream=stream)
    printed = stream.getvalue()
    assert "1 X: finished earlier" in printed and "2.b X and Y: finished earlier" in printed


# ---------------------------------------------------------------------------------------------
# Refused before anything starts: one line each, nothing created


def _refused(tmp_path, study, **options) -> str:
    with pytest.raises(expgrid.StudyFileError) as caught:
        expgrid.run(study, results_dir=tmp_path / "results", **options)
    assert not (tmp_path / "results").exists()
    lines = caught.value._render_traceback_()
    assert len(lines) == 1
    return lines[0]


def test_an_inline_study_is_checked_like_a_file(tmp_path):
    bad = {**STUDY, "sections": [STUDY["sections"][0], {"id": "2", "grid": {"x": []}}]}
    assert _refused(tmp_path, bad) == "error: <inline>: sections[1].grid.x: expected a non-empty list of values, got []"
    assert _refused(tmp_path, {**STUDY, "mode": "up"}) == "error: <inline>: mode: expected one of max, min, got 'up'"
    assert _refused(tmp_path, {**STUDY, "defaults": {"epochs": 0}}).startswith(
        "error: <inline>: defaults.epochs: expected"
    )


def test_options_are_checked_like_the_clis(tmp_path):
    assert _refused(tmp_path, STUDY, set={"epochs": 0}).startswith("error: set=: epochs: expected an integer ≥ 1")
    assert _refused(tmp_path, STUDY, sections=["1", "7"]) == (
        "error: sections=: expected section ids of <inline>: 1, 2.b, got '7'"
    )
    assert _refused(tmp_path, STUDY, colour="red").startswith(
        "error: expgrid.run(colour=…): expected an option of expgrid.run: one of "
    )
    assert _refused(tmp_path, STUDY, tracking_uri="ftp://x").startswith(
        "error: tracking_uri=: expected a URI of a scheme"
    )
    assert _refused(tmp_path, "no_such_study") == (
        "error: no_such_study: expected a readable YAML file, got No such file or directory"
    )


def test_a_function_that_cannot_be_pickled_is_refused_in_one_line(tmp_path):
    lock = threading.Lock()

    def holds_a_lock(config):
        with lock:
            expgrid.report({"epoch": 1, "score": 0.0})

    line = _refused(tmp_path, {**STUDY, "trainable": holds_a_lock})
    assert line.startswith("error: <inline>: trainable: expected a function Ray can send to its workers (cloudpickle), "
                           "or one in a module named as trainable: \"package.module:function\", got "
                           "tests.expgrid.test_results_view:test_a_function_that_cannot_be_pickled_is_refused_in_one_line"
                           ".<locals>.holds_a_lock (TypeError: ")  # fmt: skip
    assert "lock" in line


def test_a_study_file_runs_with_set_like_the_clis_set(ray_session, tmp_path, monkeypatch):
    import yaml

    (tmp_path / "study.yaml").write_text(
        yaml.safe_dump({**STUDY, "study": "view-file", "sections": STUDY["sections"][:1]})
    )
    monkeypatch.chdir(tmp_path)  # results/<study name> under the current directory, as the CLI's
    found = expgrid.run("study.yaml", set={"epochs": 1}, stream=io.StringIO())
    assert found.results_dir == tmp_path / "results" / "view-file"
    assert found.best("1")["epochs"] == 1
    assert set(found.trials()["epoch"]) == {1}


def test_expgrid_traceback_brings_ipythons_own_traceback_back(monkeypatch):
    error = StudyFileError("<inline>", expgrid.ConfigError("mode", "one of max, min", "up"))
    assert error._render_traceback_() == ["error: <inline>: mode: expected one of max, min, got 'up'"]
    monkeypatch.setenv("EXPGRID_TRACEBACK", "1")
    assert not hasattr(error, "_render_traceback_")  # IPython then formats the traceback itself
