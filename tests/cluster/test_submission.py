"""Submitting studies to a Ray cluster: ray_cluster.yaml (checked offline with Ray's own
validation), cluster/submit.py (what `ray submit` runs) and `ray job submit`, each against a real
`ray start --head` of this machine.

The head runs as `ray start --head --block` in its own process group with its own temp dir and
ports, and is stopped by signalling that process, which stops the Ray processes it started.
(`ray stop` would not do: it stops every Ray process of the machine, not only this head's.)
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from cluster import submit

REPO = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "ray_cluster.yaml"
BIN = Path(sys.executable).parent  # the environment's scripts: ray, expgrid, python
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Ray heads are started on Linux only")


# ---------------------------------------------------------------------------------------------
# ray_cluster.yaml


@pytest.fixture(scope="module")
def cluster_config():
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_the_cluster_yaml_passes_rays_validation(cluster_config):
    # The JSON schema `ray up` validates a cluster file against, as the Ray package ships it,
    # and the checks `ray up` makes beside it: the head's type is one of the node types, and
    # each type's min_workers ≤ max_workers ≤ the cluster's max_workers.
    from importlib import resources

    import jsonschema

    schema = json.loads((resources.files("ray.autoscaler") / "ray-schema.json").read_text())
    jsonschema.validate(cluster_config, schema)
    with pytest.raises(jsonschema.ValidationError):  # the schema is strict enough to catch a typo
        jsonschema.validate({**cluster_config, "max_worker": cluster_config["max_workers"]}, schema)
    assert cluster_config["provider"]["type"] == "aws"
    types = cluster_config["available_node_types"]
    assert cluster_config["head_node_type"] in types
    for name, node_type in types.items():
        assert node_type.get("min_workers", 0) <= node_type.get("max_workers", 0) <= cluster_config["max_workers"], name


def test_the_head_has_no_gpu_and_the_workers_do(cluster_config):
    types = cluster_config["available_node_types"]
    head = types[cluster_config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    workers = {name: t for name, t in types.items() if name != cluster_config["head_node_type"]}
    gpus = sorted(t["resources"].get("GPU", 0) for t in workers.values())
    assert 1 in gpus and max(gpus) >= 4  # a 1-GPU type and a multi-GPU type
    # expgrid refuses a GPU section unless a GPU node is up: one stays up
    assert any(t["resources"].get("GPU", 0) and t.get("min_workers", 0) >= 1 for t in workers.values())
    assert sum(t.get("max_workers", 0) for t in workers.values()) <= cluster_config["max_workers"]
    # node_config is passed to EC2 as it is (Ray's schema does not look inside)
    assert all({"InstanceType", "ImageId"} <= set(t["node_config"]) for t in types.values())


def test_the_security_group_lets_in_ssh_from_one_network_and_nothing_else(cluster_config):
    group = cluster_config["provider"]["security_group"]
    assert group["GroupName"]
    rules = group["IpPermissions"]
    # SSH only (the tunnels to the dashboard and MLflow go through it); Ray's ports are reached
    # by the group's own members only (Ray's intra-group rule), never from a network range.
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in rules] == [("tcp", 22, 22)]
    networks = [ipaddress.ip_network(r["CidrIp"]) for rule in rules for r in rule.get("IpRanges", [])]
    assert networks and all(n.prefixlen >= 8 and not n.is_unspecified for n in networks), networks
    assert not any(rule.get("Ipv6Ranges") for rule in rules)
    # The group is every node's: no node type brings groups of its own.
    assert all("SecurityGroupIds" not in t["node_config"] for t in cluster_config["available_node_types"].values())


def _commands(config: dict, key: str) -> list[list[str]]:
    """Each command as words (shell operators split off)."""

    def words(command: str) -> list[str]:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        return list(lexer)

    return [words(c) for c in config.get(key) or []]


def _options(words: list[str]) -> set[str]:
    return {w.split("=", 1)[0] for w in words if w.startswith("--")}


def _option(words: list[str], name: str) -> str:
    for i, word in enumerate(words):
        if word == name:
            return words[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    raise AssertionError(f"{name} not in {words}")


def test_the_setup_installs_this_project_with_the_torch_ci_tested(cluster_config):
    tomllib = pytest.importorskip("tomllib", reason="Python ≥ 3.11")
    mounts = cluster_config["file_mounts"]
    project = {remote: (REPO / local).resolve() for remote, local in mounts.items()}
    assert all(path.exists() for path in project.values()), project
    # everything `pip install -e` of the project's copy needs: pyproject.toml, the README it names,
    # each package pyproject.toml includes (study files in search_spaces/ among them)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    needed = ["pyproject.toml", pyproject["project"]["readme"], *packages]
    assert {project.get(f"~/expgrid/{name}") for name in needed} == {(REPO / name).resolve() for name in needed}
    assert "search_spaces" in packages

    setup = [" ".join(words) for words in _commands(cluster_config, "setup_commands")]
    assert any(re.search(r"pip install .*-e ~/expgrid$", c) for c in setup), setup
    # the torch and torchvision CI tested (constraints.txt; pyproject.toml gives their ranges)
    pins = [line for line in (REPO / "constraints.txt").read_text().splitlines() if line.startswith(("torch==", "torchvision=="))]
    assert len(pins) == 2 and all(any(pin in c for c in setup) for pin in pins), (pins, setup)
    # cluster/submit.py runs from the project's copy
    assert any("EXPGRID_PROJECT_DIR=$HOME/expgrid" in c for c in setup)


def test_the_head_binds_the_dashboard_and_mlflow_to_localhost(cluster_config):
    from mlflow.cli import server
    from ray.scripts.scripts import start

    head = _commands(cluster_config, "head_start_ray_commands")
    ray_start = next(w for w in head if "--head" in w)
    assert _option(ray_start, "--dashboard-host") == "127.0.0.1"
    mlflow = next(w for w in head if "mlflow" in w)
    i = mlflow.index("mlflow")
    assert mlflow[i + 1] == "server" and "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in mlflow[:i]
    assert _option(mlflow, "--host") == "127.0.0.1"
    assert f"http://127.0.0.1:{_option(mlflow, '--port')}" == submit.DEFAULT_TRACKING_URI
    assert _option(mlflow, "--workers") == "1"
    assert _option(mlflow, "--backend-store-uri").startswith("sqlite:///$HOME/results/")
    # every option is one the installed Ray and MLflow know
    known = lambda command: {o for p in command.params for o in p.opts}  # noqa: E731
    assert _options(ray_start) <= known(start), _options(ray_start) - known(start)
    assert _options(mlflow) <= known(server), _options(mlflow) - known(server)
    for words in _commands(cluster_config, "worker_start_ray_commands"):
        if "start" in words:
            assert _option(words, "--address") == "$RAY_HEAD_IP:6379"
            assert _options(words) <= known(start)


# ---------------------------------------------------------------------------------------------
# cluster/submit.py: the command line it builds


def _parsed(argv: list[str]):
    from expgrid.cli import _parser

    return _parser().parse_args(argv)


def test_submit_attaches_to_the_cluster_and_its_mlflow_server():
    args = _parsed(submit.expgrid_argv(["search_spaces/x.yaml", "--set", "epochs=2"], environ={}))
    assert (args.study, args.address, args.tracking_uri, args.overrides) == (
        "search_spaces/x.yaml", "auto", "http://127.0.0.1:5000", ["epochs=2"])  # fmt: skip
    args = _parsed(submit.expgrid_argv(["x.yaml"], environ={"MLFLOW_TRACKING_URI": "http://10.0.0.5:5000"}))
    assert args.tracking_uri == "http://10.0.0.5:5000"
    # what the caller gives wins
    args = _parsed(
        submit.expgrid_argv(["x.yaml", "--tracking-uri", "sqlite:///r/m.db", "--address", "10.0.0.1:6379"], {})
    )
    assert (args.tracking_uri, args.address) == ("sqlite:///r/m.db", "10.0.0.1:6379")


# ---------------------------------------------------------------------------------------------
# A real Ray head on this machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    # The dashboard refuses a request without the cluster's token (401).
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {os.environ['RAY_AUTH_TOKEN']}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


@dataclass
class Head:
    address: str  # GCS, for RAY_ADDRESS
    dashboard: str  # http://127.0.0.1:PORT, for `ray job submit --address`
    temp_dir: Path
    env: dict[str, str]  # what a client of this head runs with


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if text.encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head` with 2 CPUs, the dashboard on 127.0.0.1, its own ports and temp dir,
    started from this environment (its scripts first on PATH, as an activated venv) so that jobs
    find `expgrid` and `python`, and with this checkout first on PYTHONPATH so that its workers
    run this checkout's code even if the environment's editable install points at another."""
    temp_dir = Path(tempfile.mkdtemp(prefix="eg-ray-", dir="/tmp"))  # short: Ray's socket paths
    port, dashboard_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "PYTHONPATH")}
    # Token auth on, with the test session's token (tests/conftest.py): the head, `ray job submit`
    # (to the dashboard), submit.py and the jobs' drivers all need it.
    assert env.get("RAY_AUTH_MODE") == "token" and env.get("RAY_AUTH_TOKEN"), "set by tests/conftest.py"
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    head_env = {**env, "PYTHONPATH": str(REPO)}
    ports = {
        "--port": port, "--dashboard-port": dashboard_port, "--ray-client-server-port": _free_port(),
        "--dashboard-agent-listen-port": _free_port(), "--dashboard-agent-grpc-port": _free_port(),
        "--metrics-export-port": _free_port(), "--runtime-env-agent-port": _free_port(),
        "--node-manager-port": _free_port(), "--object-manager-port": _free_port(),
    }  # fmt: skip
    log = open(temp_dir.with_suffix(".log"), "w")
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus", "2", "--node-ip-address", "127.0.0.1",
         "--dashboard-host", "127.0.0.1", "--temp-dir", str(temp_dir), "--disable-usage-stats",
         *[str(x) for pair in ports.items() for x in pair]],
        stdout=log, stderr=subprocess.STDOUT, env=head_env, start_new_session=True, cwd=temp_dir,
    )  # fmt: skip
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # the dashboard answers and the head node has registered
            try:
                nodes = _get_json(f"{dashboard}/nodes?view=summary")["data"]["summary"]
                if any(n.get("raylet", {}).get("state") == "ALIVE" for n in nodes):
                    break
            except (OSError, KeyError, ValueError):
                pass
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start --head did not come up:\n{temp_dir.with_suffix('.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield Head(address=f"127.0.0.1:{port}", dashboard=dashboard, temp_dir=temp_dir, env=env)
    finally:
        # `ray start --block` stops the processes it started when signalled; what is left of
        # its process group (or mentions its temp dir, e.g. a job's driver) is killed after.
        if head.poll() is None:
            head.send_signal(signal.SIGTERM)
            try:
                head.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        head.wait()
        for pid in _processes_mentioning(str(temp_dir)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
        temp_dir.with_suffix(".log").unlink(missing_ok=True)


TOY_STUDY = textwrap.dedent("""
    study: submit-toy
    trainable: toy
    metric: score
    mode: max
    defaults: {epochs: 3}
    sections:
      - {id: x, grid: {x: [1, 2]}}
      - {id: y, grid: {y: [-1, 0]}}
""")


def test_submit_py_runs_the_study_on_the_cluster(ray_head, tmp_path):
    """As `ray submit` runs it: the script copied alone into the head's home directory, the
    project's copy beside it in ~/expgrid (ray_cluster.yaml's file mounts), $EXPGRID_PROJECT_DIR
    set, the study named relative to the project; attached through $RAY_ADDRESS."""
    home = tmp_path / "home"
    project = home / "expgrid"
    project.mkdir(parents=True)
    for name in ("pyproject.toml", "expgrid", "cluster", "trainables", "search_spaces"):
        (project / name).symlink_to(REPO / name)
    (project / "studies").mkdir()
    (project / "studies" / "toy.yaml").write_text(TOY_STUDY)
    shutil.copy(REPO / "cluster" / "submit.py", home / "submit.py")
    results, db = tmp_path / "results", tmp_path / "mlflow.db"

    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "submit.py", "studies/toy.yaml", "--results", str(results), "--tracking-uri", f"sqlite:///{db}"],
        cwd=home, env={**ray_head.env, "RAY_ADDRESS": ray_head.address, "EXPGRID_PROJECT_DIR": str(project)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    print(f"submit.py: {time.monotonic() - started:.1f} s")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for section in ("x", "y"):
        saved = json.loads((results / "sections" / section / "section.json").read_text())
        assert saved["best"] is not None
    assert json.loads((results / "sections" / "x" / "section.json").read_text())["best"]["swept"] == {"x": 2}
    assert (results / "report" / "summary.txt").exists() and db.exists()
    assert json.loads((results / "study.json").read_text())["tracking_uri"] == f"sqlite:///{db}"
    # it ran as a driver of that head, not on a Ray of its own
    drivers = [j for j in _get_json(f"{ray_head.dashboard}/api/jobs/") if j.get("type") == "DRIVER"]
    assert any("submit.py" in (j.get("entrypoint") or "") for j in drivers), drivers


def test_ray_job_submit_runs_the_demo_from_the_uploaded_working_dir(ray_head, tmp_path):
    """README's command: the working dir (this checkout, .gitignore'd .venv/ and results/ left
    out) is uploaded, and the job runs `expgrid run … --address auto` on the head."""
    results = tmp_path / "results"
    started = time.monotonic()
    job = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", ray_head.dashboard, "--working-dir", ".", "--",
         "expgrid", "run", "search_spaces/digits_demo.yaml", "--set", "epochs=2", "--results", str(results),
         "--address", "auto"],
        cwd=REPO, env=ray_head.env, capture_output=True, text=True, timeout=420,
    )  # fmt: skip
    print(f"ray job submit: {time.monotonic() - started:.1f} s")
    output = job.stdout + job.stderr
    assert job.returncode == 0 and re.search(r"Job '\S+' succeeded", output), output[-4000:]
    for section in ("1", "2", "3"):
        assert json.loads((results / "sections" / section / "section.json").read_text())["best"] is not None
    assert (results / "report" / "summary.txt").exists() and (results / "mlflow.db").exists()
    # the job ran with the working dir uploaded to the cluster (its cwd, where the study's
    # relative path was found, and first on its PYTHONPATH)
    jobs = [j for j in _get_json(f"{ray_head.dashboard}/api/jobs/") if "digits_demo" in (j.get("entrypoint") or "")]
    assert len(jobs) == 1 and jobs[0]["runtime_env"]["working_dir"].startswith("gcs://_ray_pkg_"), jobs


def test_a_job_runs_with_this_environments_python_and_the_uploaded_code(ray_head):
    """What the job test relies on: the head was started from this environment, so a job's
    `python` and `expgrid` are this environment's, and `import expgrid` finds the uploaded copy."""
    probe = "import os, shutil, sys, expgrid; print('PROBE', sys.executable, shutil.which('expgrid'), expgrid.__file__, os.getcwd())"
    job = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", ray_head.dashboard, "--working-dir", ".", "--", "python", "-c", probe],
        cwd=REPO, env=ray_head.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    line = next(line for line in job.stdout.splitlines() if line.startswith("PROBE "))
    executable, expgrid_script, module, cwd = line.split()[1:]
    assert Path(executable).parent == BIN and Path(expgrid_script) == BIN / "expgrid"
    assert Path(module) == Path(cwd) / "expgrid" / "__init__.py" and "working_dir_files" in cwd, line
