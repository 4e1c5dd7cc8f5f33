"""Where a torchvision architecture's pretrained ImageNet weights are looked for, without torch.

``expgrid validate`` checks that a pretrained model's weights file exists before anything runs.
torchvision names that file (the last part of the URL it would download the ``IMAGENET1K_V1``
weights from), but importing torchvision costs seconds (it pulls in TorchDynamo), so the names
are written out here. ``tests/trainables/test_light_validate.py`` keeps them equal to
torchvision's (``backbones.Architecture.weights_file_name``) and :func:`hub_dir` equal to
``torch.hub.get_dir()``. ``trainables.backbones`` (torch) looks files up through this module too,
so the check and the trial agree on the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from expgrid.errors import ConfigError

# Architecture name (backbones.ARCHITECTURES) → torchvision's cache file of its IMAGENET1K_V1 weights.
WEIGHTS_FILES = {
    "mobilenet_v3_small": "mobilenet_v3_small-047dcff4.pth",
    "resnet18": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "vgg16": "vgg16-397923af.pth",
    "vit_b_16": "vit_b_16-c867db91.pth",
}


def hub_dir() -> Path:
    """torch.hub's cache folder as ``torch.hub.get_dir()`` gives it where nothing called
    ``torch.hub.set_dir``: ``$TORCH_HOME/hub``, ``$TORCH_HOME`` defaulting to
    ``$XDG_CACHE_HOME/torch`` and ``$XDG_CACHE_HOME`` to ``~/.cache``."""
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "hub"


def weights_file(
    name: str, weights: str | Path | None = None, field: str = "model.weights", untrained: str = "set pretrained: false",
    hub: str | Path | None = None,
) -> Path:  # fmt: skip
    """The file ``pretrained`` loads for architecture ``name``; ConfigError when it is not there.

    ``weights``: an explicit path (must exist); None: torchvision's cache file for ``name`` in
    ``hub`` (default :func:`hub_dir`; a trial passes ``torch.hub.get_dir()``)."""
    if name not in WEIGHTS_FILES:
        raise ConfigError("model.name", f"one of {', '.join(sorted(WEIGHTS_FILES))}", name)
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(
                field, f"an existing file of {name} ImageNet weights (a torch.save'd state_dict)", str(path)
            )
        return path
    file_name = WEIGHTS_FILES[name]
    path = Path(hub if hub is not None else hub_dir()) / "checkpoints" / file_name
    if not path.is_file():
        raise ConfigError(
            field,
            f"pretrained {name} weights, which are never downloaded here: put torchvision's {file_name} at {path} "
            f"(TORCH_HOME sets the cache), or give its path as {field}, or {untrained}",
            show_got=False,
        )
    return path
