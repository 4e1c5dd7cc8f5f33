"""The re-ID study's smoke mode: every section of search_spaces/reid_veri776.yaml runs on a
generated VeRi-layout dataset (tiny images, one epoch, the first two trials of each section; the
default run of section 0 is one trial),
through the CLI attached to the test session's Ray (`--address`). Data-parallel re-ID trials
have their own test (tests/trainables/test_reid_ddp.py): in a smoke run section 1 would carry the
winner of a 2-worker vit_b_16 trial into every later section, 12 minutes on 2 CPUs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from trainables.reid.synthetic import write_fake_veri

REPO = Path(__file__).resolve().parents[2]


def test_reid_study_smoke_run_covers_every_section(ray_session, tmp_path):
    data = write_fake_veri(tmp_path / "veri", ids=12, size=(32, 32))
    results = tmp_path / "results"
    address = ray_session.get_runtime_context().gcs_address
    proc = subprocess.run(
        [sys.executable, "-m", "expgrid", "run", "reid_veri776", "--smoke", "--data-root", str(data),
         "--results", str(results), "--address", address],
        capture_output=True, text=True, timeout=1200, cwd=REPO, env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    sections = {}
    for sid in ("0", "1", "2", "3.1", "3.2", "3.3"):
        trials = json.loads((results / "sections" / sid / "trials.json").read_text())
        assert len(trials) == (1 if sid == "0" else 2), (sid, trials)  # section 0: the default run, one trial
        assert all(t["status"] == "completed" for t in trials), (sid, trials)
        assert all(t["history"][-1]["epoch"] == 1 and 0 <= t["history"][-1]["mAP"] <= 1 for t in trials)
        sections[sid] = trials
    assert sections["0"][0]["swept"] == {} and sections["0"][0]["config"]["model"]["name"] == "resnet50_fc512"
    # Section 1: its first two models; later sections start from the best of the earlier ones.
    assert [t["swept"]["model.name"] for t in sections["1"]] == ["mobilenet_v3_small", "resnet18"]
    best_model = json.loads((results / "sections" / "1" / "section.json").read_text())["best"]["swept"]
    assert all(t["config"]["model"]["name"] == best_model["model.name"] for t in sections["3.3"])
    assert [t["swept"]["train_batch"] for t in sections["3.2"]] == [8, 16]

    # Per-epoch metrics reached MLflow.
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reid_veri776").experiment_id
    (run,) = client.search_runs([experiment], "tags.`expgrid.section_id` = '1' and tags.`expgrid.trial_index` = '1'")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "mAP")] == [1]

    # The coursework's log files: one per section, with the trial blocks and the test results.
    logs = sorted(p.name for p in (results / "logs").iterdir())
    assert logs == ["log_sec0.txt", "log_sec1.txt", "log_sec2.txt", "log_sec3_q1.txt", "log_sec3_q2.txt", "log_sec3_q3.txt"]
    text = (results / "logs" / "log_sec3_q1.txt").read_text()
    assert text.count("=== Trial") == 2 and text.count("** Results **") == 2 and "Rank-1  :" in text
    assert '"lr": 3e-05' in text and "Best by mAP: trial" in text
