"""A driver killed with SIGKILL mid-study: `expgrid run --resume` keeps the finished section and
the finished trials, continues the interrupted ones from their checkpoints, and ends with the
same result as an uninterrupted run. The drivers attach to the test session's Ray (--address),
so the kill leaves no orphaned Ray processes behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

STUDY = textwrap.dedent("""
    study: resume
    trainable: toy
    metric: score
    mode: max
    defaults: {epochs: 6, sleep: 0.4}
    max_concurrent: 1
    sections:
      - {id: a, grid: {x: [0, 2]}, fixed: {sleep: 0}}
      - {id: b, grid: {y: [-3, -1, 0, 1, 2]}}
""")


def _run(args: list[str], address: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "expgrid", "run", *args, "--address", address],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "MLFLOW_TRACKING_URI": ""}, **kwargs)  # fmt: skip


def _best(results: Path, section: str) -> dict:
    saved = json.loads((results / "sections" / section / "section.json").read_text())["best"]
    return {"swept": saved["swept"], "metrics": saved["metrics"]}


def test_a_killed_driver_resumes_and_ends_as_an_uninterrupted_run(ray_session, tmp_path):
    address = ray_session.get_runtime_context().gcs_address
    study = tmp_path / "resume.yaml"
    study.write_text(STUDY)
    killed, whole = tmp_path / "killed", tmp_path / "whole"

    driver = _run([str(study), "--results", str(killed)], address)
    rows = killed / "sections" / "b" / "rows.jsonl"

    def third_trial_epoch() -> int:  # section b's third trial, as far as the driver has heard
        lines = rows.read_text().splitlines() if rows.exists() else []
        return max([json.loads(x)["row"]["epoch"] for x in lines[:-1] if json.loads(x)["trial"] == 2] or [0])

    deadline = time.monotonic() + 300
    while third_trial_epoch() < 3:
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()[0]
        time.sleep(0.1)
    # Mid-epoch, not just as a checkpoint arrives: Tune deletes the checkpoint before last as it
    # registers a new one and saves its own state a moment later; a kill in between leaves a
    # state pointing at a deleted checkpoint (a Ray limitation, see the README).
    time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert not (killed / "sections" / "b" / "section.json").exists()
    # As if the kill had come while the driver wrote trial 1's end: its record is cut short.
    ends = killed / "sections" / "b" / "trials.jsonl"
    text = ends.read_text()
    ends.write_text(text[: text.rindex("\n", 0, -1) + 50])
    # ...and as Tune replaced trial 2's checkpoint by a newer one (deleting the one its saved
    # state still names): Tune cannot restore it, expgrid goes on from the newer one.
    (checkpoint,) = (killed / "tune" / "section-b" / "trial_0002").glob("checkpoint_*")
    newer = checkpoint.with_name(f"checkpoint_{int(checkpoint.name.split('_')[1]) + 1:06d}")
    checkpoint.rename(newer)

    resumed = _run([str(study), "--results", str(killed), "--resume"], address)
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out
    assert "a Section a: finished earlier" in out
    assert "b Section b: resuming (2 of 5 trials had ended)" in out, out
    assert f"warning: {ends}: trial 1's record rebuilt from rows.jsonl (completed)" in out
    assert (f"warning: section b: trial 2's checkpoint in Tune's saved state was gone (the driver was killed as Tune "
            f"replaced it); it goes on from its checkpoint {newer.name}") in out, out

    trials = json.loads((killed / "sections" / "b" / "trials.json").read_text())
    assert [t["status"] for t in trials] == ["completed"] * 5
    assert all([r["epoch"] for r in t["history"]] == [1, 2, 3, 4, 5, 6] for t in trials)
    # The trial running at the kill went on from a checkpoint (one per epoch here), not epoch 1;
    # the two that had ended were not run again.
    assert trials[2]["history"][-1]["resumed_from"] >= 2
    assert [t["history"][-1]["resumed_from"] for t in trials[:2]] == [0, 0]
    log = (killed / "logs" / "log_secb.txt").read_text()
    assert [log.count(f"=== Trial {i} ") for i in range(5)] == [1] * 5  # those ended before the kill too

    baseline = _run([str(study), "--results", str(whole)], address)
    out = baseline.communicate(timeout=600)[0]
    assert baseline.returncode == 0, out
    assert _best(killed, "a") == _best(whole, "a") and _best(killed, "b") == _best(whole, "b")
