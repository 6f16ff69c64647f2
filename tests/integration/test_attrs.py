"""Attributes: chmod/chown/utime/truncate, ownership of new files, extended attributes."""

import errno
import os
import stat
import subprocess
import sys
import time

import pytest

from pmemfuse_helpers import (expect_errno, free_blocks, read_file, run, wait_free_blocks,
                              write_file)

NOBODY = 65534
SETPRIV = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
PYTHON = sys.executable


def as_nobody(code: str, *args) -> subprocess.CompletedProcess:
    return run([*SETPRIV, PYTHON, "-c", code, *args], timeout=60, cwd="/")


# --------------------------------------------------------------------------------------
# chmod / chown / utime / size
# --------------------------------------------------------------------------------------

def test_chmod_changes_permission_bits_and_ctime(mounted):
    p = mounted / "f"
    write_file(p, b"x")
    d = mounted / "d"
    os.mkdir(d)
    for mode in (0o600, 0o755, 0o000, 0o4755, 0o2750, 0o1777, 0o644):
        ctime_before = os.stat(p).st_ctime_ns
        time.sleep(0.01)
        os.chmod(p, mode)
        st = os.stat(p)
        assert stat.S_IMODE(st.st_mode) == mode, oct(st.st_mode)
        assert stat.S_ISREG(st.st_mode)
        assert st.st_ctime_ns > ctime_before
    os.chmod(d, 0o1703)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o1703
    assert stat.S_ISDIR(os.stat(d).st_mode)
    mounted.remount()
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o1703


def test_chown_as_root_sets_uid_and_gid(mounted):
    p = mounted / "f"
    write_file(p, b"x")
    os.chown(p, 1234, 5678)
    st = os.stat(p)
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    os.chown(p, -1, 42)  # -1 leaves the uid alone
    st = os.stat(p)
    assert (st.st_uid, st.st_gid) == (1234, 42)
    os.chown(p, 99, -1)
    st = os.stat(p)
    assert (st.st_uid, st.st_gid) == (99, 42)
    os.symlink("f", mounted / "l")
    os.lchown(mounted / "l", 7, 8)
    assert (os.lstat(mounted / "l").st_uid, os.lstat(mounted / "l").st_gid) == (7, 8)
    assert (os.stat(p).st_uid, os.stat(p).st_gid) == (99, 42)
    mounted.remount()
    st = os.stat(p)
    assert (st.st_uid, st.st_gid) == (99, 42)
    assert (os.lstat(mounted / "l").st_uid, os.lstat(mounted / "l").st_gid) == (7, 8)


def test_utime_nanosecond_roundtrip(mounted):
    p = mounted / "f"
    write_file(p, b"x")
    d = mounted / "d"
    os.mkdir(d)
    at = 1_234_567_890_123_456_789
    mt = 1_600_000_000_987_654_321
    os.utime(p, ns=(at, mt))
    os.utime(d, ns=(mt, at))
    st = os.stat(p)
    assert (st.st_atime_ns, st.st_mtime_ns) == (at, mt)
    std = os.stat(d)
    assert (std.st_atime_ns, std.st_mtime_ns) == (mt, at)
    mounted.remount()
    st = os.stat(p)
    assert (st.st_atime_ns, st.st_mtime_ns) == (at, mt)
    std = os.stat(d)
    assert (std.st_atime_ns, std.st_mtime_ns) == (mt, at)


@pytest.mark.parametrize("t_ns", [-1, -1_000_000_000, -123_456_789_012_345_678],
                         ids=["-1ns", "-1s", "1966"])
def test_utime_pre_epoch_roundtrip(mounted, t_ns):
    p = mounted / "f"
    write_file(p, b"x")
    os.utime(p, ns=(t_ns, t_ns))
    st = os.stat(p)
    assert (st.st_atime_ns, st.st_mtime_ns) == (t_ns, t_ns)
    mounted.remount()
    st = os.stat(p)
    assert (st.st_atime_ns, st.st_mtime_ns) == (t_ns, t_ns)


