"""``classify``'s training options and metrics: modes, optimizers, schedulers, clipping, label
smoothing, AMP, augmentation, diagnostics and artifacts, CNNs and image folders (issue 7)."""

from __future__ import annotations

import csv
import io
import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from expgrid.config import merge
from expgrid.errors import ConfigError
from expgrid.reporter import LocalSession, active
from expgrid.stopping import TrialRules
from trainables.classification.diagnostics import (
    GradNorms,
    confusion_csv,
    confusion_matrix,
    parameter_layers,
    per_class_accuracy_csv,
)
from trainables.classification.models import create_model, head_of
from trainables.classification.optim import create_optimizer, flat_parameters, scaled_step
from trainables.classification.schedules import create_scheduler, step_scheduler
from trainables.classification.synthetic import write_fake_image_folder
from trainables.classification.train import (
    CLASSIFY_DEFAULTS,
    CLASSIFY_METRICS,
    check_config,
    classify,
    load_data,
)

TIMES = ("seconds", "ms_per_image")  # metrics that depend on the clock
SMALL = {"train_size": 300, "val_size": 200}  # digits subset
SYNTHETIC = {"name": "synthetic", "shape": [3, 16, 16], "train_size": 256, "val_size": 128}


def config(**overrides) -> dict:
    return merge(CLASSIFY_DEFAULTS, overrides)


def untimed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMES} for row in rows]


def run(cfg: dict, data=None, *, checkpoint=None) -> LocalSession:
    """Run ``classify`` in a LocalSession that knows the trial's last epoch (so artifacts come)."""
    rules = TrialRules(metric="val_accuracy", mode="max", report_interval=0.0, last_epoch=int(cfg["epochs"]))
    session = LocalSession(rules, checkpoint=checkpoint)
    with active(session):
        classify(cfg, load_data(cfg) if data is None else data)
    session.flush()
    return session


def model_from(cfg: dict, state: dict, input_shape=(1, 8, 8), num_classes: int = 10) -> nn.Module:
    model = create_model(merge(CLASSIFY_DEFAULTS, cfg)["model"], input_shape, num_classes)
    model.load_state_dict(state)
    return model.eval()


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


# ----------------------------------------------------------------------------------------------
# Config checks


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"mode": "probe"}, "mode"),
        ({"mode": "linear_probe"}, "model.weights"),  # mlp needs a weights file (or "random")
        ({"optimizer": {"name": "sgd", "momentum": 0.0, "nesterov": True}}, "optimizer.nesterov"),
        ({"optimizer": {"nesterov": "yes"}}, "optimizer.nesterov"),
        ({"optimizer": {"betas": [0.9, 0.99]}}, "optimizer.betas"),
        ({"scheduler": {"name": "linear"}}, "scheduler.name"),
        ({"scheduler": {"name": "step", "step_size": 0}}, "scheduler.step_size"),
        ({"scheduler": {"name": "multistep", "milestones": [3, 0]}}, "scheduler.milestones"),
        ({"scheduler": {"name": "cosine", "t_max": 0}}, "scheduler.t_max"),
        ({"scheduler": {"name": "reduce_on_plateau", "factor": 1.0}}, "scheduler.factor"),
        ({"scheduler": {"name": "reduce_on_plateau", "monitor": "seconds"}}, "scheduler.monitor"),
        ({"scheduler": {"warmup": 3}}, "scheduler.warmup"),
        ({"grad_clip": 0}, "grad_clip"),
        ({"grad_clip": True}, "grad_clip"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"label_smoothing": -0.1}, "label_smoothing"),
        ({"amp": "fp8"}, "amp"),
        ({"amp": 1}, "amp"),
        ({"augment": "wild"}, "augment"),
        ({"diagnostics": {"activations": True}}, "diagnostics.activations"),
        ({"diagnostics": {"grad_norms": "yes"}}, "diagnostics.grad_norms"),
    ],
)
def test_bad_training_options_are_rejected_with_their_field(overrides, field):
    with pytest.raises(ConfigError) as info:
        check_config(config(**overrides))
    assert info.value.field == field


