"""Scheduling on a real local Ray: ASHA cuts, patience stopping, divergence, retries, packing."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from expgrid.errors import StudyFailed
from expgrid.runner import RunOptions, prepare, run_study

HEAD = "trainable: toy\nmetric: score\nmode: max\n"


def _run(write_study, tmp_path, text, **options):
    study, spec = prepare(write_study(text))
    return run_study(study, spec, RunOptions(results_dir=tmp_path / "r", stream=io.StringIO(), **options))


def test_asha_cuts_weak_trials_and_records_their_stop_epoch(ray_session, write_study, tmp_path):
    # Trials run one at a time in grid order, so the strong first trial sets each rung's bar.
    outcome = _run(write_study, tmp_path, HEAD + textwrap.dedent("""
        study: asha
        defaults: {epochs: 9}
        max_concurrent: 1
        sections:
          - id: a
            grid: {x: [2, 1.5, -2, -4, -6]}
            scheduler: {asha: {grace_period: 1, reduction_factor: 3}}
    """))
    trials = outcome.sections[0].trials
    assert trials[0].status == "completed" and trials[0].last_epoch == 9
    cut = [t for t in trials if t.status == "asha_stopped"]
    assert len(cut) >= 3 and all(t.last_epoch < 9 for t in cut)
    assert outcome.sections[0].best.swept == {"x": 2}
    assert sum(t.last_epoch for t in trials) < 0.6 * 9 * len(trials)


def test_patience_stops_a_trial_whose_loss_rises_and_best_epoch_represents_it(ray_session, write_study, tmp_path):
    outcome = _run(write_study, tmp_path, textwrap.dedent("""
        study: patience
        trainable: toy
        metric: loss
        mode: min
        defaults: {epochs: 12, rise_after: 3}
        sections:
          - id: es
            grid: {x: [2]}
            early_stopping: {monitor: loss, mode: min, patience: 2}
            select: best_epoch
    """))
    trial = outcome.sections[0].trials[0]
    assert trial.status == "early_stopped"
    assert [row["epoch"] for row in trial.history] == [1, 2, 3, 4, 5]  # 4 and 5 did not improve
    assert trial.selected("loss", "min", "best_epoch")["epoch"] == 3
    # that epoch's checkpoint is kept beside the latest
    kept = sorted((tmp_path / "r" / "tune" / "section-es").glob("trial_*/checkpoint_*/expgrid_state.pkl"))
    epochs = {pickle.loads(p.read_bytes())["user"]["epoch"] for p in kept}
    assert 3 in epochs


def test_a_diverged_trial_is_marked_and_its_section_completes(ray_session, write_study, tmp_path):
    outcome = _run(write_study, tmp_path, HEAD + textwrap.dedent("""
        study: nan
        defaults: {epochs: 4}
        sections:
          - id: d
            grid: {nan_at_epoch: [null, 2]}
    """))
    ok, bad = outcome.sections[0].trials
    assert ok.status == "completed" and bad.status == "diverged" and bad.last_epoch == 2
    client = MlflowClient(outcome.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("nan").experiment_id], "tags.`expgrid.status` = 'diverged'")
    assert len(runs) == 1 and runs[0].info.status == "FAILED"


def test_a_section_where_every_trial_diverged_stops_the_study(ray_session, write_study, tmp_path):
    with pytest.raises(StudyFailed, match="section d .* none of its 2 trials"):
        _run(write_study, tmp_path, HEAD + textwrap.dedent("""
            study: all-nan
            defaults: {epochs: 3, nan_at_epoch: 1}
            sections:
              - {id: d, grid: {x: [0, 1]}}
              - {id: e, grid: {y: [0]}}
        """))
    assert not (tmp_path / "r" / "sections" / "e").exists()


def test_a_crashed_trial_resumes_from_its_checkpoint(ray_session, write_study, tmp_path):
    outcome = _run(write_study, tmp_path, HEAD + textwrap.dedent("""
        study: retry
        defaults: {epochs: 5, fail_at_epoch: 3}
        max_failures: 1
        sections:
          - {id: r, grid: {x: [2]}}
    """))
    trial = outcome.sections[0].trials[0]
    assert trial.status == "completed" and trial.retries == 1
    assert [row["epoch"] for row in trial.history] == [1, 2, 3, 4, 5]  # not restarted from 1
    assert trial.history[-1]["resumed_from"] == 2


def test_a_section_larger_than_the_cluster_is_refused_with_the_numbers(ray_session, write_study, tmp_path):
    with pytest.raises(StudyFailed, match=r"asks for 64 CPU and 0 GPU.*largest node: 2 CPU"):
        _run(write_study, tmp_path, HEAD + "study: big\nresources: {cpu: 64}\nsections:\n  - {id: a, grid: {x: [1]}}\n")


PACKING_SCRIPT = """
import io, json, sys
from pathlib import Path
import ray
ray.init(num_cpus=4, num_gpus=1, log_to_driver=False)
from expgrid.runner import RunOptions, prepare, run_study
study, spec = prepare(sys.argv[1])
outcome = run_study(study, spec, RunOptions(results_dir=sys.argv[2], stream=io.StringIO()))
# A file, not stdout: Ray's own processes may print to stdout too.
Path(sys.argv[3]).write_text(json.dumps([[t.started, t.ended] for t in outcome.sections[0].trials]))
"""


def test_quarter_gpu_trials_run_four_at_a_time(write_study, tmp_path):
    """Its own Ray (4 CPUs, 1 GPU declared on this CPU machine), in a subprocess."""
    path = write_study(HEAD + textwrap.dedent("""
        study: pack
        defaults: {epochs: 2, sleep: 1.5}
        resources: {cpu: 0.5, gpu: 0.25}
        sections:
          - {id: p, grid: {x: [0, 1, 2, 3, 4, 5, 6, 7]}}
    """))
    spans_file = tmp_path / "spans.json"
    proc = subprocess.run([sys.executable, "-c", PACKING_SCRIPT, str(path), str(tmp_path / "r"), str(spans_file)],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    spans = json.loads(spans_file.read_text())
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 4  # the GPU, not the 4 CPUs (8 × 0.5 would allow 8), limits the section


def test_many_small_fifo_trials_run_in_packs_with_per_trial_records_and_retries(ray_session, write_study, tmp_path):
    # 16 trials on 2 CPUs: packs of 2 (4 packs per slot). Trial 5 crashes once at epoch 3.
    fails = [None] * 16
    fails[5] = 3
    outcome = _run(write_study, tmp_path, HEAD + textwrap.dedent(f"""
        study: packs
        defaults: {{epochs: 5}}
        max_failures: 1
        sections:
          - id: p
            zip: {{x: {[i / 4 for i in range(16)]}, fail_at_epoch: {json.dumps(fails)}}}
    """))
    trials = outcome.sections[0].trials
    packs = sorted(p.name for p in (tmp_path / "r" / "tune" / "section-p").glob("pack_*"))
    assert packs == [f"pack_{i:04d}-{i + 1:04d}" for i in range(0, 16, 2)]
    assert all(t.status == "completed" for t in trials)
    assert all([row["epoch"] for row in t.history] == [1, 2, 3, 4, 5] for t in trials)
    assert all(t.started <= t.ended for t in trials)
    crashed = trials[5]
    assert crashed.retries == 1 and crashed.history[-1]["resumed_from"] == 2  # from its checkpoint
    assert sum(t.retries for t in trials) == 1
    assert outcome.sections[0].best is max(trials, key=lambda t: t.history[-1]["score"])
    client = MlflowClient(outcome.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("packs").experiment_id],
                              "tags.`expgrid.kind` = 'trial'")  # fmt: skip
    assert len(runs) == 16 and {r.info.status for r in runs} == {"FINISHED"}


def test_a_packed_trial_that_keeps_failing_is_recorded_and_its_pack_goes_on(ray_session, write_study, tmp_path):
    outcome = _run(write_study, tmp_path, HEAD + textwrap.dedent("""
        study: packfail
        defaults: {epochs: 3}
        max_failures: 0
        sections:
          - id: p
            zip: {x: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
                  fail_at_epoch: [null, 2, null, null, null, null, null, null, null, null, null, null, null, null, null, null]}
    """))
    trials = outcome.sections[0].trials
    assert trials[1].status == "failed" and "failing on purpose at epoch 2" in trials[1].error
    assert [row["epoch"] for row in trials[1].history] == [1]
    assert trials[0].status == trials[2].status == "completed"  # its pack-mate ran on
    assert sum(t.status == "completed" for t in trials) == 15


def test_checkpoints_go_to_the_storage_path_given(ray_session, write_study, tmp_path):
    outcome = _run(write_study, tmp_path, HEAD + "study: store\nsections:\n  - {id: a, grid: {x: [1]}}\n",
                   storage=str(tmp_path / "shared"))  # fmt: skip
    assert outcome.sections[0].trials[0].status == "completed"
    assert (tmp_path / "shared" / "section-a" / "trial_0000").is_dir()
    assert not (tmp_path / "r" / "tune").exists()
