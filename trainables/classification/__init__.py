"""``classify``: the built-in image-classification trainable (datasets, models and optimizers by name).

Importing this package registers ``classify`` (see ``train.py``) in ``trainables.registry``.
"""

from trainables.classification import train  # noqa: F401  (registers "classify")
from trainables.classification.data import DATASETS, load_dataset
from trainables.classification.models import ACTIVATIONS, MODELS, create_model, first_linear
from trainables.classification.optim import OPTIMIZERS, create_optimizer
from trainables.classification.train import CLASSIFY_DEFAULTS, CLASSIFY_METRICS, classify

__all__ = [
    "ACTIVATIONS",
    "CLASSIFY_DEFAULTS",
    "CLASSIFY_METRICS",
    "DATASETS",
    "MODELS",
    "OPTIMIZERS",
    "classify",
    "create_model",
    "create_optimizer",
    "first_linear",
    "load_dataset",
]
