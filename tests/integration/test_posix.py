"""POSIX semantics, one test per point, with ext4 on Linux as the reference.

Every expectation here (errno, mode bits, link counts, timestamps...) is what ext4 does.
To check the expectations themselves, run the file against a real ext4 directory:

    truncate -s 256M /tmp/x.img && mkfs.ext4 -q /tmp/x.img && mkdir -p /tmp/ext4mnt \
        && mount -o loop /tmp/x.img /tmp/ext4mnt
    PMEMFUSE_IT_REFERENCE_DIR=/tmp/ext4mnt /usr/bin/python3 -m pytest \
        tests/integration/test_posix.py -q

In that mode the `fsm` fixture hands out a fresh directory on the reference filesystem
instead of a pmemfuse mount; tests that need the daemon itself (mount options, small
images, its fd table) are skipped.

Other users are simulated with `setpriv --reuid/--regid` (no passwd entry needed).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import resource
import select
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from pmemfuse_helpers import (GiB, MiB, expect_errno, free_blocks, raw_readdir, read_file,
                              run, wait_free_blocks, write_file, write_until_error)

REFERENCE_DIR = os.environ.get("PMEMFUSE_IT_REFERENCE_DIR")
PYTHON = sys.executable or "/usr/bin/python3"

UID, GID = 4242, 4242          # "the user"
UID2, GID2 = 4243, 4243        # "another user"
GROUP = 4300                   # a supplementary group

needs_daemon = pytest.mark.skipif(bool(REFERENCE_DIR),
                                  reason="needs the pmemfuse daemon (reference mode)")


# --------------------------------------------------------------------------------------
# Fixture: a pmemfuse mount, or a directory on the reference filesystem
# --------------------------------------------------------------------------------------

class RefDir:
    """Stands in for a Mount when the tests run on a reference filesystem."""

    pid = None

    def __init__(self, path):
        self.mnt = path

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def __truediv__(self, other):
        return os.path.join(self.mnt, other)

    def remount(self, args=None):
        os.sync()
        return self


@pytest.fixture
def fsm(request):
    """The filesystem under test: the `mounted` fixture (mount options from the
    mount_opts marker, fsck after a passing test), or a fresh reference directory."""
    if REFERENCE_DIR:
        d = tempfile.mkdtemp(prefix="posix-", dir=REFERENCE_DIR)
        os.chmod(d, 0o755)
        try:
            yield RefDir(d)
        finally:
            shutil.rmtree(d, ignore_errors=True)
    else:
        yield request.getfixturevalue("mounted")


# --------------------------------------------------------------------------------------
# libc wrappers (things the os module does not expose, or hides behind retries)
# --------------------------------------------------------------------------------------

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 0x01, 0x02, 0x10
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
SEEK_DATA, SEEK_HOLE = 3, 4


def _check(r, *what):
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), *[str(w) for w in what][:1])
    return r


def renameat2(old, new, flags=0):
    _check(libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new),
                          ctypes.c_uint(flags)), old)


libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def fallocate(fd, mode, offset, length):
    _check(libc.fallocate(fd, mode, offset, length), f"fallocate mode={mode:#x}")


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def utimensat(path, atime, mtime, flags=0):
    """atime/mtime: (sec, nsec) or UTIME_NOW / UTIME_OMIT."""
    def ts(v):
        return Timespec(0, v) if v in (UTIME_NOW, UTIME_OMIT) else Timespec(*v)
    times = (Timespec * 2)(ts(atime), ts(mtime))
    _check(libc.utimensat(AT_FDCWD, os.fsencode(path), times, flags), path)


libc.listxattr.restype = ctypes.c_ssize_t
libc.listxattr.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
libc.getxattr.restype = ctypes.c_ssize_t
libc.getxattr.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]


def c_listxattr(path, size):
    """(return value, errno) of listxattr(path, buf, size)."""
    buf = ctypes.create_string_buffer(max(size, 1))
    ctypes.set_errno(0)
    n = libc.listxattr(os.fsencode(path), buf if size else None, size)
    return n, (ctypes.get_errno() if n < 0 else 0), buf.raw[:max(n, 0)]


def c_getxattr(path, name, size):
    buf = ctypes.create_string_buffer(max(size, 1))
    ctypes.set_errno(0)
    n = libc.getxattr(os.fsencode(path), name.encode(), buf if size else None, size)
    return n, (ctypes.get_errno() if n < 0 else 0)


def ename(e: int) -> str:
    return errno.errorcode.get(e, str(e))


# --------------------------------------------------------------------------------------
# Running code as another user
# --------------------------------------------------------------------------------------

CHILD_PRELUDE = """\
import errno, os, sys, stat
def E(fn, *a, **k):
    try:
        fn(*a, **k)
        return 'OK'
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
"""


def setpriv(uid, gid, groups=()):
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}"]
    cmd += [f"--groups={','.join(str(g) for g in groups)}"] if groups else ["--clear-groups"]
    return cmd


def as_user(uid, gid, code, *args, groups=(), check=True, timeout=60):
    """Run Python CODE (after CHILD_PRELUDE, which defines E(fn, *args) -> 'OK' or an
    errno name) as uid/gid; returns stdout split into lines."""
    cp = run([*setpriv(uid, gid, groups), PYTHON, "-c", CHILD_PRELUDE + code, *map(str, args)],
             timeout=timeout, cwd="/")
    if check:
        assert cp.returncode == 0, f"child as uid {uid} failed: {cp.stderr}"
    return cp.stdout.split("\n")


def sh_as(uid, gid, script, cwd, groups=()):
    return run([*setpriv(uid, gid, groups), "sh", "-c", script], cwd=cwd, timeout=60)


def shared_dir(fsm, name="shared", mode=0o777):
    os.chmod(fsm.mnt, 0o755)
    d = fsm / name
    os.mkdir(d)
    os.chmod(d, mode)
    return d


def mode_of(p):
    return stat.S_IMODE(os.lstat(p).st_mode)


# Permission tests run twice: plain, and with -o acl (the kernel then leaves the umask and
# part of the mode handling to the filesystem).
ALLOW_OTHER = pytest.mark.parametrize("variant", [
    pytest.param("plain", marks=pytest.mark.mount_opts("-o", "allow_other")),
    pytest.param("acl", marks=pytest.mark.mount_opts("-o", "allow_other,acl")),
])


# ======================================================================================
# Permissions as a non-root user
# ======================================================================================

@ALLOW_OTHER
def test_new_files_get_caller_ids_and_the_kernel_umask(fsm, variant):
    d = shared_dir(fsm)
    cp = sh_as(UID, GID, "umask 027; touch f; mkdir d; mkfifo p; ln -s f l; "
                         "umask 0; touch g; mkdir e", cwd=d)
    assert cp.returncode == 0, cp.stderr
    want = {"f": 0o640, "d": 0o750, "p": 0o640, "g": 0o666, "e": 0o777}
    got = {n: oct(mode_of(os.path.join(d, n))) for n in want}
    assert got == {n: oct(m) for n, m in want.items()}
    for n in ("f", "d", "p", "l", "g", "e"):
        st = os.lstat(os.path.join(d, n))
        assert (st.st_uid, st.st_gid) == (UID, GID), (n, st.st_uid, st.st_gid)
    assert stat.S_ISDIR(os.stat(os.path.join(d, "d")).st_mode)
    assert stat.S_ISFIFO(os.stat(os.path.join(d, "p")).st_mode)
    assert os.readlink(os.path.join(d, "l")) == "f"


@ALLOW_OTHER
def test_only_the_owner_may_chmod(fsm, variant):
    d = shared_dir(fsm)
    f = os.path.join(d, "f")
    write_file(f, b"x", 0o666)
    os.chmod(f, 0o666)
    os.chown(f, UID, GID)
    out = as_user(UID2, GID2, "print(E(os.chmod, sys.argv[1], 0o777))", f)
    assert out[0] == "EPERM"
    assert mode_of(f) == 0o666
    out = as_user(UID, GID, "print(E(os.chmod, sys.argv[1], 0o600))", f)
    assert out[0] == "OK"
    assert mode_of(f) == 0o600
    os.chmod(f, 0o640)  # root may
    assert mode_of(f) == 0o640


@ALLOW_OTHER
def test_setgid_bit_is_dropped_when_a_non_member_owner_sets_it(fsm, variant):
    d = shared_dir(fsm)
    f, sub = os.path.join(d, "f"), os.path.join(d, "sub")
    write_file(f, b"x")
    os.mkdir(sub)
    for p in (f, sub):
        os.chown(p, UID, GROUP)
    code = ("for p in sys.argv[1:]:\n"
            "    os.chmod(p, 0o2755); print(oct(stat.S_IMODE(os.stat(p).st_mode)))")
    # not in GROUP: chmod succeeds, the setgid bit is silently dropped (files and dirs)
    assert as_user(UID, GID, code, f, sub)[:2] == ["0o755", "0o755"]
    # in GROUP: kept
    assert as_user(UID, GID, code, f, sub, groups=(GROUP,))[:2] == ["0o2755", "0o2755"]
    assert mode_of(f) == 0o2755


@ALLOW_OTHER
def test_non_root_cannot_give_files_away_or_pick_foreign_groups(fsm, variant):
    d = shared_dir(fsm)
    f = os.path.join(d, "f")
    write_file(f, b"x")
    os.chown(f, UID, GID)
    code = ("f = sys.argv[1]\n"
            "print(E(os.chown, f, %d, -1), E(os.chown, f, -1, %d), E(os.chown, f, %d, %d),"
            " E(os.chown, f, -1, %d))" % (UID2, 7777, UID, GID, GROUP))
    out = as_user(UID, GID, code, f, groups=(GID, GROUP))
    # give away: EPERM; foreign group: EPERM; no-op chown: OK; own supplementary group: OK
    assert out[0] == "EPERM EPERM OK OK", out
    st = os.stat(f)
    assert (st.st_uid, st.st_gid) == (UID, GROUP)
    out = as_user(UID2, GID2, "print(E(os.chown, sys.argv[1], -1, %d))" % GID2, f)
    assert out[0] == "EPERM"  # not the owner at all
    assert os.stat(f).st_gid == GROUP


@ALLOW_OTHER
def test_chown_by_root_clears_setuid_and_setgid_of_executables(fsm, variant):
    cases = {  # mode before -> mode after `chown UID2:GID2` by root (as ext4)
        "suid_sgid_exec": (0o6755, 0o0755),
        "suid_noexec": (0o4644, 0o0644),
        "sgid_noexec": (0o2644, 0o2644),   # setgid without group-exec is kept
        "sgid_exec": (0o2775, 0o0775),
    }
    for name, (before, _) in cases.items():
        p = fsm / name
        write_file(p, b"#!/bin/sh\n")
        os.chown(p, UID, GID)
        os.chmod(p, before)
        assert mode_of(p) == before
    os.mkdir(fsm / "dir")
    os.chmod(fsm / "dir", 0o6775)
    for name in cases:
        os.chown(fsm / name, UID2, GID2)
    os.chown(fsm / "dir", UID2, GID2)
    got = {n: oct(mode_of(fsm / n)) for n in cases}
    assert got == {n: oct(after) for n, (_, after) in cases.items()}
    assert mode_of(fsm / "dir") == 0o6775  # directories keep them
    st = os.stat(fsm / "suid_sgid_exec")
    assert (st.st_uid, st.st_gid) == (UID2, GID2)


@ALLOW_OTHER
def test_chown_to_the_same_owner_by_root_still_clears_setuid(fsm, variant):
    p = fsm / "f"
    write_file(p, b"x")
    os.chmod(p, 0o4755)
    os.chown(p, -1, -1)
    assert mode_of(p) == 0o755


@ALLOW_OTHER
def test_write_by_non_root_clears_setuid_and_setgid(fsm, variant):
    d = shared_dir(fsm)
    victim = os.path.join(d, "victim")   # owned by UID, world-writable, written by UID2
    own = os.path.join(d, "own")         # owned by UID, written by its owner
    trunc = os.path.join(d, "trunc")     # owned by UID, truncated by UID2
    rootw = os.path.join(d, "rootw")     # written by root: CAP_FSETID keeps the bits
    for p, m in ((victim, 0o6777), (own, 0o4755), (trunc, 0o6777), (rootw, 0o6777)):
        write_file(p, b"0123456789")
        os.chown(p, UID, GID)
        os.chmod(p, m)
    out = as_user(UID2, GID2,
                  "fd = os.open(sys.argv[1], os.O_WRONLY); os.write(fd, b'X'); os.close(fd)\n"
                  "os.truncate(sys.argv[2], 3); print('done')", victim, trunc)
    assert out[0] == "done"
    as_user(UID, GID, "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)\n"
                      "os.write(fd, b'Y'); os.close(fd)", own)
    with open(rootw, "r+b") as f:
        f.write(b"R")
    assert read_file(victim) == b"X123456789"
    assert read_file(own) == b"0123456789Y"
    assert read_file(trunc) == b"012"
    got = [oct(mode_of(p)) for p in (victim, own, trunc, rootw)]
    assert got == [oct(0o777), oct(0o755), oct(0o777), oct(0o6777)]


@ALLOW_OTHER
def test_setgid_directory_passes_its_group_and_setgid_bit_on(fsm, variant):
    d = shared_dir(fsm, "sgid")
    os.chown(d, 0, GROUP)
    os.chmod(d, 0o2777)
    script = ("umask 022; touch f; mkdir sub; mkdir sub/deeper; touch sub/g; "
              "python3 -c \"import os; os.close(os.open('x', os.O_CREAT|os.O_WRONLY, 0o2755))\"")
    cp = sh_as(UID, GID, script.replace("python3", PYTHON), cwd=d)
    assert cp.returncode == 0, cp.stderr
    def gm(*p):
        st = os.stat(os.path.join(d, *p))
        return st.st_uid, st.st_gid, oct(stat.S_IMODE(st.st_mode))
    assert gm("f") == (UID, GROUP, oct(0o644))
    assert gm("sub") == (UID, GROUP, oct(0o2755))
    assert gm("sub", "deeper") == (UID, GROUP, oct(0o2755))
    assert gm("sub", "g") == (UID, GROUP, oct(0o644))
    # the creator is not in GROUP: a setgid bit it asks for on a file is dropped
    assert gm("x") == (UID, GROUP, oct(0o755))
    # root: same inheritance
    os.mkdir(os.path.join(d, "rootsub"), 0o755)
    write_file(os.path.join(d, "rootfile"), b"")
    assert gm("rootsub")[1:] == (GROUP, oct(0o2755))
    assert gm("rootfile")[1] == GROUP
    # a plain directory does not
    plain = os.path.join(d, "sub", "plain")
    os.mkdir(plain)
    os.chmod(plain, 0o777)
    os.chown(plain, 0, GROUP)
    assert as_user(UID, GID, "os.mkdir(sys.argv[1] + '/p'); print('ok')", plain)[0] == "ok"
    st = os.stat(os.path.join(plain, "p"))
    assert st.st_gid == GID and not st.st_mode & stat.S_ISGID


@ALLOW_OTHER
def test_private_directory_of_another_user_gives_eacces(fsm, variant):
    d = shared_dir(fsm)
    priv = os.path.join(d, "priv")
    os.mkdir(priv)
    write_file(os.path.join(priv, "f"), b"secret", 0o644)
    os.chown(os.path.join(priv, "f"), UID, GID)
    os.chown(priv, UID, GID)
    os.chmod(priv, 0o700)
    code = ("p = sys.argv[1]\n"
            "print(E(os.listdir, p), E(os.stat, p + '/f'), E(open, p + '/f', 'rb'),"
            " E(os.mkdir, p + '/new'), E(os.unlink, p + '/f'), E(os.chdir, p))")
    assert as_user(UID2, GID2, code, priv)[0] == "EACCES " * 5 + "EACCES"
    assert as_user(UID, GID, code.replace("os.mkdir", "os.stat"), priv)[0] == \
        "OK OK OK ENOENT OK OK"
    assert not os.path.exists(os.path.join(priv, "f"))


@ALLOW_OTHER
def test_sticky_directory_protects_other_users_files(fsm, variant):
    d = shared_dir(fsm, "tmp", 0o1777)
    as_user(UID, GID, "open(sys.argv[1] + '/mine', 'w').write('m')", d)
    code = ("d = sys.argv[1]\n"
            "print(E(os.unlink, d + '/mine'), E(os.rename, d + '/mine', d + '/x'),"
            " E(os.close, os.open(d + '/other', os.O_CREAT | os.O_WRONLY)),"
            " E(os.rename, d + '/other', d + '/other2'))")
    assert as_user(UID2, GID2, code, d)[0] == "EPERM EPERM OK OK"
    assert read_file(os.path.join(d, "mine")) == b"m"
    assert as_user(UID, GID, "print(E(os.unlink, sys.argv[1] + '/mine'))", d)[0] == "OK"


@ALLOW_OTHER
def test_utimes_permissions_owner_vs_writer(fsm, variant):
    d = shared_dir(fsm)
    f = os.path.join(d, "f")
    write_file(f, b"x")
    os.chown(f, UID, GID)
    os.chmod(f, 0o666)
    os.utime(f, ns=(10**18, 10**18))
    code = ("f = sys.argv[1]\n"
            "print(E(os.utime, f), E(os.utime, f, (5, 5)))")
    # a writer that is not the owner may set "now" but no explicit times
    assert as_user(UID2, GID2, code, f)[0] == "OK EPERM"
    assert os.stat(f).st_mtime_ns > 10**18  # "now" was applied, (5, 5) was not
    assert as_user(UID, GID, code, f)[0] == "OK OK"
    assert os.stat(f).st_mtime_ns == 5 * 10**9
    os.chmod(f, 0o644)
    assert as_user(UID2, GID2, code, f)[0] == "EACCES EPERM"


# ======================================================================================
# rename
# ======================================================================================

def test_rename_across_directories_moves_the_inode(fsm):
    os.mkdir(fsm / "a")
    os.mkdir(fsm / "b")
    write_file(fsm.path("a", "f"), b"data")
    ino = os.stat(fsm.path("a", "f")).st_ino
    os.rename(fsm.path("a", "f"), fsm.path("b", "g"))
    assert os.listdir(fsm / "a") == []
    assert os.listdir(fsm / "b") == ["g"]
    assert os.stat(fsm.path("b", "g")).st_ino == ino
    assert read_file(fsm.path("b", "g")) == b"data"
    fsm.remount()
    assert read_file(fsm.path("b", "g")) == b"data"
    assert os.listdir(fsm / "a") == []


def test_rename_over_existing_file_replaces_it_and_drops_its_link(fsm):
    write_file(fsm / "src", b"new")
    write_file(fsm / "dst", b"old")
    os.link(fsm / "dst", fsm / "dst2")
    assert os.stat(fsm / "dst2").st_nlink == 2
    fd = os.open(fsm / "dst", os.O_RDONLY)
    try:
        os.rename(fsm / "src", fsm / "dst")
        assert read_file(fsm / "dst") == b"new"
        assert os.stat(fsm / "dst2").st_nlink == 1
        assert read_file(fsm / "dst2") == b"old"
        assert os.pread(fd, 10, 0) == b"old"  # the replaced inode is still open
    finally:
        os.close(fd)
    assert sorted(os.listdir(fsm.mnt)) == ["dst", "dst2"]


def test_rename_onto_a_hard_link_of_itself_is_a_no_op(fsm):
    write_file(fsm / "a", b"x")
    os.link(fsm / "a", fsm / "b")
    os.rename(fsm / "a", fsm / "b")
    assert sorted(os.listdir(fsm.mnt)) == ["a", "b"]
    assert os.stat(fsm / "a").st_nlink == 2
    os.rename(fsm / "a", fsm / "a")
    assert sorted(os.listdir(fsm.mnt)) == ["a", "b"]


def test_rename_directory_over_empty_directory(fsm):
    os.makedirs(fsm.path("a", "src", "inner"))
    os.makedirs(fsm.path("b", "victim"))
    ino = os.stat(fsm.path("a", "src")).st_ino
    os.rename(fsm.path("a", "src"), fsm.path("b", "victim"))
    assert os.listdir(fsm / "a") == []
    assert os.listdir(fsm / "b") == ["victim"]
    assert os.stat(fsm.path("b", "victim")).st_ino == ino
    assert os.listdir(fsm.path("b", "victim")) == ["inner"]
    assert os.stat(fsm / "a").st_nlink == 2
    assert os.stat(fsm / "b").st_nlink == 3
    assert raw_readdir(fsm.path("b", "victim"))[".."][0] == os.stat(fsm / "b").st_ino
    fsm.remount()
    assert os.stat(fsm / "a").st_nlink == 2
    assert os.stat(fsm / "b").st_nlink == 3
    assert raw_readdir(fsm.path("b", "victim"))[".."][0] == os.stat(fsm / "b").st_ino


def test_rename_errors(fsm):
    os.makedirs(fsm.path("d", "sub"))
    os.makedirs(fsm.path("full", "x"))
    os.mkdir(fsm / "empty")
    write_file(fsm / "f", b"f")
    # a directory into its own subdirectory
    expect_errno(errno.EINVAL, os.rename, fsm / "d", fsm.path("d", "sub", "d2"))
    expect_errno(errno.EINVAL, os.rename, fsm / "d", fsm.path("d", "d2"))
    # onto an ancestor
    expect_errno(errno.ENOTEMPTY, os.rename, fsm.path("d", "sub"), fsm / "d")
    # over a non-empty directory
    expect_errno(errno.ENOTEMPTY, os.rename, fsm / "empty", fsm / "full")
    expect_errno(errno.ENOTEMPTY, os.rename, fsm / "d", fsm / "full")
    # file over directory, directory over file
    expect_errno(errno.EISDIR, os.rename, fsm / "f", fsm / "empty")
    expect_errno(errno.ENOTDIR, os.rename, fsm / "empty", fsm / "f")
    # missing source, missing target parent, target parent a file
    expect_errno(errno.ENOENT, os.rename, fsm / "nope", fsm / "x")
    expect_errno(errno.ENOENT, os.rename, fsm / "f", fsm.path("nodir", "x"))
    expect_errno(errno.ENOTDIR, os.rename, fsm / "f", fsm.path("f", "x"))
    # nothing moved
    assert sorted(os.listdir(fsm.mnt)) == ["d", "empty", "f", "full"]
    assert os.listdir(fsm / "d") == ["sub"]
    assert os.listdir(fsm / "full") == ["x"]
    assert read_file(fsm / "f") == b"f"
    assert os.stat(fsm.mnt).st_nlink == 5


def test_rename_noreplace(fsm):
    write_file(fsm / "a", b"A")
    write_file(fsm / "b", b"B")
    os.mkdir(fsm / "d")
    os.mkdir(fsm / "e")
    expect_errno(errno.EEXIST, renameat2, fsm / "a", fsm / "b", RENAME_NOREPLACE)
    expect_errno(errno.EEXIST, renameat2, fsm / "d", fsm / "e", RENAME_NOREPLACE)
    expect_errno(errno.EEXIST, renameat2, fsm / "a", fsm / "e", RENAME_NOREPLACE)
    assert read_file(fsm / "a") == b"A" and read_file(fsm / "b") == b"B"
    renameat2(fsm / "a", fsm.path("d", "a"), RENAME_NOREPLACE)
    assert read_file(fsm.path("d", "a")) == b"A"
    expect_errno(errno.ENOENT, os.stat, fsm / "a")
    expect_errno(errno.EINVAL, renameat2, fsm / "b", fsm / "c",
                 RENAME_NOREPLACE | RENAME_EXCHANGE)


def test_rename_exchange_two_files_across_directories(fsm):
    os.mkdir(fsm / "a")
    os.mkdir(fsm / "b")
    write_file(fsm.path("a", "x"), b"xxx")
    write_file(fsm.path("b", "y"), b"yy")
    ix, iy = os.stat(fsm.path("a", "x")).st_ino, os.stat(fsm.path("b", "y")).st_ino
    renameat2(fsm.path("a", "x"), fsm.path("b", "y"), RENAME_EXCHANGE)
    assert os.stat(fsm.path("a", "x")).st_ino == iy
    assert os.stat(fsm.path("b", "y")).st_ino == ix
    assert read_file(fsm.path("a", "x")) == b"yy"
    assert read_file(fsm.path("b", "y")) == b"xxx"
    assert os.listdir(fsm / "a") == ["x"] and os.listdir(fsm / "b") == ["y"]
    expect_errno(errno.ENOENT, renameat2, fsm.path("a", "x"), fsm.path("b", "z"),
                 RENAME_EXCHANGE)
    fsm.remount()
    assert read_file(fsm.path("a", "x")) == b"yy"
    assert read_file(fsm.path("b", "y")) == b"xxx"


def test_rename_exchange_directories_updates_dotdot(fsm):
    os.makedirs(fsm.path("a", "x", "inx"))
    os.makedirs(fsm.path("b", "c", "y"))
    write_file(fsm.path("b", "c", "y", "iny"), b"")
    ia, ic = os.stat(fsm / "a").st_ino, os.stat(fsm.path("b", "c")).st_ino
    ix, iy = os.stat(fsm.path("a", "x")).st_ino, os.stat(fsm.path("b", "c", "y")).st_ino
    renameat2(fsm.path("a", "x"), fsm.path("b", "c", "y"), RENAME_EXCHANGE)

    def check():
        assert os.stat(fsm.path("a", "x")).st_ino == iy
        assert os.stat(fsm.path("b", "c", "y")).st_ino == ix
        assert os.listdir(fsm.path("a", "x")) == ["iny"]
        assert os.listdir(fsm.path("b", "c", "y")) == ["inx"]
        assert raw_readdir(fsm.path("a", "x"))[".."][0] == ia
        assert raw_readdir(fsm.path("b", "c", "y"))[".."][0] == ic
        assert os.stat(fsm.path("a", "x", "..")).st_ino == ia
        assert os.stat(fsm.path("b", "c", "y", "..")).st_ino == ic
        # both parents lost one subdirectory and gained one
        assert os.stat(fsm / "a").st_nlink == 3
        assert os.stat(fsm.path("b", "c")).st_nlink == 3
        assert os.stat(fsm.path("a", "x")).st_nlink == 2
        assert os.stat(fsm.path("b", "c", "y")).st_nlink == 3
    check()
    fsm.remount()
    check()


def test_rename_exchange_directory_with_file_fixes_parent_link_counts(fsm):
    os.makedirs(fsm.path("a", "dir", "inner"))
    os.mkdir(fsm / "b")
    write_file(fsm.path("b", "file"), b"f")
    assert os.stat(fsm / "a").st_nlink == 3 and os.stat(fsm / "b").st_nlink == 2
    renameat2(fsm.path("a", "dir"), fsm.path("b", "file"), RENAME_EXCHANGE)
    assert os.stat(fsm / "a").st_nlink == 2
    assert os.stat(fsm / "b").st_nlink == 3
    assert raw_readdir(fsm.path("b", "file"))[".."][0] == os.stat(fsm / "b").st_ino
    assert read_file(fsm.path("a", "dir")) == b"f"
    fsm.remount()
    assert os.stat(fsm / "a").st_nlink == 2
    assert os.stat(fsm / "b").st_nlink == 3


def test_directory_moves_keep_parent_link_counts(fsm):
    for d in ("p1", "p2", "p3"):
        os.mkdir(fsm / d)
    for i in range(3):
        os.mkdir(fsm.path("p1", f"s{i}"))
    assert os.stat(fsm / "p1").st_nlink == 5
    os.rename(fsm.path("p1", "s0"), fsm.path("p2", "s0"))
    os.rename(fsm.path("p1", "s1"), fsm.path("p2", "s0", "s1"))   # deeper
    os.rename(fsm.path("p1", "s2"), fsm.path("p1", "s2renamed"))  # same parent
    os.rename(fsm / "p3", fsm.path("p2", "s0", "s1", "p3"))
    nl = {p: os.stat(fsm.path(*p.split("/"))).st_nlink
          for p in ("p1", "p2", "p2/s0", "p2/s0/s1", "p2/s0/s1/p3")}
    want = {"p1": 3, "p2": 3, "p2/s0": 3, "p2/s0/s1": 3, "p2/s0/s1/p3": 2}
    assert nl == want
    assert os.stat(fsm.mnt).st_nlink == 4
    fsm.remount()
    assert {p: os.stat(fsm.path(*p.split("/"))).st_nlink for p in want} == want
    assert os.stat(fsm.mnt).st_nlink == 4


# ======================================================================================
# Hard links
# ======================================================================================

def test_hard_link_counts_go_up_and_down(fsm):
    p = fsm / "f"
    write_file(p, b"shared")
    os.mkdir(fsm / "d")
    names = [fsm / "l1", fsm.path("d", "l2"), fsm.path("d", "l3")]
    for i, n in enumerate(names):
        os.link(p, n)
        assert os.stat(p).st_nlink == i + 2
    assert {os.stat(n).st_ino for n in names} == {os.stat(p).st_ino}
    expect_errno(errno.EEXIST, os.link, p, names[0])
    os.unlink(p)
    assert os.stat(names[0]).st_nlink == 3
    os.unlink(names[1])
    assert os.stat(names[2]).st_nlink == 2
    with open(names[0], "ab") as f:
        f.write(b"+")
    assert read_file(names[2]) == b"shared+"
    fsm.remount()
    assert os.stat(names[2]).st_nlink == 2


def test_hard_link_to_directory_gives_eperm(fsm):
    os.mkdir(fsm / "d")
    expect_errno(errno.EPERM, os.link, fsm / "d", fsm / "d2")
    expect_errno(errno.EPERM, os.link, fsm.mnt, fsm / "root2")
    assert os.stat(fsm / "d").st_nlink == 2
    assert os.listdir(fsm.mnt) == ["d"]


def test_hard_link_to_symlink_links_the_symlink_itself(fsm):
    write_file(fsm / "target", b"t")
    os.symlink("target", fsm / "sl")
    os.link(fsm / "sl", fsm / "sl2", follow_symlinks=False)
    assert os.path.islink(fsm / "sl2")
    assert os.lstat(fsm / "sl").st_nlink == 2
    assert os.lstat(fsm / "sl").st_ino == os.lstat(fsm / "sl2").st_ino
    assert os.stat(fsm / "target").st_nlink == 1


@pytest.mark.slow
@pytest.mark.timeout_s(240)
def test_hard_link_limit_is_65000_emlink(fsm):
    p = fsm / "f"
    write_file(p, b"x")
    os.mkdir(fsm / "links")
    t0 = time.monotonic()
    for i in range(64999):
        os.link(p, fsm.path("links", str(i)))
    assert os.stat(p).st_nlink == 65000
    expect_errno(errno.EMLINK, os.link, p, fsm / "one_too_many")
    assert os.stat(p).st_nlink == 65000
    os.unlink(fsm.path("links", "0"))
    os.link(p, fsm / "fits_again")
    assert os.stat(p).st_nlink == 65000
    assert time.monotonic() - t0 < 120, "65000 links took too long"


# ======================================================================================
# Special files
# ======================================================================================

def test_device_nodes_report_type_and_rdev(fsm):
    os.mknod(fsm / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(fsm / "blk", stat.S_IFBLK | 0o600, os.makedev(8, 17))
    os.mknod(fsm / "big", stat.S_IFCHR | 0o600, os.makedev(4095, 1048575))
    for name, kind, rdev in (("null", stat.S_ISCHR, os.makedev(1, 3)),
                             ("blk", stat.S_ISBLK, os.makedev(8, 17)),
                             ("big", stat.S_ISCHR, os.makedev(4095, 1048575))):
        st = os.lstat(fsm / name)
        assert kind(st.st_mode), (name, oct(st.st_mode))
        assert st.st_rdev == rdev, (name, os.major(st.st_rdev), os.minor(st.st_rdev))
        assert st.st_size == 0
    assert mode_of(fsm / "blk") == 0o600
    fsm.remount()
    assert os.lstat(fsm / "big").st_rdev == os.makedev(4095, 1048575)


def test_fifo_passes_data_between_writer_and_reader(fsm):
    p = fsm / "fifo"
    os.mkfifo(p, 0o600)
    assert stat.S_ISFIFO(os.lstat(p).st_mode)
    payload = os.urandom(200_000)  # more than a pipe buffer
    err = []

    def writer():
        try:
            with open(p, "wb") as f:
                f.write(payload)
        except Exception as e:  # pragma: no cover - reported below
            err.append(e)

    t = threading.Thread(target=writer)
    t.start()
    with open(p, "rb") as f:
        got = f.read()
    t.join(30)
    assert not err, err
    assert got == payload
    assert os.lstat(p).st_size == 0


def test_unix_socket_bound_in_the_mount(fsm):
    p = fsm / "sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        srv.bind(p)
        srv.listen(1)
        assert stat.S_ISSOCK(os.lstat(p).st_mode)
        cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        cli.settimeout(10)
        cli.connect(p)
        conn, _ = srv.accept()
        cli.sendall(b"ping")
        assert conn.recv(4) == b"ping"
        conn.close()
        cli.close()
    finally:
        srv.close()
    assert stat.S_ISSOCK(os.lstat(p).st_mode)
    expect_errno(errno.ENXIO, os.open, p, os.O_RDONLY)
    os.unlink(p)
    assert os.listdir(fsm.mnt) == []


# ======================================================================================
# Symlinks and name lengths
# ======================================================================================

def test_symlink_loops_give_eloop(fsm):
    os.symlink("b", fsm / "a")
    os.symlink("a", fsm / "b")
    os.symlink("self", fsm / "self")
    for n in ("a", "b", "self"):
        expect_errno(errno.ELOOP, os.open, fsm / n, os.O_RDONLY)
        expect_errno(errno.ELOOP, os.stat, fsm / n)
    expect_errno(errno.ELOOP, os.open, fsm / "a", os.O_CREAT | os.O_WRONLY, 0o644)
    expect_errno(errno.ELOOP, os.open, fsm / "self", os.O_RDONLY | os.O_NOFOLLOW)
    # a chain of 40 links resolves, 41 does not (MAXSYMLINKS)
    write_file(fsm / "end", b"end")
    prev = "end"
    for i in range(41):
        os.symlink(prev, fsm / f"c{i}")
        prev = f"c{i}"
    assert read_file(fsm / "c39") == b"end"
    expect_errno(errno.ELOOP, read_file, fsm / "c40")


def test_symlink_target_4095_works_4096_is_enametoolong(fsm):
    t = "x" * 4000 + "/" + "y" * 94
    assert len(t) == 4095
    os.symlink(t, fsm / "long")
    assert os.readlink(fsm / "long") == t
    assert os.lstat(fsm / "long").st_size == 4095
    expect_errno(errno.ENAMETOOLONG, os.symlink, t + "z", fsm / "toolong")
    fsm.remount()
    assert os.readlink(fsm / "long") == t
    assert not os.path.lexists(fsm / "toolong")


def test_names_of_255_bytes_work_and_256_give_enametoolong(fsm):
    n255, n256 = "n" * 255, "m" * 256
    u255 = "é" * 127 + "x"            # 255 bytes of UTF-8
    write_file(fsm / "src", b"s")
    os.mkdir(fsm / "dsrc")
    ops = {
        "create": lambda n: os.close(os.open(fsm / n, os.O_CREAT | os.O_WRONLY, 0o644)),
        "mkdir": lambda n: os.mkdir(fsm / n),
        "symlink": lambda n: os.symlink("src", fsm / n),
        "link": lambda n: os.link(fsm / "src", fsm / n),
        "mknod": lambda n: os.mkfifo(fsm / n),
        "rename": lambda n: os.rename(fsm / "dsrc", fsm / n),
    }
    for what, op in ops.items():
        expect_errno(errno.ENAMETOOLONG, op, n256)
        expect_errno(errno.ENAMETOOLONG, op, "é" * 128)
        name = f"{what[:3]}{n255[3:]}"
        op(name)
        assert os.path.lexists(fsm / name), what
        if what == "rename":
            os.rename(fsm / name, fsm / "dsrc")
    os.close(os.open(fsm / u255, os.O_CREAT | os.O_WRONLY, 0o644))
    expect_errno(errno.ENAMETOOLONG, os.stat, fsm / n256)
    expect_errno(errno.ENAMETOOLONG, os.rename, fsm / "src", fsm / n256)
    names = set(os.listdir(fsm.mnt))
    assert u255 in names
    assert len(names) == 2 + 5 + 1
    assert all(len(os.fsencode(n)) <= 255 for n in names)


# ======================================================================================
# Timestamps
# ======================================================================================

TICK = 0.02


def times(p):
    st = os.lstat(p)
    return st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns


def test_ctime_changes_on_metadata_changes_mtime_does_not(fsm):
    p = fsm / "f"
    write_file(p, b"x")
    os.mkdir(fsm / "d")
    moved = fsm.path("d", "f2")
    ops = [  # (what, operation, where the inode is afterwards)
        ("chmod", lambda: os.chmod(p, 0o600), p),
        ("chown", lambda: os.chown(p, 1, 1), p),
        ("link", lambda: os.link(p, fsm / "l"), p),
        ("unlink-other-link", lambda: os.unlink(fsm / "l"), p),
        ("rename", lambda: os.rename(p, moved), moved),
        ("rename-back", lambda: os.rename(moved, p), p),
        ("setxattr", lambda: os.setxattr(p, "user.k", b"v"), p),
        ("removexattr", lambda: os.removexattr(p, "user.k"), p),
    ]
    where = p
    for what, op, after in ops:
        _, m0, c0 = times(where)
        time.sleep(TICK)
        op()
        _, m1, c1 = times(after)
        where = after
        assert c1 > c0, f"{what}: ctime did not change"
        assert m1 == m0, f"{what}: mtime changed"


def test_write_and_truncate_change_mtime_and_ctime(fsm):
    p = fsm / "f"
    write_file(p, b"0123456789")
    for what, op in [
        ("write", lambda: os.pwrite(fd, b"ab", 3)),
        ("append", lambda: os.write(afd, b"zz")),
        ("ftruncate-down", lambda: os.ftruncate(fd, 5)),
        ("truncate-up", lambda: os.truncate(p, 9000)),
        ("truncate-down", lambda: os.truncate(p, 1)),
        ("open-O_TRUNC", lambda: os.close(os.open(p, os.O_WRONLY | os.O_TRUNC))),
    ]:
        fd = os.open(p, os.O_RDWR)
        afd = os.open(p, os.O_WRONLY | os.O_APPEND)
        try:
            _, m0, c0 = times(p)
            time.sleep(TICK)
            op()
        finally:
            os.close(fd)
            os.close(afd)
        _, m1, c1 = times(p)
        assert m1 > m0, f"{what}: mtime did not change"
        assert c1 > c0, f"{what}: ctime did not change"
        assert abs(m1 - time.time_ns()) < 5 * 10**9


def test_parent_mtime_and_ctime_change_on_create_and_unlink(fsm):
    d = fsm / "d"
    os.mkdir(d)
    ops = [
        ("create", lambda: write_file(os.path.join(d, "f"), b"")),
        ("mkdir", lambda: os.mkdir(os.path.join(d, "sub"))),
        ("symlink", lambda: os.symlink("f", os.path.join(d, "sl"))),
        ("link", lambda: os.link(os.path.join(d, "f"), os.path.join(d, "hl"))),
        ("rename-within", lambda: os.rename(os.path.join(d, "hl"), os.path.join(d, "hl2"))),
        ("unlink", lambda: os.unlink(os.path.join(d, "f"))),
        ("rmdir", lambda: os.rmdir(os.path.join(d, "sub"))),
        ("rename-out", lambda: os.rename(os.path.join(d, "sl"), fsm / "sl")),
    ]
    for what, op in ops:
        _, m0, c0 = times(d)
        time.sleep(TICK)
        op()
        _, m1, c1 = times(d)
        assert m1 > m0, f"{what}: parent mtime did not change"
        assert c1 > c0, f"{what}: parent ctime did not change"


def test_nanosecond_timestamps_round_trip(fsm):
    p = fsm / "f"
    write_file(p, b"")
    os.mkdir(fsm / "d")
    os.symlink("f", fsm / "l")
    for path, (at, mt) in ((p, (1_700_000_000_123_456_789, 1_600_000_000_000_000_001)),
                           (fsm / "d", (999_999_999, 2_000_000_000_999_999_999))):
        os.utime(path, ns=(at, mt))
        assert times(path)[:2] == (at, mt)
    os.utime(fsm / "l", ns=(5_000_000_007, 6_000_000_008), follow_symlinks=False)
    assert times(fsm / "l")[:2] == (5_000_000_007, 6_000_000_008)
    assert times(p)[:2] == (1_700_000_000_123_456_789, 1_600_000_000_000_000_001)
    fsm.remount()
    assert times(p)[:2] == (1_700_000_000_123_456_789, 1_600_000_000_000_000_001)
    assert times(fsm / "l")[:2] == (5_000_000_007, 6_000_000_008)


def test_utimensat_utime_now_and_utime_omit(fsm):
    p = fsm / "f"
    write_file(p, b"x")
    A, M = (1_000_000_000, 111), (2_000_000_000, 222)
    utimensat(p, A, M)
    assert times(p)[:2] == (1_000_000_000_000_000_111, 2_000_000_000_000_000_222)
    _, _, c0 = times(p)
    time.sleep(TICK)
    utimensat(p, UTIME_OMIT, UTIME_OMIT)
    assert times(p) == (1_000_000_000_000_000_111, 2_000_000_000_000_000_222, c0)
    t0 = time.time_ns()
    utimensat(p, UTIME_OMIT, UTIME_NOW)
    a, m, c = times(p)
    assert a == 1_000_000_000_000_000_111
    assert abs(m - t0) < 2 * 10**9 and c > c0
    utimensat(p, UTIME_NOW, UTIME_OMIT)
    a2, m2, _ = times(p)
    assert abs(a2 - t0) < 2 * 10**9 and m2 == m
    utimensat(p, A, UTIME_OMIT)
    assert times(p)[:2] == (1_000_000_000_000_000_111, m)
    utimensat(p, UTIME_OMIT, M)
    assert times(p)[:2] == (1_000_000_000_000_000_111, 2_000_000_000_000_000_222)
    expect_errno(errno.EINVAL, utimensat, p, (0, 1_000_000_000), UTIME_OMIT)


def _read_all(p):
    fd = os.open(p, os.O_RDONLY)
    try:
        return os.read(fd, 1 << 20)
    finally:
        os.close(fd)


def test_atime_relatime(fsm):
    p = fsm / "f"
    write_file(p, b"hello" * 1000)
    now = time.time_ns()
    # atime older than mtime: a read updates it
    os.utime(p, ns=(now - 100 * 10**9, now - 50 * 10**9))
    _, m0, c0 = times(p)
    time.sleep(TICK)
    assert _read_all(p) == b"hello" * 1000
    a1, m1, c1 = times(p)
    assert abs(a1 - time.time_ns()) < 5 * 10**9, "read did not update an atime <= mtime"
    assert (m1, c1) == (m0, c0), "an atime update must not touch mtime/ctime"
    # atime newer than mtime and younger than a day: no update
    time.sleep(TICK)
    _read_all(p)
    assert times(p)[0] == a1, "second read updated atime again (relatime)"
    # atime == mtime: update
    os.utime(p, ns=(now - 10 * 10**9, now - 10 * 10**9))
    _read_all(p)
    assert times(p)[0] > now - 10 * 10**9
    # atime newer than mtime but older than 24 h: update
    os.utime(p, ns=(now - 2 * 86400 * 10**9, now - 3 * 86400 * 10**9))
    _read_all(p)
    assert times(p)[0] > now - 60 * 10**9
    # readdir counts as a read of the directory
    d = fsm / "d"
    os.mkdir(d)
    os.utime(d, ns=(now - 100 * 10**9, now - 50 * 10**9))
    os.listdir(d)
    assert times(d)[0] > now - 60 * 10**9, "readdir did not update an old directory atime"


# ======================================================================================
# Files: O_APPEND, O_TRUNC, O_EXCL, holes, big files, truncate
# ======================================================================================

APPEND_CHILD = """\
import os, sys
path, who, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fd = os.open(path, os.O_WRONLY | os.O_APPEND)
for i in range(n):
    head = b'<%d:%06d>' % (who, i)
    rec = head + bytes([65 + who]) * (size - len(head) - 1) + b'\\n'
    assert os.write(fd, rec) == size
