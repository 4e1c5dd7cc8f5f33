"""Connecting the driver to Ray: a private local Ray, or a running cluster (``--address``);
its resources; shutting down. Driver only.

Connecting applies the patches of cluster/patches.py (the driver's, before Tune runs).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import ipaddress
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

# isort: split
# First: Ray reads at import what keeps a local Ray on 127.0.0.1 (see cluster/local_ray.py).
from cluster import attach, local_ray

# isort: split
import ray

from cluster import patches
from expgrid import logfiles

# A notebook run that imported Ray just now (a kernel's first) routes Ray's log lines to its
# results from here on, before Ray starts (expgrid.logfiles.notebook_logs_to).
logfiles.ray_imported()


def connect(
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    connect_timeout: float = 30.0,
) -> dict[str, float]:
    """Start a private local Ray (address None) or attach to a running cluster; return its resources.

    A local Ray listens on 127.0.0.1 only and keeps Ray's token authentication (Ray's default);
    what an earlier expgrid driver that died left of its local Ray is stopped first. Attaching
    fails within ``connect_timeout`` seconds, with one line naming the address, when no Ray
    cluster answers there (``attach.ClusterUnreachable``). A session already connected (a
    test's ``ray.init``, ``ray submit``, an earlier study of this process) is used as it is, so
    a second study in one process finds Ray running. A start begun by
    :func:`start_in_background` is waited for (and its error raised here)."""
    patches.apply()
    _wait_for_background_start()
    _connect_now(address, num_cpus, num_gpus, connect_timeout)
    return cluster_resources()


# ---------------------------------------------------------------------------------------------
# Starting while the driver does other work

_background: _BackgroundStart | None = None
_parked = threading.Event()  # set by shutdown(): the thread that started Ray may end


class _BackgroundStart(threading.Thread):
    """connect() in a daemon thread. ``ray.init`` is mostly waiting (for the GCS, the raylet and
    the dashboard to come up), so the driver's own work (opening MLflow, loading the data,
    planning) goes on meanwhile; the thread's error is raised in the thread that waits for it."""

    def __init__(self, arguments: tuple[Any, ...]):
        super().__init__(name="expgrid-ray-start", daemon=True)
        self.arguments = arguments
        self.error: BaseException | None = None
        self.done = threading.Event()  # connected, or failed

    def run(self) -> None:
        try:
            _connect_now(*self.arguments)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            self.error = e
            return
        finally:
            self.done.set()
        # Ray starts the GCS and the raylet of a local Ray so that they die with their parent
        # (PR_SET_PDEATHSIG), and Linux takes the *thread* that started them for the parent: this
        # thread ending would end the Ray (seen: "Failed to connect to GCS within 60 seconds").
        # So it stays until shutdown() has stopped that Ray, or the process ends.
        _parked.wait()


def start_in_background(
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    connect_timeout: float = 30.0,
) -> bool:
    """Begin :func:`connect` in a thread and return at once (True when a start was begun); the
    next :func:`connect` waits for it. Nothing is begun when Ray is connected already (a warm
    run) or a start is under way. Call it once the study is known to be valid: a bad study file
    starts nothing."""
    global _background
    if ray.is_initialized() or _background is not None:
        return False
    patches.apply()  # here: it may print its one note, and it imports what the thread would
    _background = _BackgroundStart((address, num_cpus, num_gpus, connect_timeout))
    threading.Thread(target=_import_tune_telemetry, name="expgrid-tune-imports", daemon=True).start()
    # A run that ends before it connects (a stop, a failed section) must not exit while ray.init
    # runs: Ray's own shutdown at exit would meet a half-started Ray. Runs before Ray's (LIFO).
    atexit.register(_finish_background_start)
    _background.start()
    return True


# What Tune's usage telemetry imports at a process's first Tuner.fit to name the callbacks it was
# given (Ray AIR's usage tagging of callbacks: its built-in logger callbacks' modules, MLflow's
# pulling in mlflow itself): 0.8-0.95 s measured, otherwise on the driver's path to the first
# trial. Imported here while ray.init mostly waits for Ray's processes.
TUNE_TELEMETRY_IMPORTS = ("ray.air.integrations.mlflow", "ray.air.integrations.wandb",
                          "ray.air.integrations.comet", "ray.tune.logger.aim")  # fmt: skip


def _import_tune_telemetry() -> None:
    for module in TUNE_TELEMETRY_IMPORTS:
        with contextlib.suppress(Exception):  # only a head start: Tune imports them itself anyway
            importlib.import_module(module)


def _finish_background_start() -> None:
    with contextlib.suppress(BaseException):
        _wait_for_background_start()


def _wait_for_background_start() -> None:
    global _background
    pending = _background
    if pending is None:
        return
    while not pending.done.wait(0.1):  # in slices: the caller's signal handlers run meanwhile
        pass
    _background = None
    if pending.error is not None:
        raise pending.error


# What this process's Ray session is, when expgrid began it: "local" (a private local Ray it
# started) or "attached" (a connection it made to a running cluster). None: no session, or one
# the user began (their own ray.init), which shutdown_own() leaves alone.
_own: str | None = None


def _connect_now(address: str | None, num_cpus: int | None, num_gpus: int | None, connect_timeout: float) -> None:
    global _own
    if ray.is_initialized():
        return
    if address is None and os.environ.get("RAY_ADDRESS"):
        address = "auto"  # what ray.init does with $RAY_ADDRESS; probed like any address
    with _keeping_sigterm_handler():
        if address is None:
            _start_local(num_cpus, num_gpus)
            _own = "local"
        else:
            _attach(address, connect_timeout)
            _own = "attached"


