"""The built-in ``classify`` trainable: datasets, models, optimizers, training, checkpoints."""

from __future__ import annotations

import copy
import math
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from expgrid.config import merge
from expgrid.errors import ConfigError, UnknownNameError
from expgrid.reporter import LocalSession, active, run_locally
from expgrid.trainable_lookup import resolve_trainable
from trainables.classification import optim
from trainables.classification.data import DATASETS, load_dataset
from trainables.classification.models import ACTIVATIONS, MODELS, create_model, first_linear
from trainables.classification.optim import OPTIMIZERS, create_optimizer, flat_parameters
from trainables.classification.train import (
    CLASSIFY_DEFAULTS,
    CLASSIFY_METRICS,
    check_config,
    check_data,
    classify,
    dataset_key,
    load_data,
)

FASHION_NPZ = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "fashion_mnist_4443.npz"
needs_fashion = pytest.mark.skipif(
    not FASHION_NPZ.is_file(), reason=f"shared Fashion-MNIST subset not found at {FASHION_NPZ}"
)


def config(**overrides) -> dict:
    """The defaults with ``overrides`` laid over them (nested mappings merge)."""
    return merge(CLASSIFY_DEFAULTS, overrides)


TIMES = ("seconds", "ms_per_image")  # metrics that depend on the clock


def metrics_without_time(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMES}


# ----------------------------------------------------------------------------------------------
# Registration and config checks (no data read)


def test_classify_is_registered_with_its_metrics_and_data_loader():
    spec = resolve_trainable("classify")
    assert spec.function() is classify and spec.metrics == CLASSIFY_METRICS and spec.takes_data
    assert spec.ref == "trainables.classification.train:classify"
    assert dataset_key(config()) == dataset_key(config(epochs=3, optimizer={"lr": 0.5}))
    assert dataset_key(config()) != dataset_key(config(dataset={"seed": 1}))


@pytest.mark.parametrize(
    ("overrides", "field", "valid"),
    [
        ({"model": {"name": "resnet"}}, "model.name", MODELS.names()),
        ({"optimizer": {"name": "adagrad"}}, "optimizer.name", OPTIMIZERS.names()),
        ({"dataset": {"name": "imagenet"}}, "dataset.name", DATASETS.names()),
        ({"model": {"activation": "swish"}}, "model.activation", ACTIVATIONS.names()),
    ],
)
def test_unknown_names_are_rejected_listing_the_valid_ones(overrides, field, valid):
    with pytest.raises(UnknownNameError) as info:
        check_config(config(**overrides))
    assert info.value.field == field
    assert f"one of {', '.join(valid)}" in str(info.value)


def test_builders_reject_unknown_names_too():
    with pytest.raises(UnknownNameError, match="model.name: expected a registered model: one of mlp"):
        create_model({"name": "mlp2"}, (1, 8, 8), 10)
    with pytest.raises(UnknownNameError, match="did you mean adam, adamw"):
        create_optimizer({"name": "adm"}, [torch.zeros(3, requires_grad=True)])
    with pytest.raises(UnknownNameError, match="gelu"):
        create_model({"name": "mlp", "activation": "gelux"}, (1, 8, 8), 10)
    with pytest.raises(UnknownNameError, match="dataset.name"):
        load_dataset({"name": "mnist"})


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"optimizer": {"lr": 0}}, "optimizer.lr"),
        ({"optimizer": {"lr": -1e-3}}, "optimizer.lr"),
        ({"optimizer": {"weight_decay": -1}}, "optimizer.weight_decay"),
        ({"optimizer": {"momentum": 1.0}}, "optimizer.momentum"),
        ({"model": {"dropout": 1.0}}, "model.dropout"),
        ({"model": {"dropout": -0.1}}, "model.dropout"),
        ({"model": {"hidden": [128, 0]}}, "model.hidden"),
        ({"model": {"width": 3}}, "model.width"),
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"threads": 0}, "threads"),
        ({"seed": 1.5}, "seed"),
        ({"seed": True}, "seed"),
        ({"dataset": {"train_size": 1500, "val_size": 500}}, "dataset.train_size"),  # digits has 1797
        ({"dataset": {"val_size": 0}}, "dataset.val_size"),
        ({"dataset": {"name": "fashion_mnist"}}, "dataset.path"),  # neither path nor root
        (
            {"dataset": {"name": "fashion_mnist", "path": 3}},
            "dataset.path",
        ),  # a missing file: check_data's (tests/trainables/test_data_checks.py)
    ],
)
def test_bad_values_are_rejected_with_their_field(overrides, field):
    with pytest.raises(ConfigError) as info:
        check_config(config(**overrides))
    assert info.value.field == field


