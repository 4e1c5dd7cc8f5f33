"""Trial records (expgrid/records.py): how a trial ended comes from its ``stop`` and error, the
stop is kept beside the rows (never in them), and results written before typed trial messages,
whose rows held ``expgrid_stop`` / ``expgrid_artifacts``, read back as if written today."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from expgrid import records, reports
from expgrid.records import TrialRecord
from expgrid.reports import store
from expgrid.reports.results import StudyFacts

FACTS = StudyFacts("s", "score", "max")


@pytest.mark.parametrize("stop, error, status", [
    (None, None, "completed"),
    ("diverged", None, "diverged"),
    ("early_stopped", None, "early_stopped"),
    ("asha_stopped", None, "asha_stopped"),
    ("asha_stopped", "RuntimeError: x", "failed"),
    (None, "RuntimeError: x", "failed"),
])  # fmt: skip
def test_a_trial_ends_as_its_error_or_its_stop_says(stop, error, status):
    assert records.ending(stop, error) == status


def _rows(last: int, **extra) -> list[dict]:
    return [{"epoch": e, "score": e / 10, **(extra if e == last else {})} for e in range(1, last + 1)]


def test_the_stop_is_a_field_of_the_record_and_survives_a_round_trip(tmp_path):
    trial = TrialRecord(0, {"x": 1}, {"x": 1, "epochs": 5}, "early_stopped", _rows(3), stop="early_stopped")
    records.append_trial(tmp_path, "s", trial)
    line = json.loads((records.section_dir(tmp_path, "s") / "trials.jsonl").read_text())
    assert line["stop"] == "early_stopped" and all(set(r) == {"epoch", "score"} for r in line["history"])
    assert records.ended_trials(tmp_path, "s") == [trial]


def _old_record(index: int, status: str, history: list[dict]) -> dict:
    """A trials.jsonl / trials.json record as the previous version wrote it: no ``stop`` field."""
    return {"index": index, "swept": {"x": index}, "config": {"x": index, "epochs": 4}, "status": status,
            "history": history, "error": None, "retries": 0, "started": 1.0, "ended": 2.0, "nodes": [],
            "artifacts": []}  # fmt: skip


OLD = [
    _old_record(0, "completed", _rows(4)),
    _old_record(1, "diverged", _rows(2, expgrid_stop="diverged")),
    _old_record(2, "asha_stopped", _rows(1)),
    _old_record(3, "early_stopped", _rows(3, expgrid_stop="early_stopped", expgrid_artifacts={"a.txt": "x"})),
]


def _expect_converted(trials: list[TrialRecord]) -> None:
    assert [t.stop for t in trials] == [None, "diverged", "asha_stopped", "early_stopped"]
    assert [t.status for t in trials] == ["completed", "diverged", "asha_stopped", "early_stopped"]
    assert all(set(row) == {"epoch", "score"} for t in trials for row in t.history)
    assert [t.last_epoch for t in trials] == [4, 2, 1, 3]


def test_old_trial_logs_read_back_with_the_stop_taken_out_of_the_rows(tmp_path):
    folder = records.section_dir(tmp_path, "s")
    folder.mkdir(parents=True)
    (folder / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in OLD))
    _expect_converted(records.ended_trials(tmp_path, "s"))
    _expect_converted(records.read_trials(tmp_path, "s"))  # a section whose trials.json is missing


def _old_finished_section(results: Path) -> None:
    folder = records.section_dir(results, "s")
    folder.mkdir(parents=True)
    (folder / "trials.json").write_text(json.dumps(OLD))
    best = {"index": 0, "swept": {"x": 0}, "config": OLD[0]["config"], "metrics": OLD[0]["history"][-1]}
    (folder / "section.json").write_text(json.dumps({"id": "s", "name": "s", "best": best, "select": "last_epoch"}))


def test_an_old_finished_section_reports_without_control_keys(tmp_path):
    _old_finished_section(tmp_path)
    section = reports.load_section(tmp_path, "s")
    _expect_converted(section.trials)
    rows = store.trial_rows(FACTS, [section])
    assert not [k for row in rows for k in row if k.startswith("expgrid")]
    stops = {(r["trial"], r["epoch"]): r["stop"] for r in rows if r["stop"] is not None}
    assert stops == {(1, 2): "diverged", (2, 1): "asha_stopped", (3, 3): "early_stopped"}  # on the last epoch


@pytest.mark.parametrize("written, epochs", [
    ("last_epoch", [4, 2, 1, 3]),  # a trial's last epoch, when it reports the metric there
    ("best_epoch", [4, 2, 1, 3]),  # scores rise: the best is the last
    ({"best_epoch": "score", "mode": "min"}, [1, 1, 1, 1]),  # select's own monitor and mode
])  # fmt: skip
def test_a_finished_sections_select_is_read_back_in_each_written_form(tmp_path, written, epochs):
    _old_finished_section(tmp_path)
    path = records.section_dir(tmp_path, "s") / "section.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "select": written}))
    section = reports.load_section(tmp_path, "s")
    assert section.select.to_json() == written
    assert [t.selected(FACTS.metric, FACTS.mode, section.select)["epoch"] for t in section.trials] == epochs


def _fresh(n: int) -> list[TrialRecord]:
    return [TrialRecord(index=i, swept={"x": i}, config={"x": i, "epochs": 4}) for i in range(n)]


def test_a_stop_in_rows_jsonl_rebuilds_a_cut_end_record(tmp_path):
    """New format: the stop is a line of its own; old format: it rode in the last row. Either
    way a trial whose end record was cut off is rebuilt as stopped, not continued."""
    for layout in ("new", "old"):
        results = tmp_path / layout
        log = records.RowLog(results, "s")
        for row in _rows(2):
            log.append(0, row)
        if layout == "new":
            log.stopped(0, "diverged")
        else:
            log.append(0, {"epoch": 3, "score": 0.3, "expgrid_stop": "diverged"})
        log.append(1, {"epoch": 1, "score": 0.1})
        log.close()
        path = records.section_dir(results, "s") / "trials.jsonl"
        path.write_text('{"index": 0, "swept": {"x"')  # trial 0's end record, cut mid-write
        trials = _fresh(2)
        warnings: list[str] = []
        assert records.read_progress(results, "s", trials, warn=warnings.append) == {0}, layout
        assert (trials[0].status, trials[0].stop) == ("diverged", "diverged")
        assert all("expgrid_stop" not in row for row in trials[0].history)
        assert trials[1].status == "pending" and trials[1].stop is None
        assert warnings[-1] == f"{path}: trial 0's record rebuilt from rows.jsonl (diverged)"
        # Readers of the epochs (sync of an interrupted section) get rows only.
        assert all("expgrid_stop" not in row for _, row in records.rows_of(results, "s"))


def test_a_stop_of_a_running_trial_is_kept_for_its_end(tmp_path):
    log = records.RowLog(tmp_path, "s")
    log.append(0, {"epoch": 1, "score": 0.1})
    log.stopped(0, "asha_stopped")
    log.close()
    trials = _fresh(1)
    assert records.read_progress(tmp_path, "s", trials, warn=lambda text: None) == set()
    assert trials[0].stop == "asha_stopped" and len(trials[0].history) == 1
    assert records.rows_of(tmp_path, "s") == [(0, {"epoch": 1, "score": 0.1})]


def test_a_rows_line_that_is_neither_a_row_nor_a_stop_is_refused(tmp_path):
    folder = records.section_dir(tmp_path, "s")
    folder.mkdir(parents=True)
    (folder / "rows.jsonl").write_text(json.dumps({"trial": 0, "stop": 3}) + "\n" + json.dumps({"trial": 0}) + "\n")
    with pytest.raises(records.durable.RecordError, match=r"expected an epoch row per line .*\(line 1\)"):
        records.rows_of(tmp_path, "s")
