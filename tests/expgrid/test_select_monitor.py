"""`select: {best_epoch: val_loss, mode: min}`: each trial's epoch is the best by a monitor of
its own, trials are then compared by the study metric at those epochs; the study file forms and
their one-line errors; the trial's own best-epoch test (its checkpoints) and the driver's
records agreeing; section.json, fingerprints, tables and wording following the monitor."""

from __future__ import annotations

import json

import pytest

from expgrid import planning, records
from expgrid.cli import main
from expgrid.errors import StudyFileError
from expgrid.records import TrialRecord
from expgrid.reports import store
from expgrid.reports.results import SectionResults, StudyFacts, section_from_saved
from expgrid.reports.summary import summary_row
from expgrid.reports.tables import section_table
from expgrid.stopping import MissingMonitor, TrialRules, Watcher
from expgrid.study import Selection, load_study
from expgrid.study_types import Study
from expgrid.wording import describe

BY_LOSS = Selection(epoch="best_epoch", monitor="val_loss", mode="min")
FACTS = StudyFacts("s", "val_accuracy", "max", report=("val_loss",))

# Two trials whose lowest-val_loss epoch is not their highest-val_accuracy epoch, and whose
# ranking turns over with it: A peaks late in accuracy while its loss is lowest at epoch 2; B's
# loss is lowest at its accuracy peak.
A_ROWS = [(1, 0.60, 0.90), (2, 0.70, 0.50), (3, 0.80, 0.70), (4, 0.90, 0.80)]
B_ROWS = [(1, 0.60, 0.95), (2, 0.75, 0.60), (3, 0.85, 0.40), (4, 0.80, 0.45)]


def trial(index: int, rows: list[tuple[int, float, float]], status: str = "completed") -> TrialRecord:
    history = [{"epoch": e, "val_accuracy": acc, "val_loss": loss} for e, acc, loss in rows]
    return TrialRecord(index, {"optimizer.lr": [0.01, 0.001][index]}, {"epochs": 4}, status, history)


def test_the_selected_epoch_is_the_monitors_best_and_trials_compare_by_the_study_metric_there():
    a, b = trial(0, A_ROWS), trial(1, B_ROWS)
    assert a.selected("val_accuracy", "max", BY_LOSS)["epoch"] == 2  # lowest val_loss, not highest accuracy
    assert b.selected("val_accuracy", "max", BY_LOSS)["epoch"] == 3
    assert a.score("val_accuracy", "max", BY_LOSS) == 0.70 and b.score("val_accuracy", "max", BY_LOSS) == 0.85
    assert records.best_trial([a, b], "val_accuracy", "max", BY_LOSS) is b
    # The same trials by the study metric alone: A's epoch 4 wins.
    assert a.selected("val_accuracy", "max", "best_epoch")["epoch"] == 4
    assert records.best_trial([a, b], "val_accuracy", "max", "best_epoch") is a
    assert records.best_trial([a, b], "val_accuracy", "max", "last_epoch") is a


def test_only_epochs_reporting_both_the_monitor_and_the_study_metric_can_be_selected():
    t = trial(0, A_ROWS)
    t.history[1] = {"epoch": 2, "val_loss": 0.10}  # the lowest loss, but no accuracy to compare trials by
    t.history.append({"epoch": 5, "val_accuracy": 0.99, "val_loss": float("nan")})
    assert t.selected("val_accuracy", "max", BY_LOSS)["epoch"] == 3
    nothing = TrialRecord(1, {}, {}, "completed", [{"epoch": 1, "val_accuracy": 0.5}])
    assert nothing.selected("val_accuracy", "max", BY_LOSS) is None and nothing.score("val_accuracy", "max", BY_LOSS) is None


def test_a_monitor_of_mode_max_picks_its_highest_epoch():
    t = trial(0, A_ROWS)
    by_highest_loss = Selection(epoch="best_epoch", monitor="val_loss", mode="max")
    assert t.selected("val_accuracy", "max", by_highest_loss)["epoch"] == 1


def test_the_trials_own_best_epoch_test_agrees_with_the_records():
    """The watcher marks a new best (a checkpoint is taken) exactly at the epochs where the
    monitor improves; its last mark is the epoch the records select."""
    rules = TrialRules(metric="val_accuracy", mode="max", keep_best_checkpoint=True, select_monitor="val_loss",
                       select_mode="min")  # fmt: skip
    for rows in (A_ROWS, B_ROWS):
        t = trial(0, rows)
        watcher = Watcher(rules)
        marks = [row["epoch"] for row in t.history if watcher.observe(row)[1]]
        assert marks[-1] == t.selected("val_accuracy", "max", BY_LOSS)["epoch"]
    watcher = Watcher(rules)
    assert [watcher.observe(row)[1] for row in trial(0, A_ROWS).history] == [True, True, False, False]


