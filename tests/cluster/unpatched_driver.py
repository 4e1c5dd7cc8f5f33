"""A driver for tests/cluster/test_without_patches.py, run as its own process (python FILE
STUDY RESUME_STUDY RESULTS) so that its patches and its local Ray follow its own environment
(EXPGRID_NO_PATCHES). Runs the key-path study, then the resume study: stopped by a SIGINT to
itself once trial 0 has recorded epoch 2, then resumed. Prints one JSON line of what it saw."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from cluster import connect, patches
from expgrid.interrupts import Interrupted
from expgrid.runner import RunOptions, prepare, run_study


def _trials(outcome) -> dict:
    return {
        s.section.id: [{"status": t.status, "epochs": [r["epoch"] for r in t.history], "retries": t.retries,
                        "world_size": [r.get("world_size") for r in t.history],
                        "resumed_from": [r.get("resumed_from") for r in t.history]} for t in s.trials]
        for s in outcome.sections
    }  # fmt: skip


def _sigint_after(rows: Path, trial: int, epoch: int) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        lines = rows.read_text().splitlines()[:-1] if rows.exists() else []  # the last may be half-written
        if any(json.loads(x)["trial"] == trial and json.loads(x)["row"]["epoch"] >= epoch for x in lines):
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: the runner stops Tune and records
            return
        time.sleep(0.1)


def main() -> None:
    study_path, resume_path, results = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    connect.connect(num_cpus=2)
    seen: dict = {"in_effect": patches.apply()}
    study, spec = prepare(study_path)
    seen["keypaths"] = _trials(run_study(study, spec, RunOptions(results_dir=results / "k", stream=io.StringIO())))
    seen["tune_dirs"] = sorted(p.name for p in (results / "k" / "tune").glob("section-*/*") if p.is_dir())

    study, spec = prepare(resume_path)
    watcher = threading.Thread(target=_sigint_after, args=(results / "r" / "sections" / "a" / "rows.jsonl", 0, 2),
                               daemon=True)  # fmt: skip
    watcher.start()
    try:
        run_study(study, spec, RunOptions(results_dir=results / "r", stream=io.StringIO()))
        seen["interrupted"] = False
    except Interrupted:
        seen["interrupted"] = True
    out = io.StringIO()
    seen["resumed"] = _trials(run_study(study, spec, RunOptions(results_dir=results / "r", resume=True, stream=out)))
    seen["resume_text"] = out.getvalue()
    connect.shutdown()
    print("SEEN " + json.dumps(seen), flush=True)


if __name__ == "__main__":
    main()
