"""A results directory on a filesystem that fills up mid-study (a small tmpfs): the run ends with
one line naming the path and the OS error, exit 1, no temporary file left behind; once there is
room, `--resume` ends with the summary an uninterrupted run gives."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

STUDY = textwrap.dedent("""
    study: disk-full
    trainable: toy
    metric: score
    mode: max
    defaults: {epochs: 30, sleep: 0.02, artifacts: true}
    sections:
      - {id: a, grid: {x: [0, 1, 2, 3]}}
      - {id: b, grid: {y: [-3, -1, 0, 1, 2, 3]}}
""")


@pytest.fixture
def small_filesystem(tmp_path):
    """A 256 KiB tmpfs (root only: skipped, with the reason, where mounting is not allowed)."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.strip() or 'mount failed'})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _run(study: Path, results: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    # MLflow's store on the roomy disk: what fills up is the results directory itself.
    return subprocess.run([sys.executable, "-m", "expgrid", "run", str(study), "--results", str(results),
                           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", *extra],
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def _summary(results: Path) -> list[dict[str, str]]:
    rows = csv.DictReader(io.StringIO((results / "report" / "summary.csv").read_text()))
    return [{k: v for k, v in row.items() if k not in ("cpu_hours", "gpu_hours")} for row in rows]


def test_a_full_disk_ends_the_run_with_one_line_and_resume_finishes_it(small_filesystem, ray_session, tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(STUDY)
    address = ray_session.get_runtime_context().gcs_address
    results = small_filesystem / "results"

    full = _run(study, results, tmp_path, "--address", address)
    assert full.returncode == 1, full.stdout + full.stderr
    lines = [line for line in full.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, full.stderr
    assert lines[0].startswith(f"error: {results}") and "No space left on device" in lines[0], lines
    assert lines[0].endswith("free some space, then run the same command with --resume")
    assert "Traceback" not in full.stdout
    assert [p for p in results.rglob("*") if p.name.endswith(".tmp")] == []  # no half-written record

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_filesystem)], check=True)
    resumed = _run(study, results, tmp_path, "--address", address, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    whole = _run(study, tmp_path / "whole", tmp_path, "--address", address)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert _summary(results) == _summary(tmp_path / "whole")
