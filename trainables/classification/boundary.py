"""The decision boundary of a model of 2-D points (``diagnostics.decision_boundary``).

The model is evaluated (eval mode) on a regular grid of ``GRID_POINTS`` × ``GRID_POINTS`` points
over the training points' bounding box, widened by ``MARGIN`` of its extent on every side; the
predicted class of each grid point is drawn as filled contours, with the training points
scattered over it in their classes' colours. Two artifacts of the trial:

* ``decision_boundary.png`` — that picture, ``FIGURE_PIXELS`` × ``FIGURE_PIXELS`` pixels;
* ``decision_boundary.npz`` — what it shows: ``x`` (W,) and ``y`` (H,), the grid's coordinates,
  and ``predicted`` (H, W) int64, the class at (``x[j]``, ``y[i]``) in row i, column j.

Drawn with matplotlib's Agg canvas, without pyplot (no display, no global state), as the
reports draw theirs; matplotlib is imported only when a picture is drawn.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

GRID_POINTS = 200  # grid points per side
MARGIN = 0.1  # the grid extends this fraction of the data's extent beyond it on every side
FIGURE_INCHES = 5.0
FIGURE_DPI = 100
FIGURE_PIXELS = int(FIGURE_INCHES * FIGURE_DPI)  # the PNG's width and height
PNG_FILE = "decision_boundary.png"
GRID_FILE = "decision_boundary.npz"


def takes_points(sample_shape: Sequence[int]) -> bool:
    """Whether the inputs are 2-D points (2 features), the inputs a decision boundary is drawn for."""
    return tuple(int(s) for s in sample_shape) == (2,)


def grid_axes(points: np.ndarray, n: int = GRID_POINTS, margin: float = MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) coordinates, ``n`` each (float32), spanning the points' bounding box plus ``margin``
    of its extent per side (at least ``margin`` when the extent is 0)."""
    points = np.asarray(points, dtype=np.float64)
    low, high = points.min(axis=0), points.max(axis=0)
    extent = np.where(high > low, high - low, 1.0)  # a flat side still gets a grid around it
    low, high = low - margin * extent, high + margin * extent
    return (np.linspace(low[0], high[0], n, dtype=np.float32), np.linspace(low[1], high[1], n, dtype=np.float32))


def grid_points(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The grid's points as float32 (H·W, 2), row by row: row i holds (xs[j], ys[i]) for every j."""
    gx, gy = np.meshgrid(xs, ys, indexing="xy")
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


@torch.inference_mode()
def grid_predictions(model: nn.Module, xs: np.ndarray, ys: np.ndarray, device: torch.device | str) -> np.ndarray:
    """The model's predicted class (argmax of the logits, eval mode) at every grid point: (H, W) int64.

    Leaves the model in eval mode, as the validation pass before it does (training sets its
    mode again at the next epoch's start)."""
    model.eval()
    points = torch.from_numpy(grid_points(xs, ys)).to(device)
    predicted = model(points).float().argmax(1)
    return predicted.cpu().numpy().astype(np.int64).reshape(len(ys), len(xs))


def boundary_png(xs: np.ndarray, ys: np.ndarray, predicted: np.ndarray, points: np.ndarray, labels: np.ndarray,
                 num_classes: int, title: str = "") -> bytes:  # fmt: skip
    """The picture: the predicted class as filled contours, the (training) points over it."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    colours = [colormaps["tab10"](i % 10) for i in range(num_classes)]
    cmap = ListedColormap(colours)
    figure = Figure(figsize=(FIGURE_INCHES, FIGURE_INCHES), dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    levels = np.arange(num_classes + 1) - 0.5  # one band per class
    ax.contourf(xs, ys, predicted, levels=levels, cmap=cmap, alpha=0.3)
    ax.contour(xs, ys, predicted, levels=levels[1:-1], colors="k", linewidths=0.8)
    ax.scatter(points[:, 0], points[:, 1], c=np.asarray(labels), cmap=cmap, vmin=-0.5, vmax=num_classes - 0.5,
               s=8, edgecolors="k", linewidths=0.3)  # fmt: skip
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(ys[0], ys[-1])
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    if title:
        ax.set_title(title, fontsize="small")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI)  # no tight bbox: the size stays FIGURE_PIXELS
    return buffer.getvalue()


def grid_npz(xs: np.ndarray, ys: np.ndarray, predicted: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=xs, y=ys, predicted=predicted)
    return buffer.getvalue()


def boundary_title(model_cfg: Mapping[str, Any], num_classes: int, epoch: int, val_accuracy: float) -> str:
    """What the picture shows, to tell the best from the worst: the MLP's layer widths, the epoch
    and its validation accuracy, e.g. ``mlp 2-16-16-2, epoch 50: val_accuracy 0.987``."""
    from trainables.classification.models import hidden_widths

    widths = hidden_widths(model_cfg.get("hidden"), model_cfg.get("depth"), model_cfg.get("width"))
    return f"mlp {'-'.join(map(str, [2, *widths, num_classes]))}, epoch {epoch}: val_accuracy {val_accuracy:.3f}"


def decision_boundary_files(model: nn.Module, points: Any, labels: Any, num_classes: int,
                            device: torch.device | str, title: str = "") -> dict[str, bytes]:  # fmt: skip
    """The two artifacts (module docstring) of ``model`` over the training ``points`` (N, 2)."""
    points, labels = np.asarray(points, dtype=np.float32), np.asarray(labels)
    xs, ys = grid_axes(points)
    predicted = grid_predictions(model, xs, ys, device)
    return {
        PNG_FILE: boundary_png(xs, ys, predicted, points, labels, num_classes, title),
        GRID_FILE: grid_npz(xs, ys, predicted),
    }
