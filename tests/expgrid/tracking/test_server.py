"""Bounded MLflow HTTP calls."""

from __future__ import annotations

from expgrid.tracking.server import bounded_http_env, longest_call, server_answers


def test_mlflows_http_retries_are_bounded_unless_the_user_set_them():
    env = bounded_http_env({"MLFLOW_HTTP_REQUEST_TIMEOUT": "300"})
    assert env == {"MLFLOW_HTTP_REQUEST_TIMEOUT": "300", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                   "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}  # fmt: skip
    assert longest_call(bounded_http_env({})) < 40  # 3 tries of 10 s, 2-3 s between them
    assert longest_call({}) > 200  # MLflow's own defaults: 8 tries of 120 s and long backoffs


def test_a_url_that_is_not_a_server_does_not_answer():
    assert not server_answers("http://127.0.0.1:1", timeout=1.0)
    assert not server_answers("not a url")
