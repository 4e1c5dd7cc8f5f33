"""Per-trial overhead: 100 no-op trials × 10 reports, through expgrid and through a plain Ray
Tune script with Tune's default settings, on one local Ray started once for both.

Prints seconds per trial for both and their ratio. Target: expgrid ≤ 0.1 s per trial on a
2-CPU machine.

    .venv/bin/python bench/overhead.py [--trials 100] [--reports 10] [--cpu-per-trial 1]
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path


def plain_tune(trials: int, reports: int, storage: str) -> float:
    from ray import tune

    def noop(config):
        for i in range(1, reports + 1):
            tune.report({"epoch": i, "score": config["x"] * i})

    tuner = tune.Tuner(noop, param_space={"x": tune.grid_search(list(range(trials)))},
                       run_config=tune.RunConfig(storage_path=storage, name="plain", verbose=0))  # fmt: skip
    start = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - start


def through_expgrid(trials: int, reports: int, cpu: float, folder: Path) -> float:
    from expgrid.runner import RunOptions, prepare, run_study

    # No checkpoints, like the plain Tune script: this measures scheduling and reporting.
    study = folder / "noop.yaml"
    study.write_text(
        f"study: overhead\ntrainable: toy\nmetric: score\ndefaults: {{epochs: {reports}}}\n"
        f"resources: {{cpu: {cpu}}}\ncheckpoint_every: {reports + 1}\nsections:\n  - id: noop\n    grid: {{x: {list(range(trials))}}}\n"
    )
    study_obj, spec = prepare(study)
    start = time.perf_counter()  # everything a section costs: planning, Tune, records, MLflow
    run_study(study_obj, spec, RunOptions(results_dir=folder / "results", stream=io.StringIO()))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--reports", type=int, default=10)
    parser.add_argument("--cpu-per-trial", type=float, default=1.0)
    parser.add_argument("--expgrid-only", action="store_true", help="skip the plain Tune side (its ~3 minutes)")
    args = parser.parse_args()

    import mlflow

    from expgrid.tracking import _cache_dir

    template = _cache_dir() / f"mlflow-{mlflow.__version__}-empty.db"
    print(f"empty MLflow store already cached: {template.exists()} (else this run makes it: seconds, once)")
    from cluster import connect

    connect.connect(num_cpus=os.cpu_count())  # the local Ray `expgrid run` starts; both sides use it
    with tempfile.TemporaryDirectory() as tmp:
        grid = through_expgrid(args.trials, args.reports, args.cpu_per_trial, Path(tmp))
        print(f"expgrid    : {grid:7.1f} s for {args.trials} trials = {grid / args.trials:.3f} s per trial", flush=True)
        if args.expgrid_only:
            return
        plain = plain_tune(args.trials, args.reports, str(Path(tmp) / "tune"))
        print(f"plain Tune : {plain:7.1f} s for {args.trials} trials = {plain / args.trials:.3f} s per trial")
    print(f"ratio expgrid/plain = {grid / plain:.3f}; expgrid per trial {grid / args.trials:.3f} s (target <= 0.1)")


if __name__ == "__main__":
    main()
