"""Seconds per ``classify`` trial in the Fashion-MNIST assignment setting, against a plain loop.

The setting: 150 epochs, 1,000 training / 500 validation images (28×28), MLP 784-128-64-10,
Adam lr 1e-4, batch 32, one CPU thread. Each run is a fresh Python process, as a Ray trial is, and
the two kinds alternate so that load from other processes hits both alike. Both report the same
metrics each epoch (train/val loss and accuracy, first-layer |w| and |grad|).

    .venv/bin/python bench/classify_trial.py [--npz ../shared/data/fashion_mnist_4443.npz] [--reps 3]

Prints, per run, the epoch loop's seconds and the whole trial's (everything after ``import torch``:
data, model, optimizer, loop), then the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 150

OURS = """
import json, sys, time
import torch
t0 = time.perf_counter()
from expgrid.reporter import run_locally
from trainables.classification.train import classify, load_data
cfg = {"dataset": {"name": "fashion_mnist", "path": sys.argv[1]}, "optimizer": {"name": "adam", "lr": 1e-4},
       "epochs": int(sys.argv[2]), "batch_size": 32, "threads": 1}
session = run_locally(classify, cfg, load_data(cfg))
total = time.perf_counter() - t0
print(json.dumps({"loop": sum(r["seconds"] for r in session.history), "trial": total,
                  "val_accuracy": session.history[-1]["val_accuracy"]}))
"""

# The usual hand-written loop over preloaded tensors: per-batch indexing, torch.optim.Adam,
# .item() per batch for the running loss, accuracy and gradient diagnostic.
PLAIN = """
import json, sys, time
import torch
t0 = time.perf_counter()
import numpy as np
import torch.nn.functional as F
from torch import nn
torch.set_num_threads(1)
torch.manual_seed(0)
with np.load(sys.argv[1]) as d:
    images, labels = d["images"], d["labels"]
order = np.random.default_rng(0).permutation(len(labels))
x = torch.tensor(images[order[:1500]], dtype=torch.float32).div_(255).view(-1, 1, 28, 28)
y = torch.tensor(labels[order[:1500]]).long()
xt, yt, xv, yv = x[:1000], y[:1000], x[1000:], y[1000:]
model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-4)
loop = 0.0
for epoch in range(int(sys.argv[2])):
    began = time.perf_counter()
    model.train()
    perm = torch.randperm(1000)
    total_loss = correct = 0.0
    grads = []
    for i in range(0, 1000, 32):
        idx = perm[i : i + 32]
        xb, yb = xt[idx], yt[idx]
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        opt.zero_grad()
        loss.backward()
        grads.append(model[1].weight.grad.abs().mean().item())
        opt.step()
        total_loss += loss.item() * len(yb)
        correct += (out.argmax(1) == yb).sum().item()
    model.eval()
    with torch.no_grad():
        o = model(xv)
        val_loss, val_acc = F.cross_entropy(o, yv).item(), (o.argmax(1) == yv).float().mean().item()
    weight_abs = model[1].weight.abs().mean().item()
    loop += time.perf_counter() - began
print(json.dumps({"loop": loop, "trial": time.perf_counter() - t0, "val_accuracy": val_acc}))
"""


def run(code: str, npz: str, epochs: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, npz, str(epochs)], cwd=REPO, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npz", default=str(REPO.parent / "shared" / "data" / "fashion_mnist_4443.npz"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args()
    if not Path(args.npz).is_file():
        sys.exit(f"no data at {args.npz}: give --npz (an .npz with `images` and `labels`)")
    results: dict[str, list[dict]] = {"classify": [], "plain loop": []}
    for rep in range(args.reps):
        for name, code in (("classify", OURS), ("plain loop", PLAIN)):
            r = run(code, args.npz, args.epochs)
            results[name].append(r)
            print(
                f"rep {rep + 1} {name:10s}  loop {r['loop']:6.2f} s  trial {r['trial']:6.2f} s  val_accuracy {r['val_accuracy']:.3f}"
            )
    print(f"medians over {args.reps} runs, {args.epochs} epochs:")
    for name, rows in results.items():
        loop = statistics.median(r["loop"] for r in rows)
        trial = statistics.median(r["trial"] for r in rows)
        print(f"  {name:10s}  loop {loop:6.2f} s  trial {trial:6.2f} s")


if __name__ == "__main__":
    main()