def test_training_options_are_accepted():
    check_config(
        config(
            mode="fine_tune",
            model={"weights": "random"},
            optimizer={"name": "sgd", "momentum": 0.9, "nesterov": True},
            scheduler={"name": "cosine", "min_lr": 1e-5},
            grad_clip=1.0,
            label_smoothing=0.1,
            amp=True,
            augment="moderate",
            diagnostics={"grad_norms": True, "confusion_matrix": False},
        )
    )
    for amp in (False, True, "bfloat16", "float16"):
        check_config(config(amp=amp))
    # nesterov only concerns sgd: a grid sharing it with other optimizers is fine
    check_config(config(optimizer={"name": "adam", "momentum": 0.0, "nesterov": True}))


# ----------------------------------------------------------------------------------------------
# Optimizers: SGD variants and the flat buffer over a subset


def test_each_name_builds_its_torch_optim_class_with_the_configs_hyperparameters():
    param = nn.Parameter(torch.ones(4))
    sgd = create_optimizer({"name": "sgd", "lr": 0.1, "momentum": 0.5, "nesterov": True, "weight_decay": 0.2}, [param])
    assert type(sgd) is torch.optim.SGD
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.1, 0.5, True, 0.2)
    assert type(create_optimizer({"name": "adamw"}, [param])) is torch.optim.AdamW
    assert create_optimizer({"name": "amsgrad"}, [param]).param_groups[0]["amsgrad"] is True
    assert create_optimizer({"name": "adam"}, [param]).param_groups[0]["amsgrad"] is False
    assert type(create_optimizer({"name": "rmsprop"}, [param])) is torch.optim.RMSprop


def test_flat_parameters_over_a_subset_leaves_the_rest_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
    model[0].requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head = head_of(model)
    # given out of order: the flat buffer still follows model order (the BatchNorm, then the head)
    flat = flat_parameters(model, [head.bias, model[1].weight, head.weight, model[1].bias])
    assert flat.numel() == 5 + 5 + 15 + 3
    assert model[0].weight.grad is None and model[0].weight.data_ptr() != flat.data_ptr()
    assert model[1].weight.data_ptr() == flat.data_ptr()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    model(torch.randn(6, 4)).square().sum().backward()
    assert model[0].weight.grad is None
    assert torch.equal(flat.grad[-18:], torch.cat([head.weight.grad.reshape(-1), head.bias.grad]))
    with pytest.raises(ValueError, match="does not require"):
        flat_parameters(model, [model[0].weight])
    with pytest.raises(ValueError, match="not Sequential's"):
        flat_parameters(model, [nn.Parameter(torch.zeros(2))])


def test_scaled_step_skips_an_overflowed_step_halves_the_scale_and_grows_it():
    param = nn.Parameter(torch.ones(2))
    optimizer = create_optimizer({"name": "sgd", "lr": 1.0, "momentum": 0.0}, [param])
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)

    def step(grad: list[float]) -> bool:
        param.grad = scaler.scale(torch.tensor(grad))  # as backward of the scaled loss would leave it
        scaler.unscale_(optimizer)
        return scaled_step(scaler, optimizer)

    assert step([2.0, -0.5]) and torch.equal(param.detach(), torch.tensor([-1.0, 1.5])) and scaler.get_scale() == 1024
    assert not step([1.0, math.inf]) and scaler.get_scale() == 512.0
    assert not step([math.nan, 0.0]) and scaler.get_scale() == 256.0
    assert torch.equal(param.detach(), torch.tensor([-1.0, 1.5]))  # the skipped steps left it alone
    assert all(step([0.0, 0.0]) for _ in range(3)) and scaler.get_scale() == 512.0  # grown: a taken step too


# ----------------------------------------------------------------------------------------------
# Learning-rate schedulers against torch.optim.lr_scheduler


def _torch_lrs(make, epochs: int, values=None) -> list[float]:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = make(optimizer)
    lrs = []
    for epoch in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step(values[epoch]) if values is not None else scheduler.step()
    return lrs


def _our_lrs(cfg: dict, epochs: int, values=None, monitor: str = "val_loss") -> list[float]:
    cfg = {**cfg, "monitor": monitor}
    optimizer = create_optimizer({"name": "sgd", "lr": 0.1}, [nn.Parameter(torch.zeros(1))])
    scheduler = create_scheduler(cfg, optimizer, epochs)
    lrs = []
    for epoch in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        step_scheduler(scheduler, cfg, {monitor: values[epoch]} if values is not None else {})
    return lrs


S = torch.optim.lr_scheduler
PLATEAU_VALUES = [1.0, 0.9, 0.9, 0.9, 0.95, 0.8, 0.8, 0.80001, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]


