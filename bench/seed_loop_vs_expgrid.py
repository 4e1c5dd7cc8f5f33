"""Fashion-MNIST weight-decay section (5 trials × 150 epochs, 1000 train / 500 val) two ways.

1. The assignment's own loop: a torchvision-style dataset (per-sample ToTensor + flatten), a
   DataLoader with batch 32, Adam lr 1e-4, the five weight decays one after another.
2. ``expgrid run search_spaces/fashion_mnist.yaml --sections 3.2`` in a fresh process (Ray
   start, MLflow and everything included).

Prints both wall times, their ratio, and both sets of final validation accuracies; expgrid's
time also split into the trials' part (their epochs, list-scheduled on 2 slots: bench/_fixed.py)
and the fixed part (the rest: start-up, scheduling, MLflow, reports, shut-down).
Target: expgrid ≤ 1/4 of the loop's time, accuracies within 1.5 points.

    .venv/bin/python bench/seed_loop_vs_expgrid.py [--epochs 150] [--data ../shared/data/fashion_mnist_4443.npz]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _fashion import parse_args  # bench/ is on sys.path when a script here runs
from _fixed import epochs_wall
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

REPO = Path(__file__).resolve().parents[1]
WEIGHT_DECAYS = [0, 1e-4, 1e-3, 1e-2, 0.1]


class FashionImages(Dataset):
    """What the coursework uses: PIL images turned into tensors one sample at a time."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Lambda(lambda x: x.view(-1))])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def coursework_loop(data: dict, epochs: int, seed: int) -> list[float]:
    to_uint8 = lambda x: np.rint(np.asarray(x)[:, 0] * 255).astype(np.uint8)  # noqa: E731 - same pixels as the .npz
    train = DataLoader(FashionImages(to_uint8(data["x_train"]), data["y_train"]), batch_size=32, shuffle=True)
    val = DataLoader(FashionImages(to_uint8(data["x_val"]), data["y_val"]), batch_size=32)
    accuracies = []
    for wd in WEIGHT_DECAYS:
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=wd)
        loss_fn = nn.CrossEntropyLoss()
        for _ in range(epochs):
            model.train()
            for x, y in train:
                opt.zero_grad()
                loss_fn(model(x), y).backward()
                opt.step()
            model.eval()
            correct = total = 0
            with torch.no_grad():
                for x, y in val:
                    correct += (model(x).argmax(1) == y).sum().item()
                    total += len(y)
        accuracies.append(correct / total)
    return accuracies


def expgrid_run(npz: Path, epochs: int) -> tuple[float, float, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "expgrid.cli", "run", str(REPO / "search_spaces" / "fashion_mnist.yaml"),
               "--sections", "3.2", "--results", tmp, "--set", f"dataset.path={npz}", "--set", f"epochs={epochs}"]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        trials = json.loads((Path(tmp) / "sections" / "3.2" / "trials.json").read_text())
        epochs_s = epochs_wall(Path(tmp), 2)  # the section's resources: cpu 1 per trial, 2 CPUs
    trials.sort(key=lambda t: t["index"])
    return seconds, epochs_s, [t["history"][-1]["val_accuracy"] for t in trials]


def main() -> None:
    args = parse_args(__doc__)

    from trainables.classification.train import load_data

    data = load_data({"dataset": {"name": "fashion_mnist", "path": str(args.data), "train_size": 1000,
                                  "val_size": 500, "seed": 0}})  # fmt: skip
    start = time.perf_counter()
    loop_acc = coursework_loop(data, args.epochs, seed=0)
    loop_s = time.perf_counter() - start
    print(f"coursework loop : {loop_s:7.1f} s   val acc {[round(a, 3) for a in loop_acc]}", flush=True)

    grid_s, epochs_s, grid_acc = expgrid_run(args.data, args.epochs)
    print(f"expgrid run     : {grid_s:7.1f} s   val acc {[round(a, 3) for a in grid_acc]}")
    print(f"  of which the trials' epochs {epochs_s:.1f} s, the fixed part {grid_s - epochs_s:.1f} s")
    mean_diff = abs(np.mean(loop_acc) - np.mean(grid_acc)) * 100
    max_diff = max(abs(a - b) for a, b in zip(loop_acc, grid_acc)) * 100
    print(f"ratio expgrid/loop = {grid_s / loop_s:.3f} (target <= 0.25); speed-up {loop_s / grid_s:.2f}x")
    # Different seeds' shuffles and inits move one trial by ~1 point on 500 images; the means compare the methods.
    print(f"val accuracy: mean loop {np.mean(loop_acc):.3f} vs expgrid {np.mean(grid_acc):.3f} -> "
          f"{mean_diff:.1f} points apart (target <= 1.5); largest single-trial gap {max_diff:.1f} points")


if __name__ == "__main__":
    main()
