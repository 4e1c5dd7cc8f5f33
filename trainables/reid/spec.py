"""``reid``'s spec: the entry point ``expgrid.trainables: reid`` (see pyproject.toml).

The trial function and the hooks are named by reference, so they are imported when called. The
defaults, metrics, smoke settings (``options.py``) and the config and data checks (``checks.py``)
import no torch, so ``expgrid validate`` checks a reid study without it, except where a config
asks for pretrained weights: torchvision names their cache file.
"""

from __future__ import annotations

from expgrid.trainable_spec import TrainableSpec
from trainables.reid.options import REID_DEFAULTS, REID_METRICS, REID_SMOKE

_TRAIN = "trainables.reid.train"
_CHECKS = "trainables.reid.checks"  # torch-free


def catalogue() -> dict[str, list[str]]:
    """The names a reid config may give (``expgrid list``)."""
    from trainables.reid import data, models, optim, samplers, transforms

    return {
        "datasets": data.DATASETS.names(),
        "models": models.MODELS.names(),
        "optimizers": optim.OPTIMIZERS.names(),
        "samplers": samplers.SAMPLERS.names(),
        "augmentations": transforms.AUGMENTATIONS.names(),
    }


SPEC = TrainableSpec(
    name="reid",
    fn=f"{_TRAIN}:reid",
    defaults=REID_DEFAULTS,
    metrics=REID_METRICS,
    check=f"{_CHECKS}:check_config",
    data_key=f"{_CHECKS}:dataset_key",
    load_data=f"{_TRAIN}:load_data",
    check_data=f"{_CHECKS}:check_data",
    smoke=REID_SMOKE,
    catalogue=catalogue,
    # The coursework's section log (log_sec{S}_q{Q}.txt with torchreid's test blocks).
    section_log="trainables.reid.section_log:SectionLog",
)