@pytest.mark.parametrize(
    ("cfg", "make", "monitor"),
    [
        ({"name": "none"}, lambda o: S.LambdaLR(o, lambda e: 1.0), None),
        ({"name": "step", "step_size": 3, "gamma": 0.5}, lambda o: S.StepLR(o, 3, gamma=0.5), None),
        (
            {"name": "multistep", "milestones": [2, 5, 5, 11], "gamma": 0.3},
            lambda o: S.MultiStepLR(o, [2, 5, 5, 11], gamma=0.3),
            None,
        ),
        ({"name": "cosine", "t_max": 5, "min_lr": 1e-3}, lambda o: S.CosineAnnealingLR(o, 5, eta_min=1e-3), None),
        ({"name": "cosine"}, lambda o: S.CosineAnnealingLR(o, 16), None),  # t_max: the trial's epochs
        (
            {"name": "reduce_on_plateau", "patience": 1, "factor": 0.5, "min_lr": 0.02},
            lambda o: S.ReduceLROnPlateau(o, mode="min", patience=1, factor=0.5, min_lr=0.02),
            "val_loss",
        ),
        (
            {"name": "reduce_on_plateau", "patience": 0, "monitor": "val_accuracy"},
            lambda o: S.ReduceLROnPlateau(o, mode="max", patience=0),
            "val_accuracy",
        ),
    ],
)
def test_scheduler_lrs_match_torch(cfg, make, monitor):
    epochs = 16
    values = PLATEAU_VALUES if monitor == "val_loss" else [1 - v for v in PLATEAU_VALUES] if monitor else None
    ours = _our_lrs(cfg, epochs, values, monitor or "val_loss")
    theirs = _torch_lrs(make, epochs, values)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-15)
    if cfg["name"] != "none":
        assert len(set(round(lr, 12) for lr in ours)) > 1  # it did change the rate


# ----------------------------------------------------------------------------------------------
# Training: metrics


def test_every_metric_is_reported_with_consistent_values():
    cfg = config(epochs=2, dataset={"train_size": 101, "val_size": 50}, batch_size=10)
    session = run(cfg)
    for row in session.history:
        assert set(row) == set(CLASSIFY_METRICS)
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in row.values())
        assert row["iterations"] == math.ceil(101 / 10)
        assert row["val_top5_accuracy"] >= row["val_accuracy"]
        assert row["val_error"] == pytest.approx(1 - row["val_accuracy"])
        assert row["val_top5_error"] == pytest.approx(1 - row["val_top5_accuracy"])
        assert row["lr"] == CLASSIFY_DEFAULTS["optimizer"]["lr"]
        assert row["seconds"] > 0 and 0 < row["ms_per_image"] < 1000 * row["seconds"] / 101
        assert row["parameters"] == row["trainable_parameters"] == 64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    # a lone last sample is dropped with BatchNorm: one step fewer
    bn = run(config(epochs=1, dataset={"train_size": 101, "val_size": 50}, batch_size=50, model={"batchnorm": True}))
    assert bn.history[0]["iterations"] == 2


def test_top5_with_fewer_than_five_classes_is_one():
    cfg = config(epochs=1, dataset={**SYNTHETIC, "shape": [1, 4, 4], "num_classes": 3, "train_size": 60})
    row = run(cfg).history[0]
    assert row["val_top5_accuracy"] == 1.0 and row["val_top5_error"] == 0.0


def test_val_metrics_are_the_checkpointed_models_with_unsmoothed_loss():
    cfg = config(epochs=1, dataset=SMALL, label_smoothing=0.2)
    data = load_data(cfg)
    session = run(cfg, data)
    row, state = session.history[0], session.checkpoints[0]["model"]
    model = model_from(cfg, state)
    x, y = torch.tensor(data["x_val"]), torch.tensor(data["y_val"])
    with torch.no_grad():
        out = model(x)
    assert row["val_loss"] == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-5)
    assert row["val_accuracy"] == pytest.approx((out.argmax(1) == y).float().mean().item())
    top5 = (out.topk(5, 1).indices == y[:, None]).any(1).float().mean().item()
    assert row["val_top5_accuracy"] == pytest.approx(top5)


