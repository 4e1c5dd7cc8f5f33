"""One writer per results directory: ``<results>/expgrid.lock``, an advisory ``flock``.

``expgrid run`` and ``expgrid sync`` hold it exclusively for their whole run, ``expgrid report``
shares it (several reports may read at once, never while a run writes). A second command fails at
once with one line naming the directory and the process that holds it. The lock belongs to the
holder's open file: the kernel drops it when that process ends, however it ends (SIGKILL
included), so a lock left by a dead process is simply taken by the next command; the PID written
in the file is only there to name the holder. The file descriptor is not inherited by the
processes the holder starts (Ray, the MLflow writer), so they cannot keep a dead driver's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from expgrid.errors import ExpgridError

LOCK_FILE = "expgrid.lock"


class ResultsBusy(ExpgridError):
    """Another expgrid command holds the results directory."""


@contextlib.contextmanager
def hold(results: Path, command: str, *, shared: bool = False) -> Iterator[None]:
    """Hold ``results``'s lock for the ``with`` block: exclusive (run, sync) or ``shared``
    (report). The directory must exist. Raises :class:`ResultsBusy` at once when it is taken."""
    path = Path(results) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ResultsBusy(f"{results}: in use by {_holder(path)}; wait for it to end or stop it, "
                              "then run this again") from None  # fmt: skip
        if not shared:  # a shared holder leaves the last writer's note alone (there may be several readers)
            note = json.dumps({"pid": os.getpid(), "command": command, "since": time.time()})
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(path: Path) -> str:
    """Who holds the lock, as far as the file says: the exclusive holder's note, if its process
    is alive; otherwise readers hold it (``expgrid report``)."""
    try:
        note = json.loads(path.read_text() or "{}")
        pid, command = int(note["pid"]), str(note["command"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return "another expgrid command (e.g. `expgrid report`)"
    started = time.strftime("%H:%M:%S", time.localtime(float(note.get("since", 0))))
    return f"`expgrid {command}` (PID {pid}, since {started})"
