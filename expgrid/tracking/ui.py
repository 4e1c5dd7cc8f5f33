"""How a user opens a study in the MLflow UI: the command to start it and the URL to browse.

`expgrid run` prints both as a run ends; ``expgrid.open(...).mlflow_ui()`` returns them. The URL
names the experiment's training-runs table, not the experiment's landing page (MLflow 3's GenAI
overview, empty for expgrid's runs).
"""

from __future__ import annotations

UI_HOST = "127.0.0.1"
UI_PORT = 5000


def ui_command(tracking_uri: str) -> str:
    """The command that serves ``tracking_uri`` in the MLflow UI (a server already is one)."""
    if is_server(tracking_uri):
        return f"(tracking server) {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri} --host {UI_HOST} --port {UI_PORT}"


def ui_url(tracking_uri: str, experiment_id: str | None = None) -> str:
    """Where to browse: the server's address, or the one :func:`ui_command` serves on; with an
    experiment id, that experiment's runs table."""
    base = tracking_uri.rstrip("/") if is_server(tracking_uri) else f"http://{UI_HOST}:{UI_PORT}"
    return f"{base}/#/experiments/{experiment_id}/runs" if experiment_id else base


def is_server(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))
