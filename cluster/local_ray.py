"""The private local Ray that expgrid starts: reachable from this machine only, and not left
running by a driver that died.

**Loopback.** Ray gives a local instance the machine's network address as its node IP, and its
servers (GCS, raylet and object manager, core workers, dashboard agent, runtime-env agent,
metrics exporters) then listen on that address or on every interface. They listen on
127.0.0.1 only when the node IP is 127.0.0.1, and Ray turns ``ray.init(_node_ip_address=
"127.0.0.1")`` and ``ray start --node-ip-address=127.0.0.1`` back into the machine's address
(Ray issue 26293: on purpose, so that other nodes can join). It keeps the loopback address
only where multi-node clusters are switched off, which is ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``
(Ray's own switch: off by default on macOS and Windows, on on Linux; read once, when Ray is
imported). A local Ray of expgrid is one machine's, never a cluster others join, so this
module, imported before Ray, switches it off for this process and the Ray processes it starts.
A driver attaching to a cluster (``--address``) is not affected: it takes its node's address
from the cluster.

**Orphans.** When a driver dies without ``ray.shutdown()`` (SIGKILL, OOM), the kernel ends the
GCS and the raylet with it, but the dashboard agent and the runtime-env agent (children of the
raylet) wait on the dead GCS for about a minute before they exit, still listening. So each local
start leaves a record (``~/.cache/expgrid/ray/<driver pid>.json``: the driver, the Ray
processes it started, its session directory, and a marker that the Ray processes inherit in
their environment, workers started later included), and the next local start ends the
processes of every record whose driver is dead (those with a recorded pid and start time, or
with the marker), then deletes the record; a driver that ends normally deletes its own. A
record whose driver is alive is never touched, and nothing without a record is: other Ray
instances of this machine are not expgrid's to stop.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Before anything can import Ray (see the module docstring). setdefault: a user who set it
# keeps it, and connect() then refuses to start a local Ray that would listen beyond loopback.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from expgrid.errors import StudyFailed  # noqa: E402

OWNER_ENV = "EXPGRID_RAY_OWNER"  # the marker every process of an expgrid-started Ray inherits
_GRACE_S = 2.0  # SIGTERM, then SIGKILL for what is left after this long


class NotLoopback(StudyFailed):
    """A local Ray would get a node IP other than loopback, i.e. listen on the network."""

    def __init__(self, node_ip: str):
        setting = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
        why = (f"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER={setting} is set" if setting != "0"
               else "Ray was imported before cluster.connect")  # fmt: skip
        super().__init__(f"a local Ray would listen on {node_ip}, not only on 127.0.0.1 ({why}); to open a Ray to the "
                         "network on purpose, start it with `ray start --head` and pass --address")  # fmt: skip


def keep_token_to_owner() -> None:
    """Ray writes the token it generates for a new local Ray (``~/.ray/auth_token``) with the
    process's umask, i.e. readable by every user of the machine under the usual 022; the token is
    what lets a process run code in this user's Ray. Make it the owner's alone."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return  # given in the environment: Ray reads no file
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        info = path.stat()
        if info.st_uid == os.getuid() and info.st_mode & 0o077:
            path.chmod(0o600)
    except OSError:
        pass  # no file (Ray found the token elsewhere) or not ours to change


def records_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "expgrid" / "ray"


def _this_boot() -> dict[str, Any]:
    """This machine and boot: a record of another host (a shared home) is left alone, one of an
    earlier boot names processes that are gone."""
    import psutil

    return {"host": socket.gethostname(), "boot": round(psutil.boot_time())}


def _identity(process: Any) -> dict[str, Any] | None:
    """A process as pid and start time, so that a reused pid is never taken for it."""
    import psutil

    try:
        return {"pid": process.pid, "started": process.create_time()}
    except psutil.Error:
        return None


