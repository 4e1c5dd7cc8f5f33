"""classify's model registry, initialisation schemes and training modes (scratch, linear probe,
fine-tune): every registered model trains; weights load, freeze and stay frozen; bad configs name
their field."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision import models as tv

from expgrid.config import merge
from expgrid.errors import ConfigError, UnknownNameError
from trainables.classification.cnn import Residual
from trainables.classification.models import (
    ACTIVATIONS,
    MODEL_DEFAULTS,
    MODELS,
    Sine,
    check_model,
    count_parameters,
    create_model,
    first_linear,
    head_of,
)
from trainables.classification.modes import (
    MODES,
    build_model,
    check_mode,
    set_train_mode,
    trainable_parameters,
)

CLASSES = 5
CIFAR = (3, 32, 32)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: other test processes share this machine's 2 cores (see test_reid_models)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def input_shape(name: str) -> tuple[int, int, int]:
    return (1, 8, 8) if name == "mlp" else CIFAR


# Parameter counts at CLASSES classes of the models defined here (the torchvision ones are torchvision's).
OWN_PARAMETERS = {"mlp": 16_901, "simple_cnn": 288_101, "resnet9": 6_570_565, "resnet20": 272_149}


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_builds_trains_and_ends_in_its_head(name):
    """The whole registry at a small input, batch 2 (BatchNorm needs two samples in training mode)."""
    torch.manual_seed(0)
    shape = input_shape(name)
    model = create_model({"name": name}, shape, CLASSES)
    x = torch.randn(2, *shape)
    model.train()
    logits = model(x)
    assert logits.shape == (2, CLASSES)
    logits.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert first_linear(model).weight.grad.abs().sum() > 0  # the gradient reaches the first layer

    head = head_of(model)
    assert type(head) is nn.Linear and head.out_features == CLASSES
    assert head is [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():  # the head really is the last layer: zero it and the logits are zero
        head.weight.zero_()
        head.bias.zero_()
        assert torch.equal(model.eval()(x), torch.zeros(2, CLASSES))

    n = count_parameters(model)
    print(f"{name}: {n:,} parameters at {shape}")
    assert n == sum(p.numel() for p in model.parameters()) > 0
    if name in OWN_PARAMETERS:
        assert n == OWN_PARAMETERS[name]


def test_mlp_depth_width_residual_and_sine():
    def kinds(model):
        return [type(m).__name__ for m in model]

    deep = create_model({"name": "mlp", "depth": 3, "width": 16, "activation": "sine"}, (1, 4, 4), 3)
    assert kinds(deep) == ["Flatten", *["Linear", "Sine"] * 3, "Linear"]
    assert [m.out_features for m in deep if isinstance(m, nn.Linear)] == [16, 16, 16, 3]
    x = torch.linspace(-3, 3, 7)
    assert torch.equal(Sine()(x), torch.sin(x)) and "sine" in ACTIVATIONS

    # residual: a skip around each block whose widths match (not the first: 16 inputs → 8 units)
    res = create_model({"name": "mlp", "hidden": [8, 8, 8], "residual": True, "batchnorm": True}, (1, 4, 4), 3)
    assert isinstance(res, nn.Sequential)
    assert kinds(res) == ["Flatten", "Linear", "BatchNorm1d", "ReLU", "Residual", "Residual", "Linear"]
    block = res[4]
    assert kinds(block.block) == ["Linear", "BatchNorm1d", "ReLU"]
    h = torch.randn(4, 8)
    block.eval()
    assert torch.equal(block(h), h + block.block(h))
    assert first_linear(res) is res[1]

    # 100 hidden layers build and backpropagate (the vanishing/exploding-gradient study's depth)
    for residual in (False, True):
        torch.manual_seed(0)
        model = create_model({"name": "mlp", "depth": 100, "width": 32, "residual": residual}, (1, 8, 8), 10)
        assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 101
        assert sum(isinstance(m, Residual) for m in model) == (99 if residual else 0)
        model(torch.randn(4, 1, 8, 8)).logsumexp(1).mean().backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_cnn_options_shape_the_network():
    def count(model, kind):
        return sum(isinstance(m, kind) for m in model.modules())

    plain = create_model({"name": "simple_cnn", "channels": [8, 16], "batchnorm": False, "dropout": 0.25}, CIFAR, 4)
    assert [m.out_channels for m in plain.modules() if isinstance(m, nn.Conv2d)] == [8, 8, 16, 16]
    assert count(plain, nn.BatchNorm2d) == 0 and count(plain, nn.Dropout) == 2
    assert all(m.bias is not None for m in plain.modules() if isinstance(m, nn.Conv2d))
    assert count(create_model({"name": "simple_cnn"}, CIFAR, 4), nn.BatchNorm2d) == 6
    assert count(create_model({"name": "resnet9"}, CIFAR, 4), nn.BatchNorm2d) == 8
    r20 = create_model({"name": "resnet20", "dropout": 0.5}, CIFAR, 4)
    convs = [m for m in r20.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 21 and count(r20, nn.Linear) == 1  # 19 3×3 + 2 projection convs; 20 weighted layers
    assert [c.stride for c in convs if c.kernel_size == (1, 1)] == [(2, 2), (2, 2)]
    assert isinstance(list(r20)[-2], nn.Dropout) and list(r20)[-2].p == 0.5
    assert count(create_model({"name": "resnet20", "batchnorm": False}, CIFAR, 4), nn.BatchNorm2d) == 0
    # digits-sized images pass every pooling stage (ceil-mode pools round a 1-pixel map up)
    small = create_model({"name": "simple_cnn", "channels": [4, 4, 4, 4, 4]}, (1, 8, 8), 3)
    assert small(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_torchvision_models_take_dropout_and_grayscale():
    model = create_model({"name": "resnet18", "dropout": 0.3}, (1, 16, 16), CLASSES)
    dropout, head = model.body.fc
    assert isinstance(dropout, nn.Dropout) and dropout.p == 0.3 and head is head_of(model)
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, CLASSES)  # one channel repeated to RGB
    with pytest.raises(ConfigError, match="1 or 3"):
        create_model({"name": "resnet18"}, (4, 16, 16), CLASSES)


def test_default_model_config_suits_every_model():
    """The trainable's ``model`` defaults are merged under every config: their unset (None)
    options must not impose mlp's options on other models."""
    for name in MODELS.names():
        check_model(merge(MODEL_DEFAULTS, {"name": name}))
    model = create_model(merge(MODEL_DEFAULTS, {"name": "simple_cnn"}), CIFAR, 3)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the CNN's own default
    mlp = create_model(MODEL_DEFAULTS, (1, 8, 8), 10)
    assert [m.out_features for m in mlp if isinstance(m, nn.Linear)] == [128, 64, 10]


