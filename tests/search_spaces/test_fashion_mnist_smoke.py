"""fashion_mnist.yaml in smoke mode: every section runs its first two trials for one epoch on
tiny generated Fashion-MNIST IDX files, through the CLI attached to the test session's Ray;
3.4 and 3.4e select each trial's epoch by the lowest validation loss."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from trainables.classification.synthetic import write_fake_fashion_mnist

REPO = Path(__file__).resolve().parents[2]


def test_fashion_mnist_study_smoke(ray_session, tmp_path):
    root, results = tmp_path / "data", tmp_path / "r"
    write_fake_fashion_mnist(root, n_train=200, n_test=50)
    proc = subprocess.run(
        [sys.executable, "-m", "expgrid", "run", "fashion_mnist", "--smoke", "--data-root", str(root),
         "--results", str(results), "--address", ray_session.get_runtime_context().gcs_address],
        capture_output=True, text=True, timeout=1200, cwd=REPO, env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sections = sorted(p.name for p in (results / "sections").iterdir())
    assert sections == ["3.2", "3.3", "3.4", "3.4e", "3.5"]
    for sid in sections:
        trials = json.loads((results / "sections" / sid / "trials.json").read_text())
        assert len(trials) == (1 if sid == "3.4e" else 2) and all(t["status"] == "completed" for t in trials), sid
    for sid in ("3.4", "3.4e"):
        saved = json.loads((results / "sections" / sid / "section.json").read_text())
        assert saved["select"] == {"best_epoch": "val_loss", "mode": "min"}
        assert saved["best"]["metrics"]["epoch"] == 1 and "val_loss" in saved["best"]["metrics"]
        table = (results / "sections" / sid / "report" / "table.md").read_text()
        assert "Each trial at the epoch of lowest `val_loss` (*epoch*)" in table
    assert "3.4e Early stopping (patience 5): best " in proc.stdout and "at epoch 1, lowest val_loss" in proc.stdout