os.close(fd)
"""


def test_o_append_concurrent_writers_never_tear_records(fsm):
    p = fsm / "log"
    write_file(p, b"")
    nproc, nrec, size = 4, 1500, 777
    procs = [subprocess.Popen([PYTHON, "-c", APPEND_CHILD, p, str(w), str(nrec), str(size)])
             for w in range(nproc)]
    for pr in procs:
        assert pr.wait(timeout=120) == 0
    data = read_file(p)
    assert len(data) == nproc * nrec * size
    seen = {w: [] for w in range(nproc)}
    for off in range(0, len(data), size):
        rec = data[off:off + size]
        assert rec[:1] == b"<" and rec[-1:] == b"\n", f"torn record at {off}"
        who = int(rec[1:2])
        head = b"<%d:%06d>" % (who, int(rec[3:9]))
        assert rec == head + bytes([65 + who]) * (size - len(head) - 1) + b"\n", \
            f"record at {off} is mixed"
        seen[who].append(int(rec[3:9]))
    for w in range(nproc):
        assert seen[w] == list(range(nrec)), f"writer {w}: records lost or reordered"


def test_o_trunc_empties_the_file_and_frees_blocks(fsm):
    p = fsm / "f"
    write_file(p, os.urandom(1 * MiB))
    assert os.stat(p).st_blocks >= 2048
    fd = os.open(p, os.O_RDWR | os.O_TRUNC)
    try:
        assert os.fstat(fd).st_size == 0
        os.write(fd, b"new")
    finally:
        os.close(fd)
    assert read_file(p) == b"new"
    assert os.stat(p).st_blocks <= 8


def test_o_excl_on_existing_names_gives_eexist(fsm):
    write_file(fsm / "f", b"keep")
    os.mkdir(fsm / "d")
    os.symlink("nowhere", fsm / "dangling")
    for n in ("f", "d", "dangling"):
        expect_errno(errno.EEXIST, os.open, fsm / n, os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                     0o644)
    assert read_file(fsm / "f") == b"keep"
    assert not os.path.exists(fsm / "nowhere"), "O_EXCL followed a dangling symlink"
    os.close(os.open(fsm / "new", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    expect_errno(errno.EEXIST, os.open, fsm / "new", os.O_CREAT | os.O_EXCL | os.O_RDWR)


def test_seek_data_and_seek_hole_report_holes_at_block_granularity(fsm):
    p = fsm / "sparse"
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"a" * 4096, 0)            # data [0, 4K)
        os.pwrite(fd, b"b" * 10, MiB + 100)      # data block [1M, 1M+4K)
        os.pwrite(fd, b"c" * 8192, 3 * MiB)      # data [3M, 3M+8K)
        os.ftruncate(fd, 5 * MiB)                # hole up to EOF
        os.fsync(fd)
        size = 5 * MiB
        assert os.lseek(fd, 0, SEEK_DATA) == 0
        assert os.lseek(fd, 0, SEEK_HOLE) == 4096
        assert os.lseek(fd, 100, SEEK_HOLE) == 4096
        assert os.lseek(fd, 4096, SEEK_DATA) == MiB
        assert os.lseek(fd, 5000, SEEK_DATA) == MiB
        assert os.lseek(fd, MiB + 50, SEEK_DATA) == MiB + 50
        assert os.lseek(fd, MiB, SEEK_HOLE) == MiB + 4096
        assert os.lseek(fd, MiB + 4096, SEEK_DATA) == 3 * MiB
        assert os.lseek(fd, 3 * MiB, SEEK_HOLE) == 3 * MiB + 8192
        expect_errno(errno.ENXIO, os.lseek, fd, 3 * MiB + 8192, SEEK_DATA)
        assert os.lseek(fd, 3 * MiB + 8192, SEEK_HOLE) == 3 * MiB + 8192
        assert os.lseek(fd, size - 1, SEEK_HOLE) == size - 1
        expect_errno(errno.ENXIO, os.lseek, fd, size, SEEK_DATA)
        expect_errno(errno.ENXIO, os.lseek, fd, size, SEEK_HOLE)
        expect_errno(errno.ENXIO, os.lseek, fd, size + 12345, SEEK_HOLE)
        expect_errno(errno.ENXIO, os.lseek, fd, -1, SEEK_DATA)
        # a file that ends in data: the only "hole" is EOF
        os.pwrite(fd, b"d", size)
        assert os.lseek(fd, 3 * MiB + 8192, SEEK_DATA) == size
        assert os.lseek(fd, size - 4096 + 1, SEEK_HOLE) == size - 4096 + 1
        assert os.lseek(fd, size, SEEK_HOLE) == size + 1
        expect_errno(errno.ENXIO, os.lseek, fd, size + 1, SEEK_DATA)
    finally:
        os.close(fd)


def test_seek_data_treats_preallocated_ranges_as_holes(fsm):
    p = fsm / "f"
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"x" * 4096, 0)
        fallocate(fd, 0, 4096, 64 * 4096)        # unwritten, inside i_size
        os.pwrite(fd, b"y" * 4096, 80 * 4096)
        assert os.lseek(fd, 0, SEEK_HOLE) == 4096
        assert os.lseek(fd, 4096, SEEK_DATA) == 80 * 4096
    finally:
        os.close(fd)


def test_file_larger_than_4gib_sparse(fsm):
    p = fsm / "big"
    payload = os.urandom(MiB)
    edge = os.urandom(8192)
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, payload, 5 * GiB)
        os.pwrite(fd, edge, 4 * GiB - 4096)      # straddles the 4 GiB boundary
        assert os.fstat(fd).st_size == 5 * GiB + MiB
        assert os.pread(fd, MiB, 5 * GiB) == payload
        assert os.pread(fd, 8192, 4 * GiB - 4096) == edge
        assert os.pread(fd, 4096, 2 * GiB) == bytes(4096)
        assert os.pread(fd, 100, 5 * GiB + MiB) == b""
        st = os.fstat(fd)
        assert st.st_blocks * 512 < 64 * MiB, "sparse file allocated its holes"
        assert st.st_blocks * 512 >= MiB + 8192
    finally:
        os.close(fd)
    fsm.remount()
    with open(p, "rb") as f:
        f.seek(5 * GiB)
        assert f.read() == payload
        f.seek(4 * GiB - 4096)
        assert f.read(8192) == edge
    os.truncate(p, 4 * GiB + 10)
    assert os.stat(p).st_size == 4 * GiB + 10
    with open(p, "rb") as f:
        f.seek(4 * GiB - 4096)
        assert f.read() == edge[:4096 + 10]


def test_truncate_down_and_up_at_unaligned_sizes(fsm):
    p = fsm / "f"
    data = os.urandom(3 * 4096 + 1234)
    write_file(p, data)
    for down, up in ((10000, 13000), (4095, 9000), (4097, 4100), (1, 8193), (0, 777)):
        os.truncate(p, down)
        assert os.stat(p).st_size == down
        assert read_file(p) == data[:down]
        os.truncate(p, up)
        assert os.stat(p).st_size == up
        got = read_file(p)
        assert got[:down] == data[:down]
        assert got[down:] == bytes(up - down), f"stale bytes past {down} after re-extending"
        data = got + os.urandom(len(data) - up) if up < len(data) else got
        write_file(p, data)
    # extending by writing past EOF also exposes zeros, not old data
    write_file(p, b"\xff" * 8192)
    os.truncate(p, 100)
    fd = os.open(p, os.O_WRONLY)
    try:
        os.pwrite(fd, b"end", 8189)
    finally:
        os.close(fd)
    assert read_file(p) == b"\xff" * 100 + bytes(8089) + b"end"


# ======================================================================================
# fallocate
# ======================================================================================

def test_fallocate_mode_0_extends_size_and_reads_zero(fsm):
    p = fsm / "f"
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"head")
        fallocate(fd, 0, 0, MiB + 100)
        st = os.fstat(fd)
        assert st.st_size == MiB + 100
        assert st.st_blocks * 512 >= MiB + 100
        assert os.pread(fd, MiB + 200, 0) == b"head" + bytes(MiB + 96)
        # allocating inside the file changes neither size nor data
        fallocate(fd, 0, 10, 20)
        assert os.fstat(fd).st_size == MiB + 100
        assert os.pread(fd, 8, 0) == b"head" + bytes(4)
    finally:
        os.close(fd)


def test_fallocate_and_copy_file_range_update_times(fsm):
    p = fsm / "f"
    for what, mode, off, length, mtime_too in (
            ("grow", 0, 0, MiB, True),
            ("keep-size", FALLOC_FL_KEEP_SIZE, 0, 4 * MiB, False),
            ("punch", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 8192, True),
            ("zero", FALLOC_FL_ZERO_RANGE, 4096, 8192, True)):
        write_file(p, b"x" * 100_000)
        fd = os.open(p, os.O_RDWR)
        try:
            _, m0, c0 = times(p)
            time.sleep(TICK)
            fallocate(fd, mode, off, length)
        finally:
            os.close(fd)
        _, m1, c1 = times(p)
        assert c1 > c0, f"fallocate {what}: ctime did not change"
        if mtime_too:
            assert m1 > m0, f"fallocate {what}: mtime did not change"
    write_file(fsm / "src", b"y" * 100_000)
    write_file(fsm / "dst", b"z" * 10)
    _, sm, sc = times(fsm / "src")
    _, m0, c0 = times(fsm / "dst")
    time.sleep(TICK)
    s, d = os.open(fsm / "src", os.O_RDONLY), os.open(fsm / "dst", os.O_WRONLY)
    try:
        assert os.copy_file_range(s, d, 50_000, 0, 0) == 50_000
    finally:
        os.close(s)
        os.close(d)
    _, m1, c1 = times(fsm / "dst")
    assert m1 > m0 and c1 > c0, "copy_file_range did not update the destination's times"
    assert times(fsm / "src")[1:] == (sm, sc), "copy_file_range changed the source's times"


def test_posix_fallocate_works(fsm):
    fd = os.open(fsm / "g", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.posix_fallocate(fd, 4096, 12345)
        st = os.fstat(fd)
        assert st.st_size == 4096 + 12345
        assert st.st_blocks * 512 >= 12345
        assert os.pread(fd, 20000, 0) == bytes(4096 + 12345)
    finally:
        os.close(fd)


def test_fallocate_keep_size_allocates_without_growing(fsm):
    p = fsm / "f"
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"x" * 5000)
        b0 = os.fstat(fd).st_blocks
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 4 * MiB)
        st = os.fstat(fd)
        assert st.st_size == 5000
        assert st.st_blocks * 512 >= 4 * MiB > b0 * 512
        assert os.pread(fd, 10000, 0) == b"x" * 5000
        # writing beyond EOF into the preallocated range
        os.pwrite(fd, b"tail", 2 * MiB)
        assert os.fstat(fd).st_size == 2 * MiB + 4
        assert os.pread(fd, 2 * MiB + 100, 0) == b"x" * 5000 + bytes(2 * MiB - 5000) + b"tail"
        assert os.fstat(fd).st_blocks == st.st_blocks, "wrote into preallocated space " \
            "but the block count changed"
        os.ftruncate(fd, 5000)
    finally:
        os.close(fd)
    assert read_file(p) == b"x" * 5000
    fsm.remount()
    assert read_file(p) == b"x" * 5000


def test_fallocate_punch_hole(fsm):
    p = fsm / "f"
    data = os.urandom(MiB)
    write_file(p, data)
    fd = os.open(p, os.O_RDWR)
    try:
        b0 = os.fstat(fd).st_blocks
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 64 * 4096, 64 * 4096)
        st = os.fstat(fd)
        assert st.st_size == MiB
        assert b0 - st.st_blocks == 64 * 8, f"st_blocks {b0} -> {st.st_blocks}"
        # unaligned: partial blocks are zeroed, whole blocks freed
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1000, 3 * 4096)
        assert b0 - os.fstat(fd).st_blocks == 66 * 8
        want = bytearray(data)
        want[64 * 4096:128 * 4096] = bytes(64 * 4096)
        want[1000:1000 + 3 * 4096] = bytes(3 * 4096)
        assert os.pread(fd, 2 * MiB, 0) == bytes(want)
        # past EOF: nothing happens, size kept
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, MiB - 10, MiB)
        assert os.fstat(fd).st_size == MiB
        want[MiB - 10:] = bytes(10)
        assert os.pread(fd, 2 * MiB, 0) == bytes(want)
        # PUNCH_HOLE requires KEEP_SIZE
        expect_errno(errno.EOPNOTSUPP, fallocate, fd, FALLOC_FL_PUNCH_HOLE, 0, 4096)
        # hole reported by SEEK_HOLE
        assert os.lseek(fd, 64 * 4096 + 5, SEEK_HOLE) == 64 * 4096 + 5
    finally:
        os.close(fd)
    fsm.remount()
    assert read_file(p) == bytes(want)


def test_fallocate_zero_range(fsm):
    p = fsm / "f"
    data = os.urandom(100_000)
    write_file(p, data)
    fd = os.open(p, os.O_RDWR)
    try:
        fallocate(fd, FALLOC_FL_ZERO_RANGE, 5000, 20000)
        want = data[:5000] + bytes(20000) + data[25000:]
        assert os.fstat(fd).st_size == 100_000
        assert os.pread(fd, 200_000, 0) == want
        fallocate(fd, FALLOC_FL_ZERO_RANGE, 90_000, 30_000)       # grows the file
        want = want[:90_000] + bytes(30_000)
        assert os.fstat(fd).st_size == 120_000
        assert os.pread(fd, 200_000, 0) == want
        fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 110_000, 100_000)
        want = want[:110_000] + bytes(10_000)
        assert os.fstat(fd).st_size == 120_000
        assert os.pread(fd, 300_000, 0) == want
    finally:
        os.close(fd)
    fsm.remount()
    assert read_file(p) == want


def test_writes_into_preallocated_ranges_read_back(fsm):
    p = fsm / "f"
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fallocate(fd, 0, 0, 64 * 4096)
        blocks = os.fstat(fd).st_blocks
        os.pwrite(fd, b"A" * 100, 5000)                # inside one block
        os.pwrite(fd, b"B" * 10000, 20 * 4096 - 3)     # across blocks
        want = bytearray(64 * 4096)
        want[5000:5100] = b"A" * 100
        want[20 * 4096 - 3:20 * 4096 - 3 + 10000] = b"B" * 10000
        assert os.pread(fd, 64 * 4096, 0) == bytes(want)
        assert os.fstat(fd).st_blocks == blocks
        # fallocate over written data keeps it
        fallocate(fd, 0, 0, 128 * 4096)
        want += bytes(64 * 4096)
        assert os.pread(fd, 256 * 4096, 0) == bytes(want)
    finally:
        os.close(fd)
    fsm.remount()
    assert read_file(p) == bytes(want)


@needs_daemon
@pytest.mark.image_size("64M")
def test_fallocate_beyond_free_space_gives_enospc(mounted):
    base = free_blocks(mounted.mnt)
    fd = os.open(mounted / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        expect_errno(errno.ENOSPC, fallocate, fd, 0, 0, 1 * GiB)
    finally:
        os.close(fd)
    os.unlink(mounted / "f")
    assert abs(wait_free_blocks(mounted.mnt, base) - base) <= 8


# ======================================================================================
# copy_file_range
# ======================================================================================

def test_copy_file_range_full_partial_and_offsets(fsm):
    src = fsm / "src"
    data = os.urandom(3 * MiB + 777)
    write_file(src, data)
    write_file(fsm / "dst", b"")
    s = os.open(src, os.O_RDONLY)
    d = os.open(fsm / "dst", os.O_RDWR)
    try:
        n = 0
        while n < len(data):
            c = os.copy_file_range(s, d, len(data) - n)
            assert c > 0
            n += c
        assert os.lseek(s, 0, os.SEEK_CUR) == len(data)
        assert os.lseek(d, 0, os.SEEK_CUR) == len(data)
        assert read_file(fsm / "dst") == data
        # partial, explicit offsets, unaligned; file offsets do not move
        assert os.copy_file_range(s, d, 10_000, 12_345, 100) == 10_000
        want = bytearray(data)
        want[100:10_100] = data[12_345:22_345]
        assert os.lseek(d, 0, os.SEEK_CUR) == len(data)
        # past the destination's end: extends it with a hole
        assert os.copy_file_range(s, d, 5000, 0, len(data) + 8192) == 5000
        want += bytes(8192) + data[:5000]
        # at/after the source's end: short or zero count
        assert os.copy_file_range(s, d, 1000, len(data) - 10, 0) == 10
        want[0:10] = data[-10:]
        assert os.copy_file_range(s, d, 1000, len(data) + 5, 0) == 0
        assert read_file(fsm / "dst") == bytes(want)
    finally:
        os.close(s)
        os.close(d)
    # within one file, non-overlapping ranges
    f = os.open(src, os.O_RDWR)
    try:
        assert os.copy_file_range(f, f, 4096, 0, 2 * MiB) == 4096
        expect_errno(errno.EINVAL, os.copy_file_range, f, f, 8192, 0, 4096)  # overlap
    finally:
        os.close(f)
    want_src = bytearray(data)
    want_src[2 * MiB:2 * MiB + 4096] = data[:4096]
    assert read_file(src) == bytes(want_src)
    fsm.remount()
    assert read_file(fsm / "dst") == bytes(want)


# ======================================================================================
# Extended attributes
# ======================================================================================

def test_xattr_namespaces_as_root(fsm):
    p = fsm / "f"
    write_file(p, b"")
    for name in ("user.u", "trusted.t", "security.s"):
        os.setxattr(p, name, name.encode())
    assert sorted(os.listxattr(p)) == ["security.s", "trusted.t", "user.u"]
    for name in ("user.u", "trusted.t", "security.s"):
        assert os.getxattr(p, name) == name.encode()
    # unknown namespaces and empty names after the prefix are refused
    expect_errno(errno.EOPNOTSUPP, os.setxattr, p, "bogus.x", b"v")
    expect_errno(errno.EOPNOTSUPP, os.setxattr, p, "noprefix", b"v")
    expect_errno(errno.EOPNOTSUPP, os.getxattr, p, "bogus.x")
    expect_errno(errno.EINVAL, os.setxattr, p, "user.", b"v")
    # user.* only on regular files and directories
    os.symlink("f", fsm / "l")
    os.mkfifo(fsm / "fifo")
    expect_errno(errno.EPERM, os.setxattr, fsm / "l", "user.x", b"v", follow_symlinks=False)
    expect_errno(errno.EPERM, os.setxattr, fsm / "fifo", "user.x", b"v")
    os.setxattr(fsm / "l", "trusted.x", b"v", follow_symlinks=False)
    assert os.listxattr(fsm / "l", follow_symlinks=False) == ["trusted.x"]
    fsm.remount()
    assert sorted(os.listxattr(p)) == ["security.s", "trusted.t", "user.u"]


@ALLOW_OTHER
def test_trusted_xattrs_are_invisible_to_non_root(fsm, variant):
    d = shared_dir(fsm)
    p = os.path.join(d, "f")
    write_file(p, b"")
    os.chown(p, UID, GID)
    os.setxattr(p, "trusted.secret", b"t")
    os.setxattr(p, "user.visible", b"u")
    os.setxattr(p, "security.sec", b"s")
    out = as_user(UID, GID,
                  "p = sys.argv[1]\n"
                  "print(','.join(sorted(os.listxattr(p))))\n"
                  "print(E(os.getxattr, p, 'trusted.secret'), E(os.setxattr, p, 'trusted.n', b'x'),"
                  " E(os.removexattr, p, 'trusted.secret'), E(os.setxattr, p, 'user.mine', b'm'),"
                  " E(os.getxattr, p, 'security.sec'))", p)
    assert out[0] == "security.sec,user.visible"
    assert out[1] == "ENODATA EPERM EPERM OK OK"
    assert sorted(os.listxattr(p)) == ["security.sec", "trusted.secret", "user.mine",
                                       "user.visible"]
    # user.* needs write permission for set, read permission for get
    os.chmod(p, 0o600)
    out = as_user(UID2, GID2, "p = sys.argv[1]\n"
                  "print(E(os.getxattr, p, 'user.visible'), E(os.setxattr, p, 'user.x', b'x'))",
                  p)
    assert out[0] == "EACCES EACCES"


def test_xattr_create_and_replace_flags(fsm):
    p = fsm / "f"
    write_file(p, b"")
    expect_errno(errno.ENODATA, os.setxattr, p, "user.k", b"v", os.XATTR_REPLACE)
    os.setxattr(p, "user.k", b"v1", os.XATTR_CREATE)
    expect_errno(errno.EEXIST, os.setxattr, p, "user.k", b"v2", os.XATTR_CREATE)
    os.setxattr(p, "user.k", b"v3", os.XATTR_REPLACE)
    assert os.getxattr(p, "user.k") == b"v3"
    os.setxattr(p, "trusted.k", b"t", os.XATTR_CREATE)
    expect_errno(errno.EEXIST, os.setxattr, p, "trusted.k", b"t", os.XATTR_CREATE)
    both = os.XATTR_CREATE | os.XATTR_REPLACE
    expect_errno(errno.EEXIST, os.setxattr, p, "user.k", b"x", both)
    expect_errno(errno.ENODATA, os.setxattr, p, "user.missing", b"x", both)
    assert os.getxattr(p, "user.k") == b"v3"


def test_xattr_size_limits_like_ext4_4k_blocks(fsm):
    p = fsm / "f"
    write_file(p, b"")
    os.setxattr(p, "user." + "n" * 250, b"v")          # 255-byte name
    expect_errno(errno.ERANGE, os.setxattr, p, "user." + "n" * 251, b"v")
    expect_errno(errno.ERANGE, os.getxattr, p, "user." + "n" * 251)
    os.removexattr(p, "user." + "n" * 250)
    v = os.urandom(3900)
    os.setxattr(p, "user.big", v)                       # fits in a 4 KiB block
    assert os.getxattr(p, "user.big") == v
    os.removexattr(p, "user.big")
    expect_errno(errno.ENOSPC, os.setxattr, p, "user.huge", os.urandom(5000))
    expect_errno(errno.ENOSPC, os.setxattr, p, "user.huge", os.urandom(65536))
    expect_errno(errno.E2BIG, os.setxattr, p, "user.huge", os.urandom(65537))
    assert os.listxattr(p) == []
    # many values: eventually ENOSPC, and what was stored stays readable
    stored = {}
    for i in range(100):
        v = os.urandom(500)
        try:
            os.setxattr(p, f"user.v{i:03d}", v)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
            break
        stored[f"user.v{i:03d}"] = v
    else:
        pytest.fail("100 x 500-byte xattrs fit on one inode")
    assert 4 <= len(stored) <= 10
    assert sorted(os.listxattr(p)) == sorted(stored)
    assert all(os.getxattr(p, k) == v for k, v in stored.items())


def test_listxattr_and_getxattr_buffer_sizing(fsm):
    p = fsm / "f"
    write_file(p, b"")
    names = ["user.a", "user.bb", "user." + "c" * 100, "trusted.d"]
    for n in names:
        os.setxattr(p, n, b"0123456789")
    need = sum(len(n) + 1 for n in names)
    n, e, _ = c_listxattr(p, 0)
    assert (n, e) == (need, 0)
    n, e, raw = c_listxattr(p, need)
    assert (n, e) == (need, 0)
    assert sorted(raw.split(b"\0")[:-1]) == sorted(x.encode() for x in names)
    n, e, _ = c_listxattr(p, need - 1)
    assert (n, ename(e)) == (-1, "ERANGE")
    n, e, _ = c_listxattr(p, 3)
    assert (n, ename(e)) == (-1, "ERANGE")
    assert c_getxattr(p, "user.a", 0) == (10, 0)
    assert c_getxattr(p, "user.a", 10) == (10, 0)
    n, e = c_getxattr(p, "user.a", 9)
    assert (n, ename(e)) == (-1, "ERANGE")
    os.setxattr(p, "user.empty", b"")
    assert c_getxattr(p, "user.empty", 0) == (0, 0)
    write_file(fsm / "none", b"")
    assert c_listxattr(fsm / "none", 0)[:2] == (0, 0)


# ======================================================================================
# POSIX ACLs (-o acl)
# ======================================================================================

def _need_acl_tools():
    if shutil.which("setfacl") and shutil.which("getfacl"):
        return
    cp = run(["apt-get", "install", "-y", "acl"], timeout=300)
    if not shutil.which("setfacl"):
        pytest.fail(f"setfacl missing and `apt-get install -y acl` failed:\n{cp.stderr}")


def getfacl(p, *opts):
    cp = run(["getfacl", "-cpn", *opts, p], check=True, timeout=30)
    return [ln for ln in cp.stdout.splitlines() if ln.strip()]


ACL_OPTS = pytest.mark.mount_opts("-o", "allow_other,acl")


@ACL_OPTS
def test_acl_named_user_entry_grants_and_denies(fsm):
    _need_acl_tools()
    d = shared_dir(fsm, mode=0o755)
    f = os.path.join(d, "f")
    write_file(f, b"secret")
    os.chmod(f, 0o600)
    read = "print(E(lambda: open(sys.argv[1], 'rb').read()))"
    assert as_user(UID, GID, read, f)[0] == "EACCES"
    run(["setfacl", "-m", f"u:{UID}:r", f], check=True)
    assert as_user(UID, GID, read, f)[0] == "OK"
    assert as_user(UID2, GID2, read, f)[0] == "EACCES"
    assert as_user(UID, GID, "print(E(open, sys.argv[1], 'ab'))", f)[0] == "EACCES"
    assert mode_of(f) == 0o640  # group class bits show the mask
    # a named entry can also take access away that "other" would give
    g = os.path.join(d, "g")
    write_file(g, b"public")
    os.chmod(g, 0o644)
    run(["setfacl", "-m", f"u:{UID2}:---", g], check=True)
    assert as_user(UID2, GID2, read, g)[0] == "EACCES"
    assert as_user(UID, GID, read, g)[0] == "OK"
    # group entries
    run(["setfacl", "-m", f"g:{GROUP}:r", f], check=True)
    assert as_user(UID2, GID2, read, f, groups=(GROUP,))[0] == "OK"
    fsm.remount(["-o", "allow_other,acl"])
    assert as_user(UID, GID, read, f)[0] == "OK"
    assert getfacl(f) == ["user::rw-", f"user:{UID}:r--", "group::---", f"group:{GROUP}:r--",
                          "mask::r--", "other::---"]


@ACL_OPTS
def test_acl_default_acl_is_inherited(fsm):
    _need_acl_tools()
    d = fsm / "d"
    os.mkdir(d)
    run(["setfacl", "-d", "-m", f"u:{UID}:rwx,g::r-x,o::---", d], check=True)
    old = os.umask(0o077)  # a default ACL replaces the umask
    try:
        fd = os.open(os.path.join(d, "f"), os.O_CREAT | os.O_WRONLY, 0o666)
        os.close(fd)
        os.mkdir(os.path.join(d, "sub"), 0o777)
    finally:
        os.umask(old)
    f_acl = ["user::rw-", f"user:{UID}:rwx\t#effective:rw-", "group::r-x\t#effective:r--",
             "mask::rw-", "other::---"]
    assert getfacl(os.path.join(d, "f")) == f_acl
    assert mode_of(os.path.join(d, "f")) == 0o660
    sub_acl = ["user::rwx", f"user:{UID}:rwx", "group::r-x", "mask::rwx", "other::---",
               "default:user::rwx", f"default:user:{UID}:rwx", "default:group::r-x",
               "default:mask::rwx", "default:other::---"]
    assert getfacl(os.path.join(d, "sub")) == sub_acl
    assert mode_of(os.path.join(d, "sub")) == 0o770
    # and one level further down
    os.mkdir(os.path.join(d, "sub", "deeper"), 0o755)
    assert getfacl(os.path.join(d, "sub", "deeper")) == [
        "user::rwx", f"user:{UID}:rwx\t#effective:r-x", "group::r-x", "mask::r-x",
        "other::---", "default:user::rwx", f"default:user:{UID}:rwx", "default:group::r-x",
        "default:mask::rwx", "default:other::---"]
    run(["setfacl", "-k", d], check=True)
    write_file(os.path.join(d, "plain"), b"", 0o644)
    assert getfacl(os.path.join(d, "plain")) == ["user::rw-", "group::r--", "other::r--"]


@ACL_OPTS
def test_acl_chmod_updates_the_mask(fsm):
    _need_acl_tools()
    f = fsm / "f"
    write_file(f, b"")
    os.chmod(f, 0o660)
    run(["setfacl", "-m", f"u:{UID}:rwx,g::rw-", f], check=True)
    assert getfacl(f) == ["user::rw-", f"user:{UID}:rwx", "group::rw-", "mask::rwx",
                          "other::---"]
    assert mode_of(f) == 0o670
    os.chmod(f, 0o640)
    assert getfacl(f) == ["user::rw-", f"user:{UID}:rwx\t#effective:r--",
                          "group::rw-\t#effective:r--", "mask::r--", "other::---"]
    assert mode_of(f) == 0o640
    # removing the extended entries folds the ACL back into the mode
    run(["setfacl", "-b", f], check=True)
    assert getfacl(f) == ["user::rw-", "group::r--", "other::---"]
    assert os.listxattr(f) == []


@needs_daemon
@pytest.mark.mount_opts("-o", "allow_other")
def test_acl_without_acl_option_is_not_supported(mounted):
    _need_acl_tools()
    f = mounted / "f"
    write_file(f, b"")
    cp = run(["setfacl", "-m", f"u:{UID}:r", f], timeout=30)
    assert cp.returncode != 0
    assert "Operation not supported" in cp.stderr, cp.stderr
    d = mounted / "d"
    os.mkdir(d)
    cp = run(["setfacl", "-d", "-m", f"u:{UID}:r", d], timeout=30)
    assert "Operation not supported" in cp.stderr, cp.stderr
    expect_errno(errno.EOPNOTSUPP, os.setxattr, f, "system.posix_acl_access",
                 b"\x02\x00\x00\x00")


# ======================================================================================
# Locks
# ======================================================================================

HOLDER = """\
import fcntl, os, struct, sys
path, kind = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR)
if kind == 'flock':
    fcntl.flock(fd, fcntl.LOCK_EX)
