"""Per-trial overhead: no-op trials × 10 reports, through expgrid and through a plain Ray Tune
script with Tune's default settings.

``--trials 100 1000 10000``: each size runs in a fresh subprocess (its own local Ray, started
as `expgrid run` starts it), so that the driver's peak RSS is that size's own; printed per size:
seconds per trial (everything a section costs: planning, Tune, records, MLflow's mirror) and the
driver's peak RSS; and where each trial's milliseconds went: wall time inside Tune's run, in the
section report and in the study's wait for the MLflow mirror, and CPU time of the driver, of the
MLflow writer process and of the local Ray's processes still alive at the end (the trial actors
have ended by then: their CPU is mostly not in it). Targets (issue 16): ≤ 0.02 s per trial at
every size, RSS ≤ 1 GB at 10,000.
Plain Tune runs once, in a subprocess of its own, at ``--baseline-trials`` (default: the
smallest size; it takes about a second per trial, so 10,000 would take hours).

``--mlflow writer|async|both``: how expgrid writes to MLflow — its writer process (what
`expgrid run` does), MLflow's own asynchronous logging in the driver's process
(``log_batch(..., synchronous=False)``, bench/_async_tracker.py), or both, one after the other
on the same Ray (``--repeat N`` alternates them N times), printing their ratio.

    .venv/bin/python bench/overhead.py [--trials 100 [1000 10000]] [--reports 10] [--cpu-per-trial 1]
        [--mlflow writer|async|both] [--repeat 1] [--expgrid-only] [--baseline-trials N]

``--mlflow both`` runs in this process, at the first size only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
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


class _Phases:
    """Where a section's seconds go: wall time inside Tune's run, the section report, the study's
    wait for the MLflow mirror (``Tracker.finish``); the driver's CPU time; the writer process's
    CPU time (a child the driver waits for: RUSAGE_CHILDREN once it has exited)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {"tune": 0.0, "section report": 0.0, "mirror wait": 0.0}

    def timed(self, name: str, fn):  # noqa: ANN001, ANN202 - a wrapper for the bench only
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return wrapper

    def __enter__(self) -> _Phases:
        import cluster.tune_section as tune_section
        from expgrid import runner, tracking

        self._saved = (tune_section.run_section, runner._section_report, tracking.Tracker.finish)
        tune_section.run_section = self.timed("tune", tune_section.run_section)
        runner._section_report = self.timed("section report", runner._section_report)
        tracking.Tracker.finish = self.timed("mirror wait", tracking.Tracker.finish)
        self._cpu = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
        self._ray_cpu = _descendants_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        import cluster.tune_section as tune_section
        from expgrid import runner, tracking

        tune_section.run_section, runner._section_report, tracking.Tracker.finish = self._saved
        me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        self.seconds["driver CPU"] = me.ru_utime + me.ru_stime - self._cpu[0].ru_utime - self._cpu[0].ru_stime
        self.seconds["writer CPU"] = (children.ru_utime + children.ru_stime
                                      - self._cpu[1].ru_utime - self._cpu[1].ru_stime)  # fmt: skip
        after = _descendants_cpu()
        self.seconds["Ray CPU"] = sum(cpu - self._ray_cpu.get(pid, 0.0) for pid, cpu in after.items())


def _descendants_cpu() -> dict[int, float]:
    """CPU seconds of every live descendant of this process: the local Ray's daemons and its
    workers (the trial actors); the writer has exited by the end and is counted apart."""
    import psutil

    found = {}
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
            found[child.pid] = times.user + times.system
        except psutil.Error:
            continue
    return found


_phases: list[dict[str, float]] = []


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
        output = io.StringIO()
        with _Phases() as phases:
            start = time.perf_counter()  # everything a section costs: planning, Tune, records, MLflow
            outcome = run_study(study_obj, spec, RunOptions(results_dir=folder / "results", stream=output))
            seconds = time.perf_counter() - start
        _phases.append(phases.seconds)
        # The study's end waits at most tracking.MIRROR_WAIT for MLflow: say whether it was all written.
        _mirror.append(next((line for line in output.getvalue().splitlines() if "mirror incomplete" in line), "complete"))
    finally:
        runner.Tracker = writer_tracker
    _written.append(outcome.tracking_uri)  # checked at the end: the check imports MLflow into this process
    return seconds


_written: list[str] = []
_mirror: list[str] = []


