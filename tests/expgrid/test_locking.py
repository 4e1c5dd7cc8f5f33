"""The results directory's lock: exclusive against exclusive and shared, shared with shared, and
taken over when its holder dies (the kernel drops a dead process's flock)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from expgrid.locking import ResultsBusy, hold

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from expgrid.locking import hold
    with hold(Path(sys.argv[1]), "run", shared=sys.argv[2] == "shared"):
        print("held", flush=True)
        time.sleep(600)
""")


def _holder(results, mode: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(results), mode], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_an_exclusive_holder_is_named_and_its_death_frees_the_lock(tmp_path):
    holder = _holder(tmp_path, "exclusive")
    try:
        with pytest.raises(ResultsBusy, match=rf"{tmp_path}: in use by `expgrid run` \(PID {holder.pid}, since"):
            with hold(tmp_path, "run"):
                pass
        with pytest.raises(ResultsBusy):
            with hold(tmp_path, "report", shared=True):
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with hold(tmp_path, "run"):  # the dead holder's lock is taken over
        assert f'"pid": {os.getpid()}' in (tmp_path / "expgrid.lock").read_text()


def test_readers_share_and_keep_writers_out(tmp_path):
    reader = _holder(tmp_path, "shared")
    try:
        with hold(tmp_path, "report", shared=True):  # a second reader
            pass
        with pytest.raises(ResultsBusy, match="in use by another expgrid command"):
            with hold(tmp_path, "sync"):
                pass
    finally:
        reader.kill()
        reader.wait()
