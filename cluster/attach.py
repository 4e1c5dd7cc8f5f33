"""Before attaching to a running Ray (``--address``): is a Ray cluster there at all?

``ray.init(address=...)`` of an address where no Ray runs does not fail: it retries inside
Ray's C++ client for about two minutes (seen with Ray 2.60), and while it does, Python cannot
run a signal handler, so SIGTERM waits too. Ray's own timeouts for it
(``RAY_gcs_rpc_server_connect_timeout_s``, ``RAY_gcs_server_port_wait_time_s``, …) are internal
settings read at import. So the address is probed first, in Python, within the connect
timeout: a TCP connection to the GCS port (refused: fail at once), then two gRPC calls a Ray
GCS answers (a server that is not gRPC never answers; one that is, but not Ray's, has neither).
Only then does ``ray.init`` run. Every wait here returns to Python in slices, so a signal ends
it at once.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from expgrid.errors import ClusterUnreachable

_SLICE_S = 0.1  # how often a wait returns to Python, where signal handlers run



def resolve(address: str) -> str:
    """HOST:PORT of the GCS that ``address`` names (``auto``: ``$RAY_ADDRESS``, or the Ray running
    on this machine, as Ray finds it), or the address as given for a Ray Client ``ray://``."""
    if address != "auto":
        return address
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    from cluster import patches

    try:
        found = patches.local_cluster_address()
    except LookupError:  # another Ray version: ray.init finds it itself, unprobed
        return address
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
    _ask_the_gcs(address, f"[{host}]:{port}" if ":" in host else f"{host}:{port}", deadline, timeout, with_token)


def _connect(family: int, kind: int, proto: int, where: Any, deadline: float) -> None:
    """A TCP connection to ``where`` (closed at once), or TimeoutError at ``deadline``. CPython
    runs signal handlers while a socket waits (PEP 475), so a signal still ends it at once."""
    with socket.socket(family, kind, proto) as sock:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        sock.connect(where)


def _ask_the_gcs(address: str, target: str, deadline: float, timeout: float, with_token: bool) -> None:
    """Two gRPC calls without a token: the standard health check (``grpc.health.v1``, which a
    Ray GCS answers unauthenticated) and ``GetClusterId``, the first call ray.init makes, which a
    GCS answers, or refuses for want of a token. Anything else speaking HTTP/2 (a proxy, another
    gRPC service) answers neither (UNIMPLEMENTED); a server that is not HTTP/2 never answers.
    The requests are empty messages, so no generated code is needed."""
    import grpc

    with grpc.insecure_channel(target) as channel:
        health = _call(channel, "/grpc.health.v1.Health/Check", deadline)
        if health == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise ClusterUnreachable(address, f"something listens there, but no Ray cluster answered within "
                                              f"{_seconds(timeout)} (not a Ray GCS port? Ray's default is 6379)")  # fmt: skip
        cluster_id = _call(channel, "/ray.rpc.NodeInfoGcsService/GetClusterId", deadline)
    unimplemented = grpc.StatusCode.UNIMPLEMENTED
    if cluster_id == grpc.StatusCode.UNAUTHENTICATED:
        if not with_token:
            raise ClusterUnreachable(address, "the cluster wants a token, and this driver sends none without "
                                              f"RAY_AUTH_MODE=token; {TOKEN_ADVICE}")  # fmt: skip
    elif cluster_id == unimplemented and health == unimplemented:
        raise ClusterUnreachable(address, "something answers there, but it is not a Ray GCS (not a Ray GCS port? "
                                          "Ray's default is 6379)")  # fmt: skip
    elif cluster_id not in (grpc.StatusCode.OK, unimplemented):
        # UNIMPLEMENTED with a health answer: a Ray that has renamed the call; ray.init judges.
        raise ClusterUnreachable(address, f"the Ray GCS did not answer ({cluster_id.name})")


def _call(channel: Any, method: str, deadline: float) -> Any:
    """The status code of a unary call with an empty request, waited for in slices."""
    import grpc

    call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    future = call.future(b"", timeout=max(0.1, deadline - time.monotonic()))
    while True:
        try:
            future.result(timeout=_SLICE_S)
            return grpc.StatusCode.OK
        except grpc.FutureTimeoutError:
            continue  # the call has its own deadline; this only lets signal handlers run
        except grpc.RpcError as e:
            return e.code()
