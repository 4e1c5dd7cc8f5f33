"""End to end, as a user sees it: `mlflow server` (SQLite) on 127.0.0.1, the embedded demo study
run against it (2 epochs per trial instead of 12, as `--set epochs=2`), and the URL `expgrid run`
prints opened in headless Chromium, which must render every section and trial run, the sections'
descriptions and best values, and a section's plot.

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

import pytest
from mlflow.tracking import MlflowClient

from expgrid.cli import _print_end, resolve_study_path
from expgrid.runner import RunOptions, prepare, run_study
from expgrid.tracking.ui import ui_url

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


def _shown(value: float) -> str:
    """A metric value as the runs table's DOM holds it: JavaScript's shortest round-trip form of
    the double (Python's repr, but for whole numbers)."""
    return str(int(value)) if value.is_integer() else repr(value)


def _rows(dom: str) -> dict[str, str]:
    """The runs table's text per row: ag-grid renders a row's pinned and scrolling cells in
    separate containers, each element carrying the run's id as ``row-id``."""
    marks = list(re.finditer(r'<div[^>]*\brow-id="([^"]+)"', dom))
    rows: dict[str, str] = {}
    for mark, following in zip(marks, [*marks[1:], None]):
        segment = dom[mark.start(): following.start() if following else len(dom)]
        rows[mark.group(1)] = rows.get(mark.group(1), "") + " " + _text(segment)
    return rows


def test_the_demo_study_appears_in_the_mlflow_ui(ray_session, mlflow_server, tmp_path, capsys):
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

    # The URL `expgrid run` prints opens the runs table in expgrid's view (expgrid.tracking.ui):
    # sorted by name, so that every run is a visible row (a list sorted by time nests child runs
    # under their collapsed parent), with the Description, best_<metric>, <metric> and swept
    # params columns, in MLflow's "Model training" layout rather than its GenAI overview.
    _print_end(outcome)
    printed = capsys.readouterr().out
    landing = re.search(r"then browse (\S+)", printed).group(1)
    assert landing == ui_url(mlflow_server, experiment.experiment_id) and "viewStateShareKey=" in landing
    metric = outcome.study.metric
    best = {s: names[s].data.metrics[f"best_{metric}"] for s in sections}
    expected = ["digits-demo", *sections, *trials, f"best_{metric}", "Description", "optimizer.lr",
                *(names[s].data.tags["mlflow.note.content"].splitlines()[0][:40] for s in sections)]  # fmt: skip
    dom = _rendered(landing, expected)
    assert [text for text in expected if text not in dom] == []
    text = _text(dom)
    assert "13 matching runs" in text  # the study, 3 sections, 9 trials
    assert "Model training" in text and "Traces 0" not in text  # not the GenAI overview
    # Each section's row (ag-grid's row-id: the run id) shows its name and best value.
    rows = _rows(dom)
    for section, value in best.items():
        row = rows[names[section].info.run_id]
        assert section in row and _shown(value) in row, (section, value, row[:300])
    _screenshot(landing, tmp_path / "mlflow-landing.png")

    # A section run's plot, as MLflow's artifact viewer shows it.
    plot_page = (f"{mlflow_server}/#/experiments/{experiment.experiment_id}/runs/{section_one}"
                 "/artifacts/report/value_curve.png")  # fmt: skip
    dom = _rendered(plot_page, ['alt="report/value_curve.png"'])
    assert '<img alt="report/value_curve.png" src="blob:' in dom
    _screenshot(plot_page, tmp_path / "mlflow-section-plot.png")