# ----------------------------------------------------------------------------------------------
# Initialisation


def layers(model):
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def test_zeros_init_zeroes_every_linear_and_conv_and_leaves_batchnorm():
    model = create_model({"name": "resnet20", "batchnorm": True, "init": "zeros"}, CIFAR, 4)
    for layer in layers(model):
        assert not layer.weight.any() and (layer.bias is None or not layer.bias.any())
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and not bn.bias.any()
    model = create_model({"name": "mlp", "hidden": [8], "init": "zeros"}, (1, 4, 4), 3)
    assert all(not p.any() for p in model.parameters())


def test_kaiming_and_xavier_set_the_weight_scale():
    torch.manual_seed(0)
    cfg = {"name": "mlp", "hidden": [512, 512]}
    default, kaiming, xavier = (
        create_model({**cfg, "init": i}, (1, 16, 32), 10) for i in ("default", "kaiming", "xavier")
    )
    # the middle layer: 512 → 512, 262k weights, so the sample statistics are within ~1 %
    fan_in = fan_out = 512
    w_default, w_kaiming, w_xavier = (layers(m)[1].weight for m in (default, kaiming, xavier))
    assert w_default.abs().max() <= 1 / math.sqrt(fan_in)  # PyTorch's U(±1/√fan_in)
    assert w_kaiming.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.02)  # N(0, 2/fan_in)
    assert w_kaiming.std() > 2 * w_default.std()
    bound = math.sqrt(6 / (fan_in + fan_out))
    assert w_xavier.abs().max() <= bound and w_xavier.abs().max() > 0.99 * bound  # U(±√(6/(fan_in+fan_out)))
    assert w_xavier.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    for model in (kaiming, xavier):
        assert all(not layer.bias.any() for layer in layers(model))
    assert all(layer.bias.any() for layer in layers(default))
    conv = layers(create_model({"name": "resnet20", "init": "kaiming"}, CIFAR, 4))[-2]  # 64 → 64 channels, 3×3
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.03)


# ----------------------------------------------------------------------------------------------
# Training modes


def saved(tmp_path, model: nn.Module, file_name: str, wrap: str | None = None):
    path = tmp_path / file_name
    state = model.state_dict()
    torch.save({wrap: state, "epoch": 3} if wrap else state, path)
    return path, {k: v.clone() for k, v in state.items()}


def body_equals(model: nn.Module, state: dict, head_prefix: str) -> bool:
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(head_prefix)}
    return bool(own) and all(torch.equal(v, state[k]) for k, v in own.items())


