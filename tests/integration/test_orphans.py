"""Unlinked-but-open files (orphans): usable until closed, reclaimed on close or after a
crash on the next mount."""

import errno
import os

from pmemfuse_helpers import (MiB, expect_errno, free_blocks, fsck_check, read_file,
                              wait_free_blocks, write_file)

TOLERANCE = 8  # blocks


def test_unlinked_open_file_keeps_working_until_close(mounted):
    base = free_blocks(mounted.mnt)
    p = mounted / "orphan"
    data = os.urandom(4 * MiB)
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, data)
        os.unlink(p)
        expect_errno(errno.ENOENT, os.stat, p)
        assert "orphan" not in os.listdir(mounted.mnt)
        st = os.fstat(fd)
        assert st.st_nlink == 0
        assert st.st_size == len(data)
        assert os.pread(fd, len(data), 0) == data
        more = os.urandom(MiB + 3)
        os.pwrite(fd, more, len(data))
        os.fsync(fd)
        assert os.pread(fd, len(more), len(data)) == more
        assert os.fstat(fd).st_size == len(data) + len(more)
        os.ftruncate(fd, 100)
        assert os.pread(fd, 1000, 0) == data[:100]
        os.pwrite(fd, data, 0)
        # space is still in use while the file is open
        in_use = base - free_blocks(mounted.mnt)
        assert in_use >= len(data) // 4096, f"only {in_use} blocks in use for an open orphan"
        # a new file with the same name is a different inode
        write_file(p, b"new")
        assert os.stat(p).st_ino != st.st_ino
        assert os.pread(fd, 16, 0) == data[:16]
        os.unlink(p)
    finally:
        os.close(fd)
    after = wait_free_blocks(mounted.mnt, base)
    assert abs(after - base) <= TOLERANCE, (
        f"space not returned after closing the orphan: free {base} -> {after}")


def test_orphan_space_returned_after_close_survives_remount(mounted, image):
    base = free_blocks(mounted.mnt)
    fds = []
    for i in range(20):
        p = mounted / f"o{i}"
        fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
        os.write(fd, os.urandom((i + 1) * 50000))
        os.unlink(p)
        fds.append(fd)
    for fd in fds:
        os.close(fd)
    after = wait_free_blocks(mounted.mnt, base)
    assert abs(after - base) <= TOLERANCE, f"free {base} -> {after}"
    mounted.unmount()
    rc, out = fsck_check(image)
    assert rc == 0, out
    mounted.start()
    assert abs(free_blocks(mounted.mnt) - base) <= TOLERANCE
    assert not [n for n in os.listdir(mounted.mnt) if n.startswith("o")]


def test_orphan_reclaimed_after_kill9_and_remount(mounted, image):
    write_file(mounted / "keep", b"keep me", fsync=True)  # os.sync() does not reach FUSE
    base = free_blocks(mounted.mnt)
    fds = []
    big = mounted / "big-orphan"
    fd = os.open(big, os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, os.urandom(8 * MiB))
    os.fsync(fd)
    os.unlink(big)
    fds.append(fd)
    for i in range(10):
        p = mounted / f"small-orphan{i}"
        fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
        os.write(fd, os.urandom(10000 * (i + 1)))
        os.setxattr(p, "user.big", os.urandom(3000))
        os.fsync(fd)
        os.unlink(p)
        fds.append(fd)
    assert os.fstat(fds[0]).st_nlink == 0
    used = base - free_blocks(mounted.mnt)
    assert used >= 8 * MiB // 4096, f"orphans use only {used} blocks"

    mounted.kill9()
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass

    mounted.start()  # replays the journal and processes the orphan list
    assert read_file(mounted / "keep") == b"keep me"
    assert sorted(os.listdir(mounted.mnt)) == ["keep"]
    now = free_blocks(mounted.mnt)
    assert abs(now - base) <= TOLERANCE, (
        f"orphans not reclaimed after crash + remount: free {base} before, {now} now")
    mounted.unmount()
    rc, out = fsck_check(image)
    assert rc == 0, f"fsck after crash + remount exited {rc}:\n{out}"
    mounted.start()
    assert abs(free_blocks(mounted.mnt) - base) <= TOLERANCE


def test_orphan_directory_cwd_after_rmdir(mounted):
    # An open (removed) directory: readdir works and returns nothing, creating fails.
    d = mounted / "d"
    os.mkdir(d)
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rmdir(d)
        assert os.fstat(dfd).st_nlink in (0, 1)
        assert os.listdir(dfd) == []
        expect_errno(errno.ENOENT, os.open, "x", os.O_CREAT | os.O_WRONLY, 0o644,
                     dir_fd=dfd)
    finally:
        os.close(dfd)
