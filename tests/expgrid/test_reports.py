"""Reports from hand-made trial records whose every number is known: tables, plots, summary,
the Parquet store, and a report rebuilt from files alone. No Ray here (see test_report_run.py)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from expgrid import records, reports
from expgrid.cli import main
from expgrid.records import TrialRecord
from expgrid.reports import plots, store
from expgrid.reports.results import SectionResults, StudyFacts, epoch_rows
from expgrid.reports.summary import study_summary
from expgrid.reports.tables import section_table

FACTS = StudyFacts("fashion", "val_accuracy", "max", ("val_loss",),
                   ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"))  # fmt: skip


def trial(index, lr, val_acc, train_acc=None, val_loss=None, status="completed", seconds=10.0, stop=None, epochs=3):
    """A trial of the learning-rate section with one report per value in ``val_acc``."""
    history = []
    for e, acc in enumerate(val_acc, start=1):
        row = {"epoch": e, "val_accuracy": acc, "train_accuracy": (train_acc or val_acc)[e - 1] + 0.05,
               "val_loss": (val_loss or [1 - a for a in val_acc])[e - 1], "train_loss": 0.9 - 0.1 * e, "seconds": 1.5}  # fmt: skip
        history.append(row)
    config = {"optimizer": {"name": "adam", "lr": lr}, "epochs": epochs, "model": {"hidden": [64, 32]}}
    return TrialRecord(index, {"optimizer.lr": lr}, config, status, history, started=100.0, ended=100.0 + seconds,
                       stop=stop)


def lr_section(reference=1e-3, select="last_epoch"):
    trials = [
        trial(0, 1e-4, [0.5, 0.6, 0.7], seconds=10.0),
        trial(1, 1e-3, [0.7, 0.8, 0.85], seconds=20.0),
        trial(2, 1e-2, [0.8, 0.78], status="early_stopped", stop="early_stopped", seconds=8.0),
        trial(3, 1e-1, [0.1], val_loss=[math.nan], status="diverged", stop="diverged", seconds=2.0),
    ]
    best = records.best_trial(trials, FACTS.metric, FACTS.mode, select)
    return SectionResults(id="3.4", name="Learning rate", swept=("optimizer.lr",), select=select,
                          reference=None if reference is None else {"optimizer.lr": reference},
                          resources={"cpu": 2.0, "gpu": 0.5}, seconds=25.0, best_index=best.index, trials=trials)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Tables


def test_the_section_table_holds_each_trial_at_its_selected_epoch_with_differences_from_the_reference():
    table = section_table(FACTS, lr_section())
    assert table.columns[:2] == ["trial", "optimizer.lr"]
    assert table.columns[2:6] == ["val_accuracy", "delta_val_accuracy", "val_loss", "delta_val_loss"]
    assert {"train_loss", "train_accuracy"} <= set(table.columns) and "delta_train_loss" not in table.columns
    assert table.column("optimizer.lr") == [1e-4, 1e-3, 1e-2, 1e-1]
    assert table.column("val_accuracy") == [0.7, 0.85, 0.78, 0.1]
    assert table.column("delta_val_accuracy") == pytest.approx([-0.15, 0.0, -0.07, -0.75])
    assert table.column("delta_val_loss")[:3] == pytest.approx([0.15, 0.0, 0.07])
    assert math.isnan(table.column("val_loss")[3]) and table.column("delta_val_loss")[3] is None  # diverged: NaN loss
    assert table.column("train_accuracy") == pytest.approx([0.75, 0.9, 0.83, 0.15])
    assert table.column("epoch") == [3, 3, 2, 1]
    assert table.column("status") == ["completed", "completed", "early_stopped", "diverged"]
    assert table.column("epochs_run") == [3, 3, 2, 1] and table.column("epochs_planned") == [3, 3, 3, 3]
    assert table.column("trial_seconds") == [10.0, 20.0, 8.0, 2.0]
    assert table.column("seconds") == [1.5] * 4  # the trainable's own metric of that name
    assert table.column("note") == [None, "best, reference", None, None]


def test_best_epoch_selection_shows_each_trials_best_epoch():
    table = section_table(FACTS, lr_section(select="best_epoch"))
    assert table.column("epoch") == [3, 3, 1, 1]
    assert table.column("val_accuracy") == [0.7, 0.85, 0.8, 0.1]
    assert table.column("epochs_run") == [3, 3, 2, 1]  # where it ended, not the epoch shown


def test_markdown_and_csv_show_the_same_rows():
    table = section_table(FACTS, lr_section())
    markdown = table.to_markdown()
    assert markdown.startswith("### Section 3.4 — Learning rate\n")
    assert "| trial | optimizer.lr | val_accuracy | Δ val_accuracy | val_loss | Δ val_loss |" in markdown
    assert "| 1 | 0.001 | 0.85 | +0 | 0.15 | +0 |" in markdown and "**best, reference**" in markdown
    assert "| 0 | 0.0001 | 0.7 | -0.15 | 0.3 | +0.15 |" in markdown
    assert "reference** row, trial 1 (optimizer.lr=0.001)" in markdown
    rows = list(__import__("csv").DictReader(table.to_csv().splitlines()))
    assert [r["note"] for r in rows] == ["", "best, reference", "", ""]
    assert float(rows[0]["delta_val_accuracy"]) == pytest.approx(-0.15)
    assert rows[3]["status"] == "diverged" and rows[3]["val_loss"] == "nan"


def test_without_the_reference_in_the_grid_the_differences_are_blank_and_the_table_says_why():
    table = section_table(FACTS, lr_section(reference=0.5))
    assert table.column("delta_val_accuracy") == [None] * 4
    assert table.column("note") == [None, "best", None, None]
    assert "no trial of this grid has the section's base configuration (optimizer.lr=0.5)" in table.to_markdown()
    unknown = section_table(FACTS, lr_section(reference=None))
    assert "do not record the section's base configuration" in unknown.to_markdown()


# ---------------------------------------------------------------------------------------------
# Plots


def test_curves_hold_each_trials_train_and_validation_series_per_epoch():
    figure = plots.curves_figure(FACTS, lr_section())
    loss, accuracy = figure.axes
    assert (loss.get_ylabel(), accuracy.get_ylabel(), loss.get_xlabel()) == ("loss", "accuracy", "epoch")
    lines = {line.get_label(): line for line in accuracy.get_lines()}
    assert len(loss.get_lines()) == 8 and len(lines) == 8  # 4 trials × (train, validation)
    val = lines["optimizer.lr=0.01 · val_accuracy"]
    assert list(val.get_xdata()) == [1, 2] and list(val.get_ydata()) == [0.8, 0.78]
    train = lines["optimizer.lr=0.01 · train_accuracy"]
    assert train.get_linestyle() == "--" and val.get_linestyle() == "-"
    assert train.get_color() == val.get_color()  # one colour per trial
    assert list(lines["optimizer.lr=0.0001 · val_accuracy"].get_ydata()) == [0.5, 0.6, 0.7]
    assert [t.get_text() for t in accuracy.get_legend().get_texts()] == list(lines)


def test_value_curve_draws_final_train_and_validation_metric_against_the_value_on_a_log_axis():
    figure = plots.value_curve_figure(FACTS, lr_section())
    (ax,) = figure.axes
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "optimizer.lr" and ax.get_ylabel() == "val_accuracy"
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["train_accuracy", "val_accuracy"]
    assert list(lines["val_accuracy"].get_xdata()) == [1e-4, 1e-3, 1e-2, 1e-1]
    assert list(lines["val_accuracy"].get_ydata()) == [0.7, 0.85, 0.78, 0.1]
    assert list(lines["train_accuracy"].get_ydata()) == pytest.approx([0.75, 0.9, 0.83, 0.15])


@pytest.mark.parametrize(
    "values,scale",
    [([1e-4, 1e-3, 1e-2], "log"), ([1, 100], "log"), ([1, 10, 99], "linear"), ([0.0, 0.2, 0.5], "linear"),
     ([0, 1e-4, 1e-2], "symlog"), ([-1, 1, 1000], "linear")],
)  # fmt: skip
def test_the_value_axis_is_logarithmic_from_two_decades(values, scale):
    assert plots.value_axis_scale(values)[0] == scale


def test_a_linear_sweep_gets_a_linear_axis_and_a_categorical_one_no_value_curve():
    section = lr_section()
    for t, dropout in zip(section.trials, [0.0, 0.2, 0.5, 0.7]):
        t.swept = {"model.dropout": dropout}
    section.swept = ("model.dropout",)
    assert plots.value_curve_figure(FACTS, section).axes[0].get_xscale() == "linear"
    for t, name in zip(section.trials, ["sgd", "adam", "rmsprop", "amsgrad"]):
        t.swept = {"optimizer.name": name}
    section.swept = ("optimizer.name",)
    assert plots.value_curve_figure(FACTS, section) is None


def grid_section(zipped=False):
    pairs = [(lr, wd) for lr in (1e-3, 1e-2) for wd in (0, 1e-4, 1e-2)]
    if zipped:
        pairs = [(1e-3, 0), (1e-2, 1e-4)]
    trials = []
    for i, (lr, wd) in enumerate(pairs):
        t = trial(i, lr, [0.5 + i / 10])
        t.swept = {"optimizer.lr": lr, "optimizer.weight_decay": wd}
        trials.append(t)
    trials[-1].status, trials[-1].history = "failed", []  # no report: an empty cell
    return SectionResults("2", "LR × WD", ("optimizer.lr", "optimizer.weight_decay"), "last_epoch", None, None, 0.0,
                          0, trials)  # fmt: skip


def test_a_two_parameter_grid_gets_a_heatmap_of_the_metric():
    figure = plots.heatmap_figure(FACTS, grid_section())
    ax = figure.axes[0]
    image = ax.images[0].get_array()
    assert image.shape == (2, 3)
    assert image[0].tolist() == pytest.approx([0.5, 0.6, 0.7]) and image[1, :2].tolist() == pytest.approx([0.8, 0.9])
    assert image.mask[1, 2]  # the failed trial
    assert (ax.get_ylabel(), ax.get_xlabel()) == ("optimizer.lr", "optimizer.weight_decay")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "0.0001", "0.01"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0.001", "0.01"]
    assert figure.axes[1].get_ylabel() == "val_accuracy"  # the colour bar
    assert plots.heatmap_figure(FACTS, grid_section(zipped=True)) is None  # a zip is no grid
    assert plots.heatmap_figure(FACTS, lr_section()) is None


def test_section_report_files(tmp_path):
    files = reports.write_section_report(FACTS, lr_section(), tmp_path)
    assert sorted(p.name for p in files) == ["curves.png", "table.csv", "table.md", "value_curve.png"]
    assert all(p.parent == tmp_path / "sections" / "3.4" / "report" for p in files)
    png = (tmp_path / "sections/3.4/report/curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


# ---------------------------------------------------------------------------------------------
# Summary


def test_the_summary_counts_trial_epochs_against_the_full_grid_and_resource_hours():
    summary = study_summary(FACTS, [lr_section()])
    (row,) = summary.rows
    assert (row.section, row.hyperparameters, row.best) == ("3.4", ("optimizer.lr",), {"optimizer.lr": 1e-3})
    assert row.metrics == {"val_accuracy": 0.85, "val_loss": pytest.approx(0.15)}
    assert (row.trials, row.epochs_run, row.epochs_full) == (4, 9, 12)
    assert row.saved == pytest.approx(0.25)
    assert row.cpu_hours == pytest.approx(40.0 * 2 / 3600) and row.gpu_hours == pytest.approx(40.0 * 0.5 / 3600)
    text = summary.to_text()
    assert text.splitlines()[0] == "Best configuration per section (val_accuracy, max):"
    assert text.splitlines()[2].split() == ["3.4", "Learning", "rate", "optimizer.lr", "optimizer.lr=0.001", "0.85",
                                            "0.15", "4", "9", "of", "12", "25%", "0.0222", "0.00556"]  # fmt: skip
    assert "| 3.4 | Learning rate | optimizer.lr | optimizer.lr=0.001 | 0.85 | 0.15 | 4 | 9 of 12 | 25% |" in summary.to_markdown()


def test_the_summary_totals_sections():
    other = lr_section()
    other.id, other.resources = "3.5", None
    summary = study_summary(FACTS, [lr_section(), other])
    total = summary.total()
    assert (total["trials"], total["epochs_run"], total["epochs_full"]) == (8, 18, 24)
    assert total["cpu_hours"] is None  # one section's resources are unknown
    assert summary.to_text().splitlines()[-1].split() == ["total", "8", "18", "of", "24", "25%"]


# ---------------------------------------------------------------------------------------------
# Parquet


def test_parquet_holds_one_row_per_trial_epoch_with_flat_config_columns(tmp_path):
    sections = [lr_section(), grid_section()]
    path = store.write_trials(tmp_path / "trials.parquet", FACTS, sections)
    df = pd.read_parquet(path)
    assert len(df) == 3 + 3 + 2 + 1 + 5 + 1  # a trial without reports keeps one row
    assert {"section", "trial", "status", "epoch", "selected", "best", "val_accuracy", "config.optimizer.lr",
            "config.model.hidden"} <= set(df.columns)  # fmt: skip
    lr = df[df.section == "3.4"]
    assert lr.groupby("trial").size().tolist() == [3, 3, 2, 1]
    assert lr[lr.selected].set_index("trial")["val_accuracy"].tolist() == [0.7, 0.85, 0.78, 0.1]
    assert lr[lr.best].trial.unique().tolist() == [1] and lr[lr.reference].trial.unique().tolist() == [1]
    assert lr[(lr.trial == 2) & (lr.epoch == 2)].stop.item() == "early_stopped"
    assert df["config.optimizer.lr"].dtype == "float64" and df["config.model.hidden"].iloc[0] == "[64, 32]"
    failed = df[(df.section == "2") & (df.status == "failed")]
    assert len(failed) == 1 and pd.isna(failed.epoch.item())


def test_a_retried_trial_counts_each_epoch_once():
    t = trial(0, 1e-3, [0.5, 0.6, 0.7])
    t.history.insert(2, {"epoch": 2, "val_accuracy": 0.61})  # epoch 2 reported again after a retry
    t.history[1], t.history[2] = t.history[2], t.history[1]
    assert [(r["epoch"], r["val_accuracy"]) for r in epoch_rows(t)] == [(1, 0.5), (2, 0.6), (3, 0.7)]


# ---------------------------------------------------------------------------------------------
# Rebuilding from the files


def save_results(results, sections):
    for section in sections:
        saved = {"id": section.id, "name": section.name, "select": section.select.to_json(), "seconds": section.seconds,
                 "best": {"index": section.best_index}, **reports.section_facts(section.swept, section.reference,
                                                                                   section.resources or {})}  # fmt: skip
        saved["resources"] = section.resources  # None: not recorded
        records.write_section(results, section.id, saved, section.trials)
    records.write_json(results / "study.json", {**FACTS.to_json(), "sections": [s.id for s in sections]})


def test_rebuild_writes_every_file_from_the_results_alone(tmp_path, capsys):
    sections = [lr_section(), grid_section()]
    save_results(tmp_path, sections)
    report = reports.rebuild(tmp_path)
    names = sorted(str(p.relative_to(tmp_path)) for p in report.files)
    assert names == ["report/report.md", "report/summary.csv", "report/summary.md", "report/summary.txt",
                     "report/trials.parquet", "sections/2/report/curves.png", "sections/2/report/heatmap.png",
                     "sections/2/report/table.csv", "sections/2/report/table.md", "sections/3.4/report/curves.png",
                     "sections/3.4/report/table.csv", "sections/3.4/report/table.md",
                     "sections/3.4/report/value_curve.png"]  # fmt: skip
    expected = study_summary(FACTS, sections).to_text()
    assert report.summary.to_text() == expected == (tmp_path / "report/summary.txt").read_text()
    assert "![heatmap](../sections/2/report/heatmap.png)" in (tmp_path / "report/report.md").read_text()
    assert main(["report", str(tmp_path)]) == 0
    assert capsys.readouterr().out == expected
    assert main(["report", str(tmp_path), "--format", "markdown"]) == 0
    assert capsys.readouterr().out == study_summary(FACTS, sections).to_markdown()


def test_report_refuses_what_is_not_a_results_directory(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'missing'}: expected an existing results directory (written by `expgrid run`), "
        "got no such directory"
    )
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "expected a results directory written by `expgrid run`" in err


def test_results_from_before_reports_fall_back_to_the_study_file(tmp_path, write_study):
    path = write_study("study: old\ntrainable: toy\nmetric: score\nreport: [loss]\nsections:\n  - {id: a, grid: {x: [0, 2]}}\n")
    trials = [TrialRecord(i, {"x": x}, {"x": x, "epochs": 2}, "completed", [{"epoch": 1, "score": x / 4, "loss": 1.0}])
              for i, x in enumerate([0, 2])]  # fmt: skip
    records.write_section(tmp_path, "a", {"id": "a", "name": "A", "best": {"index": 1}}, trials)
    records.write_json(tmp_path / "study.json", {"study": "old", "study_file": str(path)})
    report = reports.rebuild(tmp_path)
    (row,) = report.summary.rows
    assert (row.best, row.metrics, row.epochs_run, row.epochs_full) == ({"x": 2}, {"score": 0.5, "loss": 1.0}, 2, 4)
    assert row.cpu_hours is None  # not recorded then
    assert json.loads(json.dumps(report.summary.to_json()))[0]["saved"] == 0.5