def test_label_smoothing_changes_the_training_loss_as_cross_entropy_does():
    # One step per epoch (batch_size >= train_size): epoch 11's training loss is the loss of the
    # epoch-10 model on the whole training set, before its step.
    base = config(epochs=11, dataset=SMALL, batch_size=300, optimizer={"lr": 0.01})
    data = load_data(base)
    x, y = torch.tensor(data["x_train"]), torch.tensor(data["y_train"])
    losses = {}
    for smoothing in (0.0, 0.3):
        cfg = merge(base, {"label_smoothing": smoothing})
        first = run(merge(cfg, {"epochs": 10}), data)
        resumed = run(cfg, data, checkpoint=first.checkpoints[-1])
        model = model_from(cfg, first.checkpoints[-1]["model"])
        with torch.no_grad():
            expected = F.cross_entropy(model(x), y, label_smoothing=smoothing).item()
        losses[smoothing] = resumed.history[0]["train_loss"]
        assert losses[smoothing] == pytest.approx(expected, rel=1e-5)
    assert losses[0.3] != pytest.approx(losses[0.0], rel=1e-3)


def test_grad_clip_bounds_the_update():
    # Plain SGD with lr 1 and one step per epoch: the step is the (clipped) gradient itself.
    def step_size(clip):
        cfg = config(
            epochs=2,
            dataset=SMALL,
            batch_size=300,
            optimizer={"name": "sgd", "lr": 1.0, "momentum": 0.0},
            grad_clip=clip,
        )
        data = load_data(cfg)
        first = run(merge(cfg, {"epochs": 1}), data)
        second = run(cfg, data, checkpoint=first.checkpoints[-1])
        a, b = first.checkpoints[-1]["model"], second.checkpoints[-1]["model"]
        return torch.linalg.vector_norm(torch.cat([(b[k] - a[k]).reshape(-1) for k in a])).item()

    assert step_size(None) > 0.05
    assert step_size(0.05) == pytest.approx(0.05, rel=1e-3)  # clipped to the bound (it was larger)
    assert step_size(100.0) == pytest.approx(step_size(None), rel=1e-6)  # a loose bound changes nothing


def test_zero_initialisation_stays_at_chance_while_default_init_learns():
    cfg = config(epochs=4)
    data = load_data(cfg)
    learned = run(cfg, data).history[-1]
    zeros = run(merge(cfg, {"model": {"init": "zeros"}}), data).history[-1]
    assert learned["val_accuracy"] > 0.8, learned
    assert zeros["val_accuracy"] < 0.2, zeros  # chance: 0.1 (the majority class)
    assert zeros["first_layer_grad_abs"] == 0.0  # symmetry: the first layer never gets a gradient


def test_amp_is_a_no_op_on_the_cpu():
    cfg = config(epochs=2, dataset=SMALL)
    data = load_data(cfg)
    assert untimed(run(merge(cfg, {"amp": True}), data).history) == untimed(run(cfg, data).history)


def test_augmentation_runs_on_training_batches_only():
    cfg = config(epochs=2, dataset=SYNTHETIC, model={"name": "simple_cnn", "channels": [8, 16]}, batch_size=16)
    data = load_data(cfg)
    plain = run(cfg, data).history
    augmented = run(merge(cfg, {"augment": "moderate"}), data).history
    assert [r["train_loss"] for r in plain] != [r["train_loss"] for r in augmented]
    assert augmented[-1]["val_accuracy"] > 0.3, augmented  # chance: 0.1


# ----------------------------------------------------------------------------------------------
# Schedulers in training, and resuming them


def test_scheduler_sets_each_epochs_lr_and_resumes_the_same_sequence():
    cfg = config(
        epochs=6,
        dataset=SMALL,
        optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
        scheduler={"name": "step", "step_size": 2, "gamma": 0.5},
    )
    data = load_data(cfg)
    full = run(cfg, data)
    assert [r["lr"] for r in full.history] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    resumed = run(cfg, data, checkpoint=full.checkpoints[2])  # after epoch 3
    assert [r["epoch"] for r in resumed.history] == [4, 5, 6]
    assert untimed(resumed.history) == untimed(full.history[3:])


def test_reduce_on_plateau_resumes_with_its_state():
    cfg = config(
        epochs=8,
        dataset={"train_size": 100, "val_size": 30},
        optimizer={"lr": 0.01},
        scheduler={"name": "reduce_on_plateau", "patience": 0, "factor": 0.5, "monitor": "val_accuracy"},
    )
    data = load_data(cfg)
    full = run(cfg, data)
    lrs = [r["lr"] for r in full.history]
    assert lrs[0] == 0.01 and len(set(lrs)) > 1, lrs  # it reduced at least once
    for k in (2, 5):
        resumed = run(cfg, data, checkpoint=full.checkpoints[k - 1])
        assert untimed(resumed.history) == untimed(full.history[k:])