class _WithoutOptOutAdvice(logging.Filter):
    """Ray logs "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled
    to opt out" at every start of a local Ray (and attach with `auto`) where the user has not
    set RAY_AUTH_MODE: at every expgrid run, advising to switch off what keeps it safe. Only that
    message is dropped; README.md says what the token protects and where it is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


logging.getLogger(patches.TOKEN_SETUP_LOGGER).addFilter(_WithoutOptOutAdvice())


class _WithoutThreadNote(logging.Filter):
    """ray.init in a thread other than the main one (start_in_background) warns that it set no
    SIGTERM handler: on purpose, expgrid's own handling of SIGTERM stays (expgrid.interrupts)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("SIGTERM handler is not set because current thread")


logging.getLogger(patches.WORKER_LOGGER).addFilter(_WithoutThreadNote())


@contextlib.contextmanager
def _keeping_sigterm_handler() -> Iterator[None]:
    """ray.init replaces the process's SIGTERM handler with its own (sys.exit). A handler the
    caller installed (e.g. expgrid's own interrupt handling) is put back; Python's default is
    left replaced, so that SIGTERM still shuts Ray down cleanly (atexit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(before):
            signal.signal(signal.SIGTERM, before)


def _is_loopback(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _start_local(num_cpus: int | None, num_gpus: int | None) -> None:
    # Public, and what ray.init is about to give the new node: 127.0.0.1 unless Ray was imported
    # before cluster.local_ray set it up (or the user switched multi-node clusters on).
    node_ip = ray.util.get_node_ip_address()
    if not _is_loopback(node_ip):
        raise local_ray.NotLoopback(node_ip)
    local_ray.clean_up_orphans()
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        print(f"warning: RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']}: this local Ray runs without token "
              "authentication, so any process of this machine can run code in it; unset RAY_AUTH_MODE to keep "
              "Ray's default", file=sys.stderr)  # fmt: skip
    with local_ray.marked_start() as marker:
        context = ray.init(
            address="local",  # a new private instance, never one found on the machine
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            dashboard_host="127.0.0.1",
            log_to_driver=False,  # trial output goes to Ray's log files, not over the progress line
            logging_level=logging.WARNING,
            configure_logging=True,
        )
    local_ray.record(marker, (getattr(context, "address_info", None) or {}).get("session_dir"))
    local_ray.keep_token_to_owner()


def _attach(address: str, timeout: float) -> None:
    target = attach.resolve(address)
    shown = address if target == address else f"{address} ({target})"  # `auto (10.0.0.5:6379)`
    attach.probe(shown, target, timeout, with_token=attach.sends_token(address))
    try:
        # The address as given: Ray sends its token unasked only to `auto` (the machine's own
        # Ray), never to an address typed in.
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, configure_logging=True)
    except (ConnectionError, RuntimeError, TimeoutError, ray.exceptions.RayError) as e:
        raise attach.ClusterUnreachable(shown, _attach_problem(e)) from None


def _attach_problem(error: BaseException) -> str:
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    # Ray raises AuthenticationError, or a RuntimeError holding the traceback of one as text.
    if any(type(e).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(e) for e in chain):
        return f"the cluster refused this driver's token (missing or wrong); {attach.TOKEN_ADVICE}"
    first = next((str(e).strip().splitlines()[0] for e in reversed(chain) if str(e).strip()), type(chain[0]).__name__)
    return f"could not attach ({first[:300]})"


def cluster_resources() -> dict[str, float]:
    res = ray.cluster_resources()
    return {"cpu": float(res.get("CPU", 0.0)), "gpu": float(res.get("GPU", 0.0))}


def node_resources() -> list[dict[str, float]]:
    """CPUs and GPUs of each alive node (for "does one trial fit on some node")."""
    return [
        {"cpu": float(n["Resources"].get("CPU", 0.0)), "gpu": float(n["Resources"].get("GPU", 0.0))}
        for n in ray.nodes()
        if n.get("Alive")
    ]


def leave_without_waiting() -> None:
    """Before a process ends with ``os._exit`` (``expgrid run``, once its results are complete
    and its summary printed): the shutdown of a local Ray this process started is handed to a
    process of its own (``local_ray.hand_over_shutdown``), so the user does not wait for it (1-2
    s, and several more for the interpreter's own teardown of Ray, Tune and torch). A driver
    attached to a cluster just goes; the cluster ends its job when the connection drops. A
    local start still under way (a stop asked for in the first seconds) is waited for, so that
    its record exists and the reaper finds what it started; an attach is not (nothing to end)."""
    pending = _background
    if pending is not None and pending.arguments[0] is None and not os.environ.get("RAY_ADDRESS"):
        _finish_background_start()
    if ray.is_initialized():
        local_ray.hand_over_shutdown()


def shutdown_own() -> str | None:
    """End the Ray session expgrid began in this process (``expgrid.shutdown()``): a local Ray it
    started is shut down, a connection it made to a cluster is closed (the cluster stays up);
    a session the user began with their own ``ray.init`` is left as it is. Returns what was
    ended ("local", "attached"), None when nothing was. The next run starts afresh."""
    _finish_background_start()  # a start still under way: let it finish, then end it
    if _own is None or not ray.is_initialized():
        return None
    ended = _own
    shutdown()
    return ended


def shutdown() -> None:
    global _own
    _own = None
    if ray.is_initialized():
        ray.shutdown()
    local_ray.forget()  # the record of a local Ray this process started, if any
    _parked.set()  # a thread parked by start_in_background may end now
    _parked.clear()  # ...and one of a later start parks again