def test_linear_probe_loads_weights_freezes_the_body_and_keeps_its_batchnorm_in_eval(tmp_path):
    torch.manual_seed(1)
    source = create_model({"name": "simple_cnn", "channels": [8, 16]}, CIFAR, 7)  # another number of classes
    source.train()(torch.randn(4, *CIFAR))  # non-trivial BatchNorm running statistics in the file
    path, state = saved(tmp_path, source, "cnn.pth", wrap="model")  # a classify checkpoint's layout
    cfg = {"name": "simple_cnn", "channels": [8, 16], "weights": str(path)}
    check_mode("linear_probe", cfg)
    model = build_model(cfg, "linear_probe", CIFAR, CLASSES)
    head = head_of(model)
    assert head.out_features == CLASSES
    head_prefix = next(n for n, m in model.named_modules() if m is head) + "."
    assert body_equals(model, state, head_prefix)
    assert trainable_parameters(model) == [head.weight, head.bias]
    assert count_parameters(model) > sum(p.numel() for p in trainable_parameters(model))

    set_train_mode(model)
    assert model.training and head.training
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)
    model(torch.randn(4, *CIFAR))
    assert body_equals(model, state, head_prefix)  # running statistics unchanged by a training forward

    # fine_tune: the same weights, everything trainable, BatchNorm in training mode
    tuned = build_model(cfg, "fine_tune", CIFAR, CLASSES)
    assert body_equals(tuned, state, head_prefix)
    assert trainable_parameters(tuned) == list(tuned.parameters())
    set_train_mode(tuned)
    assert all(m.training for m in tuned.modules())

    # scratch ignores the weights, even a missing file
    scratch = build_model({**cfg, "weights": str(tmp_path / "missing.pth")}, "scratch", CIFAR, CLASSES)
    assert not body_equals(scratch, state, head_prefix)
    assert trainable_parameters(scratch) == list(scratch.parameters())


def test_pretrained_init_applies_to_the_new_head_only(tmp_path):
    torch.manual_seed(2)
    path, state = saved(tmp_path, create_model({"name": "mlp", "hidden": [6]}, (1, 4, 4), 3), "mlp.pth")
    model = build_model(
        {"name": "mlp", "hidden": [6], "weights": str(path), "init": "zeros"}, "fine_tune", (1, 4, 4), 9
    )
    assert torch.equal(model[1].weight, state["1.weight"]) and model[1].weight.any()
    assert not model[3].weight.any() and not model[3].bias.any() and model[3].out_features == 9


def test_torchvision_linear_probe_loads_imagenet_layout_weights_and_only_the_head_learns(tmp_path):
    torch.manual_seed(3)
    reference = tv.resnet18()  # torchvision's own layout, as in its ImageNet files (1000-class fc)
    path, state = saved(tmp_path, reference, "resnet18.pth")
    x, y = torch.randn(4, *CIFAR), torch.tensor([0, 1, 2, 3])
    for mode in ("linear_probe", "fine_tune"):
        cfg = {"name": "resnet18", "weights": str(path)}
        check_mode(mode, cfg)
        model = build_model(cfg, mode, CIFAR, CLASSES)
        body = {
            k.removeprefix("body."): v.clone() for k, v in model.state_dict().items() if not k.startswith("body.fc.")
        }
        assert all(torch.equal(v, state[k]) for k, v in body.items())
        head = head_of(model)
        assert head is model.body.fc and head.out_features == CLASSES
        before_head = head.weight.clone()
        optimizer = torch.optim.SGD(trainable_parameters(model), lr=0.1, momentum=0.9)
        for _ in range(3):
            set_train_mode(model)
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        after = {k.removeprefix("body."): v for k, v in model.state_dict().items() if not k.startswith("body.fc.")}
        assert not torch.equal(head.weight, before_head)
        changed = [k for k, v in after.items() if not torch.equal(v, body[k])]
        if mode == "linear_probe":
            assert changed == []  # weights and BatchNorm statistics as loaded
            assert not model.body.bn1.training and not model.body.layer4.training
        else:
            assert "conv1.weight" in changed and "bn1.running_mean" in changed


def test_random_weights_stand_in_for_pretrained_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))  # no torchvision cache here
    for name in ("simple_cnn", "resnet18", "vit_b_16"):
        cfg = {"name": name, "weights": "random"}
        check_mode("linear_probe", cfg)
        model = build_model(cfg, "linear_probe", CIFAR, CLASSES)
        assert trainable_parameters(model) == [head_of(model).weight, head_of(model).bias]
        assert model(torch.randn(2, *CIFAR)).shape == (2, CLASSES)
    assert build_model({"name": "vit_b_16", "weights": "random"}, "fine_tune", CIFAR, 3).body.image_size == 32