def test_utime_now_sets_current_time(mounted):
    p = mounted / "f"
    write_file(p, b"x")
    os.utime(p, ns=(1_000_000_000, 1_000_000_000))
    t0 = time.time_ns()
    os.utime(p)
    t1 = time.time_ns()
    st = os.stat(p)
    assert t0 - 2_000_000_000 <= st.st_mtime_ns <= t1 + 2_000_000_000
    assert t0 - 2_000_000_000 <= st.st_atime_ns <= t1 + 2_000_000_000


def test_new_file_times_are_now_and_write_updates_mtime(mounted):
    t0 = time.time_ns()
    p = mounted / "f"
    write_file(p, b"x")
    st = os.stat(p)
    for t in (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns):
        assert abs(t - t0) < 5_000_000_000, (t, t0)
    os.utime(p, ns=(1_000_000_000, 1_000_000_000))
    with open(p, "ab") as f:
        f.write(b"more")
    st2 = os.stat(p)
    assert st2.st_mtime_ns > 1_000_000_000
    assert st2.st_ctime_ns >= st.st_ctime_ns


def test_directory_mtime_changes_on_create_and_unlink(mounted):
    d = mounted / "d"
    os.mkdir(d)
    os.utime(d, ns=(1_000_000_000, 1_000_000_000))
    write_file(os.path.join(d, "f"), b"")
    m1 = os.stat(d).st_mtime_ns
    assert m1 > 1_000_000_000
    os.utime(d, ns=(1_000_000_000, 1_000_000_000))
    os.unlink(os.path.join(d, "f"))
    assert os.stat(d).st_mtime_ns > 1_000_000_000


def test_truncate_via_setattr_changes_size(mounted):
    p = mounted / "f"
    write_file(p, b"0123456789")
    os.truncate(p, 3)
    assert os.stat(p).st_size == 3
    assert read_file(p) == b"012"
    os.truncate(p, 8192)
    st = os.stat(p)
    assert st.st_size == 8192
    assert read_file(p) == b"012" + bytes(8189)
    expect_errno(errno.EISDIR, os.truncate, mounted.mnt, 0)
    expect_errno(errno.EINVAL, os.truncate, p, -1)


def test_st_blocks_accounts_for_data(mounted):
    p = mounted / "f"
    write_file(p, os.urandom(1024 * 1024))
    st = os.stat(p)
    assert st.st_blocks * 512 >= 1024 * 1024
    assert st.st_blocks * 512 <= 1024 * 1024 + 64 * 4096


# --------------------------------------------------------------------------------------
# Ownership of new files created by another user
# --------------------------------------------------------------------------------------

@pytest.mark.mount_opts("-o", "allow_other")
def test_files_created_by_other_user_are_owned_by_caller(mounted):
    shared = mounted / "shared"
    os.mkdir(shared)
    os.chmod(shared, 0o777)
    cp = as_nobody(
        "import os, sys\n"
        "d = sys.argv[1]\n"
        "fd = os.open(os.path.join(d, 'file'), os.O_CREAT | os.O_WRONLY, 0o644)\n"
        "os.write(fd, b'by nobody'); os.close(fd)\n"
        "os.mkdir(os.path.join(d, 'dir'))\n"
        "os.symlink('file', os.path.join(d, 'link'))\n",
        shared)
    assert cp.returncode == 0, f"create as uid {NOBODY} failed: {cp.stderr}"
    for name, fn in (("file", os.stat), ("dir", os.stat), ("link", os.lstat)):
        st = fn(os.path.join(shared, name))
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY), (name, st.st_uid, st.st_gid)
    assert read_file(os.path.join(shared, "file")) == b"by nobody"
    # root-created files stay root-owned
    write_file(os.path.join(shared, "rootfile"), b"")
    st = os.stat(os.path.join(shared, "rootfile"))
    assert (st.st_uid, st.st_gid) == (0, 0)
    mounted.remount(["-o", "allow_other"])
    st = os.stat(os.path.join(shared, "file"))
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)


