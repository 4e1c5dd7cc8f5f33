"""``classify``: supervised image classification on a dataset held whole in memory.

One trial: build the model and optimizer named in the config, then per epoch shuffle the training
set, step through it in batches of ``batch_size`` (the last, partial batch included), evaluate on
the validation set in one pass, and report (``expgrid.reporter``)::

    epoch                   1-based
    train_loss              mean cross-entropy (nats / sample) over the epoch's training samples,
                            each taken at the step that used it (as the running loss is)
    train_accuracy          fraction of those samples classified right, same convention
    val_loss                mean cross-entropy (nats / sample) on the validation set, eval mode
    val_accuracy            fraction of the validation set classified right, eval mode
    seconds                 wall time of the epoch (training and validation), seconds
    first_layer_weight_abs  mean |w| over the first Linear/Conv weight at the epoch's end
    first_layer_grad_abs    mean |dL/dw| over that weight, averaged over the epoch's batches
                            (L: the batch-mean loss) — with the weight size, a check for
                            vanishing / exploding gradients at the layer furthest from the loss

Batches: the training set is reshuffled every epoch (``seed`` seeds the order, the initialisation
and dropout); the last, partial batch is kept, except a final batch of one sample when the model
has BatchNorm (which cannot normalise a single sample in training mode).

Speed: at the benchmark size (1,000 samples of 784 pixels, MLP 784-128-64-10, batch 32, one CPU
thread) a step takes well under a millisecond, much of it per-call overhead, so each step makes
only the calls it must: the forward (layers called directly, ``models.fast_forward``), the loss,
one ``zero_()`` of the flat gradient (``optim.flat_parameters``), backward, one abs-sum for the
gradient diagnostic and one fused optimizer kernel (``optim``). No DataLoader: batches are views
of the training tensors gathered once per epoch into kept buffers. No ``.item()``: metrics stay
on the device until one transfer per epoch; train loss and accuracy come from the kept logits.
Checkpoints (model, optimizer and RNG states, copied to the CPU) are built only when due.

Device: CUDA when ``torch.cuda.is_available()`` (a trial given a GPU), else the CPU; the whole
dataset is moved there once. The test split of the data is not used here: it is for evaluating
the chosen configuration afterwards, not for choosing it.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn

import expgrid.reporter as reporter
from expgrid.config import merge
from expgrid.errors import ConfigError
from trainables.checks import require_int, require_mappings
from trainables.classification.data import DATASET_DEFAULTS, check_dataset, load_dataset
from trainables.classification.models import MODEL_DEFAULTS, check_model, create_model, fast_forward, first_linear
from trainables.classification.optim import OPTIMIZER_DEFAULTS, check_optimizer, create_optimizer, flat_parameters
from trainables.registry import register_trainable

CLASSIFY_DEFAULTS: dict[str, Any] = {
    "dataset": copy.deepcopy(DATASET_DEFAULTS),
    "model": copy.deepcopy(MODEL_DEFAULTS),
    "optimizer": copy.deepcopy(OPTIMIZER_DEFAULTS),
    "batch_size": 32,  # samples per optimizer step
    "epochs": 10,  # passes over the training set
    "seed": 0,  # torch seed: initialisation, shuffling, dropout (the split has dataset.seed)
    "threads": 1,  # torch intra-op CPU threads for this trial (match the trial's cpu resource)
}
CLASSIFY_METRICS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "seconds",
    "first_layer_weight_abs",
    "first_layer_grad_abs",
)
EVAL_CHUNK = 8192  # samples per forward pass when evaluating (bounds memory on large splits)


def _full(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` over the defaults (so direct calls may give only what differs)."""
    return merge(CLASSIFY_DEFAULTS, config)


def check_config(config: Mapping[str, Any]) -> None:
    """Raise ConfigError (dotted field path) for a config ``classify`` cannot run.

    Runs on the driver for every trial config before Ray starts, so it reads no data: names,
    option names and value ranges, and (for files) only whether they exist."""
    cfg = _full(config)
    require_mappings(cfg, ("dataset", "model", "optimizer"))
    check_model(cfg["model"])
    check_optimizer(cfg["optimizer"])
    check_dataset(cfg["dataset"])
    require_int(cfg, "batch_size", 1)
    require_int(cfg, "epochs", 1)
    require_int(cfg, "threads", 1)
    if isinstance(cfg["seed"], bool) or not isinstance(cfg["seed"], int):
        raise ConfigError("seed", "an integer", cfg["seed"])


def dataset_key(config: Mapping[str, Any]) -> Hashable:
    """Configs with equal keys share one loaded dataset (the whole ``dataset`` mapping decides)."""
    return json.dumps(_full(config)["dataset"], sort_keys=True, default=str)


def load_data(config: Mapping[str, Any]) -> dict[str, Any]:
    """The NumPy arrays of ``config["dataset"]`` (see ``data.py``); loaded once per study section."""
    return load_dataset(_full(config)["dataset"])


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    # torch.tensor copies: arrays from Ray's object store are read-only, which from_numpy warns about.
    return torch.tensor(np.asarray(array)).to(device)


