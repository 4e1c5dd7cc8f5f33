"""expgrid in a real Jupyter kernel: a notebook written with nbformat, executed by nbclient in an
ipykernel (one kernel for the whole test), its outputs read back.

The notebook defines its trainable in a cell (shipped to Ray's workers by value), runs an inline
study, shows the results (the summary as HTML), a figure (one PNG), a DataFrame compared with the
Parquet inside the kernel, an inline study's validation error (one line), a second run's wall
time (warm: the same Ray), a rerun that skips finished sections, a kernel interrupt (SIGINT to
the kernel, as Jupyter's interrupt sends it: one line, then ``expgrid.open`` gives the partial
results), and ``expgrid.shutdown()`` (the next run starts a fresh Ray; a Ray session the user
began is left alone).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[2]

CELLS = {
    "setup": """
import json, os, signal, time
import pandas as pd
import expgrid
import ray  # after expgrid, before any run: the local Ray expgrid starts still listens on 127.0.0.1 only
""",
    "trainable": """
@expgrid.trainable(defaults={"x": 0.0, "epochs": 2}, metrics=["score", "loss"])
def quad(config):
    # defined here, in the notebook: Ray's workers get it by value
    for epoch in range(1, config["epochs"] + 1):
        score = (1.0 - (config["x"] - 1.0) ** 2) * epoch / config["epochs"]
        expgrid.report({"epoch": epoch, "score": score, "loss": 1.0 - score})

STUDY = {
    "study": "nb-quad", "trainable": quad, "metric": "score", "mode": "max",
    "sections": [
        {"id": "1", "name": "X", "grid": {"x": [0.0, 1.0, 2.0]}},
        {"id": "2", "name": "X and epochs", "inherit": "none", "grid": {"x": [0.5, 1.0], "epochs": [1, 2]}},
    ],
}
""",
    "first run": """
start = time.perf_counter()
results = expgrid.run(STUDY, num_cpus=2)
first = time.perf_counter() - start
gcs_first = ray.get_runtime_context().gcs_address
print("NODE_IP", ray.nodes()[0]["NodeManagerAddress"])
""",
    "show": "results",
    "plot": 'results.plot("1")',
    "frames": """
trials = results.trials()
parquet = pd.read_parquet(results.results_dir / "report" / "trials.parquet")
print("PARQUET_EQUAL", trials.equals(parquet), len(trials))
print("BEST", json.dumps(results.best("1")))
results.table("X and epochs")
""",
    "bad study": """
expgrid.run({**STUDY, "sections": [{"id": "1", "grid": {"x": []}}]})
""",
    "second run": """
start = time.perf_counter()
again = expgrid.run({**STUDY, "study": "nb-quad-2"})
second = time.perf_counter() - start
print(f"WALL first {first:.2f} s, second {second:.2f} s")
print("SAME_RAY", ray.get_runtime_context().gcs_address == gcs_first)
""",
    "rerun": "expgrid.run(STUDY);",
    "interrupt setup": """
def stops_the_kernel(config):
    # trial x=1 interrupts the kernel as Jupyter's interrupt button does (SIGINT to the kernel)
    for epoch in range(1, config["epochs"] + 1):
        if config["x"] == 1 and epoch == 2:
            os.kill(config["kernel"], signal.SIGINT)
        if config["x"] == 1 and epoch >= 2:
            time.sleep(0.5)
        expgrid.report({"epoch": epoch, "score": float(epoch), "loss": 0.0})

STOPPED = {
    "study": "nb-stop", "trainable": stops_the_kernel, "metric": "score", "mode": "max",
    "defaults": {"kernel": os.getpid(), "epochs": 30, "x": 0},
    "sections": [
        {"id": "1", "name": "Short", "epochs": 1, "grid": {"x": [0]}},
        {"id": "2", "name": "Stopped", "grid": {"x": [1]}},
    ],
}
""",
    "interrupt": "expgrid.run(STOPPED)",
    "partial": """
partial = expgrid.open("results/nb-stop")
print("PARTIAL", partial.sections, partial.status)
""",
    "shutdown": """
print("SHUTDOWN", expgrid.shutdown(), expgrid.shutdown(), ray.is_initialized())
expgrid.run({**STUDY, "study": "nb-quad-3", "sections": STUDY["sections"][:1]});
print("FRESH_RAY", ray.get_runtime_context().gcs_address != gcs_first)
expgrid.shutdown()
""",
    "users ray": """
