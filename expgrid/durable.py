"""Files that survive a crash, a kill or a full disk: the results directory's record files.

- JSON files are written whole or not at all: a temporary file beside the target, flushed to
  the disk, renamed over it (and the directory synced), so a crash mid-write leaves the old file;
  a failed write (a full disk) removes its temporary file.
- JSON Lines files are appended one line per record. A process killed mid-write can leave its
  last line cut: readers drop it with a warning (the caller rebuilds what it held from its other
  records). Any other unreadable content is not a crash's trace but damage: one line naming the
  file and what to do (:class:`RecordError`, exit 2), never silently skipped.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from expgrid.errors import ResultsError

Warn = Callable[[str], None]


class RecordError(ResultsError):
    """A record file of a results directory is unreadable; the message says what to do."""

    def __init__(self, path: Path, expected: str, got: str, fix: str):
        super().__init__(str(path), expected, f"{got}; {fix}")


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """An OSError inside the block names ``path`` (a failed write, unlike a failed open, names
    no file), so the user is told which file a full disk or a permission stopped."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically and durably (see the module docstring)."""
    text = json.dumps(data, indent=2, default=str)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    _sync_directory(path.parent)


def _sync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_json(path: Path, expected: str, fix: str) -> Any | None:
    """The JSON in ``path``; None when there is no such file. Unreadable content raises
    :class:`RecordError` with ``expected`` (what the file should hold) and ``fix``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RecordError(path, expected, f"a file that cannot be read ({e.strerror})", fix) from None
    try:
        return json.loads(raw)
    except ValueError:
        raise RecordError(path, expected, f"unreadable content ({_preview(raw)})", fix) from None


def read_jsonl(path: Path, expected: str, fix: str, warn: Warn, repair: bool = False) -> tuple[list[Any], str | None]:
    """The records of a JSON Lines file, and the text of a cut last line (dropped, with a
    warning) or None. A bad line elsewhere raises :class:`RecordError`. ``repair``: also cut the
    dropped line off the file, so that lines appended next do not follow half a line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], None
    except OSError as e:
        raise RecordError(path, expected, f"a file that cannot be read ({e.strerror})", fix) from None
    lines = raw.split(b"\n")
    ends_cleanly = lines[-1] == b""
    if ends_cleanly:
        lines.pop()
    records: list[Any] = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
            continue
        except ValueError:
            pass
        if number == len(lines) and not ends_cleanly:  # written by a process killed mid-line
            text = line.decode("utf-8", "replace")
            warn(f"{path}: its last line was cut off (the run writing it was killed mid-write); dropped it")
            if repair:
                os.truncate(path, len(raw) - len(line))
            return records, text
        raise RecordError(path, expected, f"unreadable line {number} ({_preview(line)})", fix)
    return records, None


def append_line(path: Path, record: Any) -> None:
    """Append one record as a line, flushed to the OS (a crash of this process loses nothing)."""
    line = json.dumps(record, default=str) + "\n"
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(line)


# The OS errors after which nothing more can be recorded on that filesystem: going on would
# only turn every trial into a failure that `--resume` could not undo.
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def storage_failure(error: BaseException | str | None, path: str) -> OSError | None:
    """An OSError naming ``path`` if ``error`` — an exception, anywhere in its chain, or a trial's
    error text — is a full disk, a quota or a read-only filesystem; else None."""
    seen: set[int] = set()
    while isinstance(error, BaseException) and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS:
            return OSError(error.errno, os.strerror(error.errno), error.filename or path)
        found = _storage_errno(str(error))
        if found is not None:
            return OSError(found, os.strerror(found), path)
        error = error.__cause__ or error.__context__
    found = _storage_errno(error) if isinstance(error, str) else None
    return None if found is None else OSError(found, os.strerror(found), path)


def _storage_errno(text: str) -> int | None:
    return next((n for n in _STORAGE_ERRNOS if os.strerror(n) in text), None)


def _preview(raw: bytes) -> str:
    text = raw[:40].decode("utf-8", "replace").replace("\n", " ")
    return repr(text + ("…" if len(raw) > 40 else ""))
