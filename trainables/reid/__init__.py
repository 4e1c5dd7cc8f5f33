"""``reid``: the built-in re-identification trainable (VeRi-776 layout, torchreid-style training).

Importing this package registers ``reid`` (see ``train.py``) in ``trainables.registry``.
``synthetic.write_fake_veri`` writes a small fake dataset in the same layout for tests and smoke
runs; ``REID_SMOKE`` holds the config overrides that make a trial tiny.
"""

from trainables.reid import train  # noqa: F401  (registers "reid")
from trainables.reid.data import DATASETS, load_index, parse_name
from trainables.reid.losses import batch_hard_triplet
from trainables.reid.metrics import evaluate
from trainables.reid.models import MODELS, create_model
from trainables.reid.optim import OPTIMIZERS
from trainables.reid.samplers import SAMPLERS
from trainables.reid.synthetic import write_fake_veri
from trainables.reid.train import REID_DEFAULTS, REID_METRICS, REID_SMOKE, check_config, reid
from trainables.reid.transforms import AUGMENTATIONS

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "MODELS",
    "OPTIMIZERS",
    "REID_DEFAULTS",
    "REID_METRICS",
    "REID_SMOKE",
    "SAMPLERS",
    "batch_hard_triplet",
    "check_config",
    "create_model",
    "evaluate",
    "load_index",
    "parse_name",
    "reid",
    "write_fake_veri",
]