ray.init(address="local", num_cpus=1, include_dashboard=False)  # the user's own Ray session: expgrid uses it, never ends it
expgrid.run({**STUDY, "study": "nb-quad-4", "sections": STUDY["sections"][:1]});
print("USERS_RAY", expgrid.shutdown(), ray.is_initialized())
ray.shutdown()
""",
}
RAISES = {"bad study", "interrupt"}  # cells whose error output is what is checked


def _notebook():
    nb = nbformat.v4.new_notebook()
    for name, source in CELLS.items():
        cell = nbformat.v4.new_code_cell(source.strip(), metadata={"name": name})
        if name in RAISES:
            cell.metadata["tags"] = ["raises-exception"]
        nb.cells.append(cell)
    return nb


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    # As a user's kernel starts: not with what this test process set up for its own Ray
    # (cluster.local_ray sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 when expgrid loads it).
    for name in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "EXPGRID_TRACEBACK", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("notebook")
    nb = _notebook()
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": str(folder)}})  # fmt: skip
    client.execute(env=_env(folder))
    nbformat.write(nb, folder / "executed.ipynb")  # to look at when a check fails
    return folder, {cell.metadata["name"]: cell.outputs for cell in nb.cells}


def _text(outputs) -> str:
    parts = []
    for out in outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out and "text/plain" in out.data:
            parts.append(out.data["text/plain"])
    return "".join(parts)


def _errors(outputs):
    return [out for out in outputs if out.output_type == "error"]


def test_the_results_show_as_the_summary_table_in_html(executed):
    folder, outputs = executed
    shown = [out for out in outputs["show"] if out.output_type == "execute_result"]
    assert len(shown) == 1
    page = shown[0].data["text/html"]
    assert "<td>X</td>" in page and "<td>X and epochs</td>" in page  # one row per section
    assert "<td>x=1</td>" in page  # section 1's best, run by the notebook's own function
    assert str(folder / "results" / "nb-quad") in page  # results/<study> under the kernel's cwd


def test_a_run_leaves_the_cells_output_as_it_printed_it(executed):
    """Tune's notebook reporter would clear the cell (clear_output) and leave an empty HTML
    display in it: expgrid's lines, from the study's first on, stay."""
    _, outputs = executed
    displays = [out for out in outputs["first run"] if out.output_type == "display_data"]
    # Only expgrid's own progress, one per section (tests/expgrid/test_notebook_progress.py),
    # none of them empty: Tune's would be.
    assert [d.data["text/plain"].split()[:2] for d in displays] == [["1", "X"], ["2", "X"]], displays
    assert all("done" in d.data["text/html"] for d in displays)
    text = _text(outputs["first run"])
    assert "Study nb-quad: 2 sections" in text and "1 X: best 1 (x=1)" in text
    assert text.rstrip().splitlines()[-3].startswith("Results: ")  # then the MLflow UI line, not the summary
    assert "NODE_IP 127.0.0.1" in text  # ray imported by the notebook after expgrid: still loopback only


def test_a_plot_shows_once_as_a_png(executed):
    _, outputs = executed
    images = [out for out in outputs["plot"] if "image/png" in out.get("data", {})]
    assert len(images) == 1, outputs["plot"]
    assert len(outputs["plot"]) == 1  # no second copy from the inline backend


def test_the_dataframes_are_the_parquets_values(executed):
    _, outputs = executed
    text = _text(outputs["frames"])
    assert "PARQUET_EQUAL True 12" in text  # 3 trials × 2 epochs + 2 × (1 + 2)
    best = json.loads(re.search(r"BEST (.*)", text).group(1))
    assert best == {"x": 1.0, "epochs": 2}
    table = next(out for out in outputs["frames"] if out.output_type == "execute_result")
    assert "text/html" in table.data and "delta_score" in table.data["text/html"]  # a DataFrame, shown by pandas


def test_an_inline_studys_error_is_one_line(executed):
    _, outputs = executed
    (error,) = _errors(outputs["bad study"])
    assert error.traceback == ["error: <inline>: sections[0].grid.x: expected a non-empty list of values, got []"]


def test_a_second_run_uses_the_same_ray_and_its_time_is_printed(executed):
    _, outputs = executed
    text = _text(outputs["second run"])
    wall = re.search(r"WALL first ([0-9.]+) s, second ([0-9.]+) s", text)
    assert wall, text
    print(f"notebook runs: first {wall.group(1)} s, second (warm) {wall.group(2)} s")  # reported, no threshold
    assert "SAME_RAY True" in text


def test_a_rerun_skips_the_finished_sections(executed):
    _, outputs = executed
    text = _text(outputs["rerun"])
    assert "1 X: finished earlier" in text and "2 X and epochs: finished earlier" in text


def test_an_interrupt_is_one_line_and_open_gives_the_partial_results(executed):
    folder, outputs = executed
    (error,) = _errors(outputs["interrupt"])
    assert len(error.traceback) == 1
    line = error.traceback[0]
    assert line.startswith(
        "interrupted: section 2 (Stopped) interrupted by Ctrl-C: 0 of 1 trials had ended, 1 was running"
    )
    assert line.endswith(f"the results so far: expgrid.open('{folder / 'results' / 'nb-stop'}'); "
                         "expgrid.run(<the same study>, resume=True) continues")  # fmt: skip
    assert "PARTIAL ['1'] KILLED" in _text(outputs["partial"])


def test_shutdown_ends_expgrids_ray_and_the_next_run_starts_a_fresh_one(executed):
    _, outputs = executed
    text = _text(outputs["shutdown"])
    assert "SHUTDOWN True False False" in text
    assert "FRESH_RAY True" in text


def test_shutdown_leaves_a_users_own_ray_session_alone(executed):
    _, outputs = executed
    assert "USERS_RAY False True" in _text(outputs["users ray"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's Ray processes are inspected on Linux")
def test_the_kernels_ray_is_gone_after_the_notebook(executed):
    folder, _ = executed
    assert not list((folder / "cache" / "expgrid" / "ray").glob("*.json"))  # every local start's record deleted
