"""classify's test evaluation (trainables/classification/evaluate.py): the metrics equal a direct
computation from the model's logits on the test split (top-5 by torch.topk, not the trainable's
own rule), for every dataset with a test split; which datasets have one, told without torch."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from trainables.classification.batches import make_splits
from trainables.classification.evaluate import evaluate, test_split
from trainables.classification.modes import build_model
from trainables.classification.synthetic import write_fake_cifar10, write_fake_fashion_mnist, write_fake_image_folder
from trainables.classification.train import _full, load_data

REPO = Path(__file__).resolve().parents[2]


def _trained_state(config, data):
    """A model of ``config`` after a few full-batch steps (so its predictions are not uniform)."""
    cfg = _full(config)
    splits = make_splits(data, "cpu")
    torch.manual_seed(0)
    model = build_model(cfg["model"], cfg["mode"], splits["train"].sample_shape, int(splits["train"].num_classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for xb, yb in splits["train"].epoch(10_000, shuffle=False):
        for _ in range(5):
            optimizer.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()
    return model, {"epoch": 1, "model": model.state_dict()}


def _by_hand(model, data):
    x, y = make_splits(data, "cpu")["test"]._tensors() if "x_test" in data else _folder_tensors(data)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    accuracy = (logits.argmax(1) == y).double().mean().item()
    out = {"test_loss": F.cross_entropy(logits.double(), y).item(), "test_accuracy": accuracy,
           "test_error": 1 - accuracy, "test_samples": float(len(y))}  # fmt: skip
    if logits.shape[1] >= 5:
        top5 = (logits.topk(5, dim=1).indices == y[:, None]).any(1).double().mean().item()
        out.update(test_top5_accuracy=top5, test_top5_error=1 - top5)
    return out


def _folder_tensors(data):
    xs, ys = zip(*make_splits(data, "cpu", loader_workers=0)["test"].epoch(10_000, shuffle=False), strict=True)
    return torch.cat(xs), torch.cat(ys)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fake_cifar10(root, n_train=60, n_test=30)
    write_fake_fashion_mnist(root, n_train=60, n_test=30)
    write_fake_image_folder(root / "folder", classes=6, per_class=3, size=12)
    write_fake_image_folder(root / "other", classes=6, per_class=2, size=12, seed=1)  # no test/
    write_fake_image_folder(root / "tests", classes=6, per_class=2, size=12, seed=2)
    (root / "tests" / "val").rename(root / "folder" / "test")
    return root


@pytest.mark.parametrize(
    "dataset, classes",
    [
        ({"name": "digits", "train_size": 500, "val_size": 200}, 10),
        ({"name": "fashion_mnist", "root": "ROOT", "train_size": 40, "val_size": 20}, 10),
        ({"name": "cifar10", "root": "ROOT", "train_size": 40, "val_size": 20}, 10),
        ({"name": "synthetic", "train_size": 30, "val_size": 12, "num_classes": 3, "shape": [1, 6, 6]}, 3),
        ({"name": "image_folder", "root": "ROOT/folder", "train_size": None, "val_size": None, "image_size": 12,
          "loader_workers": 0}, 6),
    ],
)  # fmt: skip
def test_the_test_metrics_equal_a_direct_computation(roots, dataset, classes):
    dataset = {k: (v.replace("ROOT", str(roots)) if isinstance(v, str) else v) for k, v in dataset.items()}
    config = {"dataset": dataset, "model": {"name": "mlp", "hidden": [8]}, "threads": 1}
    assert test_split(config) is None
    data = load_data(config)
    model, checkpoint = _trained_state(config, data)
    metrics = evaluate(config, checkpoint, data)
    expected = _by_hand(model, data)
    assert set(metrics) == set(expected)
    assert ("test_top5_accuracy" in metrics) == (classes >= 5)
    for name, value in expected.items():
        assert math.isclose(metrics[name], value, rel_tol=1e-5, abs_tol=1e-6), name
    assert 0 < metrics["test_accuracy"] < 1 or classes < 5  # a model that learnt something, not every class right


def test_a_fresh_model_evaluates_differently_from_the_checkpoint(roots):
    config = {"dataset": {"name": "digits", "train_size": 500, "val_size": 200}, "model": {"name": "mlp", "hidden": [8]}}
    data = load_data(config)
    _, checkpoint = _trained_state(config, data)
    untrained = build_model(_full(config)["model"], "scratch", (1, 8, 8), 10).state_dict()
    assert evaluate(config, checkpoint, data) != evaluate(config, {"model": untrained}, data)


def test_data_without_test_images_is_an_error_of_the_evaluation(roots):
    config = {"dataset": {"name": "image_folder", "root": str(roots / "other"), "train_size": None, "val_size": None,
                          "image_size": 12, "loader_workers": 0}}  # fmt: skip
    data = load_data(config)
    assert "paths_test" not in data
    _, checkpoint = _trained_state(config, data)
    with pytest.raises(ValueError, match="no test images"):
        evaluate(config, checkpoint, data)


def test_which_datasets_have_a_test_split(roots):
    assert test_split({"dataset": {"name": "image_folder", "root": str(roots / "other")}}) == (
        f"image_folder without a test/ folder (in {roots / 'other'})")  # fmt: skip
    assert test_split({"dataset": {"name": "image_folder", "root": str(roots / "folder")}}) is None
    assert test_split({"dataset": {"name": "digits", "train_size": 1000, "val_size": 797}}) is not None
    assert test_split({"dataset": {"name": "digits", "train_size": 1000, "val_size": 796}}) is None
    assert test_split({}) is None  # classify's default: digits, 1000 + 500 of 1797


def test_an_image_folder_test_split_needs_the_training_classes(tmp_path):
    from expgrid.errors import ConfigError

    write_fake_image_folder(tmp_path / "a", classes=3, per_class=1, size=8)
    write_fake_image_folder(tmp_path / "b", classes=["x", "y", "z"], per_class=1, size=8)
    (tmp_path / "b" / "val").rename(tmp_path / "a" / "test")
    with pytest.raises(ConfigError, match="test/ with the class folders of train/"):
        load_data({"dataset": {"name": "image_folder", "root": str(tmp_path / "a"), "train_size": None, "val_size": None}})


def test_the_split_defaults_are_the_datasets():
    from trainables.classification.data import DATASET_DEFAULTS
    from trainables.classification.evaluate import SPLIT_DEFAULTS

    assert SPLIT_DEFAULTS == {k: DATASET_DEFAULTS[k] for k in SPLIT_DEFAULTS}


def test_the_test_split_check_imports_no_torch():
    code = ("import sys; from trainables.classification.evaluate import test_split; "
            "assert test_split({'dataset': {'name': 'cifar10'}}) is None; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