# ----------------------------------------------------------------------------------------------
# Modes


def _weights_file(tmp_path, model_cfg) -> str:
    torch.manual_seed(123)
    pretrained = create_model(model_cfg, (1, 8, 8), 10)
    with torch.no_grad():  # non-trivial BatchNorm statistics, to see that a probe keeps them
        pretrained[2].running_mean.uniform_(-0.1, 0.1)
        pretrained[2].running_var.uniform_(0.5, 1.5)
    path = tmp_path / "pretrained.pt"
    torch.save(pretrained.state_dict(), path)
    return str(path)


def test_linear_probe_trains_only_the_head_and_fine_tune_everything(tmp_path):
    model_cfg = {"name": "mlp", "hidden": [32, 16], "batchnorm": True}
    weights = _weights_file(tmp_path, model_cfg)
    saved = torch.load(weights)
    head_keys = {"7.weight", "7.bias"}  # Flatten, (Linear, BatchNorm1d, ReLU) × 2, Linear
    results = {}
    for mode in ("linear_probe", "fine_tune"):
        cfg = config(
            epochs=3, dataset=SMALL, mode=mode, model={**model_cfg, "weights": weights}, optimizer={"lr": 0.01}
        )
        check_config(cfg)
        session = run(cfg)
        final = session.checkpoints[-1]["model"]
        assert set(final) == set(saved)
        results[mode] = (session.history, final)
        for key in head_keys:  # a new head, trained in both modes
            assert not torch.equal(final[key], saved[key]), (mode, key)
    probe_rows, probe = results["linear_probe"]
    for key, value in saved.items():  # the body: weights and BatchNorm statistics bitwise unchanged
        if key not in head_keys:
            assert torch.equal(probe[key], value), key
    assert probe_rows[-1]["trainable_parameters"] == 16 * 10 + 10
    assert probe_rows[-1]["parameters"] > probe_rows[-1]["trainable_parameters"]
    assert probe_rows[-1]["first_layer_grad_abs"] > 0  # the head's: the first trained layer
    tune_rows, tuned = results["fine_tune"]
    for key in ("1.weight", "1.bias", "2.running_mean", "4.weight", "5.running_var"):
        assert not torch.equal(tuned[key], saved[key]), key
    assert tune_rows[-1]["trainable_parameters"] == tune_rows[-1]["parameters"]
    assert probe_rows[-1]["train_loss"] < probe_rows[0]["train_loss"]
    assert probe_rows[-1]["val_accuracy"] > 0.2 and tune_rows[-1]["val_accuracy"] > 0.5, (probe_rows, tune_rows)


# ----------------------------------------------------------------------------------------------
# Diagnostics and artifacts


def test_confusion_matrix_and_per_class_accuracy_artifacts():
    cfg = config(epochs=2, dataset=SMALL)
    session = run(cfg)
    files = session.artifacts
    assert set(files) == {"confusion_matrix.csv", "per_class_accuracy.csv"}
    rows = read_csv(files["confusion_matrix.csv"])
    assert rows[0] == ["true\\predicted", *map(str, range(10))]
    matrix = torch.tensor([[int(v) for v in row[1:]] for row in rows[1:]])
    assert matrix.shape == (10, 10) and matrix.sum() == 200
    assert matrix.trace().item() / 200 == pytest.approx(session.history[-1]["val_accuracy"])
    per_class = read_csv(files["per_class_accuracy.csv"])
    assert per_class[0] == ["class", "samples", "correct", "accuracy"]
    for i, (name, samples, correct, accuracy) in enumerate(per_class[1:]):
        assert name == str(i) and int(samples) == matrix[i].sum() and int(correct) == matrix[i, i]
        assert float(accuracy) == pytest.approx(int(correct) / int(samples), rel=1e-5)
    quiet = run(merge(cfg, {"diagnostics": {"confusion_matrix": False}}))
    assert quiet.artifacts == {}


