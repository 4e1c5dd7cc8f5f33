"""``classify``: supervised image classification.

One trial: build the model for the config's ``mode`` (``modes.py``: from scratch, a linear probe
of pretrained weights, or fine-tuning them), an optimizer over its trainable parameters and a
learning-rate scheduler; then per epoch shuffle the training split, step through it in batches of
``batch_size`` (the last, partial batch included), evaluate on the validation split, step the
scheduler, and report (``expgrid.reporter``)::

    epoch                   1-based
    train_loss              mean training loss (nats / sample: cross-entropy, with
                            ``label_smoothing`` when set, as minimised) over the epoch's
                            training samples, each taken at the step that used it
    train_accuracy          fraction of those samples classified right, same convention
    val_loss                mean cross-entropy (nats / sample) on the validation set, eval mode;
                            never label-smoothed, so it compares across ``label_smoothing`` values
    val_accuracy            fraction of the validation set classified right (top-1), eval mode
    val_top5_accuracy       fraction whose true class is among the 5 highest logits (ties count
                            for the true class); with fewer than 5 classes every class is, so 1.0
    val_error               1 − val_accuracy (top-1 error)
    val_top5_error          1 − val_top5_accuracy
    lr                      learning rate of this epoch's steps (the scheduler's; 1/gradient unit)
    seconds                 wall time of the epoch (training and validation), seconds
    ms_per_image            training time (the epoch's steps, no validation) per training image, ms
    iterations              optimizer steps taken this epoch (float16 AMP skips overflowed ones)
    parameters              parameter elements of the model (frozen ones included)
    trainable_parameters    parameter elements the optimizer updates
    first_layer_weight_abs  mean |w| over the first trained Linear/Conv weight at the epoch's end
    first_layer_grad_abs    mean |dL/dw| over that weight, averaged over the epoch's steps
                            (L: the batch-mean loss) — with the weight size, a check for
                            vanishing / exploding gradients at the trained layer furthest from
                            the loss (a linear probe's: its head)

Artifacts (files beside the metrics, built only when due: the trial's last epoch, a stop, an ASHA
rung; see ``diagnostics.py``): ``confusion_matrix.csv`` and ``per_class_accuracy.csv`` of the
validation set (``diagnostics.confusion_matrix``, on by default) and ``grad_norms.json``, per-layer
mean gradient L2 norms per epoch (``diagnostics.grad_norms``, off by default); for 2-D point data,
``decision_boundary.png`` / ``.npz`` (``diagnostics.decision_boundary``, on; ``boundary.py``).

Training options: ``optimizer`` (``optim.py``), ``scheduler`` (``schedules.py``, stepped once per
epoch), ``grad_clip`` (max L2 norm of the whole gradient over the trainable parameters, clipped
as ``torch.nn.utils.clip_grad_norm_`` does), ``label_smoothing`` (``F.cross_entropy``'s),
``augment`` (``augment.py``, applied to each training batch on the device) and ``amp``: on CUDA,
autocast to bfloat16 where the GPU supports it, else float16 with dynamic loss scaling
(``torch.amp.GradScaler``; ``"bfloat16"`` / ``"float16"`` force one). On the CPU ``amp`` does nothing:
CPU autocast rarely speeds up small models, and a no-op keeps CPU runs exactly comparable.

Batches: the training split is reshuffled every epoch (``seed`` seeds the order, the
initialisation and dropout); the last, partial batch is kept, except a final batch of one sample
when the model has BatchNorm in training mode (which cannot normalise a single sample). Data come
from ``batches.make_splits``: small datasets as tensors held on the device, image folders through
a DataLoader.

Speed: at the benchmark size (1,000 samples of 784 pixels, MLP 784-128-64-10, batch 32, one CPU
thread) a step takes well under a millisecond, much of it per-call overhead, so each step makes
only the calls it must: the forward, the loss, one ``zero_()`` of the flat gradient
(``optim.flat_parameters``), backward, one abs-sum for the gradient diagnostic and one
``torch.optim`` step over the one flat tensor (``optim``); options that are off cost a Python
``if``. Batches are views of tensors gathered once per epoch into kept buffers. No
``.item()``: metrics stay on the device until one transfer per epoch; train loss and accuracy come
from the kept logits. Checkpoints (model, optimizer, scheduler and RNG states, copied to the CPU)
and artifacts are built only when due.

Device: CUDA when ``torch.cuda.is_available()`` (a trial given a GPU), else the CPU. The test
split of the data is not used here: it is for evaluating the chosen configuration afterwards, not
for choosing it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn

import expgrid.reporter as reporter
from trainables.classification.augment import build_augment
from trainables.classification.batches import Batches, make_splits
from trainables.classification.boundary import boundary_title, decision_boundary_files, takes_points
from trainables.classification.checks import check_config, check_data, dataset_key  # noqa: F401 - the spec's hooks
from trainables.classification.checks import full_config as _full
from trainables.classification.data import load_dataset
from trainables.classification.diagnostics import (
    GradNorms,
    confusion_csv,
    confusion_matrix,
    grad_norms_json,
    per_class_accuracy_csv,
)
from trainables.classification.models import count_parameters, first_linear
from trainables.classification.modes import build_model, set_train_mode, trainable_parameters
from trainables.classification.optim import create_optimizer, flat_parameters, scaled_step

# The spec's tables, here as before for callers of train (they live in options.py, without torch).
from trainables.classification.options import (  # noqa: F401
    AMP_VALUES,
    CLASSIFY_DEFAULTS,
    CLASSIFY_METRICS,
    CLASSIFY_SMOKE,
)
from trainables.classification.schedules import create_scheduler, step_scheduler
from trainables.common import to_cpu, torch_threads

EVAL_CHUNK = 8192  # at most this many samples per forward pass when evaluating
EVAL_ELEMENTS = 1 << 22  # ... and about this many input values (16 MB of float32) per pass
TOP_K = 5  # val_top5_accuracy's k
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def load_data(config: Mapping[str, Any]) -> dict[str, Any]:
    """The data of ``config["dataset"]`` (see ``data.py``); loaded once per study section."""
    return load_dataset(_full(config)["dataset"])


def amp_dtype(amp: bool | str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for the ``amp`` setting on ``device``; None: full precision (always on
    the CPU, where ``amp`` is a no-op)."""
    if not amp or device.type != "cuda":
        return None
    if amp == "float16":
        return torch.float16
    if amp == "bfloat16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def first_trained_layer(model: nn.Module) -> nn.Module:
    """The first Linear/Conv layer (module order) whose weight is trained: the first layer for
    ``scratch`` and ``fine_tune``, the head for a linear probe."""
    for module in model.modules():
        if isinstance(module, LAYERS) and module.weight.requires_grad:
            return module
    return first_linear(model)


