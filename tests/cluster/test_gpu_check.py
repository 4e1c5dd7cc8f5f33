"""bench/gpu_check.py without a GPU and without Ray: the study files it writes are valid for
expgrid (every size set), it reads `gpu: auto`'s line as cluster/gpu.py prints it, its
probe trains in-process, and it refuses to run without CUDA unless asked for a dry run.

The dry run itself (`bench/gpu_check.py --cpu-dry-run [--quick]`: three expgrid runs and a Ray
Train run) is not part of the suite: on the 2-CPU development machine (load 30-55) the full one
took 843 s and `--quick --parts b` alone 129 s."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_check
from cluster.gpu import resolve
from expgrid.planning import TrialPlan
from expgrid.records import TrialRecord
from expgrid.reporter import LocalSession, active
from expgrid.runner import prepare
from expgrid.study import Resources
from expgrid.trainable_lookup import resolve_trainable

REPO = Path(__file__).resolve().parents[2]
GiB = 2**30
SIZES = {"gpu": gpu_check.GPU_SIZES, "dry": gpu_check.DRY_SIZES, "quick": gpu_check.QUICK_SIZES}


@pytest.mark.parametrize("sizes", SIZES.values(), ids=SIZES.keys())
def test_the_study_files_it_writes_pass_expgrids_checks(sizes, write_study):
    # prepare: the file's parser, the planner and the trainable's own checks, as `expgrid validate`.
    packing, _ = prepare(write_study(gpu_check.packing_study(sizes), "packing.yaml"))
    assert [s.id for s in packing.sections] == ["packed", "alone", "amp"]
    assert [packing.resources_of(s).gpu for s in packing.sections] == [0.125, 1.0, 1.0]
    assert [s.num_trials for s in packing.sections] == [8, 8, 2]
    auto, _ = prepare(write_study(gpu_check.auto_study(sizes), "auto.yaml"))
    assert [auto.resources_of(s).gpu for s in auto.sections] == ["auto", "auto"]
    for gpu in (0.0, 1.0):
        ddp, spec = prepare(write_study(gpu_check.ddp_study(sizes, gpu), "ddp.yaml"))
        assert ddp.resources_of(ddp.sections[0]).gpu == gpu and spec.ref == gpu_check.PROBE_TRAINABLE


def test_it_reads_gpu_autos_line_as_cluster_gpu_prints_it():
    def measure(ref, config, data):  # a trial's peak, as the whole-GPU dry run would return it
        return {32: 3 * GiB, 256: 40 * 2**20}[config["batch_size"]], 16 * GiB

    spec, out = resolve_trainable("classify"), io.StringIO()
    for batch in (32, 256):
        plans = [TrialPlan(0, {}, {"model": {"name": "mlp"}, "batch_size": batch})]
        resolve(Resources(cpu=1, gpu="auto"), spec, plans, {"cpu": 8, "gpu": 1}, measure=measure, stream=out)
    resolve(Resources(cpu=1, gpu="auto"), spec, [], {"cpu": 8, "gpu": 0}, stream=out)
    assert gpu_check.auto_lines("  progress line\n" + out.getvalue()) == [
        {"gpu": True, "peak_mib": 3072, "total_mib": 16384, "per_gpu": 4, "share": 0.25},
        {"gpu": True, "peak_mib": 40, "total_mib": 16384, "per_gpu": 348, "share": 0.002},
        {"gpu": False},
    ]


def test_peak_concurrency_and_steady_epochs_from_trial_records():
    def trial(start, end, *seconds):
        return TrialRecord(0, {}, {}, started=start, ended=end, history=[{"seconds": s} for s in seconds])

    assert gpu_check.peak_concurrency([trial(0, 2), trial(1, 3), trial(2, 4), trial(2.5, 5)]) == 3
    assert gpu_check.peak_concurrency([trial(0, 1), trial(1, 2)]) == 1  # one ends as the next starts
    assert gpu_check.steady_epoch_seconds(trial(0, 1, 9.0, 2.0, 4.0)) == 3.0  # the first epoch left out
    assert gpu_check.steady_epoch_seconds(trial(0, 1, 5.0)) == 5.0


def test_the_probe_trains_in_process_without_torch_distributed():
    session = LocalSession()
    with active(session):
        facts = gpu_check._probe_rank({"train_size": 400, "epochs": 2, "seed": 0})
    assert facts["backend"] == "none" and facts["world_size"] == 1
    assert [row["epoch"] for row in session.history] == [1, 2]
    assert session.history[-1]["val_accuracy"] == facts["val_accuracy"] > 0.5  # 10 classes: chance is 0.1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--parts", "a,x"], "error: --parts: expected a comma-separated subset of a,b,c,d, got 'a,x'"),
        (["--quick"], "error: --quick: expected together with --cpu-dry-run, got it alone"),
    ],
)
def test_bad_options_get_one_line_and_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.parse_args(args)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == message


def test_without_cuda_it_refuses_unless_asked_for_a_dry_run(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check would run")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: CUDA: expected a CUDA GPU (torch.cuda.is_available()), got none; "
        "run with --cpu-dry-run to exercise the check on the CPU"
    ]
    assert list(tmp_path.iterdir()) == []  # nothing started or written