def test_pretrained_modes_without_usable_weights_name_model_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    missing = str(tmp_path / "missing.pth")
    cases = [
        {"name": "simple_cnn"},  # no weights at all
        {"name": "simple_cnn", "weights": missing},
        {"name": "resnet18"},  # torchvision: none in the cache, never downloaded
        {"name": "resnet18", "weights": missing},
        {"name": "mlp", "weights": 3},
    ]
    for mode in ("linear_probe", "fine_tune"):
        for cfg in cases:
            with pytest.raises(ConfigError) as info:
                check_mode(mode, cfg)
            assert info.value.field == "model.weights", cfg
            with pytest.raises(ConfigError, match="model.weights"):
                build_model(cfg, mode, CIFAR, CLASSES)
    with pytest.raises(ConfigError, match="resnet18-f37072fd.pth"):
        check_mode("fine_tune", {"name": "resnet18"})
    for cfg in cases[:4]:
        check_mode("scratch", cfg)

    # a file of another model or other options: the first key that does not fit is named
    path, _ = saved(tmp_path, create_model({"name": "resnet20"}, CIFAR, 10), "r20.pth")
    with pytest.raises(ConfigError, match=r"model.weights: .*state_dict of model simple_cnn.*'0.weight'"):
        build_model({"name": "simple_cnn", "weights": str(path)}, "fine_tune", CIFAR, 10)
    path, _ = saved(tmp_path, create_model({"name": "mlp", "hidden": [4]}, (1, 4, 4), 3), "mlp.pth")
    with pytest.raises(ConfigError, match=r"'1.weight' is \(4, 16\), the model has \(5, 16\)"):
        build_model({"name": "mlp", "hidden": [5], "weights": str(path)}, "linear_probe", (1, 4, 4), 3)
    (tmp_path / "junk.pth").write_text("not a state_dict")
    with pytest.raises(ConfigError, match="model.weights"):
        build_model({"name": "mlp", "weights": str(tmp_path / "junk.pth")}, "linear_probe", (1, 4, 4), 3)
    with pytest.raises(ConfigError, match="model.weights"):  # torchvision: not an ImageNet-layout file
        build_model({"name": "resnet18", "weights": str(path)}, "fine_tune", CIFAR, 3)


# ----------------------------------------------------------------------------------------------
# Config errors


def test_unknown_mode_and_model_names_list_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        check_mode("finetune", {"name": "mlp"})
    assert info.value.field == "mode" and ", ".join(MODES) in str(info.value)
    with pytest.raises(UnknownNameError) as info:
        check_model({"name": "resnet101"})
    assert info.value.field == "model.name" and ", ".join(MODELS.names()) in str(info.value)
    with pytest.raises(UnknownNameError, match="did you mean resnet20"):
        create_model({"name": "resnet2"}, CIFAR, 3)


@pytest.mark.parametrize(
    ("model_cfg", "field", "message"),
    [
        ({"name": "resnet18", "batchnorm": True}, "model.batchnorm", "one of dropout, init, weights"),
        ({"name": "resnet18", "pretrained": True}, "model.pretrained", "one of dropout, init, weights"),
        ({"name": "simple_cnn", "hidden": [8]}, "model.hidden", "channels, dropout, batchnorm, init, weights"),
        ({"name": "mlp", "hidden": [8], "depth": 2, "width": 8}, "model.depth", "not both"),
        ({"name": "mlp", "width": 8}, "model.width", "to come with model.depth"),
        ({"name": "mlp", "depth": 2}, "model.depth", "to come with model.width"),
        ({"name": "mlp", "depth": -1, "width": 8}, "model.depth", "an integer >= 0"),
        ({"name": "mlp", "depth": 2, "width": 0}, "model.width", "an integer >= 1"),
        ({"name": "mlp", "residual": "yes"}, "model.residual", "true or false"),
        ({"name": "mlp", "init": "he"}, "model.init", "default, zeros, kaiming, xavier"),
        ({"name": "simple_cnn", "channels": []}, "model.channels", "a non-empty list"),
        ({"name": "simple_cnn", "channels": [8, 0]}, "model.channels", "a non-empty list"),
        ({"name": "resnet20", "dropout": 1.0}, "model.dropout", "a probability"),
        ({"name": "resnet9", "batchnorm": 1}, "model.batchnorm", "true or false"),
    ],
)
def test_bad_model_options_are_rejected_with_their_field(model_cfg, field, message):
    with pytest.raises(ConfigError) as info:
        check_model(model_cfg)
    assert info.value.field == field and message in str(info.value)


def test_builders_reject_what_check_model_rejects():
    with pytest.raises(ConfigError, match="model.depth"):
        create_model({"name": "mlp", "hidden": [8], "depth": 2, "width": 8}, (1, 4, 4), 3)
    with pytest.raises(ConfigError, match="model.init"):
        create_model({"name": "mlp", "init": "he"}, (1, 4, 4), 3)
    with pytest.raises(TypeError):
        create_model({"name": "resnet18", "batchnorm": True}, CIFAR, 3)
