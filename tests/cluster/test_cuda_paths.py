"""The paths that need a real GPU: fractional packing, AMP bf16, nccl. Marked ``cuda`` and
skipped without one (tests/conftest.py); ``bench/gpu_check.py`` measures the same paths.

The data-parallel probe is ``bench.gpu_check:ddp_probe`` (an MLP trained with
DistributedDataParallel on generated images; it leaves ``backend.json``: backend, device, world
size and the CUDA devices its process sees)."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from expgrid import records
from expgrid.runner import RunOptions, prepare, run_study

pytestmark = pytest.mark.cuda
REPO = Path(__file__).resolve().parents[2]
PROBE = "bench.gpu_check:ddp_probe"


def _probe_study(write_study, body: str) -> Path:
    return write_study(
        f"study: cuda-probe\ntrainable: {PROBE}\nmetric: val_accuracy\nmode: max\n" + textwrap.dedent(body)
    )


def _facts(results: Path, section_id: str, trial: records.TrialRecord) -> dict:
    return json.loads((records.trial_dir(results, section_id, trial.index) / "backend.json").read_text())


def test_quarter_gpu_trials_share_one_real_gpu_four_at_a_time(ray_session, write_study, tmp_path):
    # 2 CPUs at 0.5 each would allow 4; so would the GPU at 0.25: the 2-s epochs make them overlap.
    study, spec = prepare(
        _probe_study(
            write_study,
            """
        defaults: {train_size: 2000, epochs: 2, sleep: 2}
        resources: {cpu: 0.5, gpu: 0.25}
        sections:
          - {id: p, grid: {seed: [0, 1, 2, 3]}}
    """,
        )
    )
    outcome = run_study(study, spec, RunOptions(results_dir=tmp_path / "r", stream=io.StringIO()))
    trials = outcome.sections[0].trials
    assert [t.status for t in trials] == ["completed"] * 4
    facts = [_facts(tmp_path / "r", "p", t) for t in trials]
    assert all(f["cuda"] and f["device"].startswith("cuda") for f in facts)  # each trial trained on the GPU
    assert len({f["visible"] for f in facts}) == 1  # the same one GPU, shared
    from bench.gpu_check import peak_concurrency

    assert peak_concurrency(trials) == 4


def test_bf16_autocast_changes_a_cuda_trial_and_keeps_it_finite():
    import torch

    from expgrid.config import merge
    from expgrid.reporter import run_locally
    from trainables.classification.train import CLASSIFY_DEFAULTS, amp_dtype, classify, load_data

    assert amp_dtype("bfloat16", torch.device("cuda")) is torch.bfloat16
    assert amp_dtype(True, torch.device("cuda")) in (torch.bfloat16, torch.float16)
    cfg = merge(CLASSIFY_DEFAULTS, {
        "dataset": {"name": "synthetic", "shape": [3, 32, 32], "train_size": 512, "val_size": 256},
        "model": {"name": "resnet20"}, "batch_size": 64, "epochs": 2,
    })  # fmt: skip
    data = load_data(cfg)
    full = run_locally(classify, cfg, data).history
    bf16 = run_locally(classify, merge(cfg, {"amp": "bfloat16"}), data).history
    assert [r["epoch"] for r in bf16] == [1, 2]
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in bf16)
    # Same seed, same data: only autocast can make the losses differ (on the CPU they are equal).
    assert [r["train_loss"] for r in bf16] != [r["train_loss"] for r in full]


def test_a_one_worker_ray_train_run_on_the_gpu_uses_nccl(tmp_path):
    """What a data-parallel trial's workers get on a GPU (cluster/train_run.py: use_gpu when the
    workers hold GPUs): a one-worker TorchTrainer, in a process with its own local Ray."""
    out = tmp_path / "facts.json"
    snippet = "import sys; from bench.gpu_check import _train_probe_main; _train_probe_main(sys.argv[1:])"
    proc = subprocess.run([sys.executable, "-c", snippet, str(out), "2000", "2", "1", "2"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    facts = json.loads(out.read_text())
    assert facts["backend"] == "nccl" and facts["world_size"] == 1 and facts["device"].startswith("cuda")
    assert 0.0 <= facts["val_accuracy"] <= 1.0


def test_a_two_worker_trial_through_expgrid_uses_nccl(ray_session, write_study, tmp_path):
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs: nccl refuses two ranks on one GPU, and expgrid runs Ray Train only for workers > 1")
    study, spec = prepare(
        _probe_study(
            write_study,
            """
        defaults: {train_size: 2000, epochs: 2, workers: 2}
        resources: {cpu: 1, gpu: 1}
        sections:
          - {id: d, grid: {seed: [0]}}
    """,
        )
    )
    outcome = run_study(study, spec, RunOptions(results_dir=tmp_path / "r", stream=io.StringIO()))
    trial = outcome.sections[0].trials[0]
    assert trial.status == "completed", trial.error
    facts = _facts(tmp_path / "r", "d", trial)
    assert facts["backend"] == "nccl" and facts["world_size"] == 2
    assert all(row["world_size"] == 2 and row["nccl"] == 1.0 for row in trial.history)