@pytest.mark.mount_opts("-o", "allow_other")
def test_other_user_cannot_write_root_owned_read_only_file(mounted):
    shared = mounted / "shared"
    os.mkdir(shared, 0o755)
    os.chmod(shared, 0o755)
    write_file(os.path.join(shared, "secret"), b"root data", mode=0o644)
    os.chmod(os.path.join(shared, "secret"), 0o644)
    os.chmod(mounted.mnt, 0o755)
    cp = as_nobody(
        "import os, sys, errno\n"
        "d = sys.argv[1]\n"
        "res = []\n"
        "for what, f in [('open-w', lambda: os.open(os.path.join(d, 'secret'), os.O_WRONLY)),\n"
        "                ('create', lambda: os.open(os.path.join(d, 'new'), os.O_CREAT|os.O_WRONLY, 0o644)),\n"
        "                ('unlink', lambda: os.unlink(os.path.join(d, 'secret'))),\n"
        "                ('chmod', lambda: os.chmod(os.path.join(d, 'secret'), 0o777))]:\n"
        "    try:\n"
        "        f(); res.append(what + ':OK')\n"
        "    except OSError as e:\n"
        "        res.append(what + ':' + errno.errorcode[e.errno])\n"
        "print(' '.join(res))\n"
        "print(open(os.path.join(d, 'secret'), 'rb').read().decode())\n",
        shared)
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.split("\n")
    assert lines[0] == "open-w:EACCES create:EACCES unlink:EACCES chmod:EPERM", cp.stdout
    assert lines[1] == "root data"
    assert read_file(os.path.join(shared, "secret")) == b"root data"
    assert stat.S_IMODE(os.stat(os.path.join(shared, "secret")).st_mode) == 0o644


# --------------------------------------------------------------------------------------
# Extended attributes
# --------------------------------------------------------------------------------------

def test_xattr_small_inline_set_get_list_remove(mounted):
    p = mounted / "f"
    write_file(p, b"")
    os.setxattr(p, "user.a", b"small")
    os.setxattr(p, "user.b", b"")
    assert os.getxattr(p, "user.a") == b"small"
    assert os.getxattr(p, "user.b") == b""
    assert sorted(os.listxattr(p)) == ["user.a", "user.b"]
    os.setxattr(p, "user.a", b"changed!")
    assert os.getxattr(p, "user.a") == b"changed!"
    os.removexattr(p, "user.a")
    expect_errno(errno.ENODATA, os.getxattr, p, "user.a")
    assert os.listxattr(p) == ["user.b"]
    expect_errno(errno.ENODATA, os.removexattr, p, "user.a")


def test_xattr_large_value_3000_bytes(mounted):
    p = mounted / "f"
    write_file(p, b"data")
    big = os.urandom(3000)
    os.setxattr(p, "user.big", big)
    os.setxattr(p, "user.small", b"s")
    assert os.getxattr(p, "user.big") == big
    assert os.getxattr(p, "user.small") == b"s"
    assert sorted(os.listxattr(p)) == ["user.big", "user.small"]
    big2 = os.urandom(2000)
    os.setxattr(p, "user.big", big2)
    assert os.getxattr(p, "user.big") == big2
    assert read_file(p) == b"data"
    mounted.remount()
    assert os.getxattr(p, "user.big") == big2
    assert os.getxattr(p, "user.small") == b"s"
    os.setxattr(p, "user.big", b"tiny")  # shrinks back to something that fits inline
    assert os.getxattr(p, "user.big") == b"tiny"
    os.removexattr(p, "user.big")
    assert os.listxattr(p) == ["user.small"]


def test_xattr_many_attributes_spill_out_of_inline_area(mounted):
    p = mounted / "f"
    write_file(p, b"")
    vals = {f"user.attr{i:02d}": os.urandom(i * 7 + 1) for i in range(30)}
    for k, v in vals.items():
        os.setxattr(p, k, v)
    assert sorted(os.listxattr(p)) == sorted(vals)
    for k, v in vals.items():
        assert os.getxattr(p, k) == v, k
    mounted.remount()
    assert sorted(os.listxattr(p)) == sorted(vals)
    for k, v in vals.items():
        assert os.getxattr(p, k) == v, k
    for k in list(vals)[::2]:
        os.removexattr(p, k)
        del vals[k]
    assert sorted(os.listxattr(p)) == sorted(vals)
    for k, v in vals.items():
        assert os.getxattr(p, k) == v, k