def test_a_row_with_the_study_metric_but_without_the_monitor_fails_the_trial_saying_so():
    watcher = Watcher(TrialRules(metric="val_accuracy", mode="max", keep_best_checkpoint=True,
                                 select_monitor="val_los", select_mode="min"))  # fmt: skip
    assert watcher.observe({"epoch": 1, "train_loss": 0.3}) == (None, False)  # not an evaluated epoch: skipped
    with pytest.raises(MissingMonitor, match="monitor 'val_los' is not in the epoch's report .*val_accuracy, val_loss"):
        watcher.observe({"epoch": 2, "val_accuracy": 0.5, "val_loss": 0.4})


def test_the_watchers_state_round_trips_with_the_select_monitor():
    rules = TrialRules(metric="val_accuracy", mode="max", select_monitor="val_loss", select_mode="min")
    assert TrialRules.from_json(json.loads(json.dumps(rules.to_json()))) == rules
    rows = trial(0, B_ROWS).history
    first = Watcher(rules)
    [first.observe(r) for r in rows[:2]]
    again = Watcher(rules)
    again.load(json.loads(json.dumps(first.state())))
    assert [again.observe(r)[1] for r in rows[2:]] == [True, False]


# ---------------------------------------------------------------------------------------------
# The study file


HEAD = "study: s\ntrainable: toy\nmetric: score\nmode: max\nsections:\n  - id: a\n    grid: {x: [0, 1]}\n"


def select_of(write_study, select: str) -> Selection:
    return load_study(write_study(HEAD + f"    select: {select}\n")).sections[0].select


@pytest.mark.parametrize("text, expected", [
    ("last_epoch", Selection()),
    ("best_epoch", Selection(epoch="best_epoch")),
    ("{best_epoch: loss, mode: min}", Selection(epoch="best_epoch", monitor="loss", mode="min")),
    ("{best_epoch: loss, mode: max}", Selection(epoch="best_epoch", monitor="loss", mode="max")),
    # The study metric in the study's mode is plain best_epoch: one spelling, one fingerprint.
    ("{best_epoch: score, mode: max}", Selection(epoch="best_epoch")),
    ("{best_epoch: score}", Selection(epoch="best_epoch")),
    ("{best_epoch: score, mode: min}", Selection(epoch="best_epoch", monitor="score", mode="min")),
])  # fmt: skip
def test_select_forms(write_study, text, expected):
    assert select_of(write_study, text) == expected


@pytest.mark.parametrize("text, message", [
    ("best", "sections[0].select: expected one of last_epoch, best_epoch, or {best_epoch: METRIC, mode: min|max}, got 'best'"),
    ("[best_epoch]", "sections[0].select: expected one of last_epoch, best_epoch, or {best_epoch: METRIC, mode: min|max}, got ['best_epoch']"),
    ("{best_epoch: loss, mode: min, patience: 3}", "sections[0].select.patience: expected a known key: one of best_epoch, mode, got 'patience'"),
    ("{last_epoch: loss}", "sections[0].select.last_epoch: expected a known key: one of best_epoch, mode (did you mean best_epoch?), got 'last_epoch'"),
    ("{mode: min}", "sections[0].select.best_epoch: expected the metric whose best value picks each trial's epoch, e.g. val_loss"),
    ("{best_epoch: loss, mode: lowest}", "sections[0].select.mode: expected one of max, min, got 'lowest'"),
    ("{best_epoch: loss}", "sections[0].select.mode: expected min or max: whether a lower or higher loss is better"),
    ("{best_epoch: 3, mode: min}", "sections[0].select.best_epoch: expected a non-empty string, got 3"),
    ("{best_epoch: [loss], mode: min}", "sections[0].select.best_epoch: expected a non-empty string, got ['loss']"),
])  # fmt: skip
def test_each_broken_select_is_one_line_naming_file_and_field(write_study, text, message):
    path = write_study(HEAD + f"    select: {text}\n")
    with pytest.raises(StudyFileError) as info:
        load_study(path)
    assert str(info.value) == f"{path}: {message}"
    assert "\n" not in str(info.value)


