"""``reid``: vehicle (or person) re-identification, trained as torchreid's softmax + triplet engine.

One trial: build the model named in the config (``models.py``) over the training identities;
per epoch draw the sampler's order of the training images (``samplers.py``), train on it in
batches of ``train_batch`` with cross-entropy + batch-hard triplet loss (``losses.py``) on the
augmented images (``transforms.py``), step the multi-step learning-rate schedule, and on
evaluation epochs rank the gallery for every query (``metrics.py``). Reported
(``expgrid.reporter``) every epoch::

    epoch           1-based
    loss_xent       mean cross-entropy (nats / image; label-smoothed targets when loss.label_smoothing > 0)
                    over the epoch's images,
                    each taken at the step that trained on it
    loss_htri       mean batch-hard triplet loss (embedding distance units) over the epoch's batches,
                    weighted by batch size
    train_accuracy  fraction of the epoch's training images whose identity the classifier got right
                    (training mode, at the step that used them)
    seconds         wall time of the epoch (training and, when due, evaluation), seconds

and on evaluation epochs also ``mAP``, ``rank1``, ``rank5``, ``rank10``, ``rank20``, as fractions
in [0, 1] (0.5454 is the coursework's "54.54"); other epochs' rows leave them out. Evaluation
epochs are those where something reads the ranking (:func:`evaluation_due`): always the last (the
coursework tests at the end), every ``eval_freq`` epochs when ``eval_freq`` > 0 (the coursework's
``--eval-freq``; default 0), ASHA's rung epochs (where it compares trials by the study metric),
and every epoch when the section selects the best epoch or stops early (either may pick or end
at any epoch, and that epoch's row must hold the metric). On VeRi an evaluation costs ~12 % of an
epoch: 13,257 query + gallery images, each a forward pass, against 37,778 training images.

Data-parallel training: with ``workers > 1``, :func:`reid` hands :func:`_train_worker` to
``expgrid.reporter.data_parallel``, which runs it on that many ranks with
``torch.distributed`` initialised (and runs it once in-process where that is not available).
``train_batch`` is the global batch: each rank trains on its ``train_batch / workers`` share of
every batch (``samplers.rank_batches``), gradients are averaged by DistributedDataParallel, the
loss and accuracy sums are added over ranks, evaluation features are computed on a shard per
rank and gathered, and the BatchNorm running statistics are averaged over ranks after each
epoch, so every rank holds the same model and reports the same metrics. Batch-hard triplets are
mined over the whole global batch, as one process does: every rank gathers all ranks'
embeddings and labels (``losses.gather_batch``; gradients flow through its own) and computes
the triplet loss of the whole batch, scaled by the number of ranks in the backward pass, so that
DDP's average of the ranks' gradients is the one-process gradient. BatchNorm statistics span
each rank's share in training unless ``sync_bn: true`` (``torch.nn.SyncBatchNorm``: the whole
batch, as one process; GPUs only — a CPU rank refuses it).

Randomness: ``seed`` seeds the initialisation; each epoch's sample order comes from (seed,
epoch) and each epoch's augmentation and dropout randomness from (seed, epoch, rank). A
checkpoint therefore needs no RNG state: it holds the model (unwrapped from DDP), optimizer and
schedule states and the epoch, and a resumed trial continues exactly as the uninterrupted one
(on the CPU; nondeterministic GPU kernels aside).

Device: CUDA when the process sees a GPU, else the CPU. Images are read by a DataLoader with
``loader_workers`` processes (0: in the trial's process, as tests do).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

import expgrid.reporter as reporter
from expgrid.stopping import TrialRules
from trainables.common import to_cpu, torch_threads
from trainables.reid.checks import check_config, check_data, dataset_key  # noqa: F401 - the spec's hooks
from trainables.reid.checks import full_config as _full
from trainables.reid.data import ImageSet, load_index
from trainables.reid.losses import batch_hard_triplet, cross_entropy, gather_batch
from trainables.reid.metrics import evaluate
from trainables.reid.models import create_model
from trainables.reid.optim import create_optimizer, create_schedule

# The spec's tables, here as before for callers of train (they live in options.py, without torch).
from trainables.reid.options import RANKS, REID_DEFAULTS, REID_METRICS, REID_SMOKE  # noqa: F401
from trainables.reid.samplers import SAMPLERS, epoch_generator, rank_batches
from trainables.reid.transforms import eval_transform, train_transform


def load_data(config: Mapping[str, Any]) -> dict[str, Any]:
    """The index of ``config["dataset"]`` (see ``data.py``); loaded once per study section."""
    return load_index(_full(config)["dataset"])


def reid(config: dict[str, Any], data: Mapping[str, Any]) -> None:
    """Train and evaluate on ``data`` (from :func:`load_data`), on ``workers`` ranks."""
    # On `workers` Ray Train processes inside a Ray trial; in this process otherwise.
    reporter.data_parallel(_train_worker, _full(config), data)


# ---------------------------------------------------------------------------------------------
# One rank's training


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, number of ranks); (0, 1) without torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _device(world: int) -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if world > 1:
        try:  # Ray Train knows which of the visible GPUs is this worker's
            from ray.train.torch import get_device

            device = get_device()
        except Exception:  # noqa: BLE001 - any failure: fall back to the launcher's LOCAL_RANK
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        torch.cuda.set_device(device)
        return device
    return torch.device("cuda")


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers (different tuples give unrelated streams)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0]) >> 1


def _reduce(values: torch.Tensor, world: int, op: str = "sum") -> torch.Tensor:
    """``values`` summed (or maximised) over the ranks, in place; unchanged with one rank."""
    if world > 1:
        dist.all_reduce(values, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return values


def _sync_buffers(model: torch.nn.Module, world: int) -> None:
    """Make the BatchNorm running statistics equal on every rank: averaged over the ranks.

    DDP averages gradients, so parameters stay equal, but each rank updates its running
    statistics from its own images after DDP's start-of-forward broadcast: after the last step
    they differ, and ranks evaluating their shards would use different models. Averaging (not
    taking rank 0's) uses the statistics of every rank's images."""
    if world == 1:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(world)
        else:  # counters such as num_batches_tracked: equal anyway, rank 0's for certain
            dist.broadcast(buffer, src=0)


def _loader(dataset: Any, cfg: Mapping[str, Any], device: torch.device, **kwargs: Any) -> DataLoader:
    workers = int(cfg["loader_workers"])
    return DataLoader(
        dataset, num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=False, **kwargs
    )


@torch.no_grad()
def extract_features(
    model: torch.nn.Module, dataset: ImageSet, cfg: Mapping[str, Any], device: torch.device, rank: int, world: int
) -> torch.Tensor:
    """Eval-mode embeddings (N, D) of every image of ``dataset``, on the CPU, in dataset order.

    Rank r computes images r, r + world, …; the shards are gathered so every rank returns all.
    ``model`` must be the unwrapped model: ranks make different numbers of forward passes, which
    DistributedDataParallel's per-forward buffer broadcast would wait on forever."""
    model.eval()
    indices = list(range(rank, len(dataset), world))
    shard = torch.utils.data.Subset(dataset, indices)
    parts = [model(images.to(device, non_blocking=True)).float().cpu()
             for images, _ in _loader(shard, cfg, device, batch_size=int(cfg["test_batch"]))]  # fmt: skip
    features = torch.cat(parts) if parts else None
    if world == 1:
        assert features is not None
        return features
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, (indices, features))
    width = next(f.shape[1] for _, f in gathered if f is not None)
    out = torch.empty(len(dataset), width)
    for idx, f in gathered:
        if f is not None:
            out[idx] = f
    return out