def test_xattr_create_flag_on_existing_gives_eexist(mounted):
    p = mounted / "f"
    write_file(p, b"")
    os.setxattr(p, "user.k", b"v1", os.XATTR_CREATE)
    expect_errno(errno.EEXIST, os.setxattr, p, "user.k", b"v2", os.XATTR_CREATE)
    assert os.getxattr(p, "user.k") == b"v1"
    os.setxattr(p, "user.big", os.urandom(3000), os.XATTR_CREATE)
    expect_errno(errno.EEXIST, os.setxattr, p, "user.big", b"x", os.XATTR_CREATE)


def test_xattr_replace_flag_on_missing_gives_enodata(mounted):
    p = mounted / "f"
    write_file(p, b"")
    expect_errno(errno.ENODATA, os.setxattr, p, "user.missing", b"v", os.XATTR_REPLACE)
    expect_errno(errno.ENODATA, os.getxattr, p, "user.missing")
    assert os.listxattr(p) == []
    os.setxattr(p, "user.k", b"v1")
    os.setxattr(p, "user.k", b"v2", os.XATTR_REPLACE)
    assert os.getxattr(p, "user.k") == b"v2"


def test_getxattr_missing_gives_enodata(mounted):
    p = mounted / "f"
    write_file(p, b"")
    expect_errno(errno.ENODATA, os.getxattr, p, "user.nothing")
    os.setxattr(p, "user.other", b"x")
    expect_errno(errno.ENODATA, os.getxattr, p, "user.nothing")
    os.setxattr(p, "user.big", os.urandom(3000))
    expect_errno(errno.ENODATA, os.getxattr, p, "user.nothing")


def test_xattr_on_directory_survives_remount(mounted):
    d = mounted / "d"
    os.mkdir(d)
    big = os.urandom(3000)
    os.setxattr(d, "user.small", b"dirval")
    os.setxattr(d, "user.big", big)
    write_file(os.path.join(d, "child"), b"c")
    os.setxattr(os.path.join(d, "child"), "user.c", b"childval")
    mounted.remount()
    assert os.getxattr(d, "user.small") == b"dirval"
    assert os.getxattr(d, "user.big") == big
    assert sorted(os.listxattr(d)) == ["user.big", "user.small"]
    assert os.getxattr(os.path.join(d, "child"), "user.c") == b"childval"
    assert os.listdir(d) == ["child"]


def test_xattr_blocks_are_freed_with_the_file(mounted):
    base = free_blocks(mounted.mnt)
    os.mkdir(mounted / "x")
    for i in range(200):
        p = mounted.path("x", f"f{i}")
        write_file(p, b"")
        os.setxattr(p, "user.big", os.urandom(3000))
    used = base - free_blocks(mounted.mnt)
    assert used >= 100, f"200 x 3000-byte xattrs used only {used} blocks"
    for i in range(200):
        os.unlink(mounted.path("x", f"f{i}"))
    os.rmdir(mounted / "x")
    after = wait_free_blocks(mounted.mnt, base)
    assert abs(after - base) <= 8, f"free blocks {base} -> {after} after deleting"


def test_xattr_size_query_and_erange(mounted):
    import ctypes
    import ctypes.util
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.getxattr.restype = ctypes.c_ssize_t
    libc.getxattr.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
    p = mounted / "f"
    write_file(p, b"")
    os.setxattr(p, "user.v", b"0123456789")
    n = libc.getxattr(os.fsencode(p), b"user.v", None, 0)
    assert n == 10
    buf = ctypes.create_string_buffer(4)
    n = libc.getxattr(os.fsencode(p), b"user.v", buf, 4)
    assert n == -1 and ctypes.get_errno() == errno.ERANGE