def test_a_monitor_the_trainable_does_not_report_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(HEAD + "    select: {best_epoch: val_loss, mode: min}\n")
    assert main(["validate", "s.yaml"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == ("error: s.yaml: sections[0].select.best_epoch: expected a metric trainable 'toy' "
                                 "reports: one of epoch, score, loss, world_size, got 'val_loss'\n")  # fmt: skip
    assert not (tmp_path / "results").exists()


def test_the_monitor_goes_to_the_trial_rules_and_into_the_fingerprint(write_study):
    from expgrid.runner import prepare

    def plan(select: str) -> tuple[Study, str, TrialRules]:
        study, spec = prepare(write_study(HEAD + f"    select: {select}\n"))
        section = study.sections[0]
        plans = planning.plan_section(study, spec, section, {})
        return study, planning.fingerprint(study, section, plans), planning.trial_rules(study, section, plans[0].config)

    _, plain, plain_rules = plan("best_epoch")
    _, spelled, _ = plan("{best_epoch: score, mode: max}")
    _, by_loss, rules = plan("{best_epoch: loss, mode: min}")
    assert plain == spelled != by_loss
    assert (plain_rules.keep_best_checkpoint, plain_rules.select_monitor) == (True, None)
    assert (rules.keep_best_checkpoint, rules.select_monitor, rules.select_mode) == (True, "loss", "min")


# ---------------------------------------------------------------------------------------------
# section.json, reports, wording


@pytest.mark.parametrize("select", [Selection(), Selection(epoch="best_epoch"), BY_LOSS])
def test_section_json_keeps_the_select_as_the_study_file_writes_it(select):
    written = json.loads(json.dumps(select.to_json()))
    assert Selection.of(written) == select
    assert written == {Selection(): "last_epoch", Selection(epoch="best_epoch"): "best_epoch",
                       BY_LOSS: {"best_epoch": "val_loss", "mode": "min"}}[select]  # fmt: skip


def test_an_old_section_json_with_a_string_select_is_read():
    for old in ("last_epoch", "best_epoch"):
        section = section_from_saved({"id": "3.4", "best": None, "select": old}, [])
        assert section.select == Selection(epoch=old)
    assert section_from_saved({"id": "3.4", "best": None}, []).select == Selection()


def lr_section() -> SectionResults:
    trials = [trial(0, A_ROWS), trial(1, B_ROWS)]
    best = records.best_trial(trials, FACTS.metric, FACTS.mode, BY_LOSS)
    return SectionResults("3.4", "Learning rate", ("optimizer.lr",), BY_LOSS.to_json(), None, None, 1.0, best.index,
                          trials)  # fmt: skip


def test_the_section_table_shows_the_selected_epoch_and_the_monitor():
    table = section_table(FACTS, lr_section())
    assert table.columns[:4] == ["trial", "optimizer.lr", "val_accuracy", "delta_val_accuracy"]
    assert table.columns[4] == "val_loss"  # the monitor, beside the metric that ranks trials
    assert table.column("epoch") == [2, 3]
    assert table.column("val_accuracy") == [0.70, 0.85] and table.column("val_loss") == [0.50, 0.40]
    assert table.column("note") == [None, "best"]
    assert "Each trial at the epoch of lowest `val_loss` (*epoch*)" in table.to_markdown()


def test_the_summary_and_parquet_take_the_monitors_epoch():
    section = lr_section()
    row = summary_row(FACTS, section)
    assert row.best == {"optimizer.lr": 0.001} and row.metrics == {"val_accuracy": 0.85, "val_loss": 0.40}
    selected = [(r["trial"], r["epoch"]) for r in store.trial_rows(FACTS, [section]) if r["selected"]]
    assert selected == [(0, 2), (1, 3)]


def test_describe_names_the_epoch_and_the_monitor():
    study = Study(name="s", trainable="toy", metric="val_accuracy", mode="max", sections=(), defaults={})
    b = trial(1, B_ROWS)
    assert describe(study, b, BY_LOSS) == "0.85 at epoch 3, lowest val_loss 0.4 (optimizer.lr=0.001)"
    assert describe(study, b, "best_epoch") == "0.85 at epoch 3 (optimizer.lr=0.001)"
    assert describe(study, b, "last_epoch") == "0.8 (optimizer.lr=0.001)"
    assert describe(study, trial(1, B_ROWS, status="failed"), BY_LOSS) == "0.8 (optimizer.lr=0.001)"


# ---------------------------------------------------------------------------------------------
# A real local Ray run


RAY_STUDY = """\
study: select-monitor
trainable: toy
metric: score
mode: max
sections:
  # Trial 0 (x=2) has the better score at every epoch, but its loss is lowest at epoch 1;
  # trial 1's loss is lowest at epoch 6, where its score beats trial 0's at epoch 1.
  - id: sel
    zip: {x: [2, 1], rise_after: [1, 6]}
    epochs: 12
    select: {best_epoch: loss, mode: min}
  - id: es
    inherit: none
    grid: {rise_after: [3]}
    epochs: 20
    early_stopping: {monitor: loss, mode: min, patience: 5}
    select: {best_epoch: loss, mode: min}
"""


def kept_epochs(results, section_id: str, index: int) -> set[int]:
    import pickle

    folder = results / "tune" / f"section-{section_id}" / f"trial_{index:04d}"
    return {pickle.loads(p.read_bytes())["user"]["epoch"] for p in folder.glob("checkpoint_*/expgrid_state.pkl")}


def test_a_real_run_selects_by_the_monitor_keeps_its_checkpoint_and_stops_on_its_patience(ray_session, write_study,
                                                                                          tmp_path):  # fmt: skip
    import io

    from expgrid.runner import RunOptions, prepare, run_study

    study, spec = prepare(write_study(RAY_STUDY))
    results = tmp_path / "r"
    out = io.StringIO()
    outcome = run_study(study, spec, RunOptions(results_dir=results, stream=out))
    sel, es = outcome.sections
    by_loss = Selection(epoch="best_epoch", monitor="loss", mode="min")

    first, second = sel.trials
    assert [t.status for t in sel.trials] == ["completed", "completed"] and first.last_epoch == second.last_epoch == 12
    assert first.selected("score", "max", by_loss)["epoch"] == 1 and second.selected("score", "max", by_loss)["epoch"] == 6
    assert sel.best is second  # by score at the loss-selected epochs; by score alone trial 0 wins:
    assert records.best_trial(sel.trials, "score", "max", "best_epoch") is first
    # Tune keeps the lowest-loss epoch's checkpoint beside the latest (by score, only the latest).
    assert kept_epochs(results, "sel", 0) == {1, 12} and kept_epochs(results, "sel", 1) == {6, 12}

    (stopped,) = es.trials
    assert stopped.status == "early_stopped" and [r["epoch"] for r in stopped.history] == list(range(1, 9))
    assert stopped.selected("score", "max", by_loss)["epoch"] == 3 and 3 in kept_epochs(results, "es", 0)

    saved = json.loads((results / "sections" / "sel" / "section.json").read_text())
    assert saved["select"] == {"best_epoch": "loss", "mode": "min"}
    assert saved["best"]["index"] == 1 and saved["best"]["metrics"]["epoch"] == 6
    header, *lines = (results / "sections" / "sel" / "report" / "table.csv").read_text().splitlines()
    assert header.split(",")[:6] == ["trial", "x", "rise_after", "score", "delta_score", "loss"]
    assert [line.split(",")[header.split(",").index("epoch")] for line in lines] == ["1", "6"]
    assert "sel Section sel: best 0.7875 at epoch 6, lowest loss -0.7875 (x=1, rise_after=6)" in out.getvalue()

    # Run again: both sections are read back, with the same best, nothing rerun.
    again = io.StringIO()
    reread = run_study(study, spec, RunOptions(results_dir=results, stream=again))
    assert [s.skipped for s in reread.sections] == [True, True] and reread.sections[0].best.index == 1
    assert "sel Section sel: finished earlier, best 0.7875 at epoch 6" in again.getvalue()


def test_show_lists_the_monitor(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(HEAD + "    select: {best_epoch: loss, mode: min}\n")
    assert main(["show", "s.yaml"]) == 0
    assert "[fifo, best_epoch: loss (min)]" in capsys.readouterr().out


def test_a_trainable_that_declares_no_metrics_fails_at_the_first_row_lacking_the_monitor(ray_session, tmp_path,
                                                                                         monkeypatch):  # fmt: skip
    """Nothing to check the monitor against before the run: the trial's first evaluated epoch
    without it fails the trial, and the study's failure says why."""
    import io

    from expgrid.errors import StudyFailed
    from expgrid.runner import RunOptions, prepare, run_study

    monkeypatch.chdir(tmp_path)
    (tmp_path / "select_free_trainable.py").write_text(
        "import expgrid\n\ndef train(config):\n"
        "    for epoch in (1, 2):\n        expgrid.report({'epoch': epoch, 'acc': 0.5}, checkpoint={'epoch': epoch})\n"
    )
    (tmp_path / "s.yaml").write_text("study: free\ntrainable: select_free_trainable:train\nmetric: acc\n"
                                     "max_failures: 0\nsections:\n  - id: a\n    grid: {x: [0]}\n"
                                     "    select: {best_epoch: val_loss, mode: min}\n")  # fmt: skip
    study, spec = prepare(tmp_path / "s.yaml")
    with pytest.raises(StudyFailed) as info:
        run_study(study, spec, RunOptions(results_dir=tmp_path / "r", stream=io.StringIO()))
    assert "none of its 1 trials completed" in str(info.value)
    assert "MissingMonitor: select: best_epoch monitor 'val_loss' is not in the epoch's report (it reports acc, epoch)" \
        in str(info.value)
    (record,) = records.read_trials(tmp_path / "r", "a")
    assert record.status == "failed" and record.history == [{"epoch": 1, "acc": 0.5}]  # the epoch it ran is kept