def eval_batch_size(split: Batches, batch_size: int) -> int:
    """Samples per evaluation pass: up to EVAL_CHUNK, fewer for large images (memory), never
    fewer than the training batch."""
    per_sample = math.prod(split.sample_shape)
    return max(batch_size, min(EVAL_CHUNK, EVAL_ELEMENTS // max(per_sample, 1)))


@torch.inference_mode()
def evaluate(
    model: nn.Module, split: Batches, batch_size: int, device: torch.device, autocast: Callable[[], Any]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eval mode over ``split``: (summed cross-entropy, top-1 correct, top-5 correct, predicted
    classes, true classes), all on the device (the sums as 0-d tensors)."""
    model.eval()
    loss = torch.zeros((), device=device)
    correct = torch.zeros_like(loss)
    correct_k = torch.zeros_like(loss)
    predictions, targets = [], []
    for xb, yb in split.epoch(batch_size, shuffle=False):
        with autocast():
            out = model(xb)
        out = out.float()
        loss += F.cross_entropy(out, yb, reduction="sum")
        predicted = out.argmax(1)
        correct += (predicted == yb).sum()
        # top-k: fewer than k logits strictly above the true class's (so top-k >= top-1 even with ties)
        above = (out > out.gather(1, yb[:, None])).sum(1)
        correct_k += (above < TOP_K).sum()
        predictions.append(predicted)
        targets.append(yb)
    return loss, correct, correct_k, torch.cat(predictions), torch.cat(targets)


def classify(config: dict[str, Any], data: Mapping[str, Any]) -> None:
    """Train ``config["model"]`` on ``data`` (from :func:`load_data`), reporting every epoch."""
    cfg = _full(config)
    with torch_threads(int(cfg["threads"])):
        _train(cfg, data)


def _train(cfg: dict[str, Any], data: Mapping[str, Any]) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg["seed"])  # seeds CPU and CUDA generators
    splits = make_splits(data, device)
    train, val = splits["train"], splits["val"]
    num_classes, epochs, batch_size = int(train.num_classes), int(cfg["epochs"]), int(cfg["batch_size"])

    model = build_model(cfg["model"], cfg["mode"], train.sample_shape, num_classes).to(device)
    params = trainable_parameters(model)
    flat = flat_parameters(model, params)  # frozen parameters stay out: never stepped, no gradient
    optimizer = create_optimizer(cfg["optimizer"], [flat])
    scheduler = create_scheduler(cfg["scheduler"], optimizer, epochs)
    dtype = amp_dtype(cfg["amp"], device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    augment = build_augment(cfg["augment"])
    clip = None if cfg["grad_clip"] is None else float(cfg["grad_clip"])
    smoothing = float(cfg["label_smoothing"])
    want_confusion = bool(cfg["diagnostics"]["confusion_matrix"])
    grad_norms = GradNorms(model, flat, params) if cfg["diagnostics"]["grad_norms"] else None
    want_boundary = bool(cfg["diagnostics"]["decision_boundary"]) and takes_points(train.sample_shape)
    norm_epochs: list[int] = []
    norm_rows: list[list[float]] = []
    first = first_trained_layer(model).weight
    grad = flat.grad
    assert grad is not None

    start = 1
    state = reporter.restore()
    if state is not None:  # a retry or resume: continue exactly where the checkpoint left off
        model.load_state_dict(state["model"])  # copies in place, so the flat buffer stays shared
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        if state.get("grad_norms") is not None:
            norm_epochs, norm_rows = list(state["grad_norms"]["epochs"]), list(state["grad_norms"]["norms"])
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])
        start = int(state["epoch"]) + 1

    def checkpoint(epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": to_cpu(model.state_dict()),
            "optimizer": to_cpu(optimizer.state_dict()),
            "scheduler": scheduler.state_dict(),
            "scaler": None if scaler is None else scaler.state_dict(),
            "grad_norms": {"epochs": list(norm_epochs), "norms": [list(r) for r in norm_rows]},
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
        }

    def artifacts(predictions: torch.Tensor, targets: torch.Tensor, title: str = "") -> dict[str, Any]:
        files: dict[str, Any] = {}
        if want_confusion:
            matrix = confusion_matrix(targets, predictions, num_classes).cpu()
            files["confusion_matrix.csv"] = confusion_csv(matrix, data.get("classes"))
            files["per_class_accuracy.csv"] = per_class_accuracy_csv(matrix, data.get("classes"))
        if grad_norms is not None:
            files["grad_norms.json"] = grad_norms_json(grad_norms.names, norm_epochs, norm_rows)
        if want_boundary:  # the model as it is now: at the last epoch, the trial's final model
            files.update(decision_boundary_files(model, data["x_train"], data["y_train"], num_classes, device, title))
        return files

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    counts = {"parameters": count_parameters(model), "trainable_parameters": flat.numel()}
    first_grad = first.grad  # a view into the flat gradient, so the same tensor every step
    assert first_grad is not None
    abs_buffer = torch.empty_like(first)
    step = optimizer.step
    # model.train(), except a linear probe's frozen body stays in eval (the same when nothing is frozen)
    frozen = flat.numel() < counts["parameters"]
    train_mode = (lambda: set_train_mode(model)) if frozen else model.train
    train_mode()
    # BatchNorm in training mode (not a probe's frozen one) cannot take a batch of one sample
    batchnorm = any(isinstance(m, BATCHNORMS) and m.training for m in model.modules())
    eval_batch = eval_batch_size(val, batch_size)
    for epoch in range(start, epochs + 1):
        began = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]  # the scheduler's rate for this epoch
        train_mode()
        outputs: list[torch.Tensor] = []
        labels: list[torch.Tensor] = []
        grad_l1: list[torch.Tensor] = []
        skipped = 0
        for xb, yb in train.epoch(batch_size, shuffle=True, drop_last_single=batchnorm):
            if augment is not None:
                xb = augment(xb)
            if dtype is None:
                out = model(xb)
                loss = F.cross_entropy(out, yb, label_smoothing=smoothing)
            else:
                with torch.autocast(device.type, dtype=dtype):
                    out = model(xb)
                    loss = F.cross_entropy(out, yb, label_smoothing=smoothing)
            outputs.append(out.detach())
            labels.append(yb)
            grad.zero_()  # not optimizer.zero_grad(): that would set the layers' grad views to None
            if scaler is None:
                loss.backward()
                # sum |g| (divided by the size below) via a kept buffer: 4x faster than
                # vector_norm(g, 1), and no fresh weight-sized allocation per step.
                grad_l1.append(torch.abs(first_grad, out=abs_buffer).sum())
                if grad_norms is not None:
                    grad_norms.accumulate()
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(flat, clip)
                step()
                continue
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # the diagnostics and clipping see the true gradient
            step_l1 = first_grad.abs().sum()
            step_norms = grad_norms.norms() if grad_norms is not None else None
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(flat, clip)
            if not scaled_step(scaler, optimizer):  # inf / NaN: the scale was too large; skipped
                skipped += 1
                continue
            grad_l1.append(step_l1)
            if step_norms is not None:
                grad_norms.add(step_norms)
        if not outputs:
            raise ValueError(f"no training batch: {train.num_samples} sample(s) in batches of {batch_size}")
        if device.type == "cuda":
            torch.cuda.synchronize()  # so the clock measures the steps, not their queueing
        train_seconds = time.perf_counter() - began

        with torch.no_grad():
            # The epoch's outputs, each from the step that trained on it: loss and accuracy over
            # all samples at once equal the sample-weighted mean of the per-batch values.
            logits = torch.cat(outputs).float()
            targets = torch.cat(labels)
            train_loss = F.cross_entropy(logits, targets, label_smoothing=smoothing)
            train_accuracy = (logits.argmax(1) == targets).float().mean()
            grad_abs = torch.stack(grad_l1).mean() / first.numel() if grad_l1 else logits.new_zeros(())
            weight_abs = first.abs().mean()
        val_loss, val_correct, val_correct_k, predictions, val_targets = evaluate(
            model, val, eval_batch, device, autocast
        )
        n_val = len(val_targets)
        values = [train_loss, train_accuracy, val_loss / n_val, val_correct / n_val, val_correct_k / n_val]
        stacked = torch.stack([v.float() for v in (*values, weight_abs, grad_abs)])
        if grad_norms is not None:
            stacked = torch.cat([stacked, grad_norms.epoch_means()])
        host = stacked.tolist()  # one device-to-host transfer per epoch, not one per metric
        if grad_norms is not None:
            norm_epochs.append(epoch)
            norm_rows.append(host[7:])
        trained = len(targets)
        metrics = {
            "epoch": epoch,
            "train_loss": host[0],
            "train_accuracy": host[1],
            "val_loss": host[2],
            "val_accuracy": host[3],
            "val_top5_accuracy": host[4],
            "val_error": 1.0 - host[3],
            "val_top5_error": 1.0 - host[4],
            "lr": lr,
            "seconds": time.perf_counter() - began,
            "ms_per_image": 1000.0 * train_seconds / trained,
            "iterations": len(outputs) - skipped,
            **counts,
            "first_layer_weight_abs": host[5],
            "first_layer_grad_abs": host[6],
        }
        # before the checkpoint, so a resumed trial starts at the next rate
        step_scheduler(scheduler, cfg["scheduler"], metrics)
        files = None
        if want_confusion or grad_norms is not None or want_boundary:
            title = boundary_title(cfg["model"], num_classes, epoch, host[3]) if want_boundary else ""
            files = lambda p=predictions, t=val_targets, s=title: artifacts(p, t, s)  # noqa: E731 - called only when due
        reporter.report(metrics, checkpoint=lambda epoch=epoch: checkpoint(epoch), artifacts=files)
