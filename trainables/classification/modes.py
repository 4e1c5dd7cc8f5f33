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
from typing import Any

from torch import nn

from trainables.classification.checks import check_mode  # noqa: F401 - re-exported
from trainables.classification.models import create_model, head_of
from trainables.classification.options import MODES, RANDOM_WEIGHTS  # noqa: F401


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
