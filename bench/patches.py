"""What each patch of cluster/patches.py saves: one workload — S sections of N no-op toy trials
through expgrid, the per-section start and end costs being what the patches cut — run with
every patch on, with all of them off (EXPGRID_NO_PATCHES=1), and with each one off on its own
(EXPGRID_NO_PATCHES=NAME; with --each on: each one alone), each run in a fresh driver process with its own local Ray, the
settings interleaved over the rounds. Prints the median wall time of the sections per setting
and its ratio to all-on in the same round (above 1: the patch saves that much).

    .venv/bin/python bench/patches.py [--sections 4] [--trials 10] [--reports 3] [--rounds 3] [--each off|on|both]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(sections: int, trials: int, reports: int, folder: Path) -> dict:
    """One driver process: connect (a local Ray, patched as the environment says), run the study."""
    from cluster import connect, patches
    from expgrid.runner import RunOptions, prepare, run_study

    start = time.perf_counter()
    connect.connect(num_cpus=os.cpu_count())
    started = time.perf_counter() - start
    text = [f"study: patches\ntrainable: toy\nmetric: score\ndefaults: {{epochs: {reports}}}\n"
            f"resources: {{cpu: 1}}\ncheckpoint_every: {reports + 1}\nsections:\n"]  # fmt: skip
    text += [f"  - {{id: s{i}, grid: {{x: {list(range(trials))}}}}}\n" for i in range(sections)]
    (folder / "study.yaml").write_text("".join(text))
    study, spec = prepare(folder / "study.yaml")
    start = time.perf_counter()
    run_study(study, spec, RunOptions(results_dir=folder / "results", stream=io.StringIO()))
    seconds = time.perf_counter() - start
    in_effect = patches.apply()
    connect.shutdown()
    return {"seconds": seconds, "ray_start": started, "in_effect": in_effect, "mlflow_in_driver": "mlflow" in sys.modules}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", type=int, default=4)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--reports", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--each", choices=("off", "on", "both"), default="off",
                        help="per patch: a run without it (off), with it alone (on), or both")  # fmt: skip
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            print("RESULT " + json.dumps(child(args.sections, args.trials, args.reports, Path(tmp))), flush=True)
        return

    from cluster import patches

    settings = {"all on": None, "all off": "1"}
    if args.each in ("off", "both"):
        settings.update({f"without {name}": name for name in patches.NAMES})
    if args.each in ("on", "both"):
        settings.update({f"only {name}": ",".join(n for n in patches.NAMES if n != name) for name in patches.NAMES})
    times: dict[str, list[float]] = {name: [] for name in settings}
    starts: dict[str, list[float]] = {name: [] for name in settings}
    repo = Path(__file__).resolve().parents[1]
    for round_ in range(args.rounds):
        # Rotated each round: the first driver of a round was slower in every round (seen on a
        # busy 2-CPU machine), which must not always be the same setting.
        order = list(settings.items())
        order = order[round_ % len(order):] + order[: round_ % len(order)]
        for name, off in order:
            env = {k: v for k, v in os.environ.items() if k != patches.OFF_ENV}
            env.update({"MLFLOW_TRACKING_URI": "", "PYTHONPATH": f"{repo}{os.pathsep}{env.get('PYTHONPATH', '')}"})
            if off is not None:
                env[patches.OFF_ENV] = off
            done = subprocess.run([sys.executable, __file__, "--child", "--sections", str(args.sections), "--trials",
                                   str(args.trials), "--reports", str(args.reports)], env=env, capture_output=True,
                                  text=True, timeout=1800)  # fmt: skip
            lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                sys.exit(f"{name}: the driver failed\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
            result = json.loads(lines[-1][len("RESULT "):])
            times[name].append(result["seconds"])
            starts[name].append(result["ray_start"])
            print(f"round {round_ + 1} {name:<30} {result['seconds']:6.1f} s (Ray start {result['ray_start']:.1f} s; "
                  f"in effect: {', '.join(result['in_effect']) or 'none'}; MLflow imported by the driver: "
                  f"{result['mlflow_in_driver']})", flush=True)  # fmt: skip
    print(f"\n{args.sections} sections × {args.trials} no-op trials × {args.reports} reports, {os.cpu_count()} CPUs, "
          f"median of {args.rounds} rounds; ratio: to all on in the same round (above 1: the patch saves)")  # fmt: skip
    for name in settings:
        median = statistics.median(times[name])
        ratios = [t / on for t, on in zip(times[name], times["all on"])]  # the same round's
        print(f"  {name:<30} {median:6.1f} s  ratio {statistics.median(ratios):5.3f} "
              f"(rounds: {' '.join(f'{r:.2f}' for r in ratios)}; Ray start {statistics.median(starts[name]):.1f} s)")


if __name__ == "__main__":
    main()
