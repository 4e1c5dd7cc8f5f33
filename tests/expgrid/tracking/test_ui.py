"""End to end, as a user sees it: `mlflow server` (SQLite) on 127.0.0.1, the embedded demo study
run against it (2 epochs per trial instead of 12, as `--set epochs=2`), and the experiment opened
in headless Chromium, which must render every section and trial run and a section's plot.

Screenshots are saved in the test's tmp dir; set EXPGRID_SCREENSHOTS=DIR to keep copies.
Chromium is Debian's `chromium` package (`.ci/run` installs it); without it the test is skipped.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
from mlflow.tracking import MlflowClient

from expgrid.cli import resolve_study_path
from expgrid.runner import RunOptions, prepare, run_study

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="needs headless Chromium: apt-get install chromium (.ci/run does)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` with a SQLite store and served artifacts; yields its URL."""
    port = _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow)] if mlflow.exists() else [sys.executable, "-m", "mlflow"]
    log = open(tmp_path / "mlflow-server.log", "w")
    server = subprocess.Popen(
        [*command, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,  # its own process group: stopped whole below
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # no GenAI job workers on 2 CPUs
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(tmp_path / 'mlflow-server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def _chromium(url: str, *args: str, budget_ms: int) -> subprocess.CompletedProcess:
    """Headless Chromium on ``url``; ``--virtual-time-budget`` lets the page's scripts and requests run first."""
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--window-size=1600,1200", f"--virtual-time-budget={budget_ms}", *args, url],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def _rendered(url: str, expected: list[str]) -> str:
    """The page's DOM once every expected text is in it (a slow machine gets longer budgets)."""
    dom = ""
    for budget in (15_000, 30_000, 60_000):
        dom = _chromium(url, "--dump-dom", budget_ms=budget).stdout
        if all(text in dom for text in expected):
            break
    return dom


def _text(dom: str) -> str:
    """What the page shows, without markup."""
    return " ".join(re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)).split())


def _screenshot(url: str, path: Path) -> Path:
    _chromium(url, f"--screenshot={path}", budget_ms=20_000)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000, f"no screenshot of {url}"
    keep = os.environ.get("EXPGRID_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    return path


def test_the_demo_study_appears_in_the_mlflow_ui(ray_session, mlflow_server, tmp_path):
    study, spec = prepare(resolve_study_path("digits_demo"), {"epochs": 2})
    outcome = run_study(study, spec, RunOptions(results_dir=tmp_path / "results", tracking_uri=mlflow_server,
                                                stream=io.StringIO()))  # fmt: skip
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("digits-demo")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    names = {r.info.run_name: r for r in runs}
    sections = [f"{s.section.id} {s.section.name}" for s in outcome.sections]
    trials = [n for n, r in names.items() if r.data.tags["expgrid.kind"] == "trial"]
    assert sections == ["1 Learning rate", "2 Weight decay", "3 Dropout"] and len(trials) == 9
    assert "1/0 optimizer.lr=0.0001" in trials
    section_one = names["1 Learning rate"].info.run_id
    assert "report/value_curve.png" in [a.path for a in client.list_artifacts(section_one, "report")]

    # The runs list, sorted by name: MLflow nests child runs under their parent (collapsed)
    # unless the list is sorted by something else than time, so every run is a visible row.
    runs_page = (f"{mlflow_server}/#/experiments/{experiment.experiment_id}/runs"
                 f"?orderByKey={quote('tags.`mlflow.runName`')}&orderByAsc=true")  # fmt: skip
    expected = ["digits-demo", *sections, *trials]
    dom = _rendered(runs_page, expected)
    assert [name for name in expected if name not in dom] == []
    assert "13 matching runs" in _text(dom)  # the study, 3 sections, 9 trials
    _screenshot(runs_page, tmp_path / "mlflow-runs.png")

    # A section run's plot, as MLflow's artifact viewer shows it.
    plot_page = (f"{mlflow_server}/#/experiments/{experiment.experiment_id}/runs/{section_one}"
                 "/artifacts/report/value_curve.png")  # fmt: skip
    dom = _rendered(plot_page, ['alt="report/value_curve.png"'])
    assert '<img alt="report/value_curve.png" src="blob:' in dom
    _screenshot(plot_page, tmp_path / "mlflow-section-plot.png")
