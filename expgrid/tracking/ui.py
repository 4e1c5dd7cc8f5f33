"""How a user opens a study in the MLflow UI: the command to start it and the URL to browse.

`expgrid run` prints both as a run ends; ``expgrid.open(...).mlflow_ui()`` returns them. With the
experiment's id, the URL opens its runs table as expgrid set it up, not the experiment's landing
page. Checked against MLflow 3.17.2 in headless Chromium (tests/expgrid/tracking/test_ui.py):

- ``#/experiments/<id>`` opens the GenAI "Overview" (traces, tokens: empty for expgrid's runs);
  ``#/experiments/<id>/runs`` opens "Training runs", but still in the GenAI sidebar, with only
  the top-level study run (collapsed) and no metric or param columns: MLflow 3's runs table
  selects none by default, and a list sorted by time nests child runs under their parent.
- ``?workflowType=machine_learning`` switches the UI to its "Model training" layout (read from
  the URL before the stored choice).
- ``?viewStateShareKey=expgrid`` loads the view kept in the experiment tag
  ``mlflow.sharedViewState.expgrid`` (MLflow's "share view"; :mod:`expgrid.tracking.notes`
  writes it): sorted by run name, so every section run shows, followed by its trials, with the
  Description, ``best_<metric>``, ``<metric>`` and swept-param columns. The page's other URL
  parameters (searchFilter, orderByKey, orderByAsc, startTime, lifecycleFilter,
  modelVersionFilter, datasetsFilter, compareRunsMode) cannot choose columns or expand runs.
"""

from __future__ import annotations

from expgrid.tracking.notes import VIEW_KEY

UI_HOST = "127.0.0.1"
UI_PORT = 5000


def ui_command(tracking_uri: str) -> str:
    """The command that serves ``tracking_uri`` in the MLflow UI (a server already is one)."""
    if is_server(tracking_uri):
        return f"(tracking server) {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri} --host {UI_HOST} --port {UI_PORT}"


def ui_url(tracking_uri: str, experiment_id: str | None = None) -> str:
    """Where to browse: the server's address, or the one :func:`ui_command` serves on; with an
    experiment id, that experiment's runs table in the view expgrid keeps for it."""
    base = tracking_uri.rstrip("/") if is_server(tracking_uri) else f"http://{UI_HOST}:{UI_PORT}"
    if not experiment_id:
        return base
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def is_server(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))
