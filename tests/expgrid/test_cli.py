"""The command line (expgrid/cli.py): argument errors as one line, `list` from the trainables'
catalogues, `validate` and `show`, and the checks of option values it makes before anything runs.

Running studies is tested elsewhere (tests/expgrid/test_runner.py, tests/reliability/); the
refusals of bad study files and options in depth in tests/reliability/test_bad_input.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from expgrid.cli import main, resolve_study_path, tracking_uri_problem
from expgrid.tracking.ui import ui_command
from expgrid.trainable_lookup import register_trainable

REPO = Path(__file__).resolve().parents[2]

STUDY = """\
study: s
trainable: toy
metric: score
defaults: {epochs: 2}
sections:
  - {id: a, name: First, grid: {x: [0, 1, 2]}}
  - {id: b, name: Second, grid: {y: [0, 1]}, scheduler: asha, select: best_epoch}
"""


def expgrid(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "expgrid", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def run_main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's errors end the parse this way
        return int(e.code)


ARGUMENT_ERRORS = [
    ([], "error: COMMAND: expected one of run, validate, show, list, report, sync, got none"),
    (["nope"], "error: COMMAND: expected one of run, validate, show, report, sync, list, got 'nope'"),
    (["run"], "error: study: expected a value (see `expgrid run --help`), got none"),
    (["run", "s.yaml", "--max-concurrent", "0"], "error: --max-concurrent: expected an integer ≥ 1, got 0"),
    (["run", "s.yaml", "--tracking-uri", "ftp://x"], "error: --tracking-uri: expected a URI of a scheme MLflow has"),
    (["report", "r", "--format", "pdf"], "error: --format: expected one of text, markdown, got 'pdf'"),
    (["run", "s.yaml", "--address", "auto", "--local"], "error: --local: expected either --address or --local, got both"),
    (["run", "s.yaml", "--connect-timeout", "-1"], "error: --connect-timeout: expected a number of seconds > 0, got -1"),
    (["validate", "s.yaml", "--bogus"], "error: --bogus: expected an option of expgrid validate"),
    (["list", "extra"], "error: extra: expected no further argument (see `expgrid list --help`), got 'extra'"),
    (["run", "s.yaml", "--set", "novalue"], "error: --set: expected KEY=VALUE, e.g. optimizer.lr=0.01, got 'novalue'"),
]


@pytest.mark.parametrize("argv,line", ARGUMENT_ERRORS, ids=[" ".join(a) or "nothing" for a, _ in ARGUMENT_ERRORS])
def test_an_argument_error_is_one_line_and_exit_2(argv, line, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(STUDY)
    assert run_main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith(line) and err.count("\n") == 1 and out == "", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]  # nothing created


def test_the_real_command_answers_a_missing_command_in_one_line(tmp_path):
    proc = expgrid(cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "error: COMMAND: expected one of run, validate, show, list, report, sync, got none\n"


def test_list_shows_each_trainable_with_its_own_catalogue(tmp_path):
    proc = expgrid("list", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    blocks: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        if not line.startswith(" "):
            blocks[line.split()[0]] = [line]
        else:
            blocks[list(blocks)[-1]].append(line.strip())
    assert blocks["classify"][0].startswith("classify     trainables.classification.train:classify  metrics: epoch, ")
    assert any(line.startswith("datasets:") and "digits" in line and "cifar10" in line for line in blocks["classify"])
    assert any(line.startswith("optimizers:") and "adamw" in line for line in blocks["classify"])
    assert any(line.startswith("samplers:") and "identity" in line for line in blocks["reid"])  # reid's own kinds
    assert blocks["toy"] == ["toy          trainables.toy:toy  metrics: epoch, score, loss, world_size"]  # no catalogue


def test_list_prints_what_a_catalogue_holds(capsys):
    @register_trainable("cli_test_catalogue", metrics=["m"], catalogue=lambda: {"widgets": ["a", "b"], "gadgets": []})
    def fn(config):
        pass

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    at = out.index("cli_test_catalogue ")
    assert out[at:].splitlines()[:3] == [
        f"cli_test_catalogue {__name__}:test_list_prints_what_a_catalogue_holds.<locals>.fn  metrics: m",
        "  widgets:        a, b",
        "  gadgets:        ",
    ]


def test_validate_says_ok_and_where_results_would_go(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(STUDY)
    assert main(["validate", "s.yaml"]) == 0
    assert capsys.readouterr().out == (
        "s.yaml: OK — study 's', trainable toy, 2 sections, 5 trials\n"
        f"Results would go to {tmp_path / 'results' / 's'}\n"
    )
    assert not (tmp_path / "results").exists()


def test_validate_refuses_a_bad_value_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(STUDY.replace("grid: {x: [0, 1, 2]}", "grid: {x: [0, nope]}"))
    assert main(["validate", "s.yaml"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "error: s.yaml: sections[0].grid.x: expected a number, got 'nope'\n"


def test_show_lists_sections_trial_counts_and_inheritance(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(STUDY)
    assert main(["show", "s.yaml", "--results", "r"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == ["Study s (s.yaml)", f"  results in {tmp_path / 'r'}", "  trainable toy · metric score (max) · seed 0"]
    assert lines[3].split() == ["a", "First", "3", "trials", "sweeps", "x", "×3", "from", "defaults", "[fifo,", "last_epoch]"]
    assert lines[4].split() == ["b", "Second", "2", "trials", "sweeps", "y", "×2", "from", "defaults", "+", "best",
                                "of", "a", "[asha,", "best_epoch]"]  # fmt: skip
    assert lines[5:] == ["  total: 5 trials"]


def test_show_names_the_smoke_settings_of_a_smoke_run(tmp_path, monkeypatch, capsys):
    @register_trainable("cli_test_smoke", defaults={"x": 0, "epochs": 5, "size": 64}, smoke={"epochs": 1, "size": 8})
    def fn(config):
        pass

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(STUDY.replace("trainable: toy", "trainable: cli_test_smoke").replace(
        ", grid: {y: [0, 1]}", ", grid: {size: [1, 2]}"))  # fmt: skip
    assert main(["show", "s.yaml", "--smoke"]) == 0
    out = capsys.readouterr().out
    assert f"  results in {tmp_path / 'results' / 's-smoke'}\n" in out  # a smoke run's results stay apart
    assert out.endswith("  smoke run: the first 2 trials of each section, with epochs=1, size=8 except where a section sweeps it\n")


def test_tracking_uris_are_checked_without_mlflow():
    for good in ("sqlite:///mlflow.db", "http://127.0.0.1:5000", "/some/dir", "file:///x", "databricks", "postgresql+psycopg2://h/db"):
        assert tracking_uri_problem(good) is None, good
    assert tracking_uri_problem("http://") == ("http://HOST[:PORT]", "http://")
    assert tracking_uri_problem("ftp://x")[0].startswith("a URI of a scheme MLflow has a tracking store for")
    assert tracking_uri_problem("sqlitex://x")[0].startswith("a database URI")
    assert tracking_uri_problem("  ")[0].startswith("a tracking URI")


def test_ui_command_and_shipped_study_names(tmp_path, monkeypatch):
    assert ui_command("sqlite:///r/mlflow.db") == "mlflow ui --backend-store-uri sqlite:///r/mlflow.db --host 127.0.0.1 --port 5000"
    assert ui_command("http://127.0.0.1:5000") == "(tracking server) http://127.0.0.1:5000"
    monkeypatch.chdir(tmp_path)
    assert resolve_study_path("digits_demo") == str(REPO / "search_spaces" / "digits_demo.yaml")
    (tmp_path / "digits_demo").write_text(STUDY)  # a file of that name here wins
    assert resolve_study_path("digits_demo") == "digits_demo"


def test_run_exits_once_results_and_mlflow_are_complete_and_its_ray_is_ended_after(tmp_path):
    """`expgrid run` leaves with os._exit right after its summary (no wait for Ray's shutdown):
    by then study.json, the records, the report and the MLflow store are complete, and the local
    Ray it started is ended by the process it handed that to (its record names the processes)."""
    from mlflow import MlflowClient

    sys.path.insert(0, str(REPO / "tests" / "reliability"))
    from mlflow_checks import assert_store_matches

    (tmp_path / "s.yaml").write_text(STUDY)
    results, uri = tmp_path / "r", f"sqlite:///{tmp_path / 'm.db'}"
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(cache)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    driver = subprocess.Popen([sys.executable, "-m", "expgrid", "run", "s.yaml", "--results", str(results),
                               "--tracking-uri", uri, "--num-cpus", "2"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    record = cache / "expgrid" / "ray" / f"{driver.pid}.json"
    ray_processes: list[dict] = []
    while driver.poll() is None and not ray_processes:  # the record, while the driver runs
        try:
            ray_processes = json.loads(record.read_text())["processes"]
        except (OSError, ValueError, KeyError):
            time.sleep(0.2)
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, out[-2000:] + err[-3000:]
    assert "Best configuration per section" in out and "Results:" in out  # the summary, flushed
    assert ray_processes, "the run recorded the local Ray it started"

    # Everything is there the moment the process is gone.
    study = json.loads((results / "study.json").read_text())
    assert study["status"] == "FINISHED" and study["mlflow_run_id"], study
    assert (results / "report" / "report.md").is_file()
    for section, n in (("a", 3), ("b", 2)):
        assert len(json.loads((results / "sections" / section / "trials.json").read_text())) == n
    client = MlflowClient(uri)
    assert client.get_run(study["mlflow_run_id"]).info.status == "FINISHED"
    assert_store_matches(client, results, uri)

    # ...and the Ray it started goes: the reaper ends what is left and deletes the record.
    deadline = time.monotonic() + 120  # a hang guard, not a speed check
    while time.monotonic() < deadline and (record.exists() or any(_alive(p) for p in ray_processes)):
        time.sleep(0.5)
    assert not record.exists()
    assert not [p for p in ray_processes if _alive(p)]


def _alive(identity: dict) -> bool:
    import psutil

    try:
        p = psutil.Process(identity["pid"])
        return p.create_time() == identity["started"] and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