def _check_mirror(uri: str, trials: int, reports: int) -> None:
    """Both ways must have written everything: every trial run FINISHED with its points."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("overhead").experiment_id
    runs = client.search_runs([experiment], "tags.`expgrid.kind` = 'trial'", max_results=10_000)
    points = sum(len(client.get_metric_history(r.info.run_id, "score")) for r in runs)
    finished = sum(r.info.status == "FINISHED" for r in runs)
    assert (len(runs), finished, points) == (trials, trials, trials * reports), (len(runs), finished, points)


def _rss_mb() -> tuple[float, float]:
    """The driver's resident memory now and its peak so far (MB)."""
    with open("/proc/self/statm") as f:
        now = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return now, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(args: argparse.Namespace) -> None:
    """One size in this (fresh) process: Ray, then expgrid's section or plain Tune's."""
    from cluster import connect

    try:
        connect.connect(num_cpus=os.cpu_count())
    except Exception as e:  # Ray gives its node 30 s to start; an overloaded machine can miss that once
        print(f"ray.init failed ({str(e)[:80]}); trying once more", file=sys.stderr)
        connect.connect(num_cpus=os.cpu_count())
    before, _ = _rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        if args.plain_child:
            seconds = plain_tune(args.child, args.reports, str(Path(tmp) / "tune"))
        elif args.profile:  # the driver's main thread (Tune's loop and the event path) by cumulative time
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            seconds = profiler.runcall(through_expgrid, args.child, args.reports, args.cpu_per_trial,
                                       Path(tmp) / "grid", args.mlflow)  # fmt: skip
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
        else:
            seconds = through_expgrid(args.child, args.reports, args.cpu_per_trial, Path(tmp) / "grid", args.mlflow)
        _, peak = _rss_mb()
    print("FIGURES " + json.dumps({"trials": args.child, "seconds": seconds, "rss_before_mb": before,
                                   "peak_rss_mb": peak, "mirror": (_mirror or ["-"])[-1],
                                   "phases": (_phases or [{}])[-1]}), flush=True)  # fmt: skip


def _in_subprocess(args: argparse.Namespace, trials: int, plain: bool) -> dict | None:
    command = [sys.executable, __file__, "--child", str(trials), "--reports", str(args.reports),
               "--cpu-per-trial", str(args.cpu_per_trial), "--mlflow", args.mlflow] + (["--plain-child"] if plain else [])  # fmt: skip
    done = subprocess.run(command + (["--profile"] if args.profile and not plain else []), capture_output=True, text=True)
    if args.profile and not plain:
        print(done.stderr[-15000:], flush=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("FIGURES ")), None)
    if line is None:
        print(f"{'plain Tune' if plain else 'expgrid'} at {trials} trials failed (exit {done.returncode}):\n"
              f"{done.stdout[-2000:]}{done.stderr[-4000:]}", flush=True)  # fmt: skip
        return None
    return json.loads(line.removeprefix("FIGURES "))


def _sizes(args: argparse.Namespace) -> None:
    print(f"{'':11} {'trials':>7} {'seconds':>8} {'s/trial':>8} {'driver peak RSS':>16}  (RSS after ray.init)", flush=True)
    rows = []
    for trials in args.trials:
        f = _in_subprocess(args, trials, plain=False)
        if f is None:
            continue
        rows.append(f)
        print(f"{'expgrid':11} {trials:>7} {f['seconds']:>8.1f} {f['seconds'] / trials:>8.4f} {f['peak_rss_mb']:>13.0f} MB"
              f"  ({f['rss_before_mb']:.0f} MB)  MLflow mirror: {f['mirror']}", flush=True)  # fmt: skip
        if f.get("phases"):  # ms per trial
            print(" " * 12 + "ms/trial: " + ", ".join(f"{k} {1000 * v / trials:.1f}" for k, v in f["phases"].items()),
                  flush=True)  # fmt: skip
    if args.expgrid_only:
        return
    baseline = args.baseline_trials or min(args.trials)
    f = _in_subprocess(args, baseline, plain=True)
    if f is not None:
        plain = f["seconds"] / baseline
        print(f"{'plain Tune':11} {baseline:>7} {f['seconds']:>8.1f} {plain:>8.4f} {f['peak_rss_mb']:>13.0f} MB"
              f"  ({f['rss_before_mb']:.0f} MB)", flush=True)  # fmt: skip
        for r in rows:
            print(f"expgrid/plain per trial at {r['trials']} trials = {r['seconds'] / r['trials'] / plain:.3f}")
    for r in rows:
        met = r["seconds"] / r["trials"] <= 0.02 and (r["trials"] < 10_000 or r["peak_rss_mb"] <= 1024)
        print(f"{r['trials']} trials: {r['seconds'] / r['trials']:.4f} s/trial, peak RSS {r['peak_rss_mb']:.0f} MB: "
              f"{'met' if met else 'NOT met'} (targets <= 0.02 s/trial; <= 1 GB at 10,000)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[100])
    parser.add_argument("--baseline-trials", type=int, default=None, help="plain Tune's size (default: the smallest)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--plain-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help="cProfile expgrid's side of each size (printed)")
    parser.add_argument("--reports", type=int, default=10)
    parser.add_argument("--cpu-per-trial", type=float, default=1.0)
    parser.add_argument("--expgrid-only", action="store_true", help="skip the plain Tune side (its ~3 minutes)")
    parser.add_argument("--mlflow", choices=("writer", "async", "both"), default="writer",
                        help="expgrid's MLflow writer process, MLflow's async logging in the driver, or both")
    parser.add_argument("--repeat", type=int, default=1, help="with --mlflow both: alternate the two N times")
    args = parser.parse_args()
    if args.child is not None:
        _child(args)
        return
    if args.mlflow != "both":
        _sizes(args)
        return
    args.trials = args.trials[0]

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
