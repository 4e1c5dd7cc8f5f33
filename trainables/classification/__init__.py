"""``classify``: the built-in image-classification trainable (datasets, models, modes, optimizers,
schedulers and diagnostics by name).

Importing this package registers ``classify`` (see ``train.py``) in ``trainables.registry``.
"""

from trainables.classification import train  # noqa: F401  (registers "classify")
from trainables.classification.data import DATASETS, load_dataset
from trainables.classification.diagnostics import DIAGNOSTICS_DEFAULTS, GradNorms, confusion_matrix
from trainables.classification.models import ACTIVATIONS, MODELS, create_model, first_linear
from trainables.classification.modes import MODES, build_model
from trainables.classification.optim import OPTIMIZERS, create_optimizer, flat_parameters
from trainables.classification.schedules import SCHEDULER_DEFAULTS, SCHEDULERS, create_scheduler, step_scheduler
from trainables.classification.train import CLASSIFY_DEFAULTS, CLASSIFY_METRICS, classify

__all__ = [
    "ACTIVATIONS",
    "CLASSIFY_DEFAULTS",
    "CLASSIFY_METRICS",
    "DATASETS",
    "DIAGNOSTICS_DEFAULTS",
    "MODELS",
    "MODES",
    "OPTIMIZERS",
    "SCHEDULERS",
    "SCHEDULER_DEFAULTS",
    "GradNorms",
    "build_model",
    "classify",
    "confusion_matrix",
    "create_model",
    "create_optimizer",
    "create_scheduler",
    "first_linear",
    "flat_parameters",
    "load_dataset",
    "step_scheduler",
]
