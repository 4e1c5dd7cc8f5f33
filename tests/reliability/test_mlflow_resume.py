"""A driver killed (SIGKILL) mid-section, then `expgrid run --resume`: the interrupted section's
run and its running trial's run are reopened (the same run ids), that trial's run ends with every
epoch of its record once — none lost at the kill, none doubled by the resume — and `expgrid sync`
then finds the store equal to the results (the run's own SQLite store)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

_spec = importlib.util.spec_from_file_location("mlflow_checks", Path(__file__).with_name("mlflow_checks.py"))
checks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(checks)

STUDY = textwrap.dedent("""
    study: mlflow-resume
    trainable: toy
    metric: score
    mode: max
    defaults: {epochs: 6, sleep: 0.4}
    max_concurrent: 1
    sections:
      - {id: b, grid: {y: [-3, -1, 1]}}
""")


def _run(args: list[str], address: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "expgrid", *args, "--address", address], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": ""})  # fmt: skip


def _heard(rows: Path, trial: int) -> int:
    lines = rows.read_text().splitlines() if rows.exists() else []
    return max([json.loads(x)["row"]["epoch"] for x in lines[:-1] if json.loads(x)["trial"] == trial] or [0])


def _ledger(results: Path) -> dict:
    try:
        return next(iter(json.loads((results / "mlflow.json").read_text())["stores"].values()))
    except (OSError, ValueError, StopIteration):
        return {}


def test_a_resumed_trial_continues_its_mlflow_run_with_every_epoch(ray_session, tmp_path):
    address = ray_session.get_runtime_context().gcs_address
    study, results = tmp_path / "study.yaml", tmp_path / "results"
    study.write_text(STUDY)
    driver = _run(["run", str(study), "--results", str(results)], address)
    rows = results / "sections" / "b" / "rows.jsonl"
    deadline = time.monotonic() + 300
    while _heard(rows, 1) < 3 or "1" not in _ledger(results).get("trials", {}).get("b", {}):
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()[0]
        time.sleep(0.1)
    time.sleep(0.2)  # mid-epoch (see test_resume.py)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = _ledger(results)

    resumed = _run(["run", str(study), "--results", str(results), "--resume"], address)
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out
    assert "resuming (1 of 3 trials had ended)" in out, out
    assert "MLflow mirror incomplete" not in out, out
    after = _ledger(results)
    assert after["study"] == before["study"] and after["sections"]["b"] == before["sections"]["b"]
    assert after["trials"]["b"]["1"] == before["trials"]["b"]["1"]  # the interrupted trial's run, reopened

    uri = json.loads((results / "study.json").read_text())["tracking_uri"]
    client = MlflowClient(uri)
    trials = json.loads((results / "sections" / "b" / "trials.json").read_text())
    assert trials[1]["history"][-1]["resumed_from"] >= 2  # it went on from a checkpoint
    for trial in trials:  # `score` is the same whenever an epoch is reported: one point per epoch
        history = client.get_metric_history(after["trials"]["b"][str(trial["index"])], "score")
        assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6], trial["index"]

    # Epochs reported again after the resume differ in `resumed_from`: MLflow cannot drop the
    # earlier value, so sync may replace that run; either way the store then equals the record.
    sync = subprocess.run([sys.executable, "-m", "expgrid", "sync", str(results)], capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert sync.returncode == 0, sync.stdout + sync.stderr
    checks.assert_store_matches(client, results, uri)
    experiment = client.get_experiment_by_name("mlflow-resume").experiment_id
    snapshot = checks.snapshot(client, experiment)
    again = subprocess.run([sys.executable, "-m", "expgrid", "sync", str(results)], capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert "nothing to do" in again.stdout, again.stdout + again.stderr
    assert checks.snapshot(client, experiment) == snapshot
