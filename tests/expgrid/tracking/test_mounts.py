"""Local or network disk, from the mount table."""

from __future__ import annotations

from pathlib import Path

from expgrid.tracking.mounts import on_local_disk


def test_only_local_filesystems_count_as_local_disks():
    mounts = "\n".join([
        "/dev/vda1 / ext4 rw 0 0",
        "server:/export /mnt/shared nfs4 rw 0 0",
        "/dev/vdb /mnt/shared/local\\040disk xfs rw 0 0",
    ])  # fmt: skip
    assert on_local_disk(Path("/home/me/results"), mounts)
    assert not on_local_disk(Path("/mnt/shared/results"), mounts)
    assert on_local_disk(Path("/mnt/shared/local disk/results"), mounts)
    assert on_local_disk(Path("/mnt/sharedother"), mounts)  # on /, not under /mnt/shared
    assert not on_local_disk(Path("/anything"), "")  # no mount table: never taken for local
