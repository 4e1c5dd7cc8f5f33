"""The Fashion-MNIST full grid (lr × weight decay × dropout = 120 trials, section 3.5) on the
shared .npz, once with ASHA and once with FIFO, in one invocation.

Prints total trial-epochs, wall time and best validation accuracy for both, and the ratios.
Target: ASHA ≤ 25 % of FIFO's trial-epochs with the best validation accuracy within 1 point.

    .venv/bin/python bench/asha_grid.py [--epochs 150] [--data ../shared/data/fashion_mnist_4443.npz]
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from pathlib import Path

import yaml
from _fashion import parse_args  # bench/ is on sys.path when a script here runs

REPO = Path(__file__).resolve().parents[1]


def run(scheduler: str, epochs: int, data: Path, folder: Path) -> tuple[int, float, float]:
    from expgrid.runner import RunOptions, prepare, run_study

    raw = yaml.safe_load((REPO / "search_spaces" / "fashion_mnist.yaml").read_text())
    raw["sections"] = [dict(s, scheduler=scheduler) for s in raw["sections"] if s["id"] == "3.5"]
    raw["study"] = f"fashion-grid-{scheduler}"
    path = folder / f"{scheduler}.yaml"
    path.write_text(yaml.safe_dump(raw))
    study, spec = prepare(path, {"dataset.path": str(data), "epochs": epochs})
    start = time.perf_counter()
    outcome = run_study(study, spec, RunOptions(results_dir=folder / scheduler, stream=io.StringIO()))
    seconds = time.perf_counter() - start
    trials = outcome.sections[0].trials
    best = outcome.sections[0].best.selected("val_accuracy", "max", "last_epoch")["val_accuracy"]
    return sum(t.last_epoch for t in trials), seconds, best


def main() -> None:
    args = parse_args(__doc__)
    import ray

    ray.init(num_cpus=os.cpu_count(), log_to_driver=False, dashboard_host="127.0.0.1")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scheduler in ("asha", "fifo"):
            rows[scheduler] = run(scheduler, args.epochs, args.data, Path(tmp))
            epochs, seconds, best = rows[scheduler]
            print(f"{scheduler:5}: {epochs:6d} trial-epochs  {seconds:7.1f} s  best val acc {best:.3f}", flush=True)
    (ae, asec, abest), (fe, fsec, fbest) = rows["asha"], rows["fifo"]
    print(f"ASHA/FIFO trial-epochs = {ae / fe:.3f} (target <= 0.25); wall time ratio = {asec / fsec:.3f}; "
          f"best val acc difference = {(fbest - abest) * 100:+.1f} points (target within 1)")  # fmt: skip


if __name__ == "__main__":
    main()