def test_grad_norms_artifact_has_a_row_per_epoch_and_a_column_per_layer():
    cfg = config(epochs=3, dataset=SMALL, model={"hidden": [16, 8]}, diagnostics={"grad_norms": True})
    data = load_data(cfg)
    session = run(cfg, data)
    norms = session.artifacts["grad_norms.json"]
    assert norms["layers"] == ["1", "3", "5"]  # Flatten, Linear, ReLU, Linear, ReLU, Linear
    assert norms["epochs"] == [1, 2, 3]
    assert len(norms["norms"]) == 3 and all(len(row) == 3 and min(row) > 0 for row in norms["norms"])
    # resumed after epoch 1: the artifact still covers every epoch, with the same values
    resumed = run(cfg, data, checkpoint=session.checkpoints[0])
    assert resumed.artifacts["grad_norms.json"] == norms


def test_grad_norms_are_per_module_gradient_norms_averaged_over_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    flat = flat_parameters(model)
    norms = GradNorms(model, flat, list(model.parameters()))
    assert norms.names == ["0", "2"] and norms.index is None  # one flat slice per layer
    expected = torch.zeros(2)
    for _ in range(3):
        flat.grad.zero_()
        model(torch.randn(5, 4)).square().sum().backward()
        norms.accumulate()
        for j, layer in enumerate((model[0], model[2])):
            expected[j] += torch.cat([layer.weight.grad.reshape(-1), layer.bias.grad]).norm() / 3
    torch.testing.assert_close(norms.epoch_means(), expected)
    assert norms.steps == 0 and torch.equal(norms.sum, torch.zeros(2))


def test_grad_norms_combine_a_layers_scattered_slices():
    # A flat gradient laid out weight0, weight2, bias0, bias2: each layer is two slices.
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    order = [model[0].weight, model[2].weight, model[0].bias, model[2].bias]
    flat = nn.Parameter(torch.zeros(sum(p.numel() for p in order)))
    flat.grad = torch.arange(1.0, flat.numel() + 1)
    offset = 0
    for p in order:
        p.grad = flat.grad[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    norms = GradNorms(model, flat, order)
    assert norms.index is not None and len(norms.slices) == 4
    norms.accumulate()
    expected = [torch.cat([model[i].weight.grad.reshape(-1), model[i].bias.grad]).norm() for i in (0, 2)]
    torch.testing.assert_close(norms.epoch_means(), torch.stack(expected))
    assert [name for name, _ in parameter_layers(model, order)] == ["0", "2"]


def test_confusion_matrix_counts_and_csv():
    targets = torch.tensor([0, 0, 1, 2, 2, 2])
    predictions = torch.tensor([0, 1, 1, 2, 0, 2])
    matrix = confusion_matrix(targets, predictions, 4)
    assert matrix.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    names = ["cat", "dog", "a,b", "empty"]
    assert read_csv(confusion_csv(matrix, names))[3] == ["a,b", "1", "0", "2", "0"]
    assert read_csv(per_class_accuracy_csv(matrix, names))[1:] == [
        ["cat", "2", "1", "0.5"],
        ["dog", "1", "1", "1"],
        ["a,b", "3", "2", "0.666667"],
        ["empty", "0", "0", ""],
    ]


# ----------------------------------------------------------------------------------------------
# Convolutional models and image folders


@pytest.mark.parametrize(("name", "epochs"), [("simple_cnn", 2), ("resnet20", 3)])
def test_cnns_learn_synthetic_images_above_chance(name, epochs):
    cfg = config(epochs=epochs, dataset=SYNTHETIC, model={"name": name}, batch_size=16)
    check_config(cfg)
    history = run(cfg).history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_accuracy"] > 0.3, history  # chance: 0.1
    assert history[-1]["iterations"] == 16


def test_image_folder_trial_runs_through_the_dataloader(tmp_path):
    write_fake_image_folder(tmp_path, ["ant", "bee", "cow"], 8, 12, val_per_class=4)
    cfg = config(
        epochs=1,
        dataset={
            "name": "image_folder",
            "root": str(tmp_path),
            "train_size": None,
            "val_size": None,
            "image_size": 12,
            "loader_workers": 1,
        },
        model={"name": "simple_cnn", "channels": [8, 16]},
        batch_size=5,
        diagnostics={"grad_norms": True},
    )
    check_config(cfg)
    session = run(cfg)
    row = session.history[0]
    assert row["iterations"] == math.ceil(24 / 5) and row["val_top5_accuracy"] == 1.0  # 3 classes
    rows = read_csv(session.artifacts["confusion_matrix.csv"])
    assert rows[0] == ["true\\predicted", "ant", "bee", "cow"]
    assert sum(int(v) for row in rows[1:] for v in row[1:]) == 12
    assert len(session.artifacts["grad_norms.json"]["layers"]) >= 3