elif kind == 'flock_sh':
    fcntl.flock(fd, fcntl.LOCK_SH)
elif kind == 'posix':
    fcntl.lockf(fd, fcntl.LOCK_EX, 100, 0)      # bytes [0, 100)
elif kind == 'ofd':
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack('hhqqi4x', fcntl.F_WRLCK, 0, 0, 100, 0))
print('locked', os.getpid(), flush=True)
sys.stdin.readline()
"""


class LockHolder:
    """A child process that takes a lock on PATH and keeps it until release()."""

    def __init__(self, path, kind):
        self.proc = subprocess.Popen([PYTHON, "-c", HOLDER, path, kind], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        r, _, _ = select.select([self.proc.stdout], [], [], 20)
        assert r, "lock holder did not report within 20 s"
        line = self.proc.stdout.readline().split()
        assert line[:1] == ["locked"], line
        self.pid = int(line[1])

    def release(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.release()


def flock_bytes(kind, start, length, pid=0):
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, start, length, pid)


def test_flock_conflicts_between_processes(fsm):
    p = fsm / "f"
    write_file(p, b"x")
    fd = os.open(p, os.O_RDWR)
    try:
        with LockHolder(p, "flock") as h:
            expect_errno(errno.EWOULDBLOCK, fcntl.flock, fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            expect_errno(errno.EWOULDBLOCK, fcntl.flock, fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            h.release()
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        with LockHolder(p, "flock_sh"):
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)   # shared + shared is fine
            fcntl.flock(fd, fcntl.LOCK_UN)
            expect_errno(errno.EWOULDBLOCK, fcntl.flock, fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_posix_record_locks_conflict_by_range(fsm):
    p = fsm / "f"
    write_file(p, bytes(4096))
    fd = os.open(p, os.O_RDWR)
    try:
        with LockHolder(p, "posix") as h:
            expect_errno(errno.EAGAIN, fcntl.fcntl, fd, fcntl.F_SETLK,
                         flock_bytes(fcntl.F_WRLCK, 50, 100))
            expect_errno(errno.EAGAIN, fcntl.fcntl, fd, fcntl.F_SETLK,
                         flock_bytes(fcntl.F_RDLCK, 99, 1))
            fcntl.fcntl(fd, fcntl.F_SETLK, flock_bytes(fcntl.F_WRLCK, 100, 100))  # no overlap
            got = struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK,
                                                       flock_bytes(fcntl.F_WRLCK, 0, 0)))
            assert got[0] == fcntl.F_WRLCK and got[2:] == (0, 100, h.pid), got
            # OFD locks conflict with the holder's process-associated lock too
            expect_errno(errno.EAGAIN, fcntl.fcntl, fd, fcntl.F_OFD_SETLK,
                         flock_bytes(fcntl.F_WRLCK, 0, 1))
            h.release()
            fcntl.fcntl(fd, fcntl.F_SETLK, flock_bytes(fcntl.F_WRLCK, 0, 100))
            got = struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK,
                                                       flock_bytes(fcntl.F_WRLCK, 0, 0)))
            assert got[0] == fcntl.F_UNLCK  # own locks never conflict
    finally:
        os.close(fd)


def test_ofd_locks_conflict_between_open_file_descriptions(fsm):
    p = fsm / "f"
    write_file(p, bytes(100))
    a = os.open(p, os.O_RDWR)
    b = os.open(p, os.O_RDWR)
    try:
        fcntl.fcntl(a, fcntl.F_OFD_SETLK, flock_bytes(fcntl.F_WRLCK, 0, 10))
        expect_errno(errno.EAGAIN, fcntl.fcntl, b, fcntl.F_OFD_SETLK,
                     flock_bytes(fcntl.F_RDLCK, 5, 10))
        fcntl.fcntl(b, fcntl.F_OFD_SETLK, flock_bytes(fcntl.F_WRLCK, 10, 10))
        # a classic POSIX lock of this process conflicts with the OFD lock of `a`
        expect_errno(errno.EAGAIN, fcntl.fcntl, b, fcntl.F_SETLK,
                     flock_bytes(fcntl.F_WRLCK, 0, 1))
        fcntl.fcntl(a, fcntl.F_OFD_SETLK, flock_bytes(fcntl.F_UNLCK, 0, 10))
        fcntl.fcntl(b, fcntl.F_OFD_SETLK, flock_bytes(fcntl.F_WRLCK, 0, 10))
    finally:
        os.close(a)
        os.close(b)


BLOCKED_WAITER = """\
import ctypes, ctypes.util, errno, fcntl, os, signal, struct, sys, time
path, kind = sys.argv[1], sys.argv[2]
libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
fd = os.open(path, os.O_RDWR)
signal.signal(signal.SIGALRM, lambda s, f: None)
signal.siginterrupt(signal.SIGALRM, True)
signal.setitimer(signal.ITIMER_REAL, 0.5)
t0 = time.monotonic()
if kind == 'flock':
    r = libc.flock(fd, fcntl.LOCK_EX)
