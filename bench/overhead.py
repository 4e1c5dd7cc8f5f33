"""Per-trial overhead: 100 no-op trials × 10 reports, through expgrid and through a plain Ray
Tune script with Tune's default settings, on one local Ray started once for both.

Prints seconds per trial for both and their ratio. Target: expgrid ≤ 0.1 s per trial on a
2-CPU machine.

``--mlflow writer|async|both``: how expgrid writes to MLflow — its writer process (what
`expgrid run` does), MLflow's own asynchronous logging in the driver's process
(``log_batch(..., synchronous=False)``, bench/_async_tracker.py), or both, one after the other
on the same Ray (``--repeat N`` alternates them N times), printing their ratio.

    .venv/bin/python bench/overhead.py [--trials 100] [--reports 10] [--cpu-per-trial 1]
        [--mlflow writer|async|both] [--repeat 1] [--expgrid-only]
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


def through_expgrid(trials: int, reports: int, cpu: float, folder: Path, mlflow: str = "writer") -> float:
    from expgrid import runner
    from expgrid.runner import RunOptions, prepare, run_study

    # No checkpoints, like the plain Tune script: this measures scheduling and reporting.
    folder.mkdir(parents=True, exist_ok=True)
    study = folder / "noop.yaml"
    study.write_text(
        f"study: overhead\ntrainable: toy\nmetric: score\ndefaults: {{epochs: {reports}}}\n"
        f"resources: {{cpu: {cpu}}}\ncheckpoint_every: {reports + 1}\nsections:\n  - id: noop\n    grid: {{x: {list(range(trials))}}}\n"
    )
    study_obj, spec = prepare(study)
    writer_tracker = runner.Tracker
    if mlflow == "async":  # the runner's Tracker, for this run only (see bench/_async_tracker.py)
        from _async_tracker import AsyncTracker

        runner.Tracker = AsyncTracker
    try:
        start = time.perf_counter()  # everything a section costs: planning, Tune, records, MLflow
        outcome = run_study(study_obj, spec, RunOptions(results_dir=folder / "results", stream=io.StringIO()))
        seconds = time.perf_counter() - start
    finally:
        runner.Tracker = writer_tracker
    _written.append(outcome.tracking_uri)  # checked at the end: the check imports MLflow into this process
    return seconds


_written: list[str] = []


def _check_mirror(uri: str, trials: int, reports: int) -> None:
    """Both ways must have written everything: every trial run FINISHED with its points."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("overhead").experiment_id
    runs = client.search_runs([experiment], "tags.`expgrid.kind` = 'trial'", max_results=10_000)
    points = sum(len(client.get_metric_history(r.info.run_id, "score")) for r in runs)
    finished = sum(r.info.status == "FINISHED" for r in runs)
    assert (len(runs), finished, points) == (trials, trials, trials * reports), (len(runs), finished, points)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--reports", type=int, default=10)
    parser.add_argument("--cpu-per-trial", type=float, default=1.0)
    parser.add_argument("--expgrid-only", action="store_true", help="skip the plain Tune side (its ~3 minutes)")
    parser.add_argument("--mlflow", choices=("writer", "async", "both"), default="writer",
                        help="expgrid's MLflow writer process, MLflow's async logging in the driver, or both")
    parser.add_argument("--repeat", type=int, default=1, help="with --mlflow both: alternate the two N times")
    args = parser.parse_args()

    from importlib.metadata import version

    from expgrid.tracking.store import empty_store_template

    # Not `import mlflow` here: with --mlflow async the driver's own import of MLflow is part of the cost.
    template = empty_store_template(version("mlflow"))
    print(f"empty MLflow store already cached: {template.exists()} (else this run makes it: seconds, once)")
    from cluster import connect

    connect.connect(num_cpus=os.cpu_count())  # the local Ray `expgrid run` starts; both sides use it
    with tempfile.TemporaryDirectory() as tmp:
        if args.mlflow == "both":
            _writer_against_async(args, Path(tmp))
            if args.expgrid_only:
                return
            grid = through_expgrid(args.trials, args.reports, args.cpu_per_trial, Path(tmp) / "grid")
        else:
            grid = through_expgrid(args.trials, args.reports, args.cpu_per_trial, Path(tmp) / "grid", args.mlflow)
        print(f"expgrid    : {grid:7.1f} s for {args.trials} trials = {grid / args.trials:.3f} s per trial", flush=True)
        if args.expgrid_only:
            return
        plain = plain_tune(args.trials, args.reports, str(Path(tmp) / "tune"))
        print(f"plain Tune : {plain:7.1f} s for {args.trials} trials = {plain / args.trials:.3f} s per trial")
    print(f"ratio expgrid/plain = {grid / plain:.3f}; expgrid per trial {grid / args.trials:.3f} s (target <= 0.1)")


def _writer_against_async(args: argparse.Namespace, folder: Path) -> None:
    import sys

    seconds: dict[str, list[float]] = {"writer": [], "async": []}
    for attempt in range(args.repeat):
        for way in ("writer", "async") if attempt % 2 == 0 else ("async", "writer"):
            if way == "async":
                print(f"  (MLflow already imported by the driver: {'mlflow' in sys.modules})", flush=True)
            took = through_expgrid(args.trials, args.reports, args.cpu_per_trial, folder / f"{way}-{attempt}", way)
            seconds[way].append(took)
            print(f"expgrid, MLflow {way:6s}: {took:7.1f} s for {args.trials} trials = "
                  f"{took / args.trials:.3f} s per trial", flush=True)  # fmt: skip
    for uri in _written:
        _check_mirror(uri, args.trials, args.reports)
    print(f"every run's mirror checked complete ({len(_written)} stores)")
    best = {way: min(runs) for way, runs in seconds.items()}
    print(f"ratio async/writer = {best['async'] / best['writer']:.3f} (best of {args.repeat} each: "
          f"writer {best['writer']:.1f} s, async {best['async']:.1f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
