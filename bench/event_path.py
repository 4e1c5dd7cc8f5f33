"""The driver's cost per trial at 1,000 / 10,000 / 100,000 trials, without Ray: a section is
planned (``planning.plan_section``, as `expgrid run` does) and its events are driven straight into
``SectionEvents`` with synthetic rows: real records files (trials.jsonl, rows.jsonl), the real
MLflow writer process (a SQLite store), a progress line written to a string.

Each size runs in a fresh subprocess, so that its peak RSS is its own. Prints, per size: the
planning time, the driver's µs per trial and per row on the event path (wall, and the driver
process's CPU time: on a loaded machine the steadier figure), and the peak RSS. A flat µs per
trial across sizes is the target (issue 16: the driver's cost per row and per trial
does not grow with the section).

The MLflow writer process is given 5 s at the end, not more (it writes each trial's run to
SQLite at several ms each, on another core, and lags behind events that come this fast): the
driver's cost is what is measured; the mirror's state is printed.

    .venv/bin/python bench/event_path.py [--trials 1000 10000 100000] [--rows 5] [--profile N]
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


def _study_file(folder: Path, trials: int, rows: int) -> Path:
    """A toy study of one section with ``trials`` grid points (x × y), ``rows`` epochs each."""
    ys = 10 if trials % 10 == 0 else 1
    path = folder / "scale.yaml"
    path.write_text(
        f"study: scale\ntrainable: toy\nmetric: score\ndefaults: {{epochs: {rows}}}\nsections:\n"
        f"  - id: s\n    grid: {{x: {list(range(trials // ys))}, y: {list(range(ys))}}}\n"
    )
    return path


def simulate(trials: int, rows: int, folder: Path, mirror_wait: float) -> dict[str, float | str]:
    """Plan the section and drive its events; returns the figures (seconds, µs, MB)."""
    from expgrid import interrupts, planning, records
    from expgrid.progress import ProgressLine
    from expgrid.runner import prepare
    from expgrid.section_events import SectionEvents
    from expgrid.tracking import Tracker, default_tracking_uri
    from expgrid.wording import describe

    study_path = _study_file(folder, trials, rows)
    results = folder / "results"
    results.mkdir()
    start = time.perf_counter()
    study, spec = prepare(study_path)
    section = study.sections[0]
    plans = planning.plan_section(study, spec, section, {})
    trial_records = [records.TrialRecord(index=p.index, swept=p.swept, config=p.config) for p in plans]
    plan_seconds = time.perf_counter() - start
    tracker = Tracker(default_tracking_uri(results), study.name, artifact_root=results / "mlartifacts")
    tracker.start_study(study.name, {})
    tracker.start_section(section.id, section.name, {})
    events = SectionEvents(study, section, trial_records, results, tracker,
                           ProgressLine("s", len(plans), study.metric, io.StringIO()), interrupts.StopRequest(),
                           describe=lambda t: describe(study, t, section.select))  # fmt: skip
    import cluster.tune_section  # noqa: F401  what a trial's end consults; the real driver has it loaded

    start, cpu_start = time.perf_counter(), time.process_time()
    for trial in trial_records:
        x, y = trial.swept["x"], trial.swept["y"]
        events.trial_started(trial.index)
        for epoch in range(1, rows + 1):
            score = 1.0 - ((x - 2.0) ** 2 + (y + 1.0) ** 2) / 10.0 * (1.0 - 0.5**epoch)
            events.trial_rows(trial.index, [{"epoch": epoch, "score": score, "loss": 1.0 - score}])
            events.results_received()
        events.trial_finished(trial.index, None)
    event_seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    events.rows.close()
    best = events.best
    assert best is records.best_trial(trial_records, study.metric, study.mode, section.select)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mirror = tracker.finish(wait=mirror_wait)
    return {"trials": trials, "rows": trials * rows, "plan_s": plan_seconds, "events_s": event_seconds,
            "us_per_trial": event_seconds / trials * 1e6, "us_per_row": event_seconds / (trials * rows) * 1e6,
            "cpu_us_per_trial": cpu_seconds / trials * 1e6, "cpu_us_per_row": cpu_seconds / (trials * rows) * 1e6,
            "peak_rss_mb": peak_mb, "mirror": "complete" if mirror.complete else f"incomplete ({mirror.why})"}  # fmt: skip


def _child(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.enable()
            figures = simulate(args.child, args.rows, Path(tmp), args.mirror_wait)
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
        else:
            figures = simulate(args.child, args.rows, Path(tmp), args.mirror_wait)
    print("FIGURES " + json.dumps(figures), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--rows", type=int, default=5, help="rows (epochs) per trial")
    parser.add_argument("--profile", action="store_true", help="cProfile each size (printed to stderr)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mirror-wait", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child(args)
        return
    print(f"{'trials':>8} {'rows':>8} {'plan s':>7} {'events s':>9} {'µs/trial':>9} {'µs/row':>7} "
          f"{'CPU µs/trial':>13} {'CPU µs/row':>11} {'peak RSS':>9}  MLflow mirror")  # fmt: skip
    for size in args.trials:
        command = [sys.executable, __file__, "--child", str(size), "--rows", str(args.rows), "--mirror-wait", "5"]
        done = subprocess.run(command + (["--profile"] if args.profile else []), capture_output=True, text=True,
                              env=os.environ)  # fmt: skip
        if args.profile:
            print(done.stderr[-12000:], file=sys.stderr)
        line = next((x for x in done.stdout.splitlines() if x.startswith("FIGURES ")), None)
        if line is None:
            print(f"{size:>8}: failed\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
            continue
        f = json.loads(line.removeprefix("FIGURES "))
        print(f"{f['trials']:>8} {f['rows']:>8} {f['plan_s']:>7.1f} {f['events_s']:>9.1f} {f['us_per_trial']:>9.0f} "
              f"{f['us_per_row']:>7.0f} {f['cpu_us_per_trial']:>13.0f} {f['cpu_us_per_row']:>11.0f} "
              f"{f['peak_rss_mb']:>6.0f} MB  {f['mirror']}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
