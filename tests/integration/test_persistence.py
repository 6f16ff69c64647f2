"""Everything written survives unmount/remount; clean shutdown paths leave a clean image."""

import errno
import os
import signal
import stat
import time

import pytest

from pmemfuse_helpers import (DAEMON, FUSERMOUNT, diff_snapshots, expect_errno, find_daemon_pids,
                              fsck, fsck_check, is_fuse_mounted, kill_image_daemons_and_unmount,
                              make_mountpoint, read_file, require, run, snapshot, write_file)

SRC_TREE = "/usr/include"


def assert_fsck_clean(image, *extra):
    rc, out = fsck_check(image, *extra)
    assert rc == 0, f"fsck.pmemfuse -f -n {image} exited {rc}:\n{out}"


def tree_snapshot_without_ino(root):
    return snapshot(root, with_ino=False)


def compare_trees(src, dst):
    """Data, types, modes, owners, mtimes, symlink targets and user xattrs equal; nlink of
    non-directories equal (cp -a keeps hard links). Directory nlink is checked elsewhere."""
    a = tree_snapshot_without_ino(src)
    b = tree_snapshot_without_ino(dst)
    for snap in (a, b):
        for e in snap.values():
            if stat.S_ISDIR(e["mode"]):
                e.pop("nlink")
    return diff_snapshots(a, b)


@pytest.mark.slow
@pytest.mark.image_size("1G")
@pytest.mark.timeout_s(600)
def test_cp_a_usr_include_diff_unmount_fsck_remount_diff(mounted, image):
    dst = mounted / "include"
    cp = run(["cp", "-a", SRC_TREE, mounted.mnt], timeout=300)
    assert cp.returncode == 0, f"cp -a failed: {cp.stderr[-2000:]}"
    d = run(["diff", "-r", "--no-dereference", SRC_TREE, dst], timeout=300)
    assert d.returncode == 0, f"diff -r differs:\n{d.stdout[-3000:]}{d.stderr[-2000:]}"
    before = snapshot(dst)

    mounted.unmount()
    assert_fsck_clean(image)
    mounted.start()
    d = run(["diff", "-r", "--no-dereference", SRC_TREE, dst], timeout=300)
    assert d.returncode == 0, f"diff -r differs after remount:\n{d.stdout[-3000:]}"
    after = snapshot(dst)
    diffs = diff_snapshots(before, after)
    assert not diffs, "tree changed across remount:\n" + "\n".join(diffs)
    mounted.unmount()
    assert_fsck_clean(image)


def test_cp_a_preserves_modes_owners_times_and_links(mounted):
    # cp -a sets permissions with fsetxattr("system.posix_acl_access") when it can; the
    # filesystem must either apply that ACL to the mode or refuse it (EOPNOTSUPP) so cp
    # falls back to fchmod. Storing it as an opaque xattr silently loses the mode.
    src = os.path.join(SRC_TREE, "linux")
    cp = run(["cp", "-a", src, mounted.mnt], timeout=120)
    assert cp.returncode == 0, cp.stderr[-2000:]
    diffs = compare_trees(src, mounted / "linux")
    assert not diffs, "metadata differs after cp -a:\n" + "\n".join(diffs)
    os.mkdir(mounted / "links")
    write_file(mounted.path("links", "a"), b"x")
    os.link(mounted.path("links", "a"), mounted.path("links", "b"))
    os.symlink("a", mounted.path("links", "s"))
    os.chmod(mounted.path("links", "a"), 0o751)
    cp = run(["cp", "-a", mounted / "links", mounted / "links2"], timeout=60)
    assert cp.returncode == 0, cp.stderr
    diffs = compare_trees(mounted / "links", mounted / "links2")
    assert not diffs, "metadata differs after cp -a within the mount:\n" + "\n".join(diffs)


def test_posix_acl_access_xattr_is_applied_or_refused(mounted):
    p = mounted / "f"
    write_file(p, b"")
    os.chmod(p, 0o600)
    # ACL_USER_OBJ rw-, ACL_GROUP_OBJ r--, ACL_OTHER r--: equivalent to mode 0644
    acl = bytes.fromhex("02000000" "01000600ffffffff" "04000400ffffffff" "20000400ffffffff")
    try:
        os.setxattr(p, "system.posix_acl_access", acl)
    except OSError as e:
        assert e.errno in (errno.EOPNOTSUPP, errno.ENOTSUP), e
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
        return
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o644, (
        "system.posix_acl_access accepted but the mode did not change: "
        f"{oct(stat.S_IMODE(os.stat(p).st_mode))}")