def _same(identity: dict[str, Any]) -> Any | None:
    """The live process ``identity`` names, or None (gone, a zombie, or its pid reused)."""
    import psutil

    try:
        process = psutil.Process(identity["pid"])
        if process.create_time() != identity["started"] or process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except (psutil.Error, KeyError, TypeError):
        return None


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def marked_start() -> Iterator[str]:
    """Around the ``ray.init`` that starts a local Ray: every process Ray starts inherits (the
    raylet passes its environment on to the agents and workers it starts later)

    - the marker of this Ray;
    - its own address as ``RAY_ADDRESS``, with the GCS port chosen here (``RAY_GCS_SERVER_PORT``,
      which Ray reads for a new head): Ray's State API called without an address inside a
      worker (Ray Train's placement-group cleaner does) otherwise looks for "the" Ray of the
      machine, fails when there are several (two studies at once, other users), and Train's
      reservations of a trial cut by ASHA are never given back: the next trial waits for ever.

    Both are removed after, so the driver's own later children (e.g. the MLflow writer) do not
    inherit them, and a later ``connect()`` of this process starts a new local Ray again."""
    marker = uuid.uuid4().hex
    port = os.environ.get("RAY_GCS_SERVER_PORT") or str(_free_loopback_port())
    added = {OWNER_ENV: marker, "RAY_GCS_SERVER_PORT": port, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    before = {name: os.environ.get(name) for name in added}
    os.environ.update(added)
    try:
        yield marker
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def record(marker: str, session_dir: str | None) -> Path | None:
    """Write this driver's record of the local Ray it has just started."""
    import psutil

    me = psutil.Process()
    # Ray's processes only: the driver's other children (the MLflow writer, started earlier) are
    # not Ray's, and a writer still draining after its driver died is not to be stopped. The
    # processes Ray started directly carry the marker; their own children (the agents, the
    # dashboard's modules) too, but these rename themselves (setproctitle), which blanks what
    # /proc shows of their environment: they are taken as descendants of a marked process.
    ray_processes = []
    for child in me.children():
        if _marked(child, marker):
            with contextlib.suppress(psutil.Error):
                ray_processes += [child, *child.children(recursive=True)]
    data = {"driver": _identity(me), **_this_boot(), "marker": marker, "session_dir": session_dir,
            "processes": [i for i in map(_identity, ray_processes) if i]}  # fmt: skip
    folder = records_dir()
    path = folder / f"{os.getpid()}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.getpid()}-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)  # whole or absent: a cleaner never reads half a record
    except OSError as e:  # the run goes on; only the clean-up after a crash is lost
        print(f"warning: cannot record the local Ray in {folder} ({e.strerror or e}); if this run is killed, "
              "what its Ray leaves running is not stopped by the next one", file=sys.stderr)  # fmt: skip
        return None
    atexit.register(forget)  # a driver that ends normally shuts its Ray down (Ray's own atexit)
    return path


def forget() -> None:
    """Delete this driver's record (its Ray was shut down)."""
    with contextlib.suppress(OSError):
        (records_dir() / f"{os.getpid()}.json").unlink(missing_ok=True)


def _marked(process: Any, marker: str) -> bool:
    import psutil

    try:
        return process.environ().get(OWNER_ENV) == marker
    except psutil.Error:  # gone, or another user's: not ours either way
        return False


def _belongs(process: Any, rec: dict[str, Any], recorded: set[tuple[int, float]]) -> bool:
    """Whether ``process`` is one of the recorded Ray's: recorded by pid and start time (all of
    them at the start), or carrying its marker (workers started later). Ray renames its agents
    and workers, so command lines do not say."""
    import psutil

    if rec.get("marker") and _marked(process, rec["marker"]):
        return True
    try:
        return (process.pid, process.create_time()) in recorded
    except psutil.Error:
        return False


def _leftovers(rec: dict[str, Any]) -> list[Any]:
    import psutil

    recorded = {(p["pid"], p["started"]) for p in rec.get("processes", []) if "pid" in p and "started" in p}
    me = os.getpid()
    return [p for p in psutil.process_iter() if p.pid != me and _belongs(p, rec, recorded)]


def clean_up_orphans() -> list[int]:
    """End the processes of every recorded local Ray whose driver is dead; return their pids."""
    import psutil

    folder = records_dir()
    try:
        paths = sorted(folder.glob("*.json"))
    except OSError:
        return []
    here = _this_boot()
    stopped: list[int] = []
    for path in paths:
        try:
            rec = json.loads(path.read_text())
            if not isinstance(rec, dict):
                raise ValueError("not a record")
        except FileNotFoundError:
            continue  # another driver cleaned it up meanwhile
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)  # unreadable: it can name nothing to stop
            continue
        if rec.get("host") != here["host"]:
            continue  # another machine's (a home shared over the network)
        if rec.get("boot") == here["boot"]:
            if rec.get("driver") and _same(rec["driver"]) is not None:
                continue  # its driver runs: its Ray is in use
            orphans = _leftovers(rec)
            for p in orphans:
                with contextlib.suppress(psutil.Error):
                    p.terminate()
            _, alive = psutil.wait_procs(orphans, timeout=_GRACE_S)
            for p in alive:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            psutil.wait_procs(alive, timeout=_GRACE_S)
            stopped += [p.pid for p in orphans]
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    if stopped:
        print(f"expgrid: stopped {len(stopped)} process(es) left running by the local Ray of an expgrid run "
              f"that died (pids {', '.join(map(str, stopped))})", file=sys.stderr)  # fmt: skip
    return stopped


# ---------------------------------------------------------------------------------------------
# Shutting down after the driver is gone


def ours() -> bool:
    """Whether this process started a local Ray that is recorded (and not yet shut down)."""
    return (records_dir() / f"{os.getpid()}.json").is_file()


def hand_over_shutdown() -> subprocess.Popen | None:
    """Start the process that ends this driver's local Ray once the driver has exited, so that
    the driver can exit at once (``expgrid run``, after its summary): a driver that exits
    without ``ray.shutdown()`` takes the GCS and the raylet (and with them the workers) along,
    but Ray's agents wait for about a minute; the reaper ends them as the next local start
    would (:func:`clean_up_orphans`: the record, then every process carrying its marker) and
    deletes the record. Started in a session of its own, so that a Ctrl-C at the shell does not
    reach it, with nothing to print (its output goes nowhere)."""
    if not ours():
        return None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or "." for p in sys.path)}
    for name in (OWNER_ENV, "RAY_ADDRESS", "RAY_GCS_SERVER_PORT"):
        env.pop(name, None)  # (never set here after the start; kept off the reaper all the same)
    return subprocess.Popen([sys.executable, "-m", "cluster.local_ray", "--reap-after", str(os.getpid())], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)  # fmt: skip


def _reap_after(driver_pid: int, limit_s: float = 600.0) -> None:
    """Wait for ``driver_pid`` to end (at most ``limit_s``), then clean up what it left."""
    import psutil

    try:
        driver = psutil.Process(driver_pid)
        driver.wait(timeout=limit_s)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        return  # still running: its own exit shuts its Ray down, or the next start cleans up
    time.sleep(0.2)  # the kernel ends the GCS and the raylet with the driver; let that happen first
    clean_up_orphans()


if __name__ == "__main__" and sys.argv[1:2] == ["--reap-after"]:
    _reap_after(int(sys.argv[2]))
