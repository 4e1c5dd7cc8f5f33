"""Two commands on one results directory: a second `expgrid run` (or a `report`, or a `sync`)
while a run holds it fails at once with one line naming the directory and the run's PID; the first
run is untouched and ends normally."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

from expgrid.cli import main

STUDY = textwrap.dedent("""
    study: concurrent
    trainable: toy
    metric: score
    defaults: {epochs: 10, sleep: 0.6}
    max_concurrent: 1
    sections:
      - {id: a, grid: {x: [0, 1, 2]}}
""")


def test_a_second_command_on_a_running_results_directory_is_refused_at_once(ray_session, tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_text(STUDY)
    results = tmp_path / "results"
    address = ray_session.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "expgrid", "run", str(study), "--results", str(results), "--address", address]
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    rows = results / "sections" / "a" / "rows.jsonl"
    deadline = time.monotonic() + 300
    while not (rows.exists() and rows.read_text()):  # the first run is in its section
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.1)

    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert second.returncode == 2, second.stdout + second.stderr
    lines = second.stderr.strip().splitlines()
    assert lines == [f"error: {results}: in use by `expgrid run` (PID {first.pid}, since "
                     f"{lines[0].split('since ')[1].split(')')[0]}); wait for it to end or stop it, then run this again"]
    assert main(["report", str(results)]) == 2  # a reader waits for the writer too
    assert f"in use by `expgrid run` (PID {first.pid}" in capsys.readouterr().err

    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, out + err
    assert "3/3 done" in out
    trials = json.loads((results / "sections" / "a" / "trials.json").read_text())
    assert [t["status"] for t in trials] == ["completed"] * 3
    assert all([r["epoch"] for r in t["history"]] == list(range(1, 11)) for t in trials)  # no second writer's rows
    # The first run's records were neither removed nor written twice by the second.
    assert len(rows.read_text().splitlines()) == 30
    assert main(["report", str(results)]) == 0  # once the run is over