def evaluate_model(
    model: torch.nn.Module, data: Mapping[str, Any], cfg: Mapping[str, Any], device: torch.device, rank: int, world: int
) -> dict[str, float]:
    """mAP and CMC of the model's embeddings (see ``metrics.py``); identical on every rank."""
    height, width = cfg["dataset"]["height"], cfg["dataset"]["width"]
    transform = eval_transform(height, width)
    query, gallery = data["query"], data["gallery"]
    qf = extract_features(model, ImageSet(query, query["pids"], transform), cfg, device, rank, world)
    gf = extract_features(model, ImageSet(gallery, gallery["pids"], transform), cfg, device, rank, world)
    result = evaluate(qf.to(device), gf.to(device), query["pids"], query["camids"], gallery["pids"], gallery["camids"])
    return {key: result[key] for key in ("mAP", *(f"rank{k}" for k in RANKS))}


def batch_losses(
    logits: torch.Tensor, embeddings: torch.Tensor, labels: torch.Tensor, loss_cfg: Mapping[str, Any], world: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss to backpropagate, this rank's cross-entropy, the global batch's triplet loss).

    The triplet loss mines the whole global batch on every rank (``gather_batch``); its gradient
    reaches only this rank's embeddings and DDP divides the sum of the ranks' gradients by
    ``world``: hence the factor ``world``, which makes the averaged gradient the one-process one.
    The cross-entropy is a mean over this rank's share, which DDP's average turns into the mean
    over the batch with no factor."""
    xent = cross_entropy(logits, labels, float(loss_cfg["label_smoothing"]))
    htri = batch_hard_triplet(*gather_batch(embeddings, labels), float(loss_cfg["margin"]))
    loss = float(loss_cfg["xent_weight"]) * xent + float(loss_cfg["htri_weight"]) * world * htri
    return loss, xent, htri


def evaluation_due(epoch: int, epochs: int, eval_freq: int, rules: TrialRules) -> bool:
    """Whether epoch ``epoch`` (of ``epochs``) ranks the gallery: see the module docstring."""
    return (
        epoch == epochs
        or (eval_freq > 0 and epoch % eval_freq == 0)
        or epoch in rules.flush_epochs  # ASHA's rungs
        or rules.keep_best_checkpoint  # select: best_epoch compares every epoch
        or rules.monitor is not None  # early stopping: the trial may end (and be scored) at any epoch
    )


def _with_sync_bn(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    if device.type == "cpu":
        raise ValueError("sync_bn: torch's SyncBatchNorm runs on GPUs only and this rank has none: "
                         "set sync_bn: false or give each worker a GPU (gpu_per_worker: 1)")  # fmt: skip
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def _train_worker(config: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    """Train on this rank's share (the whole data with world size 1) and report every epoch."""
    cfg = _full(config)
    with torch_threads(int(cfg["threads"])):
        _train(cfg, data)