def build_rich_tree(root):
    """Files of several sizes, dirs, hard links, short/long symlinks, xattrs, odd modes."""
    os.makedirs(os.path.join(root, "a", "b", "c"))
    os.mkdir(os.path.join(root, "empty"))
    write_file(os.path.join(root, "zero"), b"")
    write_file(os.path.join(root, "small"), b"hello world\n")
    write_file(os.path.join(root, "a", "block"), os.urandom(4096))
    write_file(os.path.join(root, "a", "b", "big"), os.urandom(3 * 1024 * 1024 + 5))
    f = os.path.join(root, "a", "b", "c", "sparse")
    fd = os.open(f, os.O_CREAT | os.O_WRONLY, 0o600)
    os.pwrite(fd, b"end", 7 * 1024 * 1024)
    os.close(fd)
    os.link(os.path.join(root, "small"), os.path.join(root, "a", "small-link"))
    os.symlink("small", os.path.join(root, "sym-short"))
    os.symlink("x" * 3000, os.path.join(root, "a", "sym-long"))
    os.setxattr(os.path.join(root, "small"), "user.tiny", b"t")
    os.setxattr(os.path.join(root, "a"), "user.dir", b"on a directory")
    os.setxattr(os.path.join(root, "a", "block"), "user.big", os.urandom(3000))
    os.chmod(os.path.join(root, "a", "block"), 0o4711)
    os.chown(os.path.join(root, "zero"), 4242, 2424)
    os.utime(os.path.join(root, "small"), ns=(1_111_111_111_111_111_111, 1_222_222_222_222_222_222))
    os.utime(os.path.join(root, "empty"), ns=(5, 7))


def test_data_metadata_xattrs_symlinks_survive_remount(mounted, image):
    build_rich_tree(mounted.mnt)
    before = snapshot(mounted.mnt)
    mounted.unmount()
    assert_fsck_clean(image)
    mounted.start()
    after = snapshot(mounted.mnt)
    diffs = diff_snapshots(before, after)
    assert not diffs, "state changed across remount:\n" + "\n".join(diffs)
    # and a second cycle with modifications in between
    os.unlink(mounted.path("a", "small-link"))
    os.rename(mounted.path("a", "b"), mounted.path("moved"))
    before = snapshot(mounted.mnt)
    mounted.remount()
    after = snapshot(mounted.mnt)
    diffs = diff_snapshots(before, after)
    assert not diffs, "state changed across second remount:\n" + "\n".join(diffs)
    mounted.unmount()
    assert_fsck_clean(image)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_foreground_daemon_unmounts_cleanly(mounted, image, sig):
    build_rich_tree(mounted.mnt)
    fd = os.open(mounted / "last", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"written right before the signal")
    os.close(fd)
    before = snapshot(mounted.mnt)
    rc = mounted.signal(sig)
    assert rc is not None, f"daemon did not exit within 30 s of {sig.name}"
    assert rc == 0, f"daemon exited {rc} on {sig.name}; log:\n{mounted.logs[-1]}"
    assert not mounted.mounted_after_exit, f"mount left behind after {sig.name}"
    assert_fsck_clean(image)
    mounted.start()
    after = snapshot(mounted.mnt)
    diffs = diff_snapshots(before, after)
    assert not diffs, f"state changed across {sig.name}:\n" + "\n".join(diffs)
    assert read_file(mounted / "last") == b"written right before the signal"


def test_read_only_mount_serves_data_and_rejects_writes(mounted, image):
    build_rich_tree(mounted.mnt)
    before = snapshot(mounted.mnt)
    mounted.unmount()
    mounted.start(["-o", "ro"])
    after = snapshot(mounted.mnt)
    assert not diff_snapshots(before, after)
    expect_errno(errno.EROFS, os.open, mounted / "new", os.O_CREAT | os.O_WRONLY, 0o644)
    expect_errno(errno.EROFS, os.open, mounted / "small", os.O_WRONLY)
    expect_errno(errno.EROFS, os.mkdir, mounted / "newdir")
    expect_errno(errno.EROFS, os.unlink, mounted / "small")
    expect_errno(errno.EROFS, os.rename, mounted / "small", mounted / "other")
    expect_errno(errno.EROFS, os.setxattr, mounted / "small", "user.x", b"y")
    expect_errno(errno.EROFS, os.chmod, mounted / "small", 0o600)
    assert os.statvfs(mounted.mnt).f_flag & os.ST_RDONLY
    mounted.unmount()
    assert_fsck_clean(image)
    mounted.start()
    assert not diff_snapshots(before, snapshot(mounted.mnt))


def test_daemonized_mount_returns_once_mounted_and_exits_on_unmount(image):
    daemon = require(DAEMON)
    mnt = make_mountpoint()
    try:
        cp = run([daemon, image, mnt], timeout=30)
        assert cp.returncode == 0, f"pmemfuse (daemonizing) exited {cp.returncode}: {cp.stderr}"
        assert is_fuse_mounted(mnt), "pmemfuse returned before the filesystem was mounted"
        write_file(os.path.join(mnt, "f"), b"daemonized")
        pids = find_daemon_pids(image)
        assert len(pids) == 1, f"expected one daemon process for the image, found {pids}"
        u = run([FUSERMOUNT, "-u", mnt], timeout=30)
        assert u.returncode == 0, u.stderr
        deadline = time.monotonic() + 30
        while find_daemon_pids(image) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not find_daemon_pids(image), "daemon still running 30 s after unmount"
        assert_fsck_clean(image)
    finally:
        kill_image_daemons_and_unmount(image, mnt)


def test_fsck_clean_after_normal_unmount_of_fresh_image(mounted, image):
    mounted.unmount()
    assert_fsck_clean(image)
    rc, out = fsck(image)
    assert rc == 0, out
    rc, out = fsck(image, "-f", "-y")
    assert rc == 0, f"fsck -f -y on a clean image exited {rc}:\n{out}"
