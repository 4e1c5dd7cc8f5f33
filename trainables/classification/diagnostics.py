"""Training diagnostics for ``classify`` (config key ``diagnostics``), computed on the device.

* ``grad_norms``: per layer (each module that holds trainable parameters, named by its module
  path, e.g. ``"1"`` or ``"layer1.0.conv1"``), the L2 norm of the gradient of that module's own
  parameters (weight and bias together) at every optimizer step, averaged over the epoch's steps.
  Layers near the input with norms orders of magnitude below those near the loss show vanishing
  gradients; the reverse, exploding ones. Cheap: the layers are contiguous slices of the flat
  gradient (``optim.flat_parameters``), so a step costs one norm per layer slice and one add into
  a per-layer accumulator on the device; the epoch's means reach the host with the
  epoch's other metrics. Sent as the artifact ``grad_norms.json``.
* ``confusion_matrix``: counts of (true class, predicted class) on the validation set from the
  epoch's evaluation (one ``bincount`` on the device), with per-class accuracy; sent as the
  artifacts ``confusion_matrix.csv`` and ``per_class_accuracy.csv`` when the trial's artifacts are
  due (its last epoch, a stop, an ASHA rung).
* ``decision_boundary`` (inputs of 2 features only: the point datasets ``moons``, ``circles``,
  ``spirals``; ignored for images): the model's predicted class over a grid around the training
  points, drawn with them, when the trial's artifacts are due; the artifacts
  ``decision_boundary.png`` and ``decision_boundary.npz`` (``boundary.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from trainables.classification.checks import check_diagnostics  # noqa: F401 - re-exported
from trainables.classification.options import DIAGNOSTICS_DEFAULTS  # noqa: F401

ROOT_NAME = "(root)"  # the layer name of parameters held by the model module itself


def parameter_layers(model: nn.Module, params: Sequence[torch.Tensor]) -> list[tuple[str, list[torch.Tensor]]]:
    """(module path, its parameters among ``params``) for every module holding one of ``params``
    directly, in module order. A parameter shared by several modules belongs to the first."""
    wanted = {id(p) for p in params}
    seen: set[int] = set()
    layers = []
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if id(p) in wanted and id(p) not in seen]
        seen.update(id(p) for p in own)
        if own:
            layers.append((name or ROOT_NAME, own))
    return layers


class GradNorms:
    """Per-layer gradient L2 norms, accumulated on the device step by step.

    ``flat``: the flat parameter from ``optim.flat_parameters`` over (a superset of) ``params``;
    the layers' gradients are read as slices of ``flat.grad``. Call :meth:`accumulate` after each
    backward (on the unscaled, unclipped gradient), :meth:`epoch_means` once per epoch."""

    def __init__(self, model: nn.Module, flat: torch.Tensor, params: Sequence[torch.Tensor]):
        grad = flat.grad
        assert grad is not None
        base, size = grad.data_ptr(), grad.element_size()
        self.names: list[str] = []
        slices: list[torch.Tensor] = []
        owner: list[int] = []
        for index, (name, own) in enumerate(parameter_layers(model, params)):
            self.names.append(name)
            # Each parameter's gradient is a view of the flat gradient: find its range there and
            # merge ranges that touch, so a layer is one slice in the usual (module-ordered) case.
            ranges = sorted(((p.grad.data_ptr() - base) // size, p.numel()) for p in own if p.grad is not None)
            merged: list[list[int]] = []
            for start, n in ranges:
                if merged and merged[-1][0] + merged[-1][1] == start:
                    merged[-1][1] += n
                else:
                    merged.append([start, n])
            for start, n in merged:
                slices.append(grad[start : start + n])
                owner.append(index)
        self.slices = slices
        # one slice per layer: the slice norms are the layer norms; else combine squares per layer
        self.index = None if len(slices) == len(self.names) else torch.tensor(owner, device=grad.device)
        self.sum = torch.zeros(len(self.names), dtype=torch.float32, device=grad.device)
        self.steps = 0

    def norms(self) -> torch.Tensor:
        """This step's per-layer gradient norms (on the device)."""
        norms = torch.stack([torch.linalg.vector_norm(s) for s in self.slices])
        if self.index is not None:
            norms = torch.zeros_like(self.sum).index_add_(0, self.index, norms.float().square()).sqrt_()
        return norms

    def add(self, norms: torch.Tensor) -> None:
        """Count one step's :meth:`norms` (kept apart so that a skipped step is not counted)."""
        self.sum += norms
        self.steps += 1

    def accumulate(self) -> None:
        """Count this step's norms."""
        self.add(self.norms())

    def epoch_means(self) -> torch.Tensor:
        """The epoch's mean norm per layer (on the device); resets the accumulator."""
        means = self.sum / max(self.steps, 1)
        self.sum = torch.zeros_like(self.sum)
        self.steps = 0
        return means


def grad_norms_json(layers: Sequence[str], epochs: Sequence[int], norms: Sequence[Sequence[float]]) -> dict[str, Any]:
    """The ``grad_norms.json`` artifact: one row of per-layer norms per epoch."""
    return {"layers": list(layers), "epochs": list(epochs), "norms": [list(row) for row in norms]}


def confusion_matrix(targets: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts: row the true class, column the predicted one."""
    flat = targets.to(torch.int64) * num_classes + predictions.to(torch.int64)
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def _class_names(num_classes: int, names: Sequence[str] | None) -> list[str]:
    if names is not None and len(names) == num_classes:
        return [str(n) for n in names]
    return [str(i) for i in range(num_classes)]


def _csv_field(value: str) -> str:
    return f'"{value.replace(chr(34), chr(34) * 2)}"' if any(c in value for c in ',"\n') else value


def confusion_csv(matrix: Any, names: Sequence[str] | None = None) -> str:
    """The ``confusion_matrix.csv`` artifact: a header of predicted classes, then per true class
    its name and counts."""
    rows = torch.as_tensor(matrix).tolist()
    labels = [_csv_field(n) for n in _class_names(len(rows), names)]
    lines = [",".join(["true\\predicted", *labels])]
    lines += [",".join([label, *map(str, row)]) for label, row in zip(labels, rows, strict=True)]
    return "\n".join(lines) + "\n"


def per_class_accuracy_csv(matrix: Any, names: Sequence[str] | None = None) -> str:
    """The ``per_class_accuracy.csv`` artifact: per true class its samples, correct predictions
    and accuracy (empty when the class has no validation samples)."""
    rows = torch.as_tensor(matrix).tolist()
    lines = ["class,samples,correct,accuracy"]
    for i, (label, row) in enumerate(zip(_class_names(len(rows), names), rows, strict=True)):
        samples, correct = sum(row), row[i]
        accuracy = f"{correct / samples:.6g}" if samples else ""
        lines.append(f"{_csv_field(label)},{samples},{correct},{accuracy}")
    return "\n".join(lines) + "\n"