def _train(cfg: dict[str, Any], data: Mapping[str, Any]) -> None:
    rank, world = rank_and_world()
    device = _device(world)
    seed, epochs = int(cfg["seed"]), int(cfg["epochs"])
    height, width = int(cfg["dataset"]["height"]), int(cfg["dataset"]["width"])

    torch.manual_seed(seed)  # the same initialisation on every rank (DDP also broadcasts rank 0's)
    model = create_model(cfg["model"], int(data["num_train_pids"]), (height, width)).to(device)
    if world > 1 and cfg["sync_bn"]:
        model = _with_sync_bn(model, device)  # same parameters and buffers: checkpoints load either way
    optimizer = create_optimizer(cfg["optimizer"], model.parameters())
    schedule = create_schedule(cfg["lr_schedule"], optimizer)
    start = 1
    state = reporter.restore()
    if state is not None:  # a retry or resume: continue where the checkpoint left off
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start = int(state["epoch"]) + 1
    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def checkpoint(epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": to_cpu(model.state_dict()),  # the unwrapped model: loads without DDP
            "optimizer": to_cpu(optimizer.state_dict()),
            "schedule": schedule.state_dict(),
        }

    train = data["train"]
    train_set = ImageSet(train, train["labels"], train_transform(cfg["augmentations"], height, width))
    sampler = SAMPLERS.get(cfg["sampler"]["name"], "sampler.name")
    instances, batch_size = int(cfg["sampler"]["instances"]), int(cfg["train_batch"])
    loss_cfg = cfg["loss"]
    eval_freq = int(cfg["eval_freq"])
    rules = reporter.rules()

    for epoch in range(start, epochs + 1):
        began = time.perf_counter()
        torch.manual_seed(_seed(seed, epoch, rank))  # augmentation, dropout, loader worker seeds
        order = sampler(train["labels"], epoch_generator(seed, epoch), batch_size, instances)
        batches = rank_batches(order, batch_size, rank, world)
        if not batches:
            raise ValueError(
                f"no full batch of train_batch {batch_size} in {len(train['labels'])} training images "
                f"(sampler {cfg['sampler']['name']!r} drew {len(order)}): lower train_batch"
            )
        model.train()
        # Sums over the epoch, kept on the device (no per-step sync): xent·n, htri·n, correct, n.
        sums = torch.zeros(4, dtype=torch.float64, device=device)
        for images, labels in _loader(train_set, cfg, device, batch_sampler=batches):
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            logits, embeddings = net(images)
            loss, xent, htri = batch_losses(logits, embeddings, labels, loss_cfg, world)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n = len(labels)
            hits = (logits.argmax(1) == labels).sum()
            sums += torch.stack([xent.detach() * n, htri.detach() * n, hits.float(), xent.new_tensor(n)]).double()
        schedule.step()
        _sync_buffers(model, world)
        xent_sum, htri_sum, correct, count = _reduce(sums, world).tolist()
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "loss_xent": xent_sum / count,
            "loss_htri": htri_sum / count,
            "train_accuracy": correct / count,
        }
        if evaluation_due(epoch, epochs, eval_freq, rules):
            metrics.update(evaluate_model(model, data, cfg, device, rank, world))
        # The slowest rank's time, so that every rank reports the same row.
        seconds = torch.tensor([time.perf_counter() - began], dtype=torch.float64, device=device)
        metrics["seconds"] = _reduce(seconds, world, "max").item()
        reporter.report(metrics, checkpoint=lambda epoch=epoch: checkpoint(epoch))
