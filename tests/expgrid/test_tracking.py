"""The MLflow store: new local stores are seeded from an empty one; an unreachable server stops
a study before anything runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
from mlflow.tracking import MlflowClient

from expgrid.errors import StudyFailed
from expgrid.tracking import preflight, seed_sqlite_store


def test_a_new_sqlite_store_is_a_copy_of_an_empty_one_made_once(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first, second = tmp_path / "a" / "mlflow.db", tmp_path / "b" / "mlflow.db"
    assert seed_sqlite_store(f"sqlite:///{first}", tmp_path / "a" / "art")
    templates = list((tmp_path / "cache" / "expgrid").glob("mlflow-*-empty.db"))
    assert len(templates) == 1
    made = templates[0].stat().st_mtime_ns
    assert seed_sqlite_store(f"sqlite:///{second}", tmp_path / "b" / "art")
    assert templates[0].stat().st_mtime_ns == made  # reused, not rebuilt
    assert not seed_sqlite_store(f"sqlite:///{second}")  # an existing store is left alone
    assert not seed_sqlite_store("http://127.0.0.1:5000")

    client = MlflowClient(f"sqlite:///{second}")
    default = client.get_experiment("0")
    assert default.artifact_location == (tmp_path / "b" / "art").resolve().as_uri()
    run = client.create_run(client.create_experiment("x"))
    client.log_metric(run.info.run_id, "m", 1.0)
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free once closed: nothing listens there


def test_preflight_names_an_unreachable_server():
    uri = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(StudyFailed, match=f"MLflow tracking server {uri} does not answer"):
        preflight(uri, timeout=2)


def test_an_unreachable_server_stops_the_run_before_ray_starts(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text(textwrap.dedent("""
        study: unreachable
        trainable: toy
        metric: score
        sections:
          - {id: a, grid: {x: [1]}}
    """))
    uri = f"http://127.0.0.1:{_closed_port()}"
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from expgrid.cli import main; code = main(sys.argv[1:]); "
         "print('ray imported' if 'ray' in sys.modules else 'ray not imported'); sys.exit(code)",
         "run", str(study), "--results", str(tmp_path / "r"), "--tracking-uri", uri],
        capture_output=True, text=True, timeout=120, env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert f"MLflow tracking server {uri} does not answer" in proc.stderr
    assert "ray not imported" in proc.stdout
    assert not (tmp_path / "r" / "tune").exists()
