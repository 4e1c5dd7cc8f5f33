"""Re-ID models: every registered model trains and embeds; fc512 and last stride; local weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision import models as tv

from expgrid.errors import ConfigError, UnknownNameError
from trainables.backbones import _vit_side, create_backbone
from trainables.reid.models import EMBEDDING_DIM, MODELS, check_model, create_model

CLASSES = 5


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: other test processes share this machine's 2 cores, and two threads then
    stall on each other (a 5-10× slower backward)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


EXPECTED_EMBEDDING = {
    "mobilenet_v3_small": 576,  # the pooled feature: the whole classifier replaced, as the coursework
    "vgg16": 25088,  # flattened pool5 (512 × 7 × 7)
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "vit_b_16": 768,
}


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_builds_trains_and_embeds(name):
    """The whole registry at 32×32, batch 2 (BatchNorm needs two samples in training mode)."""
    torch.manual_seed(0)
    model = create_model({"name": name, "pretrained": False}, CLASSES, (32, 32))
    x = torch.randn(2, 3, 32, 32)
    model.train()
    logits, embedding = model(x)
    dim = EMBEDDING_DIM if name.endswith("_fc512") else EXPECTED_EMBEDDING[name]
    assert logits.shape == (2, CLASSES) and embedding.shape == (2, dim)
    (logits.logsumexp(1).mean() + embedding.pow(2).mean()).backward()
    first = next(p for p in model.backbone.parameters() if p.dim() > 1)
    assert first.grad is not None and first.grad.abs().sum() > 0  # the gradient reaches the first layer
    assert model.classifier.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        features = model(x)
    assert isinstance(features, torch.Tensor) and features.shape == (2, dim)


def test_fc512_variants_have_last_stride_1_and_the_fc_bn_relu_embedding():
    x = torch.randn(2, 3, 64, 64)
    plain = create_model({"name": "resnet50", "pretrained": False}, CLASSES, (64, 64))
    fc = create_model({"name": "resnet50_fc512", "pretrained": False}, CLASSES, (64, 64))
    seen = {}
    for key, model in (("plain", plain), ("fc", fc)):
        model.backbone.body.layer4.register_forward_hook(lambda m, i, o, key=key: seen.__setitem__(key, o.shape))
        model.eval()
        with torch.no_grad():
            model(x)
    assert seen["plain"][-2:] == (2, 2) and seen["fc"][-2:] == (4, 4)  # 64 / 32 vs 64 / 16
    linear, bn, relu = fc.embedding
    assert isinstance(linear, nn.Linear) and (linear.in_features, linear.out_features) == (2048, 512)
    assert isinstance(bn, nn.BatchNorm1d) and isinstance(relu, nn.ReLU)
    assert fc.classifier.in_features == 512 and plain.classifier.in_features == 2048


def test_vit_is_built_for_the_input_size_untrained_and_224_pretrained():
    small = create_backbone("vit_b_16", input_size=(32, 32))
    assert small.body.image_size == 32 and small.input_size == (32, 32)
    odd = create_backbone("vit_b_16", input_size=(40, 36))  # built for 48×48 (40 rounded up to 16s), input resized
    assert odd.body.image_size == 48
    with torch.no_grad():
        assert odd.eval()(torch.randn(1, 3, 40, 36)).shape == (1, 768)
    # pretrained: the 224×224 of its position embeddings, whatever the input (not built here: its
    # weights file would be 330 MB)
    assert _vit_side((32, 32), pretrained=True) == 224 and _vit_side((32, 32), pretrained=False) == 32


def test_pretrained_without_local_weights_names_the_file_and_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(ConfigError) as info:
        create_model({"name": "resnet50_fc512", "pretrained": True}, CLASSES, (32, 32))
    message = str(info.value)
    assert info.value.field == "model.weights"
    assert "resnet50-0676ba61.pth" in message and str(tmp_path / "torch_home" / "hub" / "checkpoints") in message
    with pytest.raises(ConfigError, match="model.weights"):
        check_model({"name": "resnet18", "pretrained": True})  # the driver-side check says the same
    with pytest.raises(ConfigError, match="an existing file"):
        check_model({"name": "resnet18", "pretrained": True, "weights": str(tmp_path / "missing.pth")})
    check_model({"name": "resnet18", "pretrained": False})


def test_pretrained_loads_a_local_weights_file_and_the_cache(tmp_path, monkeypatch):
    torch.manual_seed(1)
    reference = tv.resnet18()
    path = tmp_path / "my_resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = create_model({"name": "resnet18_fc512", "pretrained": True, "weights": str(path)}, CLASSES, (32, 32))
    assert torch.equal(model.backbone.body.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.backbone.body.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    fresh = create_model({"name": "resnet18_fc512", "pretrained": False}, CLASSES, (32, 32))
    assert not torch.equal(fresh.backbone.body.conv1.weight, reference.conv1.weight)

    # torchvision's cache, under the weights' own file name
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    cache = tmp_path / "home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    small = tv.mobilenet_v3_small()
    torch.save(small.state_dict(), cache / "mobilenet_v3_small-047dcff4.pth")
    cached = create_model({"name": "mobilenet_v3_small", "pretrained": True}, CLASSES, (32, 32))
    assert torch.equal(cached.backbone.body.features[0][0].weight, small.features[0][0].weight)

    # a file of another architecture is refused with the file named
    with pytest.raises(ConfigError, match="a state_dict of torchvision's resnet34"):
        create_model({"name": "resnet34", "pretrained": True, "weights": str(path)}, CLASSES, (32, 32))


def test_backbone_with_a_new_classifier_head_for_classification():
    model = create_backbone("resnet18", num_classes=10)
    assert model.feature_dim == 512 and model.body.fc.out_features == 10
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_unknown_model_names_list_the_registry():
    with pytest.raises(UnknownNameError, match="did you mean resnet50_fc512"):
        create_model({"name": "resnet50fc512"}, CLASSES, (32, 32))
    with pytest.raises(UnknownNameError) as info:
        check_model({"name": "resnet101"})
    assert info.value.field == "model.name" and ", ".join(MODELS.names()) in str(info.value)