else:
    cmd = fcntl.F_SETLKW if kind == 'posix' else fcntl.F_OFD_SETLKW
    buf = ctypes.create_string_buffer(struct.pack('hhqqi4x', fcntl.F_WRLCK, 0, 0, 100, 0))
    r = libc.fcntl(fd, cmd, buf)
e = ctypes.get_errno()
print(r, errno.errorcode.get(e, e) if r < 0 else 'none', round(time.monotonic() - t0, 2))
"""


@pytest.mark.parametrize("holder,waiter", [("flock", "flock"), ("posix", "posix"),
                                           ("posix", "ofd")])
def test_blocked_lock_wait_is_interrupted_by_a_signal(fsm, holder, waiter):
    p = fsm / "f"
    write_file(p, bytes(100))
    with LockHolder(p, holder):
        cp = run([PYTHON, "-c", BLOCKED_WAITER, p, waiter], timeout=30)
        assert cp.returncode == 0, cp.stderr
        r, err, elapsed = cp.stdout.split()
        assert (r, err) == ("-1", "EINTR"), cp.stdout
        assert 0.3 <= float(elapsed) < 10, cp.stdout
    # once the holder is gone the lock can be taken at once
    cp = run([PYTHON, "-c", BLOCKED_WAITER.replace("0.5)", "5)"), p, waiter], timeout=30)
    assert cp.returncode == 0, cp.stderr
    r, err, elapsed = cp.stdout.split()
    assert (r, err) == ("0", "none") and float(elapsed) < 2, cp.stdout


def test_lock_is_released_when_the_holder_dies(fsm):
    p = fsm / "f"
    write_file(p, bytes(100))
    fd = os.open(p, os.O_RDWR)
    try:
        h = LockHolder(p, "posix")
        waiter = threading.Thread(target=lambda: fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0))
        waiter.start()
        time.sleep(0.3)
        assert waiter.is_alive(), "lockf did not block on a held lock"
        h.proc.kill()
        h.proc.wait(timeout=10)
        waiter.join(10)
        assert not waiter.is_alive(), "lock not handed over after the holder was killed"
    finally:
        os.close(fd)


# ======================================================================================
# Full device, inode exhaustion, statvfs
# ======================================================================================

@needs_daemon
@pytest.mark.image_size("64M")
def test_full_device_enospc_then_recovers(mounted):
    keep = os.urandom(300_000)
    write_file(mounted / "keep", keep)
    base = free_blocks(mounted.mnt)
    fd = os.open(mounted / "fill", os.O_CREAT | os.O_WRONLY, 0o644)
    written, err = write_until_error(fd, os.urandom(MiB), 200)
    assert err is not None and err.errno == errno.ENOSPC, f"got {err!r} after {written}"
    assert written > 32 * MiB
    left = free_blocks(mounted.mnt)
    assert left < 64, (f"ENOSPC on a 1 MiB write with {left} blocks still free: a write "
                       "larger than the free space must write what fits and return a short "
                       "count (POSIX write(2), as ext4)")
    assert os.stat(mounted / "fill").st_size == written
    # a full filesystem still answers reads and refuses growth with ENOSPC
    fd = os.open(mounted / "more", os.O_CREAT | os.O_WRONLY, 0o644)
    w2, err2 = write_until_error(fd, os.urandom(MiB), 100)
    assert err2 is not None and err2.errno == errno.ENOSPC, err2
    assert read_file(mounted / "keep") == keep
    mounted.remount()
    assert read_file(mounted / "keep") == keep
    os.unlink(mounted / "fill")
    os.unlink(mounted / "more")
    after = wait_free_blocks(mounted.mnt, base)
    assert abs(after - base) <= 8, f"free blocks {base} -> {after}"
    data = os.urandom(20 * MiB)
    write_file(mounted / "again", data)
    assert read_file(mounted / "again") == data


@needs_daemon
@pytest.mark.slow
@pytest.mark.image_size("16M")
@pytest.mark.timeout_s(240)
def test_inode_exhaustion_gives_enospc_and_recovers(mounted):
    count, err = 0, None
    per_dir = 1000
    t0 = time.monotonic()
    while err is None and count < 300_000:
        if count % per_dir == 0:
            try:
                os.mkdir(mounted / f"d{count // per_dir}")
            except OSError as e:
                err = e
                break
            count += 1
            continue
        try:
            os.close(os.open(mounted.path(f"d{count // per_dir}", f"f{count}"),
                             os.O_CREAT | os.O_WRONLY, 0o644))
        except OSError as e:
            err = e
        else:
            count += 1
    assert err is not None, "300000 inodes in a 16 MiB image"
    assert err.errno == errno.ENOSPC, err
    assert count > 8000, f"ENOSPC after only {count} inodes"
    assert time.monotonic() - t0 < 150
    vfs = os.statvfs(mounted.mnt)
    assert vfs.f_ffree < 100, f"ENOSPC with f_ffree={vfs.f_ffree}, f_bfree={vfs.f_bfree}"
    # delete some, create again
    victims = sorted(os.listdir(mounted / "d1"))[:300]
    for n in victims:
        os.unlink(mounted.path("d1", n))
    for i in range(300):
        os.close(os.open(mounted.path("d1", f"new{i}"), os.O_CREAT | os.O_WRONLY, 0o644))
    write_file(mounted.path("d1", "new0"), b"data")
    mounted.remount()
    assert read_file(mounted.path("d1", "new0")) == b"data"
    assert len(os.listdir(mounted / "d1")) == per_dir - 1


def test_statvfs_numbers_are_sane(fsm):
    v = os.statvfs(fsm.mnt)
    assert v.f_frsize == 4096 and v.f_bsize == 4096
    if fsm.pid is not None:  # pmemfuse: the whole image is the device
        image_size = os.stat(fsm.image).st_size
        assert 0.95 * image_size <= v.f_blocks * v.f_frsize <= image_size
    assert 0 < v.f_bfree <= v.f_blocks and v.f_bavail <= v.f_bfree
    assert v.f_ffree <= v.f_files and v.f_favail <= v.f_files
    assert v.f_namemax == 255
    used_inodes = v.f_files - v.f_ffree
    for i in range(100):
        write_file(fsm / f"e{i}", b"")
    v2 = os.statvfs(fsm.mnt)
    assert v2.f_files - v2.f_ffree == used_inodes + 100
    os.sync()
    base = os.statvfs(fsm.mnt).f_bfree
    fd = os.open(fsm / "ten", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, os.urandom(10 * MiB))
        os.fsync(fd)
    finally:
        os.close(fd)
    used = base - os.statvfs(fsm.mnt).f_bfree
    assert 2560 * 0.95 <= used <= 2560 * 1.05, f"10 MiB used {used} blocks"
    os.unlink(fsm / "ten")
    os.sync()
    assert abs(wait_free_blocks(fsm.mnt, base) - base) <= 8


# ======================================================================================
# Thousands of open files
# ======================================================================================

@pytest.mark.slow
def test_five_thousand_files_open_at_once(fsm):
    n = 5000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 20000), max(hard, 20000)))
    fds = []
    try:
        os.mkdir(fsm / "many")
        for i in range(n):
            fds.append(os.open(fsm.path("many", f"f{i}"), os.O_CREAT | os.O_RDWR, 0o644))
        for i, fd in enumerate(fds):
            os.write(fd, b"file %05d\n" % i)
        if fsm.pid is not None:
            daemon_fds = len(os.listdir(f"/proc/{fsm.pid}/fd"))
            assert daemon_fds < 100, f"daemon holds {daemon_fds} fds with {n} files open"
        for i, fd in enumerate(fds):
            assert os.pread(fd, 100, 0) == b"file %05d\n" % i
        for fd in fds:
            os.close(fd)
        fds = []
        for i in range(0, n, 97):
            assert read_file(fsm.path("many", f"f{i}")) == b"file %05d\n" % i
        assert len(os.listdir(fsm / "many")) == n
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
