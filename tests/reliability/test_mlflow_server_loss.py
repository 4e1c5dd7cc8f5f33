"""The MLflow server dies mid-run (SIGKILL): the trials go on, the run ends with the study's own
exit code within the documented wait (tracking.MIRROR_WAIT) and prints what the mirror lacks
with the `expgrid sync` command; after the server is back on the same store, that sync makes
the store equal to the results directory point by point, and a second sync changes nothing.

Real `mlflow server` (SQLite, proxied artifacts) on 127.0.0.1; the driver is `python -m expgrid
run` attached to the test session's Ray (--address)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from expgrid.tracking import MIRROR_WAIT

_spec = importlib.util.spec_from_file_location("mlflow_checks", Path(__file__).with_name("mlflow_checks.py"))
checks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(checks)

STUDY = textwrap.dedent("""
    study: server-loss
    trainable: toy
    metric: score
    mode: max
    defaults: {epochs: 8, sleep: 0.4, artifacts: true}
    max_concurrent: 2
    sections:
      - {id: a, grid: {x: [0, 2]}, epochs: 2, fixed: {sleep: 0}}
      - {id: b, grid: {y: [-3, -1, 1]}}
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """`mlflow server` on 127.0.0.1 with a SQLite store in ``folder``; started and killed at will."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        mlflow = Path(sys.executable).with_name("mlflow")
        command = [str(mlflow)] if mlflow.exists() else [sys.executable, "-m", "mlflow"]
        log = open(self.folder / "mlflow-server.log", "a")
        self.process = subprocess.Popen(
            [*command, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
             "--artifacts-destination", str(self.folder / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,  # its own group: killed whole
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(self.folder / 'mlflow-server.log').read_text()[-3000:]}")
            time.sleep(0.5)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def server(tmp_path):
    folder = tmp_path / "server"
    folder.mkdir()
    server = _Server(folder)
    server.start()
    yield server
    server.kill()


def _epochs_heard(rows: Path, trial: int) -> int:
    lines = rows.read_text().splitlines() if rows.exists() else []
    return max([json.loads(x)["row"]["epoch"] for x in lines[:-1] if json.loads(x)["trial"] == trial] or [0])


def _number(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    assert found, (pattern, text)
    return int(found.group(1))


def test_a_killed_server_costs_the_mirror_only_and_sync_makes_it_whole(ray_session, server, tmp_path):
    address = ray_session.get_runtime_context().gcs_address
    study, results = tmp_path / "study.yaml", tmp_path / "results"
    study.write_text(STUDY)
    driver = subprocess.Popen(
        [sys.executable, "-m", "expgrid", "run", str(study), "--results", str(results), "--tracking-uri", server.url,
         "--address", address],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )  # fmt: skip
    rows = results / "sections" / "b" / "rows.jsonl"
    deadline = time.monotonic() + 300
    while _epochs_heard(rows, 0) < 3:  # section a mirrored whole, section b's first trials half-way
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()[0]
        time.sleep(0.1)
    time.sleep(0.5)  # some of those epochs reach the store before it dies
    server.kill()

    out = driver.communicate(timeout=600)[0]
    ended = time.time()
    assert driver.returncode == 0, out  # the study itself finished
    last_section = (results / "sections" / "b" / "section.json").stat().st_mtime
    assert ended - last_section < MIRROR_WAIT + 60, out  # the documented wait, and lenient slack
    assert "MLflow mirror incomplete:" in out and f"server {server.url} unreachable" in out, out
    assert f"expgrid sync {results} --tracking-uri {server.url}" in out, out
    lost_points = _number(r"(\d+) metric points?", out)
    lost_trials = _number(r"(\d+) trial runs? lack", out)
    assert lost_points > 0 and lost_trials > 0, out
    trials = json.loads((results / "sections" / "b" / "trials.json").read_text())
    assert [t["status"] for t in trials] == ["completed"] * 3  # the record is whole

    server.start()  # the same store and port
    sync = subprocess.run([sys.executable, "-m", "expgrid", "sync", str(results), "--tracking-uri", server.url],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert sync.returncode == 0 and sync.stderr == "", sync.stdout + sync.stderr
    added = _number(r"added (\d+) metric points", sync.stdout)
    fixed_trials = _number(r"and (\d+) trial runs; repaired", sync.stdout) + _number(r"section and (\d+) trial runs; added", sync.stdout)
    # What sync added is what the run said was missing, or less (a write the server committed
    # just before it died is counted as lost by the writer, and is there).
    assert 0 < added <= lost_points, (sync.stdout, out)
    assert 0 < fixed_trials <= lost_trials, (sync.stdout, out)
    client = MlflowClient(server.url)
    checks.assert_store_matches(client, results, server.url)

    experiment = client.get_experiment_by_name("server-loss").experiment_id
    before = checks.snapshot(client, experiment)
    again = subprocess.run([sys.executable, "-m", "expgrid", "sync", str(results), "--tracking-uri", server.url],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
    assert checks.snapshot(client, experiment) == before
