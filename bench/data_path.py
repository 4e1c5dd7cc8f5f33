"""Shared data on its way to the trials: before (the data inside the class Ray pickles per actor)
and after (object references; the data put in the object store once), per data size.

Each variant runs in a fresh driver process with its own local Ray (2 CPUs): a Tune section of
two one-epoch trials that read the data, through cluster.tune_section.run_section. "before" is the
code of commit 0483721 (extracted with `git archive` into a temporary directory that comes first
on the driver's and the workers' path); "after" is this working tree. Printed per variant: how
the section ended, its seconds (``fit()`` only, Ray's start left out), the driver's peak RSS
above what it held once the data was generated, the GCS server's RSS afterwards (it keeps the
exported classes), the size of the pickled trial class ("after" only), and the "ImplicitFunc is
very large / too large" messages Ray printed. Nothing is asserted.

    .venv/bin/python bench/data_path.py [--mib 26 150] [--before 0483721]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FUNCTION_SIZE = re.compile(r"ImplicitFunc is (very large|too large) \((\d+) MiB")


def probe(config: dict[str, Any], data: dict[str, Any]) -> None:
    """The trial: touch the data, report one epoch."""
    import expgrid

    x = data["x"]
    expgrid.report({"epoch": 1, "score": float(x[:: 1 << 16].sum())})


class _NoEvents:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _rss_mib(pid: int | None = None) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def one(variant: str, mib: int) -> dict[str, Any]:
    """Run one variant in this process; return its measurements."""
    import numpy as np
    import ray
    import ray.cloudpickle
    from ray.tune.trainable.function_trainable import wrap_function

    from cluster import trial_side, tune_section
    from expgrid.stopping import TrialRules

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    gcs = next((p for p in __import__("psutil").Process().children(recursive=True) if "gcs_server" in p.name()), None)
    data = {"x": np.random.default_rng(0).integers(0, 256, mib * 2**20, dtype=np.uint8)}
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # peak so far: Ray started, data generated
    rules = TrialRules(metric="score", mode="max", report_interval=0.0).to_json()
    trials = [{"index": i, "config": {"x": i}, "ref": "bench.data_path:probe", "data": "data0", "rules": rules}
              for i in range(2)]  # fmt: skip
    storage = tempfile.mkdtemp(prefix="bench-data-")
    start = time.perf_counter()
    # Before, TuneSection.shared held the data itself; now it holds object references.
    shared = {"data0": data} if variant == "before" else {"data0": trial_side.share(data)}
    del data
    section = tune_section.TuneSection(name="s", storage_path=storage, trials=trials, resources={"cpu": 1.0, "gpu": 0.0},
                                       shared=shared, code_path=os.getcwd(), metric="score")  # fmt: skip
    try:
        tune_section.run_section(section, _NoEvents())
        ended = "completed"
    except Exception as e:  # noqa: BLE001 - what the section died of is the result
        chain = []  # Tune's error, and the one it was handling (Ray's refusal of the actor class)
        while e is not None and len(chain) < 4:
            chain.append(f"{type(e).__name__}: {str(e).splitlines()[0][:110]}")
            e = e.__context__
        ended = " <- ".join(chain)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    pickled = None
    if variant == "after":  # measured after the peak: pickling copies
        pickled = len(ray.cloudpickle.dumps(wrap_function(tune_section._tune_trainable(section))))
    out = {"variant": variant, "mib": mib, "ended": ended, "seconds": round(seconds, 2),
           "driver_peak_above_data_mib": round(peak - base, 1), "gcs_rss_mib": round(_rss_mib(gcs.pid), 1) if gcs else None,
           "pickled_class_bytes": pickled}  # fmt: skip
    time.sleep(2)  # Ray's size warning reaches the driver asynchronously (from the raylet)
    ray.shutdown()
    shutil.rmtree(storage, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, nargs="+", default=[26, 150], help="data sizes (MiB)")
    parser.add_argument("--before", default="0483721", help="the commit whose code is 'before' (default: 0483721)")
    parser.add_argument("--one", nargs=2, metavar=("VARIANT", "MIB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(args.one[0], int(args.one[1]))), flush=True)
        return

    before = Path(tempfile.mkdtemp(prefix="bench-data-before-"))
    archive = subprocess.run(["git", "archive", args.before, "cluster", "expgrid", "trainables"], cwd=REPO,
                             capture_output=True, check=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
    (before / "bench").mkdir()
    shutil.copy(__file__, before / "bench" / "data_path.py")  # the trial function, importable there
    # Ray puts the driver's working directory first on the workers' path: each variant runs in its tree.
    trees = {"before": before, "after": REPO}
    print(f"{'MiB':>5} {'variant':<7} {'section s':>9} {'driver peak +MiB':>16} {'GCS RSS MiB':>11} "
          f"{'pickled class':>14}  Ray's size messages; how it ended")  # fmt: skip
    for mib in args.mib:
        for variant in ("before", "after"):
            tree = trees[variant]
            proc = subprocess.run([sys.executable, str(tree / "bench" / "data_path.py"), "--one", variant, str(mib)],
                                  capture_output=True, text=True, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                                  timeout=600)  # fmt: skip
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if not lines:
                print(f"{mib:>5} {variant:<7} no result (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
                continue
            r = json.loads(lines[-1][len("RESULT ") :])
            said = proc.stdout + proc.stderr + r["ended"]  # Ray prints the warning on stdout
            sizes = sorted({f"{m.group(1)} ({m.group(2)} MiB)" for m in FUNCTION_SIZE.finditer(said)})
            print(f"{mib:>5} {variant:<7} {r['seconds']:>9.2f} {r['driver_peak_above_data_mib']:>16.1f} "
                  f"{r['gcs_rss_mib'] or float('nan'):>11.1f} {format(r['pickled_class_bytes'] or 0, ',') if r['pickled_class_bytes'] else '-':>14}  "
                  f"{', '.join(sizes) or 'none'}; {r['ended']}")  # fmt: skip
    shutil.rmtree(before, ignore_errors=True)


if __name__ == "__main__":
    main()
