"""A small study as fast as a script: two sections × 3 trials × 2 epochs of Fashion-MNIST
(MLP 784-128-64-10, Adam, batch 32, 1,000 train / 500 val images, one thread per trial) through
``expgrid run`` and through the Optuna script a user would write for it (a GridSampler per
section, the best learning rate of the first fixed for the second, two trials at a time, each
trial an MLflow run in a SQLite store), cold (a new process each) and warm (the second run in
one process). Then the embedded digits demo end to end (``expgrid run digits_demo``).

Prints, per way and per mode, the median wall time of ``--reps`` runs, expgrid's ratio to
Optuna (targets: cold ≤ 1.5, warm ≤ 1.0), and for expgrid the fixed part: the wall time less
the trials' epochs (bench/_fixed.py). The digits demo: ≤ 10 s end to end, fixed part ≤ 4 s.

    .venv/bin/python bench/small_study.py [--data ../shared/data/fashion_mnist_4443.npz] [--reps 3]
        [--skip-demo] [--repo CHECKOUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fashion import SHARED_NPZ  # noqa: E402
from _fixed import epochs_wall  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LRS = [1e-4, 1e-3, 1e-2]
WEIGHT_DECAYS = [0.0, 1e-4, 1e-2]
EPOCHS = 2
SLOTS = 2  # trials at once: a 2-CPU machine, one CPU per trial (both ways)

STUDY = """\
study: small-fashion
trainable: classify
metric: val_accuracy
mode: max
seed: 0
defaults:
  dataset: {{name: fashion_mnist, path: {npz}, train_size: 1000, val_size: 500}}
  model: {{name: mlp, hidden: [128, 64]}}
  optimizer: {{name: adam, lr: 1.0e-3}}
  batch_size: 32
  epochs: {epochs}
  threads: 1
resources: {{cpu: 1}}
sections:
  - {{id: "1", name: Learning rate, grid: {{optimizer.lr: {lrs}}}}}
  - {{id: "2", name: Weight decay, grid: {{optimizer.weight_decay: {wds}}}}}
