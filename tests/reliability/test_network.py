"""expgrid's Ray seen from the network: a local study's Ray listens on loopback only and refuses
clients without its token; a driver SIGKILLed leaves nothing running after the next local start;
an `--address` where no Ray answers fails within the connect timeout, with one line.

The local Rays here are real (`expgrid run --local`, `connect.connect()` in subprocesses); other
Ray instances run on the same machine (the test session's, other users'), so a Ray's processes
are found from its driver: the driver's process tree, which holds every Ray process it started.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Ray processes are inspected on Linux")

TOY = textwrap.dedent("""
    study: net-toy
    trainable: toy
    metric: score
    mode: max
    defaults: {epochs: 40, sleep: 0.5}
    sections:
      - {id: s, grid: {x: [1, 2]}}
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def _expgrid(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "expgrid", "run", *args], cwd=REPO, env=env or dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)  # fmt: skip


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _listening(processes: list[psutil.Process]) -> list[tuple[psutil.Process, str, str, int]]:
    """(process, tcp|udp, ip, port) of every listening TCP socket and every UDP socket."""
    found = []
    for p in processes:
        try:
            for c in p.net_connections(kind="inet"):
                if c.type == socket.SOCK_DGRAM or c.status == psutil.CONN_LISTEN:
                    found.append((p, "udp" if c.type == socket.SOCK_DGRAM else "tcp", c.laddr.ip, c.laddr.port))
        except psutil.NoSuchProcess:
            pass  # a worker that ended meanwhile
    return found


def _name(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())[:120] or p.name()
    except psutil.Error:
        return "?"


def _grpc(target: str, method: str, token: str | None) -> str:
    """A raw unary gRPC call with an empty request: the status code's name ("OK" if it answered)."""
    import grpc

    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        try:
            call(b"", timeout=10, metadata=[("authorization", f"Bearer {token}")] if token else None)
            return "OK"
        except grpc.RpcError as e:
            return e.code().name


