"""expgrid: sectioned experiment grids on Ray Tune, tracked in MLflow.

The facade: load and check a study, run it, and the reporter functions trainables call.
Heavy modules (Ray, MLflow, torch) load only when a study runs.
"""

from expgrid.errors import ConfigError, StudyFailed, StudyFileError
from expgrid.reporter import StopTrial, data_parallel, report, restore

__all__ = [
    "ConfigError",
    "StopTrial",
    "StudyFailed",
    "StudyFileError",
    "data_parallel",
    "load_study",
    "report",
    "restore",
    "run_study",
    "trainable",
]


def load_study(path, overrides=None):
    """Load and check a study file; returns ``(Study, TrainableSpec)``."""
    from expgrid.runner import prepare

    return prepare(path, overrides)


def run_study(path, **options):
    """Load, check and run a study file; ``options`` are :class:`expgrid.runner.RunOptions` fields."""
    from expgrid.runner import RunOptions
    from expgrid.runner import run_study as _run

    study, spec = load_study(path, options.pop("overrides", None))
    return _run(study, spec, RunOptions(**options))


def trainable(*, defaults=None, metrics=None):
    """Declare a user trainable's parameters and metrics (see trainables.registry.trainable)."""
    from trainables.registry import trainable as _trainable

    return _trainable(defaults=defaults, metrics=metrics)
