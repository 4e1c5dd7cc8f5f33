"""Before Ray starts: fail at once, naming the URI, when the tracking store cannot be used.

Only a reachability check (a server's ``/health``, a local store's folder writable): opening the
store itself takes seconds and happens later, in the writer process. Imports no MLflow.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from expgrid.errors import StudyFailed
from expgrid.tracking.server import is_http


def preflight(uri: str, timeout: float = 5.0) -> None:
    """Raise :class:`StudyFailed` when the server at ``uri`` does not answer, or a local SQLite
    store's folder cannot be written."""
    if is_http(uri):
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as reply:
                reply.read()
        except (OSError, ValueError) as e:
            raise StudyFailed(
                f"MLflow tracking server {uri} does not answer ({e}). Start it, or leave out "
                "--tracking-uri / MLFLOW_TRACKING_URI to track into the results folder."
            ) from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as e:
            raise StudyFailed(f"MLflow tracking store {uri} cannot be written: {e}") from None