def _http(url: str, token: str | None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except OSError:
        return 0, b""  # not an HTTP server (a gRPC port)


def _is_dashboard_api(port: int, token: str) -> bool:
    """The dashboard's HTTP API (its process also serves Prometheus metrics, which answer any
    path): /api/version answers with Ray's version."""
    status, body = _http(f"http://127.0.0.1:{port}/api/version", token)
    try:
        return status == 200 and "ray_version" in json.loads(body)
    except ValueError:
        return False


def _machine_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (where the user's exploit connected)."""
    return [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family == socket.AF_INET and not _is_loopback(a.address)]  # fmt: skip


def _wait_for(predicate, what: str, proc: subprocess.Popen | None = None, limit: float = 240) -> None:
    deadline = time.monotonic() + limit  # a hang guard, not a speed check
    while not predicate():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the process ended before {what}: rc {proc.returncode}\n{out[-2000:]}\n{err[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {limit} s")
        time.sleep(0.2)


# ---------------------------------------------------------------------------------------------
# A running local study: loopback only, token enforced


def test_a_local_study_listens_on_loopback_only_and_refuses_clients_without_the_token(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(TOY)
    results, home = tmp_path / "results", tmp_path / "home"
    home.mkdir()
    # Ray's defaults: no RAY_AUTH_MODE, no token given, so Ray generates one into $HOME/.ray.
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
                                                            "RAY_ADDRESS", "MLFLOW_TRACKING_URI")}  # fmt: skip
    env.update(HOME=str(home), XDG_CACHE_HOME=os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache"))
    driver = _expgrid(str(study), "--local", "--num-cpus", "2", "--results", str(results),
                      "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", env=env)  # fmt: skip
    try:
        rows = results / "sections" / "s" / "rows.jsonl"
        _wait_for(lambda: rows.exists() and rows.read_text().count("\n") >= 2, "epoch rows", driver)

        processes = _tree(driver.pid)
        sockets = _listening(processes)
        exposed = [(_name(p), kind, ip, port) for p, kind, ip, port in sockets if not _is_loopback(ip)]
        assert not exposed, exposed
        # The servers the user saw on every interface are all there (so the check above saw them).
        names = {p.pid: _name(p) for p, *_ in sockets}
        for server in ("gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent", "dashboard.py"):
            assert any(server in n for n in names.values()), (server, sorted(set(names.values())))
        assert any(n.startswith("ray::") and "Agent" not in n for n in names.values()), names  # trial workers
        # What the user did: connect through the machine's own address. None of this Ray's
        # processes takes the connection (another Ray of the machine may hold the same port
        # there: Ray's default ports are fixed, e.g. the dashboard agent's 52365).
        ours = {p.pid for p in processes}
        for ip in _machine_addresses():
            for _, kind, _, port in sockets:
                if kind != "tcp":
                    continue
                with socket.socket() as s:
                    s.settimeout(5)
                    if s.connect_ex((ip, port)) != 0:
                        continue
                holders = {c.pid for c in psutil.net_connections(kind="tcp")
                           if c.status == psutil.CONN_LISTEN and c.laddr.port == port
                           and not _is_loopback(c.laddr.ip)}  # fmt: skip
                assert not holders & ours, f"{ip}:{port} was accepted by {holders & ours}"

        # Token authentication: on, with the token Ray generated, readable by its owner only.
        token_file = home / ".ray" / "auth_token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        gcs = [port for p, kind, _, port in sockets if kind == "tcp" and "gcs_server" in names[p.pid]]
        assert len(gcs) == 1, gcs
        gcs_call = "/ray.rpc.NodeInfoGcsService/GetAllNodeInfo"
        assert _grpc(f"127.0.0.1:{gcs[0]}", gcs_call, token) == "OK"
        assert _grpc(f"127.0.0.1:{gcs[0]}", gcs_call, None) == "UNAUTHENTICATED"
        assert _grpc(f"127.0.0.1:{gcs[0]}", gcs_call, "not-the-token") == "UNAUTHENTICATED"
        raylet_call = "/ray.rpc.NodeManagerService/GetNodeStats"
        raylet = [port for p, kind, _, port in sockets if kind == "tcp" and "raylet" in names[p.pid].split()[0]
                  and _grpc(f"127.0.0.1:{port}", raylet_call, token) == "OK"]  # fmt: skip
        assert raylet and all(_grpc(f"127.0.0.1:{port}", raylet_call, None) == "UNAUTHENTICATED" for port in raylet)
        dashboard = [port for p, kind, _, port in sockets
                     if kind == "tcp" and "dashboard.py" in names[p.pid] and _is_dashboard_api(port, token)]  # fmt: skip
        assert len(dashboard) == 1, dashboard
        assert _http(f"http://127.0.0.1:{dashboard[0]}/api/jobs/", token)[0] == 200
        assert _http(f"http://127.0.0.1:{dashboard[0]}/api/jobs/", None)[0] == 401
        assert _http(f"http://127.0.0.1:{dashboard[0]}/api/jobs/", "not-the-token")[0] == 403

        assert driver.poll() is None, "the study ended before the checks did: give it more epochs"
        out, err = driver.communicate(timeout=300)
        assert driver.returncode == 0, out[-2000:] + err[-3000:]
        assert "Token authentication" not in out + err  # Ray's opt-out advice is not printed
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()


# ---------------------------------------------------------------------------------------------
# Orphans of a killed driver

DRIVER = textwrap.dedent("""
    import sys, time
    import ray
    from cluster import connect
    connect.connect(num_cpus=1)
    ray.get(ray.remote(lambda: 1).remote())  # a worker started too
    print("READY", flush=True)
    if sys.argv[1] == "wait":
        time.sleep(600)
    connect.shutdown()
""")


def _identities(processes: list[psutil.Process]) -> dict[tuple[int, float], str]:
    out = {}
    for p in processes:
        try:
            out[(p.pid, p.create_time())] = _name(p)
        except psutil.Error:
            pass
    return out


def _alive(identity: tuple[int, float]) -> bool:
    try:
        p = psutil.Process(identity[0])
        return p.create_time() == identity[1] and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_next_local_start_stops_what_a_killed_driver_left_and_nothing_else(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    records = tmp_path / "cache" / "expgrid" / "ray"

    def driver(mode: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", DRIVER, mode], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip

    killed, alive = driver("wait"), driver("wait")  # two local Rays, started side by side
    cleaner = None
    try:
        for proc in (killed, alive):
            assert proc.stdout.readline().strip() == "READY", proc.communicate()[1][-3000:]
        assert {p.name for p in records.glob("*.json")} == {f"{killed.pid}.json", f"{alive.pid}.json"}
        killed_ray = _identities(_tree(killed.pid)[1:])
        alive_ray = _identities(_tree(alive.pid)[1:])
        assert any("raylet" in n for n in killed_ray.values()) and any("raylet" in n for n in alive_ray.values())

        killed.send_signal(signal.SIGKILL)
        killed.wait()
        left = {i: n for i, n in killed_ray.items() if _alive(i)}
        # What this is about: Ray's agents outlive a SIGKILLed driver (by about a minute).
        assert any("Agent" in n for n in left.values()), left

        cleaner = subprocess.run([sys.executable, "-c", DRIVER, "exit"], env=env, capture_output=True, text=True,
                                 timeout=300)  # fmt: skip
        assert cleaner.returncode == 0, cleaner.stderr[-3000:]
        still = {i: n for i, n in killed_ray.items() if _alive(i)}
        assert not still, still
        notice = [line for line in cleaner.stderr.splitlines() if "left running by the local Ray" in line]
        agents = [pid for (pid, _), name in left.items() if "Agent" in name]  # the ones that wait a minute
        assert len(notice) == 1 and all(str(pid) in notice[0] for pid in agents), cleaner.stderr[-2000:]
        # The live driver's Ray was not touched, and its record stays; the dead one's is gone, and
        # the cleaner's own went with its shutdown.
        assert all(_alive(i) for i in alive_ray), {i: n for i, n in alive_ray.items() if not _alive(i)}
        assert {p.name for p in records.glob("*.json")} == {f"{alive.pid}.json"}
    finally:
        for proc in (killed, alive):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # Ray's handler: sys.exit, then ray.shutdown at exit
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        # Whatever of this test's Rays is left (agents of the SIGTERMed one) goes the same way.
        subprocess.run([sys.executable, "-c", "from cluster import local_ray; local_ray.clean_up_orphans()"], env=env,
                       capture_output=True, timeout=120)  # fmt: skip


def test_only_records_of_dead_drivers_of_this_boot_have_their_processes_stopped(tmp_path, monkeypatch):
    """The rules of the records, without Ray: stand-in "Ray processes" (sleep, with a record's
    marker in their environment) and records written as connect() writes them."""
    from cluster import local_ray

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = local_ray.records_dir()
    folder.mkdir(parents=True)
    here = local_ray._this_boot()
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead_driver = {"pid": gone.pid, "started": 0.0}  # exited; no process of that pid and start
    me = {"pid": os.getpid(), "started": psutil.Process().create_time()}
    cases = {  # name: (driver, host and boot, should its processes be stopped)
        "dead": (dead_driver, here, True),
        "alive": (me, here, False),
        "other-host": (dead_driver, {**here, "host": here["host"] + "-elsewhere"}, False),
        "earlier-boot": (dead_driver, {**here, "boot": here["boot"] - 3600}, False),
    }
    sleepers = {}
    try:
        for name, (driver, where, _) in cases.items():
            marker = f"marker-{name}"
            sleepers[name] = subprocess.Popen(["sleep", "300"], env={**os.environ, local_ray.OWNER_ENV: marker})
            record = {"driver": driver, **where, "marker": marker, "session_dir": None, "processes": []}
            (folder / f"{name}.json").write_text(json.dumps(record))
        (folder / "garbage.json").write_text("{not json")

        stopped = local_ray.clean_up_orphans()

        assert stopped == [sleepers["dead"].pid]
        assert sleepers["dead"].wait(timeout=30) is not None
        assert all(sleepers[name].poll() is None for name in ("alive", "other-host", "earlier-boot"))
        # Handled records go (a dead driver's, an earlier boot's, an unreadable one); the others stay.
        assert sorted(p.name for p in folder.glob("*.json")) == ["alive.json", "other-host.json"]
    finally:
        for proc in sleepers.values():
            proc.kill()
            proc.wait()


def test_a_driver_without_the_token_is_refused_with_one_line(tmp_path, toy_study):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    ray_driver = subprocess.Popen([sys.executable, "-c", DRIVER, "wait"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert ray_driver.stdout.readline().strip() == "READY", ray_driver.communicate()[1][-3000:]
        gcs = [port for p, kind, _, port in _listening(_tree(ray_driver.pid))
               if kind == "tcp" and "gcs_server" in _name(p)]  # fmt: skip
        assert len(gcs) == 1, gcs
        (tmp_path / "home").mkdir()
        stranger = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
        stranger["HOME"] = str(tmp_path / "home")  # no ~/.ray/auth_token either
        run = _expgrid(*toy_study, "--address", f"127.0.0.1:{gcs[0]}", env=stranger)
        out, err = run.communicate(timeout=180)
        assert run.returncode == 1, out + err
        assert _stderr_lines(err) == [f"error: --address 127.0.0.1:{gcs[0]}: the cluster wants a token, and "
                                      "this driver sends none without RAY_AUTH_MODE=token; run with RAY_AUTH_MODE=token "
                                      "and the cluster's token in $RAY_AUTH_TOKEN or ~/.ray/auth_token"], err  # fmt: skip
        # With the mode on but a wrong token, Ray's client tries (its own retry warnings), then
        # gives up: the last line says why.
        wrong = _expgrid(*toy_study, "--address", f"127.0.0.1:{gcs[0]}",
                         env={**stranger, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token"})  # fmt: skip
        out, err = wrong.communicate(timeout=180)
        assert wrong.returncode == 1 and "Traceback" not in err, out + err
        assert _stderr_lines(err)[-1] == (f"error: --address 127.0.0.1:{gcs[0]}: the cluster refused this "
                                          "driver's token (missing or wrong); run with RAY_AUTH_MODE=token and the "
                                          "cluster's token in $RAY_AUTH_TOKEN or ~/.ray/auth_token"), err  # fmt: skip
    finally:
        ray_driver.send_signal(signal.SIGTERM)
        try:
            ray_driver.wait(timeout=60)
        except subprocess.TimeoutExpired:
            ray_driver.kill()
            ray_driver.wait()
        subprocess.run([sys.executable, "-c", "from cluster import local_ray; local_ray.clean_up_orphans()"], env=env,
                       capture_output=True, timeout=120)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# --address where no Ray answers


class _SilentServer:
    """A TCP server that accepts connections and never says a word (not Ray, not gRPC)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def toy_study(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(TOY)
    return [str(study), "--results", str(tmp_path / "r"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]


def _stderr_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def test_an_address_where_nothing_listens_fails_at_once_with_one_line(toy_study):
    port = _free_port()
    run = _expgrid(*toy_study, "--address", f"127.0.0.1:{port}")
    out, err = run.communicate(timeout=120)  # not Ray's two minutes of retries
    assert run.returncode == 1, out + err
    assert _stderr_lines(err) == [f"error: --address 127.0.0.1:{port}: nothing listens there (connection "
                                  "refused); is the cluster up? (`ray status` on its head node)"], err  # fmt: skip


def test_an_address_of_a_server_that_is_not_ray_fails_within_the_connect_timeout(toy_study):
    server = _SilentServer()
    try:
        run = _expgrid(*toy_study, "--address", f"127.0.0.1:{server.port}", "--connect-timeout", "5")
        out, err = run.communicate(timeout=120)
    finally:
        server.close()
    assert run.returncode == 1, out + err
    lines = _stderr_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: --address 127.0.0.1:{server.port}: something listens there, but no "
                               "Ray cluster answered within 5 s"), lines  # fmt: skip
    assert server.accepted, "the probe never connected"


def test_sigterm_ends_an_attempt_to_attach_at_once(toy_study):
    server = _SilentServer()
    try:
        run = _expgrid(*toy_study, "--address", f"127.0.0.1:{server.port}", "--connect-timeout", "300")
        # The TCP probe, then the gRPC health check: both connections open, the check waiting.
        _wait_for(lambda: len(server.accepted) >= 2, "connection from the probe", run)
        run.send_signal(signal.SIGTERM)
        try:
            run.communicate(timeout=60)  # far below the 300 s it would otherwise wait
        except subprocess.TimeoutExpired:
            run.kill()
            run.communicate()
            pytest.fail("SIGTERM did not end the attempt to attach")
    finally:
        server.close()
    assert run.returncode != 0


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_address_auto_without_a_running_ray_fails_with_one_line(toy_study, tmp_path):
    # In a PID namespace of its own (and with its own Ray temp dir), the machine's other Rays are
    # invisible, as on a machine where none runs.
    namespace = ["unshare", "--pid", "--fork", "--mount-proc"]
    if subprocess.run([*namespace, "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare --pid is not permitted here")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(tmp_path / "ray-tmp")
    run = subprocess.run([*namespace, sys.executable, "-m", "expgrid", "run", *toy_study, "--address", "auto"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert _stderr_lines(run.stderr) == ["error: --address auto: no running Ray cluster found on this machine "
                                         "and $RAY_ADDRESS is not set; start one (`ray start --head`) or leave out "
                                         "--address for a private local Ray"], run.stderr  # fmt: skip


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_a_connect_timeout_that_is_not_a_positive_number_is_refused(value, capsys):
    from expgrid.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["run", "digits_demo", "--address", "auto", "--connect-timeout", value])
    assert exit_.value.code == 2
    assert f"expected a number of seconds > 0, got {value}" in capsys.readouterr().err
