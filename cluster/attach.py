"""Before attaching to a running Ray (``--address``): is a Ray cluster there at all?

``ray.init(address=...)`` of an address where no Ray runs does not fail: it retries inside
Ray's C++ client for about two minutes per attempt (seen with Ray 2.60), and while it does,
Python cannot run a signal handler, so SIGTERM (and Ctrl-C) wait too. Ray's own timeouts for
it (``RAY_gcs_rpc_server_connect_timeout_s``, ``RAY_gcs_server_port_wait_time_s``, …) are
internal settings read at import. So the address is probed first, in Python, within the
connect timeout: a TCP connection to the GCS port (refused: fail at once), then the standard
gRPC health check every Ray GCS answers (a server that is not gRPC never answers it). Only
then does ``ray.init`` run. Every wait here returns to Python in slices, so a signal ends it at once.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from expgrid.errors import StudyFailed

_SLICE_S = 0.1  # how often a wait returns to Python, where signal handlers run


class ClusterUnreachable(StudyFailed):
    """No Ray cluster could be attached at the address given; the message names it."""

    def __init__(self, address: str, problem: str):
        self.address = address
        super().__init__(f"--address {address}: {problem}")


def resolve(address: str) -> str:
    """HOST:PORT of the GCS that ``address`` names (``auto``: ``$RAY_ADDRESS``, or the Ray running
    on this machine, as Ray finds it), or the address as given for a Ray Client ``ray://``."""
    if address != "auto":
        return address
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    try:
        # Ray has no public function for what `auto` means; this is the one ray.init calls.
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # moved in another Ray version: ray.init finds it itself, unprobed
        return address
    try:
        found = canonicalize_bootstrap_address("auto")
    except ConnectionError:
        found = None
    if not found:
        raise ClusterUnreachable(address, "no running Ray cluster found on this machine and $RAY_ADDRESS is not set; "
                                          "start one (`ray start --head`) or leave out --address for a private "
                                          "local Ray")  # fmt: skip
    return found


def _host_port(address: str, target: str) -> tuple[str, int]:
    text = target.split("://", 1)[1] if "://" in target else target
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not sep or not host or not port.isdigit():
        raise ClusterUnreachable(address, f"expected HOST:PORT, got {target!r}")
    return host, int(port)


def _in_thread(fn: Any, deadline: float) -> Any:
    """``fn()`` in a daemon thread, waited for in slices until ``deadline``; raises TimeoutError."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    worker = threading.Thread(target=run, daemon=True, name="expgrid-probe")
    worker.start()
    while worker.is_alive():
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        worker.join(min(_SLICE_S, left))
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _seconds(timeout: float) -> str:
    return f"{timeout:g} s"


TOKEN_ADVICE = ("run with RAY_AUTH_MODE=token and the cluster's token in $RAY_AUTH_TOKEN or "
                "~/.ray/auth_token")  # fmt: skip


def sends_token(address: str) -> bool:
    """Whether ``ray.init(address)`` will send a token (Ray 2.60's rule, worker.py): with
    RAY_AUTH_MODE=token; with it unset, only to ``auto`` and only when a token is available."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None:
        return mode.lower() == "token"
    if address != "auto":
        return False
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or os.path.isfile(path)


def probe(address: str, target: str, timeout: float, with_token: bool = True) -> None:
    """Raise ClusterUnreachable unless a gRPC server answers at ``target`` within ``timeout``,
    or when it is a Ray GCS that wants a token and ``with_token`` is False (ray.init would
    retry for about 20 s, Ray's C++ client printing a warning a second, then fail)."""
    deadline = time.monotonic() + timeout
    host, port = _host_port(address, target)
    try:
        infos = _in_thread(lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM), deadline)
    except TimeoutError:
        raise ClusterUnreachable(address, f"{host} was not resolved within {_seconds(timeout)}") from None
    except OSError as e:
        raise ClusterUnreachable(address, f"unknown host {host} ({e.strerror or e})") from None
    refused = None
    for family, kind, proto, _, where in infos:
        try:
            _connect(family, kind, proto, where, deadline)
            break
        except ConnectionRefusedError as e:
            refused = e
        except TimeoutError:
            raise ClusterUnreachable(address, f"no answer within {_seconds(timeout)} (a wrong host, a firewall, or a "
                                              "cluster still starting; --connect-timeout SECONDS waits longer)") from None  # fmt: skip
        except OSError as e:
            raise ClusterUnreachable(address, f"cannot connect ({e.strerror or e})") from None
    else:
        reason = "connection refused" if refused else "no address to connect to"
        raise ClusterUnreachable(address, f"nothing listens there ({reason}); is the cluster up? (`ray status` on its "
                                          "head node)")  # fmt: skip
    if "://" in target:
        return  # a Ray Client server: ray.init's own client checks the rest
    grpc_target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    _grpc_health(address, grpc_target, deadline, timeout)
    if not with_token and _wants_token(grpc_target, deadline):
        raise ClusterUnreachable(
            address,
            f"the cluster wants a token, and this driver sends none without RAY_AUTH_MODE=token; {TOKEN_ADVICE}",
        )


def _connect(family: int, kind: int, proto: int, where: Any, deadline: float) -> None:
    """A TCP connection to ``where`` (closed at once), or TimeoutError at ``deadline``. CPython
    runs signal handlers while a socket waits (PEP 475), so a signal still ends it at once."""
    with socket.socket(family, kind, proto) as sock:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        sock.connect(where)


def _grpc_health(address: str, target: str, deadline: float, timeout: float) -> None:
    """The standard gRPC health check (``grpc.health.v1.Health/Check``), which Ray's GCS answers
    without a token; hand-encoded (an empty request), so that no generated code is needed."""
    import grpc

    channel = grpc.insecure_channel(target)
    try:
        check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)  # fmt: skip
        future = check.future(b"", timeout=max(0.1, deadline - time.monotonic()))
        while True:
            try:
                future.result(timeout=_SLICE_S)
                return
            except grpc.FutureTimeoutError:
                continue  # the call has its own deadline; this only lets signal handlers run
            except grpc.RpcError as e:
                code = e.code()
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    return  # gRPC without the health service: let ray.init judge it
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise ClusterUnreachable(address, f"something listens there, but no Ray cluster answered within "
                                                      f"{_seconds(timeout)} (not a Ray GCS port? Ray's default is 6379)") from None  # fmt: skip
                raise ClusterUnreachable(address, f"the Ray GCS did not answer ({code.name}: {e.details()})") from None
    finally:
        channel.close()


def _wants_token(target: str, deadline: float) -> bool:
    """Whether the GCS refuses a call without a token (GetClusterId, the first call ray.init
    makes). Any other answer, or none in time, leaves the judgement to ray.init."""
    import grpc

    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId", request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)  # fmt: skip
        future = call.future(b"", timeout=max(0.1, deadline - time.monotonic()))
        while True:
            try:
                future.result(timeout=_SLICE_S)
                return False
            except grpc.FutureTimeoutError:
                continue
            except grpc.RpcError as e:
                return e.code() == grpc.StatusCode.UNAUTHENTICATED
