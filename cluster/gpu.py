"""GPU sizing: how much of a GPU one trial reserves.

``resources: {gpu: 0.25}`` packs four trials per GPU as given. ``gpu: auto`` measures one trial's
peak CUDA memory in a short dry run (one epoch, per distinct model × batch size of the section)
and packs as many trials per GPU as fit in its memory less a headroom. On a cluster without
GPUs, ``auto`` runs CPU trials.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from typing import Any, TextIO

from expgrid.study import Resources
from expgrid.trainable_spec import ships_by_value

HEADROOM = 0.15  # share of GPU memory left free: allocator fragmentation, CUDA context, spikes
# The smallest share is 1/1000: a tiny trial (a 45 MiB MLP on a 141 GiB GPU would fit 2,700
# times) must still reserve some GPU, or Ray would not count it against the GPU at all.
MAX_TRIALS_PER_GPU = 1000

# measure(spec_ref, config, data) -> (peak bytes of one trial, total bytes of the GPU)
Measure = Callable[[str, dict[str, Any], Any], tuple[int, int]]


def trials_per_gpu(peak_bytes: int, gpu_bytes: int, headroom: float = HEADROOM) -> int:
    """How many trials of ``peak_bytes`` fit together on a GPU of ``gpu_bytes`` (at least 1)."""
    if peak_bytes <= 0:
        raise ValueError(f"peak memory must be positive, got {peak_bytes}")
    usable = gpu_bytes * (1.0 - headroom)
    return max(1, math.floor(usable / peak_bytes))


def gpu_fraction(peak_bytes: int, gpu_bytes: int, headroom: float = HEADROOM) -> float:
    """The GPU share to reserve per trial: 1 / trials_per_gpu, rounded down to 1/1000 so that
    Ray's fixed-point GPU accounting never rounds n shares above one GPU."""
    n = min(trials_per_gpu(peak_bytes, gpu_bytes, headroom), MAX_TRIALS_PER_GPU)
    return math.floor(1000 / n) / 1000


def resolve(
    resources: Resources,
    spec: Any,
    plans: list[Any],
    available: dict[str, float],
    measure: Measure | None = None,
    data_for: Callable[[Any], Any] | None = None,
    stream: TextIO | None = None,
) -> dict[str, float]:
    """Ray resources per trial for a section, measuring ``gpu: auto`` when there are GPUs."""
    if resources.gpu != "auto":
        return resources.as_ray()
    out = stream or sys.stdout
    if available.get("gpu", 0.0) <= 0:
        print("  gpu: auto — this cluster has no GPU; trials run on CPU", file=out)
        return {"cpu": resources.cpu, "gpu": 0.0}
    if measure is None:
        measure = measure_gpu_peak
    peaks = []
    seen: set[str] = set()
    for plan in plans:
        key = json.dumps([plan.config.get("model"), plan.config.get("batch_size")], sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        code = spec.function() if ships_by_value(spec) else spec.ref  # a notebook's function: itself
        peak, total = measure(code, plan.config, data_for(plan) if data_for else None)
        peaks.append((peak, total))
    peak, total = max(peaks)
    share = gpu_fraction(peak, total)
    print(f"  gpu: auto — peak {peak / 2**20:.0f} MiB of {total / 2**20:.0f} MiB per trial → "
          f"{trials_per_gpu(peak, total)} trials per GPU (gpu {share:g} each)", file=out)  # fmt: skip
    return {"cpu": resources.cpu, "gpu": share}


def dry_run_peak(ref: Any, config: dict[str, Any], data: Any) -> tuple[int, int]:
    """Run one epoch of the trainable on this process's GPU; return (peak bytes, GPU bytes).

    Runs inside a Ray task that holds one whole GPU (see ``measure_gpu_peak``)."""
    import torch

    import expgrid.reporter as reporter
    from expgrid.trainable_spec import import_ref

    class _OneEpoch(reporter.LocalSession):
        def _deliver(self, rows: list[dict[str, Any]], state: Any) -> None:
            raise reporter.StopTrial("dry run: one epoch is enough")

    fn = import_ref(ref) if isinstance(ref, str) else ref
    torch.cuda.reset_peak_memory_stats()
    with reporter.active(_OneEpoch(reporter.TrialRules(metric="", mode="max", report_interval=0.0))):
        try:
            fn({**config, "epochs": 1}, data) if data is not None else fn({**config, "epochs": 1})
        except reporter.StopTrial:
            pass
    return int(torch.cuda.max_memory_allocated()), int(torch.cuda.get_device_properties(0).total_memory)


def measure_gpu_peak(ref: Any, config: dict[str, Any], data: Any) -> tuple[int, int]:
    """Peak CUDA memory of one trial epoch, measured on a GPU of the cluster (a whole-GPU task).

    ``data``: the object reference of the section's data (``share``), which Ray resolves as the
    task's argument (or the data itself, or None)."""
    import ray

    task = ray.remote(num_gpus=1, num_cpus=1)(dry_run_peak)
    return ray.get(task.remote(ref, config, data))