def _to_cpu(obj: Any) -> Any:
    """A detached CPU copy of every tensor in ``obj``: a checkpoint must not alias live state."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return copy.deepcopy(obj)


@torch.inference_mode()
def _evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss, accuracy) as 0-d tensors, in eval mode (dropout off, BatchNorm running stats)."""
    model.eval()
    loss = x.new_zeros(())
    correct = x.new_zeros(())
    for start in range(0, len(x), EVAL_CHUNK):
        out = model(x[start : start + EVAL_CHUNK])
        target = y[start : start + EVAL_CHUNK]
        loss += F.cross_entropy(out, target, reduction="sum")
        correct += (out.argmax(1) == target).sum()
    return loss / len(x), correct / len(x)


@register_trainable(
    "classify",
    defaults=CLASSIFY_DEFAULTS,
    metrics=CLASSIFY_METRICS,
    check=check_config,
    data_key=dataset_key,
    load_data=load_data,
)
def classify(config: dict[str, Any], data: Mapping[str, Any]) -> None:
    """Train ``config["model"]`` on ``data`` (from :func:`load_data`), reporting every epoch."""
    cfg = _full(config)
    threads = torch.get_num_threads()
    torch.set_num_threads(int(cfg["threads"]))
    try:
        _train(cfg, data)
    finally:
        torch.set_num_threads(threads)  # the setting is per process; leave callers' as it was


def _train(cfg: dict[str, Any], data: Mapping[str, Any]) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg["seed"])  # seeds CPU and CUDA generators
    x_train, y_train = _tensor(data["x_train"], device), _tensor(data["y_train"], device)
    x_val, y_val = _tensor(data["x_val"], device), _tensor(data["y_val"], device)

    model = create_model(cfg["model"], tuple(x_train.shape[1:]), int(data["num_classes"])).to(device)
    flat = flat_parameters(model)
    optimizer = create_optimizer(cfg["optimizer"], [flat])
    first = first_linear(model).weight
    grad = flat.grad
    assert grad is not None

    start = 1
    state = reporter.restore()
    if state is not None:  # a retry or resume: continue exactly where the checkpoint left off
        model.load_state_dict(state["model"])  # copies in place, so the flat buffer stays shared
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])
        start = int(state["epoch"]) + 1

    def checkpoint(epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": _to_cpu(model.state_dict()),
            "optimizer": _to_cpu(optimizer.state_dict()),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
        }

    n, batch_size = len(x_train), int(cfg["batch_size"])
    x_epoch, y_epoch = torch.empty_like(x_train), torch.empty_like(y_train)  # this epoch's order
    first_grad = first.grad  # a view into the flat gradient, so the same tensor every step
    abs_buffer = torch.empty_like(first)
    forward, step = fast_forward(model), optimizer.step  # fast_forward(model)(x) == model(x), leaner
    batchnorm = any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) for m in model.modules())
    for epoch in range(start, int(cfg["epochs"]) + 1):
        began = time.perf_counter()
        model.train()
        # The permutation comes from the CPU generator, so a seed gives the same order on any device.
        order = torch.randperm(n).to(device)
        # index_select is ~5x faster than x[order]; writing into buffers kept across epochs
        # spares a fresh multi-MB allocation (and its page faults) every epoch.
        torch.index_select(x_train, 0, order, out=x_epoch)
        torch.index_select(y_train, 0, order, out=y_epoch)
        batches = list(zip(x_epoch.split(batch_size), y_epoch.split(batch_size), strict=True))
        if batchnorm and len(batches[-1][1]) == 1:
            batches.pop()  # BatchNorm cannot normalise one sample in training mode
        outputs: list[torch.Tensor] = []
        grad_l1: list[torch.Tensor] = []
        for xb, yb in batches:
            out = forward(xb)
            loss = F.cross_entropy(out, yb)
            grad.zero_()
            loss.backward()
            # sum |g| (divided by the size below) via a kept buffer: 4x faster than
            # vector_norm(g, 1), and no fresh weight-sized allocation per step.
            grad_l1.append(torch.abs(first_grad, out=abs_buffer).sum())
            step()
            outputs.append(out.detach())

        with torch.no_grad():
            # The epoch's outputs, each from the step that trained on it: loss and accuracy over
            # all samples at once equal the sample-weighted mean of the per-batch values.
            logits = torch.cat(outputs)
            targets = y_epoch[: len(logits)]
            train_loss = F.cross_entropy(logits, targets)
            train_accuracy = (logits.argmax(1) == targets).float().mean()
            grad_abs = torch.stack(grad_l1).mean() / first.numel()
            weight_abs = first.abs().mean()
        val_loss, val_accuracy = _evaluate(model, x_val, y_val)
        # One device-to-host transfer per epoch, not one per metric.
        values = torch.stack([train_loss, train_accuracy, val_loss, val_accuracy, weight_abs, grad_abs]).tolist()
        metrics = {
            "epoch": epoch,
            "train_loss": values[0],
            "train_accuracy": values[1],
            "val_loss": values[2],
            "val_accuracy": values[3],
            "seconds": time.perf_counter() - began,
            "first_layer_weight_abs": values[4],
            "first_layer_grad_abs": values[5],
        }
        reporter.report(metrics, checkpoint=lambda epoch=epoch: checkpoint(epoch))