def test_check_config_accepts_the_defaults_and_partial_configs():
    check_config(config())
    check_config({"optimizer": {"name": "sgd", "lr": 0.1}})


# ----------------------------------------------------------------------------------------------
# Datasets


def test_digits_splits_are_seeded_disjoint_and_scaled():
    data = load_dataset({"name": "digits", "train_size": 1000, "val_size": 500, "seed": 0})
    assert data["x_train"].shape == (1000, 1, 8, 8) and data["x_val"].shape == (500, 1, 8, 8)
    assert data["x_test"].shape == (297, 1, 8, 8) and data["num_classes"] == 10
    assert data["x_train"].dtype == np.float32 and data["y_train"].dtype == np.int64
    assert 0.0 <= data["x_train"].min() and data["x_train"].max() == 1.0
    # the three splits together are the whole dataset, each image once: a partition
    from sklearn.datasets import load_digits

    splits = np.concatenate([data[f"x_{s}"].reshape(-1, 64) for s in ("train", "val", "test")])
    whole = load_digits().data.astype(np.float32) / 16
    np.testing.assert_array_equal(
        np.unique(splits, axis=0, return_counts=True)[1], np.unique(whole, axis=0, return_counts=True)[1]
    )
    np.testing.assert_array_equal(np.unique(splits, axis=0), np.unique(whole, axis=0))
    again = load_dataset({"name": "digits", "seed": 0})
    other = load_dataset({"name": "digits", "seed": 1})
    assert np.array_equal(again["y_train"], data["y_train"])
    assert not np.array_equal(other["y_train"], data["y_train"])


@needs_fashion
def test_fashion_mnist_npz_loads_1000_500_and_the_rest_as_test():
    data = load_dataset({"name": "fashion_mnist", "path": str(FASHION_NPZ)})
    assert data["x_train"].shape == (1000, 1, 28, 28) and data["x_val"].shape == (500, 1, 28, 28)
    assert data["x_test"].shape == (4443 - 1500, 1, 28, 28)
    assert data["x_train"].dtype == np.float32 and 0.0 <= data["x_train"].min() <= data["x_train"].max() <= 1.0
    assert set(np.unique(data["y_train"])) == set(range(10))
    with pytest.raises(ConfigError, match="dataset.train_size"):
        load_dataset({"name": "fashion_mnist", "path": str(FASHION_NPZ), "train_size": 4000})


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed idx-ubyte file (big-endian header: magic 0x08 <ndim>, then the sizes)."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_loads_from_a_torchvision_root(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    train_y = np.arange(40) % 10
    test_x = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    test_y = np.arange(7)
    _write_idx(raw / "train-images-idx3-ubyte", train_x)
    _write_idx(raw / "train-labels-idx1-ubyte", train_y)
    _write_idx(raw / "t10k-images-idx3-ubyte", test_x)
    _write_idx(raw / "t10k-labels-idx1-ubyte", test_y)

    cfg = {"name": "fashion_mnist", "root": str(tmp_path), "train_size": 20, "val_size": 10}
    check_config(config(dataset=cfg))
    data = load_dataset(cfg)
    assert data["x_train"].shape == (20, 1, 28, 28) and data["x_val"].shape == (10, 1, 28, 28)
    # test is torchvision's test split, whole and in order, not the rest of the training pool
    np.testing.assert_array_equal(data["y_test"], test_y)
    np.testing.assert_allclose(data["x_test"][:, 0], test_x / 255.0, rtol=1e-6)
    # every training / validation image is one of the written training images, with its label
    index = {img.tobytes(): label for img, label in zip(train_x, train_y, strict=True)}
    for x, y in zip(data["x_train"], data["y_train"], strict=True):
        assert index[np.rint(x[0] * 255).astype(np.uint8).tobytes()] == y


