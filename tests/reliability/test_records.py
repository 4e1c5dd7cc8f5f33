"""Record files that were cut or damaged: a cut last line (a run killed mid-write) is dropped with
a warning and what it held is rebuilt; anything else unreadable is one line naming the file and
what to do, exit 2 — never silently skipped."""

from __future__ import annotations

import io
import json
import shutil
import textwrap
from pathlib import Path

import pytest

from expgrid import records
from expgrid.cli import main
from expgrid.durable import RecordError
from expgrid.records import TrialRecord
from expgrid.runner import RunOptions, prepare, run_study

STUDY = textwrap.dedent("""
    study: records
    trainable: toy
    metric: score
    defaults: {epochs: 3}
    sections:
      - {id: a, grid: {x: [0, 2]}}
      - {id: b, grid: {y: [-1, 1]}}
""")


@pytest.fixture(scope="module")
def finished(ray_session, tmp_path_factory) -> tuple[Path, Path]:
    """A study file and the results of its finished run."""
    folder = tmp_path_factory.mktemp("finished")
    study_file = folder / "records.yaml"
    study_file.write_text(STUDY)
    study, spec = prepare(study_file)
    run_study(study, spec, RunOptions(results_dir=folder / "results", tracking_uri=f"sqlite:///{folder / 'm.db'}",
                                      stream=io.StringIO()))  # fmt: skip
    return study_file, folder / "results"


@pytest.fixture
def results(finished, tmp_path) -> Path:
    copy = tmp_path / "results"
    shutil.copytree(finished[1], copy)
    return copy


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize("name, fix", [
    ("section.json", "delete it to run section b again, or restore it from a copy"),
    ("trials.json", "delete it: expgrid rebuilds it from trials.jsonl"),
])  # fmt: skip
def test_report_and_run_refuse_a_damaged_section_record_with_what_to_do(finished, results, capsys, name, fix):
    path = results / "sections" / "b" / name
    path.write_text("{garbage")
    assert main(["report", str(results)]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"error: {path}: expected ") and "got unreadable content ('{garbage')" in line
    assert line.endswith(fix)
    assert main(["run", str(finished[0]), "--results", str(results)]) == 2  # before anything starts
    assert _one_error_line(capsys) == line
    if name == "trials.json":  # doing what the line says mends it
        path.unlink()
        assert main(["report", str(results)]) == 0
        assert [t.status for t in records.read_trials(results, "b")] == ["completed", "completed"]


def test_a_damaged_study_record_is_refused(results, capsys):
    (results / "study.json").write_text("[1, 2")
    assert main(["report", str(results)]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"error: {results / 'study.json'}: expected a study record (JSON) written by expgrid")
    assert "delete it to start the study's record afresh" in line


def _trial(index: int, epochs: int, last: int, status: str = "completed") -> TrialRecord:
    history = [{"epoch": e, "score": e / 10} for e in range(1, last + 1)]
    return TrialRecord(index=index, swept={"x": index}, config={"x": index, "epochs": epochs}, status=status,
                       history=history, started=1.0, ended=2.0)  # fmt: skip


def _write_progress(results: Path, ended: list[TrialRecord], rows: dict[int, int]) -> Path:
    folder = records.section_dir(results, "s")
    folder.mkdir(parents=True)
    for trial in ended:
        records.append_trial(results, "s", trial)
    with open(folder / "rows.jsonl", "w") as f:
        for index, last in rows.items():
            for epoch in range(1, last + 1):
                f.write(json.dumps({"trial": index, "row": {"epoch": epoch, "score": epoch / 10}}) + "\n")
    return folder


def _fresh(n: int) -> list[TrialRecord]:
    return [TrialRecord(index=i, swept={"x": i}, config={"x": i, "epochs": 3}) for i in range(n)]


def test_a_cut_trial_record_is_rebuilt_from_the_rows_and_a_completed_trial_stays_completed(tmp_path):
    folder = _write_progress(tmp_path, [_trial(0, 3, 3), _trial(1, 3, 3)], rows={0: 3, 1: 3, 2: 2})
    path = folder / "trials.jsonl"
    text = path.read_text()
    path.write_text(text[: text.rindex("\n", 0, -1) + 40])  # trial 1's line cut after 40 characters
    warnings: list[str] = []
    trials = _fresh(3)
    ended = records.read_progress(tmp_path, "s", trials, warn=warnings.append)
    assert ended == {0, 1}
    assert [t.status for t in trials[:2]] == ["completed", "completed"]
    assert [r["epoch"] for r in trials[1].history] == [1, 2, 3] and trials[2].history[-1]["epoch"] == 2
    assert warnings == [f"{path}: its last line was cut off (the run writing it was killed mid-write); dropped it",
                        f"{path}: trial 1's record rebuilt from rows.jsonl (completed)"]  # fmt: skip
    # The file is whole again, with the rebuilt record: the next reader needs no repair.
    assert [json.loads(x)["index"] for x in path.read_text().splitlines()] == [0, 1]
    assert records.read_progress(tmp_path, "s", _fresh(3), warn=warnings.append) == {0, 1}
    assert len(warnings) == 2


def test_a_cut_trial_record_whose_rows_show_no_end_continues_as_a_running_trial(tmp_path):
    folder = _write_progress(tmp_path, [_trial(0, 3, 3), _trial(1, 3, 2, status="failed")], rows={0: 3, 1: 2})
    path = folder / "trials.jsonl"
    path.write_text(path.read_text()[:-30])
    trials = _fresh(2)
    assert records.read_progress(tmp_path, "s", trials, warn=lambda text: None) == {0}
    assert trials[1].status == "pending" and len(trials[1].history) == 2  # Tune says how it goes on


def test_a_cut_row_is_dropped_and_cut_off_the_file_before_rows_are_appended(tmp_path):
    folder = _write_progress(tmp_path, [], rows={0: 3})
    path = folder / "rows.jsonl"
    path.write_text(path.read_text()[:-10])
    warnings: list[str] = []
    trials = _fresh(1)
    assert records.read_progress(tmp_path, "s", trials, warn=warnings.append) == set()
    assert [r["epoch"] for r in trials[0].history] == [1, 2]  # epoch 3 is reported again from the checkpoint
    assert len(warnings) == 1 and "rows.jsonl: its last line was cut off" in warnings[0]
    log = records.RowLog(tmp_path, "s")
    log.append(0, {"epoch": 3})
    log.close()
    assert [json.loads(x)["row"]["epoch"] for x in path.read_text().splitlines()] == [1, 2, 3]


def test_damage_in_the_middle_of_a_record_log_is_refused(tmp_path):
    folder = _write_progress(tmp_path, [_trial(0, 3, 3), _trial(1, 3, 3)], rows={})
    path = folder / "trials.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0][:20], lines[1]]) + "\n")
    with pytest.raises(RecordError, match=rf"^{path}: expected a trial record per line .* got unreadable line 1 "
                       r"\('\{\"index\": 0, \"swept\"'\); move it away and run again without --resume"):  # fmt: skip
        records.read_progress(tmp_path, "s", _fresh(2), warn=lambda text: None)
