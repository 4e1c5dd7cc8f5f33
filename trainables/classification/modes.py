"""Training modes of ``classify`` (config key ``mode``): what is trained, and from which start.

* ``scratch`` (default): the whole model from random initialisation (``model.init`` on every
  Linear/Conv layer); ``model.weights`` is ignored.
* ``linear_probe``: load pretrained weights, put a new head on, train only the head. The frozen
  body also keeps its BatchNorm running statistics (:func:`set_train_mode`), so the features the
  head sees are exactly the pretrained network's: the probe measures those features.
* ``fine_tune``: load pretrained weights, put a new head on, train everything.

Where the weights come from (``model.weights``):

* torchvision models (resnet18, vgg16, ...): their ImageNet weights, a torchvision state_dict, from
  the path given, or (``weights`` unset) torchvision's cache file; never downloaded
  (``trainables.backbones.weights_file`` says which file is missing and where);
* ``mlp`` and the CIFAR CNNs: a path to a ``torch.save``'d state_dict of the same model (same
  name and options, e.g. a ``classify`` checkpoint's ``model`` entry); the head is not loaded.
* ``"random"`` for any model: nothing is read and the architecture's own random initialisation
  stands in for pretrained weights, so ``linear_probe`` / ``fine_tune`` configs can be tested and
  smoke-run (``--smoke``) where no weights file exists. Its accuracies mean nothing. (``vit_b_16``
  is then built for the input size, not the 224×224 its real weights need: a smoke run stays cheap.)

The head is the model's last ``nn.Linear`` (``models.head_of``); in pretrained modes it is new and
initialised by ``model.init``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from expgrid.errors import ConfigError
from trainables import backbones
from trainables.classification.models import MODELS, create_model, head_of

MODES = ("scratch", "linear_probe", "fine_tune")
RANDOM_WEIGHTS = "random"  # model.weights value standing in for pretrained weights (no file read)


def check_mode(mode: Any, model_cfg: Mapping[str, Any]) -> None:
    """Reject an unknown ``mode``, or a pretrained mode without the weights it needs.

    Runs before any trial starts, so it only checks that weight files exist (it does not read them)."""
    if mode not in MODES:
        raise ConfigError("mode", f"a training mode: one of {', '.join(MODES)}", mode)
    if mode == "scratch":
        return
    weights = model_cfg.get("weights")
    if weights == RANDOM_WEIGHTS:
        return
    name = model_cfg.get("name")
    MODELS.get(name, "model.name")
    if weights is not None and not isinstance(weights, (str, Path)):
        raise ConfigError("model.weights", f'a path to a weights file, or "{RANDOM_WEIGHTS}"', weights)
    if name in backbones.ARCHITECTURES:
        # ConfigError naming model.weights when there is none
        backbones.weights_file(name, weights, untrained=f'use mode: scratch (mode {mode} starts from pretrained weights)')
        return
    if weights is None:
        raise ConfigError(
            "model.weights",
            f"for mode {mode}, a path to a torch.save'd state_dict of {name} to start from "
            f'(or "{RANDOM_WEIGHTS}" to stand in for one)',
            weights,
        )
    if not Path(weights).expanduser().is_file():
        raise ConfigError("model.weights", f"an existing file of {name} weights (a torch.save'd state_dict)", weights)


def build_model(model_cfg: Mapping[str, Any], mode: str, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """The model to train in ``mode`` for images of ``input_shape`` (C, H, W); see the module docstring.

    ``linear_probe`` leaves ``requires_grad`` set on the head's parameters only: give the
    optimizer :func:`trainable_parameters` and call :func:`set_train_mode` instead of ``train()``."""
    check_mode(mode, model_cfg)
    model = create_model(model_cfg, input_shape, num_classes, pretrained=mode != "scratch")
    if mode == "linear_probe":
        model.requires_grad_(False)
        head_of(model).requires_grad_(True)
    return model


def set_train_mode(model: nn.Module) -> None:
    """``model.train()``, except that every submodule whose parameters are all frozen (a linear
    probe's body) goes back to ``eval()``.

    Freezing parameters does not freeze BatchNorm's running mean and variance, which training mode
    updates on every forward: without this a linear probe would drift the pretrained statistics
    (and normalise with batch statistics), so its features would not be the pretrained ones.
    Parameter-free modules inside the frozen part but not inside a frozen submodule (e.g. VGG's
    classifier Dropouts, siblings of the head) stay in training mode."""
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the optimizer should update: those with ``requires_grad``."""
    return [p for p in model.parameters() if p.requires_grad]
