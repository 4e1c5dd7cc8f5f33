"""Writing a run's data within MLflow's limits: params, metrics and tags in as few ``log_batch``
calls as MLflow accepts, and a file uploaded under the artifact name it should have.

MLflow is imported inside the functions: the driver imports this package, MLflow's client
belongs in the writer process (and in ``expgrid sync``).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from expgrid.tracking.layout import params_of

# MLflow's limits on one log_batch call (mlflow/utils/validation.py, documented for the REST API's
# LogBatch): 1000 entries in all, of which at most 100 params and 100 tags.
BATCH_MAX = 1000
BATCH_PARAMS_MAX = 100
BATCH_TAGS_MAX = 100


def param_entities(config: Mapping[str, Any]) -> list[Any]:
    """A config as MLflow ``Param`` entities (see :func:`expgrid.tracking.layout.params_of`)."""
    from mlflow.entities import Param

    return [Param(k, v) for k, v in params_of(config).items()]


def log_run_data(client: Any, run_id: str, params: Sequence[Any] = (), metrics: Sequence[Any] = (),
                 tags: Sequence[Any] = ()) -> None:  # fmt: skip
    """A run's params, metrics and tags in as few ``log_batch`` calls as MLflow allows."""
    params, metrics, tags = list(params), list(metrics), list(tags)
    while params or metrics or tags:
        batch_params, params = params[:BATCH_PARAMS_MAX], params[BATCH_PARAMS_MAX:]
        batch_tags, tags = tags[:BATCH_TAGS_MAX], tags[BATCH_TAGS_MAX:]
        room = BATCH_MAX - len(batch_params) - len(batch_tags)
        batch_metrics, metrics = metrics[:room], metrics[room:]
        client.log_batch(run_id, metrics=batch_metrics, params=batch_params, tags=batch_tags)


def log_file(client: Any, run_id: str, name: str, path: Path) -> None:
    """Upload ``path`` as the run's artifact ``name`` (``folder/file``): MLflow names an
    artifact after its file, so one whose name differs goes through a renamed copy."""
    folder, _, file_name = name.rpartition("/")
    if file_name == path.name:
        client.log_artifact(run_id, str(path), folder or None)
        return
    with tempfile.TemporaryDirectory() as tmp:
        renamed = Path(tmp) / file_name
        shutil.copyfile(path, renamed)
        client.log_artifact(run_id, str(renamed), folder or None)