def test_missing_torchvision_root_says_to_download_or_give_a_path(tmp_path):
    cfg = {"name": "fashion_mnist", "root": str(tmp_path / "nowhere")}
    check_config(config(dataset=cfg))  # the values are fine: the files are the data check's
    for call in (lambda: check_data(config(dataset=cfg)), lambda: load_dataset(cfg)):
        with pytest.raises(ConfigError) as info:
            call()
        assert info.value.field == "dataset.root"
        assert "dataset.download: true" in str(info.value) and "dataset.path" in str(info.value)


# ----------------------------------------------------------------------------------------------
# Models and optimizers


def test_mlp_structure_follows_dropout_batchnorm_and_activation():
    def kinds(model):
        return [type(m).__name__ for m in model]

    plain = create_model({"name": "mlp", "hidden": [16, 8]}, (1, 8, 8), 10)
    assert kinds(plain) == ["Flatten", "Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert plain[1].in_features == 64 and plain[-1].out_features == 10
    both = create_model(
        {"name": "mlp", "hidden": [16, 8], "dropout": 0.3, "batchnorm": True, "activation": "tanh"}, (1, 8, 8), 10
    )
    assert kinds(both) == [
        "Flatten",
        *["Linear", "BatchNorm1d", "Tanh", "Dropout"],
        *["Linear", "BatchNorm1d", "Tanh", "Dropout"],
        "Linear",
    ]
    assert both[4].p == 0.3
    assert kinds(create_model({"name": "mlp", "hidden": []}, (1, 8, 8), 3)) == ["Flatten", "Linear"]
    assert first_linear(both) is both[1]
    for name in ACTIVATIONS.names():
        create_model({"name": "mlp", "hidden": [4], "activation": name}, (1, 2, 2), 2)


def test_flat_parameters_keep_values_and_collect_every_gradient():
    torch.manual_seed(0)
    model = create_model({"name": "mlp", "hidden": [5], "batchnorm": True}, (1, 2, 3), 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flat = flat_parameters(model)
    assert flat.numel() == sum(p.numel() for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    model(torch.randn(6, 1, 2, 3)).square().sum().backward()
    assert torch.equal(flat.grad, torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    assert flat.grad.abs().sum() > 0
    with torch.no_grad():
        flat.add_(1.0)  # an optimizer step on the flat tensor moves the model
    assert torch.equal(model[1].weight, before["1.weight"] + 1)


# The torch.optim class and hyperparameters each name stands for; **kw: the implementation.
_TORCH_OPTIMIZERS = {
    "sgd": lambda p, c, **kw: torch.optim.SGD(
        p, lr=c["lr"], momentum=c["momentum"], weight_decay=c["weight_decay"], **kw
    ),
    "adam": lambda p, c, **kw: torch.optim.Adam(p, lr=c["lr"], weight_decay=c["weight_decay"], **kw),
    "adamw": lambda p, c, **kw: torch.optim.AdamW(p, lr=c["lr"], weight_decay=c["weight_decay"], **kw),
    "amsgrad": lambda p, c, **kw: torch.optim.Adam(p, lr=c["lr"], weight_decay=c["weight_decay"], amsgrad=True, **kw),
    "rmsprop": lambda p, c, **kw: torch.optim.RMSprop(p, lr=c["lr"], weight_decay=c["weight_decay"], **kw),
}


def _run_steps(make, steps: int = 6) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    param = nn.Parameter(torch.randn(257, generator=gen))
    optimizer = make([param])
    for _ in range(steps):
        param.grad = torch.randn(257, generator=gen)
        optimizer.step()
    return param.detach()


@pytest.mark.parametrize(
    ("momentum", "nesterov", "weight_decay"),
    [(0.0, False, 0.0), (0.0, False, 0.01), (0.9, True, 0.0), (0.8, True, 0.01)],
)
def test_plain_and_nesterov_sgd_match_torch_optim(momentum, nesterov, weight_decay):
    cfg = {"name": "sgd", "lr": 0.05, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay}
    ours = _run_steps(lambda p: create_optimizer(cfg, p))
    theirs = _run_steps(
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="Nesterov"):
        create_optimizer({"name": "sgd", "momentum": 0.0, "nesterov": True}, [nn.Parameter(torch.zeros(3))])


@pytest.mark.parametrize("name", sorted(_TORCH_OPTIMIZERS))
def test_optimizers_match_torch_optim(name):
    assert set(_TORCH_OPTIMIZERS) == set(OPTIMIZERS.names())
    cfg = {"name": name, "lr": 0.05, "weight_decay": 0.01, "momentum": 0.8}
    ours = _run_steps(lambda p: create_optimizer(cfg, p))
    # the same class, hyperparameters and implementation: the same trajectory, bit for bit
    implementation = {"foreach": True} if name == "rmsprop" else {"fused": True}
    assert torch.equal(ours, _run_steps(lambda p: _TORCH_OPTIMIZERS[name](p, cfg, **implementation)))
    # and close to torch's default (single-tensor on the CPU) implementation
    theirs = _run_steps(lambda p: _TORCH_OPTIMIZERS[name](p, cfg))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ours, _run_steps(lambda p: create_optimizer(cfg, p), steps=0))  # it moved


def test_implementation_is_fused_where_the_class_and_the_device_have_it(monkeypatch):
    cpu = [nn.Parameter(torch.zeros(3))]
    assert optim.implementation(torch.optim.Adam, cpu) == {"fused": True}
    assert optim.implementation(torch.optim.SGD, cpu) == {"fused": True}
    assert optim.implementation(torch.optim.RMSprop, cpu) == {"foreach": True}  # RMSprop has no fused kernel
    assert optim.implementation(torch.optim.Adam, [nn.Parameter(torch.zeros(3, device="meta"))]) == {"foreach": True}
    assert optim.implementation(torch.optim.Adam, [torch.zeros(3, dtype=torch.int64)]) == {"foreach": True}
    monkeypatch.setattr(optim, "FUSED_DEVICES", ())
    assert optim.implementation(torch.optim.Adam, cpu) == {"foreach": True}


@pytest.mark.parametrize("name", sorted(_TORCH_OPTIMIZERS))
def test_fused_and_foreach_kernels_follow_the_same_trajectory(name, monkeypatch):
    cfg = {"name": name, "lr": 0.05, "weight_decay": 0.01, "momentum": 0.8}
    default = _run_steps(lambda p: create_optimizer(cfg, p))  # fused where the class has it
    monkeypatch.setattr(optim, "FUSED_DEVICES", ())  # a device without fused kernels
    foreach = _run_steps(lambda p: create_optimizer(cfg, p))
    assert torch.equal(foreach, _run_steps(lambda p: _TORCH_OPTIMIZERS[name](p, cfg, foreach=True)))
    torch.testing.assert_close(default, foreach, rtol=1e-5, atol=1e-6)


def test_optimizer_state_round_trips():
    gen = torch.Generator().manual_seed(0)
    a, b = nn.Parameter(torch.randn(10, generator=gen)), nn.Parameter(torch.zeros(10))
    opt_a, opt_b = create_optimizer({"name": "amsgrad"}, [a]), create_optimizer({"name": "amsgrad"}, [b])
    for _ in range(3):
        a.grad = torch.randn(10, generator=gen)
        opt_a.step()
    with torch.no_grad():
        b.copy_(a)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # a checkpoint holds copies (torch keeps the given tensors)
    a.grad = b.grad = torch.randn(10, generator=gen)
    opt_a.step()
    opt_b.step()
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="no parameters"):
        create_optimizer({"name": "sgd"}, [])


# ----------------------------------------------------------------------------------------------
# Training


def test_digits_learns_and_reports_every_metric_every_epoch():
    cfg = config(epochs=15)
    session = run_locally(classify, cfg, load_data(cfg))
    assert [row["epoch"] for row in session.history] == list(range(1, 16))
    for row in session.history:
        assert set(row) == set(CLASSIFY_METRICS)
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in row.values())
        assert 0 <= row["train_accuracy"] <= 1 and 0 <= row["val_accuracy"] <= 1 and row["seconds"] > 0
        assert row["first_layer_weight_abs"] > 0 and row["first_layer_grad_abs"] > 0
    last = session.history[-1]
    assert last["val_accuracy"] > 0.85, last
    assert last["train_loss"] < session.history[0]["train_loss"]


def test_same_seed_same_run_other_seed_other_run():
    cfg = config(epochs=2, dataset={"train_size": 300, "val_size": 200}, model={"dropout": 0.2})
    data = load_data(cfg)

    def run(c):
        return [metrics_without_time(r) for r in run_locally(classify, c, data).history]

    assert run(cfg) == run(cfg)
    assert run(cfg) != run(merge(cfg, {"seed": 1}))


def test_checkpoint_at_epoch_2_resumes_at_epoch_3_exactly():
    # Dropout and batchnorm, so the restored RNG state and buffers matter; sgd for momentum state.
    cfg = config(
        epochs=4,
        dataset={"train_size": 300, "val_size": 200},
        model={"dropout": 0.2, "batchnorm": True},
        optimizer={"name": "sgd", "lr": 0.05},
    )
    data = load_data(cfg)
    full = LocalSession()  # checkpoints every epoch
    with active(full):
        classify(cfg, data)
    assert [c["epoch"] for c in full.checkpoints] == [1, 2, 3, 4]

    resumed = LocalSession(checkpoint=full.checkpoints[1])
    with active(resumed):
        classify(cfg, data)
    assert [row["epoch"] for row in resumed.history] == [3, 4]
    assert [metrics_without_time(r) for r in resumed.history] == [metrics_without_time(r) for r in full.history[2:]]
    # checkpoints are copies: the epoch-2 one is not the weights of epoch 4
    assert not torch.equal(full.checkpoints[1]["model"]["1.weight"], full.checkpoints[3]["model"]["1.weight"])


def test_read_only_arrays_from_the_object_store_are_accepted():
    cfg = config(epochs=1, dataset={"train_size": 100, "val_size": 50}, batch_size=64)
    data = load_data(cfg)
    for value in data.values():
        if isinstance(value, np.ndarray):
            value.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        session = run_locally(classify, cfg, data)
    assert len(session.history) == 1


def test_partial_last_batch_is_trained_on_and_a_single_sample_skipped_for_batchnorm():
    cfg = config(epochs=1, dataset={"train_size": 101, "val_size": 20}, batch_size=50)
    data = load_data(cfg)
    plain = run_locally(classify, cfg, data).history[0]
    # 101 samples in batches of 50: the accuracy is a multiple of 1/101 (all samples counted)
    assert round(plain["train_accuracy"] * 101, 4).is_integer()
    with_bn = run_locally(classify, merge(cfg, {"model": {"batchnorm": True}}), data).history[0]
    assert round(with_bn["train_accuracy"] * 100, 4).is_integer()  # the lone 101st sample is skipped


@needs_fashion
def test_fashion_mnist_learns_above_chance_in_a_few_epochs():
    cfg = config(
        epochs=3,
        dataset={"name": "fashion_mnist", "path": str(FASHION_NPZ)},
        optimizer={"name": "adam", "lr": 1e-3},
    )
    session = run_locally(classify, cfg, load_data(cfg))
    assert session.history[-1]["val_accuracy"] > 0.6  # chance is 0.1
