"""Ctrl-C and SIGTERM mid-section, as a terminal sends them: to the whole foreground process group
of `expgrid run` (its own session here). The first stops the study cleanly (exit 130, running trials
recorded `interrupted`, the section left unfinished, nothing carried forward), a second exits at
once with one line; `--resume` then ends as an uninterrupted run does."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from expgrid.cli import main

STUDY = textwrap.dedent("""
    study: interrupts
    trainable: toy
    metric: score
    mode: max
    defaults: {epochs: 6, sleep: 0.4}
    max_concurrent: 1
    sections:
      - {id: a, grid: {x: [0, 2]}, fixed: {sleep: 0}}
      - {id: b, grid: {y: [-3, -1, 0, 1, 2]}}
      - {id: c, grid: {x: [1, 3]}, fixed: {sleep: 0}}
""")


@pytest.fixture(scope="module")
def study_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("study") / "interrupts.yaml"
    path.write_text(STUDY)
    return path


def _start(study: Path, results: Path, *extra: str) -> subprocess.Popen:
    """`expgrid run` in a session of its own, as a shell runs a foreground job."""
    return subprocess.Popen([sys.executable, "-m", "expgrid", "run", str(study), "--results", str(results), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "MLFLOW_TRACKING_URI": ""})  # fmt: skip


def _wait_for_epoch(driver: subprocess.Popen, results: Path, trial: int, epoch: int) -> None:
    """Until the driver has recorded ``epoch`` of section b's ``trial`` (mid-section)."""
    rows = results / "sections" / "b" / "rows.jsonl"
    deadline = time.monotonic() + 300
    while True:
        lines = rows.read_text().splitlines()[:-1] if rows.exists() else []  # the last may be half-written
        seen = [json.loads(x)["row"]["epoch"] for x in lines if json.loads(x)["trial"] == trial]
        if max(seen, default=0) >= epoch:
            return
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
        time.sleep(0.1)


def _summary(results: Path) -> list[dict[str, str]]:
    """The summary's rows without the wall-time columns (a resumed trial's time counts from the resume)."""
    rows = list(csv.DictReader(io.StringIO((results / "report" / "summary.csv").read_text())))
    return [{k: v for k, v in row.items() if k not in ("cpu_hours", "gpu_hours")} for row in rows]


def _statuses(results: Path, section: str) -> dict[int, str]:
    lines = (results / "sections" / section / "trials.jsonl").read_text().splitlines()
    return {json.loads(x)["index"]: json.loads(x)["status"] for x in lines}


@pytest.fixture(scope="module")
def uninterrupted(study_file, ray_session, tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("whole")
    address = ray_session.get_runtime_context().gcs_address
    driver = _start(study_file, results, "--address", address)
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, out + err
    return results


def test_one_ctrl_c_stops_cleanly_and_resume_ends_as_an_uninterrupted_run(study_file, uninterrupted, tmp_path):
    results = tmp_path / "r"
    driver = _start(study_file, results, "--num-cpus", "2")  # its own local Ray, as a user's run
    _wait_for_epoch(driver, results, trial=2, epoch=2)
    os.killpg(driver.pid, signal.SIGINT)
    out, err = driver.communicate(timeout=120)

    assert driver.returncode == 130, out + err
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
    assert "2/5 done · 1 running" in out and "interrupted (Ctrl-C)" in out  # the progress line says so
    assert "interrupted: section b (Section b) interrupted by Ctrl-C: 2 of 5 trials had ended, 1 was running" in err
    assert "c Section c" not in out  # nothing carried forward from the cut section
    assert not (results / "sections" / "b" / "section.json").exists()
    assert _statuses(results, "b") == {0: "completed", 1: "completed", 2: "interrupted"}
    # The summary of what did finish, saying where the study was stopped; `report` agrees.
    assert [row["section"] for row in _summary(results)] == ["a"]
    assert "interrupted: section b" in (results / "report" / "summary.txt").read_text()
    assert main(["report", str(results)]) == 0

    resumed = _start(study_file, results, "--num-cpus", "2", "--resume")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out + err
    assert "b Section b: resuming (2 of 5 trials had ended)" in out
    trials = json.loads((results / "sections" / "b" / "trials.json").read_text())
    assert [t["status"] for t in trials] == ["completed"] * 5
    assert all([r["epoch"] for r in t["history"]] == [1, 2, 3, 4, 5, 6] for t in trials)
    assert trials[2]["history"][-1]["resumed_from"] >= 2  # from its checkpoint, not from epoch 1
    assert _summary(results) == _summary(uninterrupted)
    assert "interrupted" not in (results / "report" / "summary.txt").read_text()


def test_sigterm_stops_like_ctrl_c_and_a_second_ctrl_c_exits_at_once(study_file, uninterrupted, ray_session, tmp_path):
    results = tmp_path / "r"
    address = ray_session.get_runtime_context().gcs_address  # no local Ray left behind by the hard exit
    driver = _start(study_file, results, "--address", address)
    _wait_for_epoch(driver, results, trial=1, epoch=2)
    os.kill(driver.pid, signal.SIGTERM)  # what `kill`, `ray job stop` and schedulers send
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 130, out + err
    assert "interrupted by SIGTERM: 1 of 5 trials had ended, 1 was running" in err, err
    assert _statuses(results, "b") == {0: "completed", 1: "interrupted"}

    resumed = _start(study_file, results, "--address", address, "--resume")
    _wait_for_epoch(resumed, results, trial=3, epoch=2)
    os.killpg(resumed.pid, signal.SIGINT)
    first = [resumed.stderr.readline() for _ in range(2)]  # a blank line, then the first Ctrl-C's line
    os.killpg(resumed.pid, signal.SIGINT)  # while the study is still stopping
    out, err = resumed.communicate(timeout=60)
    err = "".join(first) + err
    assert resumed.returncode == 130, out + err
    # One line per Ctrl-C, nothing else: no traceback of the hard exit.
    assert [line for line in err.splitlines() if line.strip()] == [
        "Ctrl-C: stopping the study; the running trials are kept for `expgrid run` with --resume "
        "(Ctrl-C again to exit at once)",
        "Ctrl-C again: exiting now; `expgrid run` with --resume continues from the trials' last checkpoints",
    ], err
    assert "Traceback" not in out + err

    again = _start(study_file, results, "--address", address, "--resume")
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, out + err
    assert _summary(results) == _summary(uninterrupted)
    trials = json.loads((results / "sections" / "b" / "trials.json").read_text())
    assert all([r["epoch"] for r in t["history"]] == [1, 2, 3, 4, 5, 6] for t in trials)
