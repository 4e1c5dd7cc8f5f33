"""Warm runs: a second study in one Python process uses the Ray the first one started (no second
local Ray, the same GCS); a local Ray the user keeps up (``ray start --head`` on 127.0.0.1) is
attached to with ``--address auto``, twice, and stays up after each ``expgrid run`` ends.

Real local Rays in subprocesses (this test session's own Ray is not involved). Other Ray
instances run on the machine: the one started here is found by a marker in its environment,
which every process of it inherits, and only those processes are ended at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Ray processes are inspected on Linux")

TOY = textwrap.dedent("""
    study: warm-toy
    trainable: toy
    metric: score
    mode: max
    defaults: {epochs: 2}
    sections:
      - {id: a, grid: {x: [1, 2]}}
      - {id: b, grid: {y: [-1, 0]}}
""")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for name in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    return env


def _finished(results: Path) -> dict:
    study = json.loads((results / "study.json").read_text())
    assert study["status"] == "FINISHED", study
    for section in ("a", "b"):
        trials = json.loads((results / "sections" / section / "trials.json").read_text())
        assert [t["status"] for t in trials] == ["completed", "completed"], trials
    return study


# ---------------------------------------------------------------------------------------------
# Two studies in one process

TWO_STUDIES = textwrap.dedent("""
    import json, os, sys
    import ray
    from expgrid.run_options import RunOptions
    from expgrid.runner import prepare, run_study

    study_file, out = sys.argv[1], sys.argv[2]
    seen = []
    for n in (1, 2):
        study, spec = prepare(study_file)
        run_study(study, spec, RunOptions(results_dir=f"{out}/run{n}", num_cpus=2,
                                          tracking_uri=f"sqlite:///{out}/mlflow{n}.db"))
        context = ray.get_runtime_context()
        seen.append({"gcs": context.gcs_address, "node": context.get_node_id(),
                     "records": sorted(os.listdir(os.path.join(os.environ["XDG_CACHE_HOME"], "expgrid", "ray")))})
    print("SEEN " + json.dumps(seen), flush=True)
""")


def test_a_second_study_in_one_process_uses_the_ray_the_first_started(tmp_path):
    (tmp_path / "study.yaml").write_text(TOY)
    driver = subprocess.run([sys.executable, "-c", TWO_STUDIES, str(tmp_path / "study.yaml"), str(tmp_path)],
                            env=_env(tmp_path), capture_output=True, text=True, timeout=600)  # fmt: skip
    assert driver.returncode == 0, driver.stdout[-2000:] + driver.stderr[-3000:]
    seen = json.loads(next(line for line in driver.stdout.splitlines() if line.startswith("SEEN "))[5:])
    first, second = seen
    assert first["gcs"] and second["gcs"] == first["gcs"]  # the same Ray, not a second local one
    assert second["node"] == first["node"]
    assert first["records"] == second["records"] and len(first["records"]) == 1  # one local start recorded
    for n in (1, 2):
        _finished(tmp_path / f"run{n}")
    # The process ended normally (Ray's own shutdown at exit) and deleted its record.
    assert not list((tmp_path / "cache" / "expgrid" / "ray").glob("*.json"))


# ---------------------------------------------------------------------------------------------
# A local Ray the user keeps up


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _marked(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("EXPGRID_TEST_RAY") == marker:
                found.append(p)
        except psutil.Error:
            pass
    return found


def _end(processes: list[psutil.Process]) -> None:
    for p in processes:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(processes, timeout=15)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=15)


def test_expgrid_attaches_to_a_local_ray_the_user_keeps_up_and_leaves_it_running(tmp_path):
    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable))
    assert ray_cli, "the ray command comes with ray[default]"
    (tmp_path / "study.yaml").write_text(TOY)
    home = tmp_path / "home"
    home.mkdir()
    marker = uuid.uuid4().hex
    port = _free_port()
    # As the README says to start it: loopback only (Ray's own switch, read by `ray start`), token
    # authentication on (Ray's default; the token goes to $HOME/.ray/auth_token).
    env = {k: v for k, v in _env(tmp_path).items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    env.update(HOME=str(home), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", EXPGRID_TEST_RAY=marker)
    try:
        started = subprocess.run([ray_cli, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                                  "--num-cpus", "2", "--dashboard-host", "127.0.0.1", "--disable-usage-stats"],
                                 env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-3000:]
        gcs = [p for p in _marked(marker) if "gcs_server" in " ".join(p.cmdline())]
        assert len(gcs) == 1
        # `auto` is the Ray of $RAY_ADDRESS, else the one `ray start` last started on this machine
        # (which, with other users' Rays about, is not necessarily this one): the test names it.
        run_env = {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}
        for n in (1, 2):
            results = tmp_path / f"run{n}"
            run = subprocess.run([sys.executable, "-m", "expgrid", "run", str(tmp_path / "study.yaml"), "--address", "auto",
                                  "--results", str(results), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                                 cwd=REPO, env=run_env, capture_output=True, text=True, timeout=600)  # fmt: skip
            assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
            _finished(results)
            assert gcs[0].is_running(), "the user's Ray went down with expgrid"
        # Attached runs start no local Ray: no record, nothing handed to a reaper.
        assert not list((tmp_path / "cache" / "expgrid" / "ray").glob("*.json"))
        # The trials ran on the user's Ray: its workers carry its environment.
        assert any(p.name().startswith("ray::") or "default_worker" in " ".join(p.cmdline()) for p in _marked(marker))
    finally:
        _end(_marked(marker))  # this test's Ray only; never `ray stop`
        deadline = time.monotonic() + 60
        while _marked(marker) and time.monotonic() < deadline:
            time.sleep(0.5)
