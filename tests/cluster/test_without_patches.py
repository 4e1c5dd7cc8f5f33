"""The key paths with every patch of cluster/patches.py off (EXPGRID_NO_PATCHES=1): a FIFO
section with a retry, a packed section, ASHA, a data-parallel (2-worker Ray Train) trial, and a
resume after Ctrl-C — all in one driver process with its own local Ray, so that nothing the
test session's driver patched takes part. And the guard that keeps the patches off a Ray they
were not tested on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cluster import patches

KEY_PATHS = textwrap.dedent("""
    study: unpatched
    trainable: toy
    metric: score
    mode: max
    defaults: {epochs: 2}
    resources: {cpu: 1}
    sections:
      - {id: fifo, zip: {x: [0, 1, 2], fail_at_epoch: [2, null, null]}}
      - {id: packed, grid: {x: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]}, fixed: {epochs: 1}}
      - id: asha
        max_concurrent: 1
        grid: {x: [2, -3, -4]}
        fixed: {epochs: 4}
        scheduler: {asha: {grace_period: 1, reduction_factor: 2}}
      - {id: ddp, grid: {y: [-1]}, fixed: {workers: 2}}
""")

RESUME = textwrap.dedent("""
    study: unpatched-resume
    trainable: toy
    metric: score
    defaults: {epochs: 6, sleep: 0.4}
    max_concurrent: 1
    sections:
      - {id: a, grid: {x: [0, 2]}}
""")


@pytest.fixture(scope="module")
def unpatched(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("unpatched")
    (folder / "keypaths.yaml").write_text(KEY_PATHS)
    (folder / "resume.yaml").write_text(RESUME)
    env = {**os.environ, "EXPGRID_NO_PATCHES": "1", "MLFLOW_TRACKING_URI": ""}
    env.pop("RAY_ADDRESS", None)
    driver = Path(__file__).with_name("unpatched_driver.py")
    done = subprocess.run([sys.executable, str(driver), str(folder / "keypaths.yaml"), str(folder / "resume.yaml"),
                           str(folder / "results")], env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("SEEN ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1][len("SEEN "):])


def test_nothing_is_patched_with_expgrid_no_patches(unpatched):
    assert unpatched["in_effect"] == []


def test_fifo_packed_asha_and_data_parallel_sections_run_unpatched(unpatched):
    sections = unpatched["keypaths"]
    fifo = sections["fifo"]
    assert [t["status"] for t in fifo] == ["completed"] * 3
    assert fifo[0]["retries"] == 1 and fifo[0]["epochs"][-1] == 2  # retried from its checkpoint
    packed = sections["packed"]
    assert [t["status"] for t in packed] == ["completed"] * 16 and all(t["epochs"] == [1] for t in packed)
    assert "pack_0000-0001" in unpatched["tune_dirs"]  # two trials per Tune trial
    assert [t["status"] for t in sections["asha"]] == ["completed", "asha_stopped", "asha_stopped"]
    (ddp,) = sections["ddp"]
    assert ddp["status"] == "completed" and ddp["world_size"] == [2, 2]  # the two ranks all-reduced


def test_a_section_stopped_by_ctrl_c_resumes_unpatched(unpatched):
    assert unpatched["interrupted"]
    assert "resuming (0 of 2 trials had ended)" in unpatched["resume_text"]
    (resumed,) = unpatched["resumed"].values()
    assert [t["status"] for t in resumed] == ["completed", "completed"]
    assert all(t["epochs"] == [1, 2, 3, 4, 5, 6] for t in resumed)
    assert resumed[0]["resumed_from"][-1] >= 2  # trial 0 went on from its checkpoint, not from epoch 1


@pytest.mark.parametrize("version, tested", [("2.60.0", True), ("2.60.3", True), ("2.59.0", False),
                                             ("2.61.0", False), ("3.0.0.dev0", False), ("nightly", False), ("", False)])
def test_the_patches_stay_off_a_ray_they_were_not_tested_on(version, tested, monkeypatch):
    monkeypatch.delenv(patches.OFF_ENV, raising=False)  # the suite may run with EXPGRID_NO_PATCHES=1
    assert patches.tested(version) is tested
    assert all(patches.enabled(name, version=version) is tested for name in patches.NAMES)


def test_expgrid_no_patches_switches_all_or_the_named_ones_off(monkeypatch):
    monkeypatch.setenv(patches.OFF_ENV, "unknown")
    assert all(patches.enabled(n, version="2.60.0") for n in patches.NAMES)
    for name in patches.NAMES:
        monkeypatch.setenv(patches.OFF_ENV, f"unknown, {name}")
        assert [n for n in patches.NAMES if patches.enabled(n, version="2.60.0")] == [m for m in patches.NAMES if m != name]
    monkeypatch.setenv(patches.OFF_ENV, "1")
    assert not any(patches.enabled(n, version="2.60.0") for n in patches.NAMES)
    monkeypatch.delenv(patches.OFF_ENV)
    assert all(patches.enabled(n, version="2.60.0") for n in patches.NAMES)
