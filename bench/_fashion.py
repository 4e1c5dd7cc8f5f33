"""Command-line options shared by the Fashion-MNIST benchmarks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_NPZ = REPO.parent / "shared" / "data" / "fashion_mnist_4443.npz"


def parse_args(doc: str) -> argparse.Namespace:
    """``--epochs`` and ``--data`` (an .npz of images/labels; the shared subset by default)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--data", type=Path, default=SHARED_NPZ)
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"no data at {args.data}: pass --data PATH to an .npz with images and labels")
    args.data = args.data.resolve()
    return args
