"""Preflight: an unreachable server stops a study before anything runs (neither Ray nor MLflow imported)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

from expgrid.errors import StudyFailed
from expgrid.tracking.preflight import preflight


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
         "print('ray imported' if 'ray' in sys.modules else 'ray not imported'); "
         "print('mlflow imported' if 'mlflow' in sys.modules else 'mlflow not imported'); sys.exit(code)",
         "run", str(study), "--results", str(tmp_path / "r"), "--tracking-uri", uri],
        capture_output=True, text=True, timeout=120, env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert f"MLflow tracking server {uri} does not answer" in proc.stderr
    assert "ray not imported" in proc.stdout
    assert "mlflow not imported" in proc.stdout  # the driver's side of tracking needs no MLflow
    assert not (tmp_path / "r" / "tune").exists()


def test_a_local_store_whose_folder_cannot_be_written_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    uri = f"sqlite:///{blocker / 'mlflow.db'}"
    with pytest.raises(StudyFailed, match=f"MLflow tracking store {uri} cannot be written"):
        preflight(uri)
