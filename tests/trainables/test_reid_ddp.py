"""A 2-worker data-parallel re-ID trial (Ray Train, gloo on CPU) inside a Tune section: its
per-epoch metrics reach Tune (the trial record), MLflow and the section's log file."""

from __future__ import annotations

import io
import textwrap

from mlflow.tracking import MlflowClient

from expgrid.runner import RunOptions, prepare, run_study
from trainables.reid.synthetic import write_fake_veri


def test_a_two_worker_reid_trial_reports_every_epoch_to_tune_mlflow_and_the_log(ray_session, write_study, tmp_path):
    data = write_fake_veri(tmp_path / "veri", ids=12, size=(32, 32))
    study, spec = prepare(write_study(textwrap.dedent(f"""
        study: reid-ddp
        trainable: reid
        metric: mAP
        mode: max
        report: [rank1]
        defaults:
          dataset: {{root: {data}, height: 32, width: 32}}
          model: {{name: resnet18, pretrained: false}}
          epochs: 2
          train_batch: 16
          test_batch: 32
          loader_workers: 0
          eval_freq: 1            # mAP at both epochs (by default only the last would rank)
          workers: 2
        resources: {{cpu: 1}}
        sections:
          - {{id: "3.1", name: Learning rate, grid: {{optimizer.lr: [3.0e-4]}}}}
    """)))
    outcome = run_study(study, spec, RunOptions(results_dir=tmp_path / "r", stream=io.StringIO()))
    (trial,) = outcome.sections[0].trials
    assert trial.status == "completed", trial.error
    assert [row["epoch"] for row in trial.history] == [1, 2]
    assert all(0 <= row["mAP"] <= 1 and "loss_htri" in row for row in trial.history)

    client = MlflowClient(outcome.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("reid-ddp").experiment_id], "tags.`expgrid.kind` = 'trial'")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "mAP")] == [1, 2]
    assert [m.value for m in client.get_metric_history(run.info.run_id, "mAP")] == [r["mAP"] for r in trial.history]

    log = (tmp_path / "r" / "logs" / "log_sec3_q1.txt").read_text()
    assert "=== Trial 0 (optimizer.lr=0.0003): completed at epoch 2" in log
    assert log.count("** Results **") == 2 and f"mAP: {100 * trial.history[-1]['mAP']:.1f}%" in log
    assert '"workers": 2' in log
