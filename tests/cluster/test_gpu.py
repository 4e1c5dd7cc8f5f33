import io

import pytest

from cluster.gpu import gpu_fraction, resolve, trials_per_gpu
from expgrid.planning import TrialPlan
from expgrid.study import Resources
from expgrid.trainable_lookup import resolve_trainable

GiB = 2**30


def test_trials_per_gpu_leaves_headroom():
    assert trials_per_gpu(2 * GiB, 80 * GiB) == 34  # 68 GiB usable of 80
    assert trials_per_gpu(10 * GiB, 16 * GiB) == 1
    assert trials_per_gpu(30 * GiB, 16 * GiB) == 1  # too big to share: a whole GPU
    assert gpu_fraction(3 * GiB, 16 * GiB) == pytest.approx(0.25)  # 13.6 GiB usable → 4 trials
    assert gpu_fraction(2 * GiB, 80 * GiB) * 34 <= 1.0


def test_a_tiny_trial_still_reserves_a_share():
    # 45 MiB on a 141 GiB GPU fits 2,727 times; rounded down to 1/1000 that was a share of 0
    assert gpu_fraction(45 * 2**20, 141 * GiB) == pytest.approx(0.001)


def test_gpu_auto_packs_by_the_largest_measured_trial():
    measured = []

    def fake_measure(ref, config, data):
        measured.append((config["model"]["name"], config["batch_size"]))
        peak = {16: 1 * GiB, 64: 3 * GiB}[config["batch_size"]]
        return peak, 16 * GiB

    spec = resolve_trainable("classify")
    plans = [TrialPlan(i, {}, {"model": {"name": "mlp"}, "batch_size": b}) for i, b in enumerate([16, 64, 64, 16])]
    out = io.StringIO()
    res = resolve(Resources(cpu=1, gpu="auto"), spec, plans, {"cpu": 8, "gpu": 1}, measure=fake_measure, stream=out)
    assert measured == [("mlp", 16), ("mlp", 64)]  # one dry run per model × batch size
    assert res == {"cpu": 1, "gpu": 0.25} and "4 trials per GPU" in out.getvalue()


def test_gpu_auto_without_gpus_runs_cpu_trials():
    out = io.StringIO()
    res = resolve(Resources(cpu=2, gpu="auto"), None, [], {"cpu": 2, "gpu": 0}, stream=out)
    assert res == {"cpu": 2, "gpu": 0.0} and "no GPU" in out.getvalue()
