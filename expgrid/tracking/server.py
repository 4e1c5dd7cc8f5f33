"""An MLflow tracking server over HTTP: whether it answers, and how long one call may take.

Used by the driver (preflight, the wait at the study's end), the writer process and
``expgrid sync``; imports no MLflow.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping, MutableMapping

# MLflow's HTTP client retries a failed request 7 times with a backoff factor of 2 and waits up
# to 120 s for each answer (MLflow 3.17's defaults, mlflow/environment_variables.py): about four
# minutes per call against a server that is gone. Whoever writes for expgrid (the writer
# process, `expgrid sync`) uses these instead, unless the user set them: a refused connection
# then fails in about 3 s, a server that accepts but never answers in about 34 s.
HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # an int in MLflow: sleeps 0, 2 s between the 3 tries
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",  # seconds without an answer, per try
}


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def server_answers(uri: str, timeout: float = 3.0) -> bool:
    """Whether an MLflow tracking server answers its health check (``GET /health``)."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as reply:
            reply.read()
        return True
    except (OSError, ValueError):
        return False


def bounded_http_env(environ: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """``environ`` with :data:`HTTP_BOUNDS` set where the user has not set them."""
    for name, value in HTTP_BOUNDS.items():
        environ.setdefault(name, value)
    return environ


def longest_call(environ: Mapping[str, str]) -> float:
    """An upper bound, in seconds, on one MLflow HTTP call under ``environ``'s settings: every
    try waits its timeout, and urllib3 sleeps ``factor · 2^(n-1)`` (plus MLflow's jitter, at
    most 1 s) before the n-th retry after the first (capped at 120 s)."""

    def number(name: str, default: float) -> float:
        try:
            return float(environ.get(name, default))
        except ValueError:
            return default

    retries = int(number("MLFLOW_HTTP_REQUEST_MAX_RETRIES", 7))
    factor = number("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", 2)
    jitter = number("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", 1.0)
    timeout = number("MLFLOW_HTTP_REQUEST_TIMEOUT", 120)
    sleeps = sum(min(120.0, factor * 2 ** (n - 1)) + jitter for n in range(2, retries + 1))
    return (retries + 1) * timeout + sleeps
