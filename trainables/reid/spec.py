"""``reid``'s spec: the entry point ``expgrid.trainables: reid`` (see pyproject.toml).

The trial function and the hooks are named by reference, so they are imported when called. The
defaults, metrics and smoke settings still come from ``train.py``, and with them torch: they live
beside the code that reads them.
"""

from __future__ import annotations

from expgrid.trainable_spec import TrainableSpec
from trainables.reid.train import REID_DEFAULTS, REID_METRICS, REID_SMOKE

_TRAIN = "trainables.reid.train"


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
    check=f"{_TRAIN}:check_config",
    data_key=f"{_TRAIN}:dataset_key",
    load_data=f"{_TRAIN}:load_data",
    check_data=f"{_TRAIN}:check_data",
    smoke=REID_SMOKE,
    catalogue=catalogue,
    # The coursework's section log (log_sec{S}_q{Q}.txt with torchreid's test blocks).
    section_log="trainables.reid.section_log:SectionLog",
)
