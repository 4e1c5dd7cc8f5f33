"""Whether a path lies on a local filesystem, read from the mount table (``/proc/self/mounts``).

SQLite's write-ahead log needs shared memory that every process opening the database can map,
which network filesystems do not provide: the tracking store uses the log on local disks only.
"""

from __future__ import annotations

from pathlib import Path

NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre",
                                 "gpfs", "beegfs", "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "afs"})  # fmt: skip


def on_local_disk(path: Path, mounts: str | None = None) -> bool:
    """Whether ``path`` is on a local filesystem, by the mount table (``mounts``: the text of
    /proc/self/mounts; read when not given). False where there is none (not Linux)."""
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            return False
    target, best, kind = str(path.resolve()), "", ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")  # the table writes a space in a path as \040
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return bool(best) and kind not in NETWORK_FILESYSTEMS