"""

# The script a user would write (run as its own process): the same split, model and loop as
# the coursework, Optuna's GridSampler per section, MLflow runs logged by hand.
OPTUNA = '''
import sys, time
T0 = time.perf_counter()
import numpy as np
import optuna
import mlflow
import torch
import torch.nn.functional as F
from torch import nn

npz, epochs, store, repeats = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
LRS, WDS = {lrs}, {wds}
optuna.logging.set_verbosity(optuna.logging.WARNING)
torch.set_num_threads(1)

with np.load(npz) as d:
    images, labels = d["images"], d["labels"]
order = np.random.default_rng(0).permutation(len(labels))
x = torch.tensor(images[order[:1500]], dtype=torch.float32).div_(255).view(-1, 784)
y = torch.tensor(labels[order[:1500]]).long()
xt, yt, xv, yv = x[:1000], y[:1000], x[1000:], y[1000:]


def train(lr, wd, trial):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    with mlflow.start_run(run_name=f"trial {{trial.number}}", nested=True):
        mlflow.log_params({{"lr": lr, "weight_decay": wd}})
        for epoch in range(1, epochs + 1):
            model.train()
            perm = torch.randperm(1000)
            for i in range(0, 1000, 32):
                idx = perm[i:i + 32]
                loss = F.cross_entropy(model(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                out = model(xv)
                acc = (out.argmax(1) == yv).float().mean().item()
            mlflow.log_metrics({{"val_accuracy": acc, "val_loss": F.cross_entropy(out, yv).item()}}, step=epoch)
    return acc


def study_once(n):
    mlflow.set_tracking_uri(store)
    mlflow.set_experiment(f"small-fashion-{{n}}")
    with mlflow.start_run(run_name="study"):
        s1 = optuna.create_study(direction="maximize", sampler=optuna.samplers.GridSampler({{"lr": LRS}}))
        s1.optimize(lambda t: train(t.suggest_float("lr", 1e-5, 1.0), 0.0, t), n_trials=len(LRS), n_jobs=2)
        best_lr = s1.best_params["lr"]
        s2 = optuna.create_study(direction="maximize", sampler=optuna.samplers.GridSampler({{"wd": WDS}}))
        s2.optimize(lambda t: train(best_lr, t.suggest_float("wd", 0.0, 1.0), t), n_trials=len(WDS), n_jobs=2)
    return s2.best_value


times = []
for n in range(repeats):
    start = time.perf_counter()
    study_once(n)
    times.append(time.perf_counter() - start)
print("TIMES", times, "PROCESS", time.perf_counter() - T0, flush=True)
'''

# expgrid run twice in one process (warm: the second finds Ray and its imports in place).
EXPGRID_WARM = '''
import sys, time
from expgrid.run_options import RunOptions
from expgrid.runner import prepare, run_study
study_file, out, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
times = []
for n in range(repeats):
    start = time.perf_counter()
    study, spec = prepare(study_file)
    run_study(study, spec, RunOptions(results_dir=f"{out}/run{n}", stream=open("/dev/null", "w")))
    times.append(time.perf_counter() - start)
print("TIMES", times, flush=True)
'''


def _times(out: str) -> list[float]:
    line = next(line for line in out.splitlines() if line.startswith("TIMES "))
    return json.loads(line.split(" ", 1)[1].split(" PROCESS")[0])


CODE = REPO  # the checkout whose expgrid runs (--repo: e.g. another worktree, for a before/after)


def _run(cmd: list[str], cwd: Path) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(CODE)}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def expgrid_cold(study: Path, tmp: Path, rep: int) -> tuple[float, float]:
    results = tmp / f"cold{rep}"
    seconds, _ = _run([sys.executable, "-m", "expgrid", "run", str(study), "--results", str(results)], CODE)
    return seconds, seconds - epochs_wall(results, SLOTS)


def expgrid_warm(study: Path, tmp: Path, rep: int) -> tuple[float, float]:
    out = tmp / f"warm{rep}"
    _, stdout = _run([sys.executable, "-c", EXPGRID_WARM, str(study), str(out), "2"], CODE)
    second = _times(stdout)[1]
    return second, second - epochs_wall(out / "run1", SLOTS)


def optuna_runs(npz: Path, tmp: Path, rep: int, repeats: int) -> tuple[float, list[float]]:
    script = tmp / "optuna_small_study.py"
    script.write_text(OPTUNA.format(lrs=LRS, wds=WEIGHT_DECAYS))
    seconds, stdout = _run([sys.executable, str(script), str(npz), str(EPOCHS), f"sqlite:///{tmp}/optuna{rep}.db",
                            str(repeats)], tmp)  # fmt: skip
    return seconds, _times(stdout)


def digits_demo(tmp: Path, rep: int) -> tuple[float, float]:
    results = tmp / f"digits{rep}"
    seconds, _ = _run([sys.executable, "-m", "expgrid", "run", "digits_demo", "--results", str(results)], CODE)
    return seconds, seconds - epochs_wall(results, SLOTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_NPZ)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose expgrid to run (default: this one)")
    args = parser.parse_args()
    global CODE
    CODE = args.repo.resolve()
    if not args.data.is_file():
        sys.exit(f"no data at {args.data}: pass --data PATH to an .npz with images and labels")
    rows: dict[str, list[tuple[float, float]]] = {"expgrid cold": [], "expgrid warm": [], "optuna cold": [],
                                                  "optuna warm": [], "digits demo": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        study = tmp / "small_fashion.yaml"
        study.write_text(STUDY.format(npz=args.data.resolve(), epochs=EPOCHS, lrs=LRS, wds=WEIGHT_DECAYS))
        for rep in range(args.reps):  # the ways alternate, so that load from other processes hits all alike
            rows["expgrid cold"].append(expgrid_cold(study, tmp, rep))
            cold, (first, second) = optuna_runs(args.data, tmp, rep, 2)
            rows["optuna cold"].append((cold - second, 0.0))  # the process with one study in it
            rows["optuna warm"].append((second, 0.0))
            rows["expgrid warm"].append(expgrid_warm(study, tmp, rep))
            if not args.skip_demo:
                rows["digits demo"].append(digits_demo(tmp, rep))
            print(f"rep {rep + 1}: " + ", ".join(f"{k} {v[-1][0]:.1f} s" for k, v in rows.items() if v)
                  + f" (load average {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
    med = {k: (statistics.median(w for w, _ in v), statistics.median(f for _, f in v)) for k, v in rows.items() if v}
    print(f"\nmedians of {args.reps} (2 sections x 3 trials x {EPOCHS} epochs, {SLOTS} trials at once):")
    for k, (wall, fixed) in med.items():
        extra = f"   fixed part {fixed:5.1f} s" if k.startswith(("expgrid", "digits")) else ""
        print(f"  {k:13s} {wall:6.1f} s{extra}")
    print(f"cold: expgrid / optuna = {med['expgrid cold'][0] / med['optuna cold'][0]:.2f} (target <= 1.5)")
    print(f"warm: expgrid / optuna = {med['expgrid warm'][0] / med['optuna warm'][0]:.2f} (target <= 1.0)")
    if "digits demo" in med:
        wall, fixed = med["digits demo"]
        print(f"digits demo: {wall:.1f} s end to end (target <= 10), fixed part {fixed:.1f} s (target <= 4)")


if __name__ == "__main__":
    main()
