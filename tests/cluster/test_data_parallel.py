"""Data-parallel trials: Ray Train (gloo, 2 CPU workers) inside Tune trials on a real local Ray."""

from __future__ import annotations

import io
import textwrap
import time

from mlflow.tracking import MlflowClient

from expgrid.runner import RunOptions, prepare, run_study


def test_a_section_of_two_worker_trials_under_asha_completes_and_releases_workers(ray_session, write_study, tmp_path):
    # 2 CPUs, trials of 2 workers at 1 CPU: one trial at a time, so each next trial can only
    # start once the previous one (completed, or cut by ASHA) has released its workers.
    # Trial 0 crashes once at epoch 3: Train restarts its workers from the epoch-2 checkpoint.
    # Epochs take 0.3 s, as real ones take longer still: Ray Train registers a reported
    # checkpoint asynchronously, and a crash at once after the report (sleep 0) could restart
    # from the checkpoint before it (seen once in CI: resumed from epoch 1).
    study, spec = prepare(write_study(textwrap.dedent("""
        study: ddp
        trainable: toy
        metric: score
        mode: max
        defaults: {epochs: 4, workers: 2, sleep: 0.3}
        resources: {cpu: 1}
        sections:
          - id: a
            zip: {x: [2, -3, -4], fail_at_epoch: [3, null, null]}
            scheduler: {asha: {grace_period: 1, reduction_factor: 2}}
    """)))
    outcome = run_study(study, spec, RunOptions(results_dir=tmp_path / "r", stream=io.StringIO()))
    trials = outcome.sections[0].trials
    assert [t.status for t in trials] == ["completed", "asha_stopped", "asha_stopped"]
    assert all(row["world_size"] == 2 for t in trials for row in t.history)  # the ranks all-reduced
    first = trials[0]
    assert [row["epoch"] for row in first.history] == [1, 2, 3, 4]
    assert first.history[-1]["resumed_from"] == 2 and first.retries == 1
    assert [t.last_epoch for t in trials[1:]] == [1, 1]
    # One at a time: each trial started after the previous one ended.
    assert trials[0].ended <= trials[1].started and trials[1].ended <= trials[2].started
    assert outcome.sections[0].best.index == 0

    client = MlflowClient(outcome.tracking_uri)
    run = client.search_runs([client.get_experiment_by_name("ddp").experiment_id],
                             "tags.`expgrid.trial_index` = '0'")[0]  # fmt: skip
    assert [m.step for m in client.get_metric_history(run.info.run_id, "score")] == [1, 2, 3, 4]
    assert run.data.tags["expgrid.retries"] == "1"

    # Every Train run gave its workers' reservations back, the two cut by ASHA included (Ray
    # Train removes a dead controller's placement group from a watcher actor, within seconds).
    from ray.util.state import list_placement_groups

    address = ray_session.get_runtime_context().gcs_address
    deadline = time.monotonic() + 120
    while kept := [pg for pg in list_placement_groups(address=address) if pg.state != "REMOVED"]:
        assert time.monotonic() < deadline, f"placement groups still held: {kept}"
        time.sleep(0.5)
