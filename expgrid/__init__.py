"""expgrid: sectioned experiment grids on Ray Tune, tracked in MLflow. This package is the core.

The facade: run a study and look at its results (``run``, ``open``, ``Results``, ``shutdown``:
``expgrid.api``, the notebook's API), load and check a study, and the reporter functions
trainables call.

The core depends on nothing above it. At module level its modules import no ray, mlflow, torch
or torchvision, and never ``trainables`` or ``cluster``: trainables are found through entry points
(``expgrid.trainable_lookup``), and where the driver must call out to Ray (the runner starting a
section, ``gpu: auto``) it imports ``cluster`` inside the function that does. MLflow is imported
by the tracking modules' functions and the writer process. The trial side of the core
(``reporter``, ``stopping``, ``wire``) never imports the driver side (``runner``, ``cli``, the
tracking modules). tests/test_imports.py checks all of it.
"""

from typing import TYPE_CHECKING

from expgrid.api import open, run, shutdown  # noqa: A004, F401 - expgrid.open: kept out of __all__ (below)
from expgrid.errors import ConfigError, StudyFailed, StudyFileError
from expgrid.reporter import StopTrial, data_parallel, report, restore

if TYPE_CHECKING:
    from expgrid.results_view import Results

# `open` is expgrid.open, left out of __all__: `from expgrid import *` must not replace the
# builtin open of the importing module.
__all__ = [
    "ConfigError",
    "Results",
    "StopTrial",
    "StudyFailed",
    "StudyFileError",
    "data_parallel",
    "load_study",
    "report",
    "restore",
    "run",
    "run_study",
    "shutdown",
    "trainable",
]


def __getattr__(name):
    # ``expgrid.Results`` without importing its module (and pandas' readers) at ``import expgrid``
    if name == "Results":
        from expgrid.results_view import Results

        return Results
    raise AttributeError(f"module 'expgrid' has no attribute {name!r}")


def load_study(path, overrides=None):
    """Load and check a study file; returns ``(Study, TrainableSpec)``."""
    from expgrid.runner import prepare

    return prepare(path, overrides)


def run_study(path, **options):
    """Load, check and run a study file; ``options`` are :class:`expgrid.run_options.RunOptions` fields."""
    from expgrid.run_options import RunOptions
    from expgrid.runner import run_study as _run

    study, spec = load_study(path, options.pop("overrides", None))
    return _run(study, spec, RunOptions(**options))


def trainable(*, defaults=None, metrics=None, evaluate=None, test_split=None):
    """Declare a user trainable's parameters and metrics, and its test evaluation (``evaluate``,
    ``test_split``: ``test: best``) (see expgrid.trainable_spec.trainable)."""
    from expgrid.trainable_spec import trainable as _trainable

    return _trainable(defaults=defaults, metrics=metrics, evaluate=evaluate, test_split=test_split)
