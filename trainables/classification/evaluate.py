"""``classify``'s test evaluation (``test: best``, see ``expgrid.test_eval``): the trial's model
at a checkpoint, in eval mode, over the test split of its data.

Metrics (the test split's counterparts of the validation metrics, same conventions)::

    test_loss              mean cross-entropy (nats / sample), never label-smoothed
    test_accuracy          fraction classified right (top-1)
    test_error             1 − test_accuracy
    test_top5_accuracy     true class among the 5 highest logits (ties count for it); only with
    test_top5_error        5 classes or more (with fewer, every class is among the top 5)
    test_samples           images in the test split

Which datasets have a test split (:func:`test_split`, checked at validate time without torch):
``digits`` (what train_size + val_size leave of its 1,797 images), ``fashion_mnist`` and
``cifar10`` (a torchvision root: their 10,000 test images; an .npz: what train_size + val_size
leave of the pool), ``synthetic`` (val_size generated images) and ``image_folder`` with a
``test/`` folder of the same class folders beside ``train/`` and ``val/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

DIGITS_IMAGES = 1797  # scikit-learn's bundled digits
TOP_K_FROM = 5  # classes from which top-5 metrics say something
IMAGE_FOLDER_TEST = "test"  # image_folder: the test split's folder, beside train_dir and val_dir
# data.DATASET_DEFAULTS' values that decide whether there is a test split: copied, since data.py
# imports torch (through synthetic.py) and this check must not (a test keeps them equal)
SPLIT_DEFAULTS = {"name": "digits", "root": None, "train_size": 1000, "val_size": 500}


def test_split(config: Mapping[str, Any]) -> str | None:
    """None when the config's dataset has a test split; else what it is instead (for the
    one-line error of a study asking for ``test:`` on it). Looks at no file but whether an
    image folder's ``test/`` exists, and imports no torch."""
    dataset = {**SPLIT_DEFAULTS, **(config.get("dataset") or {})}
    name = dataset["name"]
    if name == "image_folder":
        root = dataset.get("root")
        folder = Path(str(root)).expanduser() / IMAGE_FOLDER_TEST if root is not None else None
        if folder is None or not folder.is_dir():
            return f"image_folder without a {IMAGE_FOLDER_TEST}/ folder (in {root})"
    if name == "digits":
        used = int(dataset["train_size"]) + int(dataset["val_size"])
        if used >= DIGITS_IMAGES:
            return f"digits with train_size + val_size = {used} of its {DIGITS_IMAGES} images (none left to test)"
    return None


test_split.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def evaluate(config: Mapping[str, Any], checkpoint: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, float]:
    """The model in ``checkpoint`` (a classify trial's: its ``model`` state_dict) on the test
    split of ``data`` (``load_data``'s), on CUDA when the task has a GPU."""
    import torch

    from trainables.classification.batches import make_splits
    from trainables.classification.modes import build_model
    from trainables.classification.train import _full, amp_dtype, eval_batch_size
    from trainables.classification.train import evaluate as evaluate_split
    from trainables.common import torch_threads

    cfg = _full(config)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    splits = make_splits(data, device)
    if "test" not in splits or splits["test"].num_samples == 0:
        raise ValueError(f"dataset {cfg['dataset']['name']}: the data has no test images")
    train, test = splits["train"], splits["test"]
    num_classes = int(train.num_classes)
    with torch_threads(int(cfg["threads"])):
        model = build_model(cfg["model"], cfg["mode"], train.sample_shape, num_classes).to(device)
        model.load_state_dict(checkpoint["model"])
        dtype = amp_dtype(cfg["amp"], device)

        def autocast() -> Any:
            import contextlib

            return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

        loss, correct, correct_k, _, targets = evaluate_split(
            model, test, eval_batch_size(test, int(cfg["batch_size"])), device, autocast
        )
        n = len(targets)
        loss_v, acc, acc_k = (torch.stack([loss, correct, correct_k]).float() / n).tolist()
    metrics = {"test_loss": loss_v, "test_accuracy": acc, "test_error": 1.0 - acc}
    if num_classes >= TOP_K_FROM:
        metrics.update(test_top5_accuracy=acc_k, test_top5_error=1.0 - acc_k)
    metrics["test_samples"] = float(n)
    return metrics
