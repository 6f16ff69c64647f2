"""Helpers for the pmemfuse integration tests (imported by conftest.py and the tests).

Binaries come from $PMEMFUSE_BUILD (default /work/main/build). Images live in /dev/shm,
mountpoints in /tmp/pmemfuse-it-*. Every subprocess call has a timeout, and a per-test
watchdog kills our daemons if a test hangs (a dead daemon aborts the FUSE connection, so
blocked syscalls return ENOTCONN and the test fails instead of hanging).
"""

from __future__ import annotations

import errno
import os
import signal
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

BUILD = Path(os.environ.get("PMEMFUSE_BUILD", "/work/main/build")).resolve()
MKFS = BUILD / "tools" / "mkfs.pmemfuse"
FSCK = BUILD / "tools" / "fsck.pmemfuse"
STAT = BUILD / "tools" / "pmemfuse-stat"
DAEMON = BUILD / "daemon" / "pmemfuse"
FUSERMOUNT = shutil.which("fusermount3") or "/usr/bin/fusermount3"

TMP_PREFIX = "pmemfuse-it-"
# Mountpoints of this pytest session only: the end-of-session sweep must not unmount
# another session's mounts.
SESSION_PREFIX = f"{TMP_PREFIX}{os.getpid()}-"
TMP_ROOT = "/tmp"
IMAGE_DIR = "/dev/shm"
IMAGE_PREFIX = "pmemfuse-test-"

DEFAULT_IMAGE_SIZE = "256M"
MOUNT_TIMEOUT = 10.0
DEFAULT_TEST_TIMEOUT = 180.0

MiB = 1024 * 1024
GiB = 1024 * MiB

# Every Mount ever started in this session that may still be alive; the watchdog and the
# session safety net walk it.
_LIVE_MOUNTS: "set[Mount]" = set()
_LIVE_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------
# Binaries and subprocesses
# --------------------------------------------------------------------------------------

def _default_signals() -> None:
    """A runner started in the background (`cmd &` in a script) ignores SIGINT, and the
    daemon would inherit that: libfuse keeps an ignored signal ignored."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def require(binary: Path) -> str:
    """Path of a pmemfuse binary as str; fail the test with a clear message if missing."""
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(
            f"pmemfuse binary missing or not executable: {binary} "
            f"(PMEMFUSE_BUILD={BUILD}; build it with `ninja -C {BUILD}`)",
            pytrace=False)
    return str(binary)


def run(cmd, *, timeout: float = 60, check: bool = False, **kw) -> subprocess.CompletedProcess:
    """subprocess.run with text capture and a hard timeout (fails the test on expiry)."""
    cmd = [str(c) for c in cmd]
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("text", True)
    kw.setdefault("errors", "replace")
    try:
        cp = subprocess.run(cmd, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"command timed out after {timeout}s: {' '.join(cmd)}\n"
                    f"stdout: {e.stdout!r}\nstderr: {e.stderr!r}", pytrace=False)
    if check and cp.returncode != 0:
        pytest.fail(f"command failed (exit {cp.returncode}): {' '.join(cmd)}\n"
                    f"stdout: {cp.stdout}\nstderr: {cp.stderr}", pytrace=False)
    return cp


def mkfs(image, size: str | None = DEFAULT_IMAGE_SIZE, *extra, check: bool = True,
         force: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [require(MKFS)]
    if size is not None:
        cmd += ["--size", size]
    if force:
        cmd.append("-f")
    cmd += list(extra)
    cmd.append(str(image))
    return run(cmd, check=check, timeout=timeout)


def fsck(image, *args, timeout: float = 120) -> tuple[int, str]:
    """Run fsck.pmemfuse ARGS IMAGE; returns (returncode, stdout+stderr)."""
    cp = run([require(FSCK), *args, str(image)], timeout=timeout,
             stderr=subprocess.STDOUT)
    return cp.returncode, cp.stdout


def fsck_check(image, *extra) -> tuple[int, str]:
    """Forced, read-only full check: `fsck.pmemfuse -f -n IMAGE`."""
    return fsck(image, "-f", "-n", *extra)


def assert_no_crash(cp: subprocess.CompletedProcess, what: str = ""):
    """A failing command must exit non-zero with a message and not crash."""
    desc = f"{what}: exit={cp.returncode} stderr={cp.stderr!r}"
    assert cp.returncode > 0, "expected a non-zero (non-signal) exit " + desc
    assert cp.returncode not in (134, 139), "crash-like exit code " + desc
    err = cp.stderr.strip()
    assert err, "expected an error message on stderr " + desc
    assert "terminate called" not in err, desc
    assert "Aborted" not in err and "Segmentation fault" not in err, desc
    assert "AddressSanitizer" not in err and "runtime error:" not in err, desc


def new_image_path() -> str:
    return os.path.join(IMAGE_DIR, f"{IMAGE_PREFIX}{uuid.uuid4().hex}.img")


def remove_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def make_mountpoint() -> str:
    return tempfile.mkdtemp(prefix=SESSION_PREFIX, dir=TMP_ROOT)


# --------------------------------------------------------------------------------------
# Mount table
# --------------------------------------------------------------------------------------

def _unescape_mountinfo(s: str) -> str:
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) + 1 and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def fuse_mounts() -> list[tuple[str, str]]:
    """(mountpoint, fstype) of every fuse mount in /proc/self/mountinfo."""
    res = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fields = pre.split()
            fstype = post.split()[0] if post else ""
            if len(fields) >= 5 and fstype.startswith("fuse"):
                res.append((_unescape_mountinfo(fields[4]), fstype))
    return res


def is_fuse_mounted(path) -> bool:
    path = os.path.realpath(path)
    return any(mp == path for mp, _ in fuse_mounts())


def lazy_unmount(path) -> None:
    try:
        subprocess.run([FUSERMOUNT, "-uz", str(path)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=20)
    except subprocess.TimeoutExpired:
        pass
    if is_fuse_mounted(path):
        try:
            subprocess.run(["umount", "-l", str(path)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=20)
        except subprocess.TimeoutExpired:
            pass


def cleanup_leftovers() -> None:
    """Kill our daemons and lazily unmount any fuse mount this session made."""
    with _LIVE_LOCK:
        mounts = list(_LIVE_MOUNTS)
    for m in mounts:
        m.force_cleanup()
    prefix = os.path.join(TMP_ROOT, SESSION_PREFIX)
    for mp, _ in fuse_mounts():
        if mp.startswith(prefix):
            lazy_unmount(mp)


# --------------------------------------------------------------------------------------
# Mount helper
# --------------------------------------------------------------------------------------

class MountError(AssertionError):
    pass


class Mount:
    """A foreground pmemfuse daemon (`pmemfuse -f [args] IMAGE MNT`) owned by the test."""

    def __init__(self, image, mnt: str | None = None, args=(), *, own_mnt: bool | None = None):
        self.image = str(image)
        self.own_mnt = mnt is None if own_mnt is None else own_mnt
        self.mnt = os.path.realpath(mnt or make_mountpoint())
        self.args = [str(a) for a in args]
        self.proc: subprocess.Popen | None = None
        self.log_path: str | None = None
        self.last_returncode: int | None = None
        self.logs: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, args=None, timeout: float = MOUNT_TIMEOUT) -> "Mount":
        assert self.proc is None, "already started"
        if args is not None:
            self.args = [str(a) for a in args]
        daemon = require(DAEMON)
        fd, self.log_path = tempfile.mkstemp(prefix=TMP_PREFIX + "log-", suffix=".txt",
                                            dir=TMP_ROOT)
        with os.fdopen(fd, "wb") as log:
            self.proc = subprocess.Popen(
                [daemon, "-f", *self.args, self.image, self.mnt],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_default_signals)
        with _LIVE_LOCK:
            _LIVE_MOUNTS.add(self)
        deadline = time.monotonic() + timeout
        while True:
            if is_fuse_mounted(self.mnt):
                return self
            rc = self.proc.poll()
            if rc is not None:
                self._reap(rc)
                raise MountError(f"pmemfuse exited with {rc} before mounting {self.mnt}:\n"
                                 f"{self.logs[-1]}")
            if time.monotonic() > deadline:
                self.force_cleanup()
                raise MountError(f"{self.mnt} not mounted within {timeout}s; daemon log:\n"
                                 f"{self.logs[-1] if self.logs else ''}")
            time.sleep(0.02)

    mount = start  # alias: m.mount() after m.unmount() remounts on the same mountpoint

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        """Daemon output of the current (or last) run."""
        if self.proc is not None and self.log_path:
            try:
                with open(self.log_path, errors="replace") as f:
                    return f.read()
            except OSError:
                return ""
        return self.logs[-1] if self.logs else ""

    def _reap(self, rc: int) -> None:
        self.last_returncode = rc
        self.logs.append(self.log())
        if self.log_path:
            remove_quietly(self.log_path)
        self.log_path = None
        self.proc = None
        with _LIVE_LOCK:
            _LIVE_MOUNTS.discard(self)

    def _wait(self, timeout: float) -> int:
        """Wait for the daemon; SIGKILL it if it does not exit in time. Returns its rc,
        or None if it had to be killed."""
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout=timeout)
            killed = False
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(timeout=30)
            killed = True
        self._reap(rc)
        return None if killed else rc

    def unmount(self, *, check: bool = True, timeout: float = 30) -> int | None:
        """fusermount3 -u (retrying; -uz as a last resort), then wait for the daemon.
        With check, assert the unmount was clean and the daemon exited 0."""
        assert self.proc is not None, "not running"
        problems = []
        ok = False
        for _ in range(25):
            cp = subprocess.run([FUSERMOUNT, "-u", self.mnt], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, timeout=20)
            if cp.returncode == 0 or not is_fuse_mounted(self.mnt):
                ok = True
                break
            problems.append(cp.stdout.strip())
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        if not ok:
            lazy_unmount(self.mnt)
        rc = self._wait(timeout)
        if check:
            assert ok, f"fusermount3 -u {self.mnt} kept failing: {problems[-3:]}"
            assert rc is not None, (f"daemon did not exit within {timeout}s after unmount "
                                    f"(killed); log:\n{self.logs[-1]}")
            assert rc == 0, f"daemon exited {rc} after unmount; log:\n{self.logs[-1]}"
        return rc

    def signal(self, sig: int, *, timeout: float = 30) -> int | None:
        """Send SIG to the daemon and wait for it; returns its exit code (None: it did not
        exit in time and was killed). Sets .mounted_after_exit to whether the mount was
        still there once the daemon had exited (then drops it lazily)."""
        assert self.proc is not None, "not running"
        self.proc.send_signal(sig)
        rc = self._wait(timeout)
        self.mounted_after_exit = is_fuse_mounted(self.mnt)
        if self.mounted_after_exit:
            lazy_unmount(self.mnt)
        return rc

    def kill9(self) -> None:
        """SIGKILL the daemon (a simulated crash) and drop the dead mount."""
        assert self.proc is not None, "not running"
        self.proc.kill()
        try:
            rc = self.proc.wait(timeout=30)
        finally:
            lazy_unmount(self.mnt)
        self._reap(rc)

    def remount(self, args=None) -> "Mount":
        self.unmount()
        return self.start(args)

    def force_cleanup(self) -> None:
        """Best effort, never raises: kill the daemon, drop the mount."""
        try:
            if self.proc is not None:
                if self.proc.poll() is None:
                    self.proc.kill()
                try:
                    rc = self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    rc = -9
                self._reap(rc)
        except Exception:
            pass
        try:
            if is_fuse_mounted(self.mnt):
                lazy_unmount(self.mnt)
        except Exception:
            pass

    def close(self) -> None:
        """Teardown: unmount if still running (no assertions), remove our mountpoint."""
        try:
            if self.alive():
                try:
                    self.unmount(check=False, timeout=20)
                except Exception:
                    pass
        finally:
            self.force_cleanup()
            if self.own_mnt:
                try:
                    os.rmdir(self.mnt)
                except OSError:
                    pass

    def __enter__(self) -> "Mount":
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def path(self, *parts) -> str:
        return os.path.join(self.mnt, *parts)

    def __truediv__(self, other) -> str:
        return os.path.join(self.mnt, other)

    def __repr__(self) -> str:
        return f"Mount({self.image!r} on {self.mnt!r}, pid={self.proc.pid if self.proc else None})"


# --------------------------------------------------------------------------------------
# Small shared helpers for tests
# --------------------------------------------------------------------------------------

def free_blocks(path) -> int:
    return os.statvfs(path).f_bfree


def wait_free_blocks(path, target, tolerance=8, timeout=10.0) -> int:
    """Poll statvfs until free blocks are within TOLERANCE of TARGET and return the last
    value seen. FUSE sends RELEASE and FORGET asynchronously, so an unlinked file's space
    may come back a moment after unlink()/close() return."""
    deadline = time.monotonic() + timeout
    while True:
        cur = free_blocks(path)
        if abs(cur - target) <= tolerance or time.monotonic() > deadline:
            return cur
        time.sleep(0.05)


def write_file(path, data: bytes, mode: int = 0o644, *, fsync: bool = False) -> None:
    """Create or truncate PATH and write DATA. File data goes through the daemon's DRAM
    write-back cache: it survives a daemon crash only with fsync=True (or after any other
    writeback: unmount, user.pmemfuse.sync, the flush timer)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_file(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def expect_errno(err: int, fn, *args, **kw):
    """Assert fn(*args) raises OSError with errno == err."""
    with pytest.raises(OSError) as ei:
        fn(*args, **kw)
    assert ei.value.errno == err, (
        f"expected {errno.errorcode.get(err, err)}, got "
        f"{errno.errorcode.get(ei.value.errno, ei.value.errno)}: {ei.value}")
    return ei.value


# --------------------------------------------------------------------------------------
# Raw readdir (os.scandir hides "." and ".."; we want their d_ino too)
# --------------------------------------------------------------------------------------

import ctypes  # noqa: E402
import ctypes.util  # noqa: E402


class _Dirent64(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_ushort), ("d_type", ctypes.c_ubyte),
                ("d_name", ctypes.c_char * 256)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.opendir.restype = ctypes.c_void_p
_libc.opendir.argtypes = [ctypes.c_char_p]
_libc.readdir64.restype = ctypes.POINTER(_Dirent64)
_libc.readdir64.argtypes = [ctypes.c_void_p]
_libc.closedir.argtypes = [ctypes.c_void_p]

DT_DIR, DT_REG, DT_LNK = 4, 8, 10


def raw_readdir(path) -> dict[str, tuple[int, int]]:
    """{name: (d_ino, d_type)} for every entry readdir returns, "." and ".." included."""
    d = _libc.opendir(os.fsencode(path))
    if not d:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    out = {}
    try:
        while True:
            ctypes.set_errno(0)
            ent = _libc.readdir64(d)
            if not ent:
                e = ctypes.get_errno()
                if e:
                    raise OSError(e, os.strerror(e), path)
                break
            name = os.fsdecode(ent.contents.d_name)
            assert name not in out, f"readdir returned {name!r} twice in {path}"
            out[name] = (ent.contents.d_ino, ent.contents.d_type)
    finally:
        _libc.closedir(d)
    return out


# --------------------------------------------------------------------------------------
# Tree snapshots (for "everything survived" comparisons)
# --------------------------------------------------------------------------------------

import hashlib  # noqa: E402
import stat as _stat  # noqa: E402


def snapshot(root, *, with_ino: bool = True, with_atime: bool = False) -> dict:
    """{relpath: attributes} for every entry under ROOT (root itself as "."): type, mode,
    uid, gid, size, nlink, mtime_ns, ino (optional), sha256 of file data, symlink target,
    and user.* xattrs."""
    out = {}

    def entry(path, rel):
        st = os.lstat(path)
        e = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid, "nlink": st.st_nlink,
             "mtime_ns": st.st_mtime_ns}
        if with_ino:
            e["ino"] = st.st_ino
        if with_atime:
            e["atime_ns"] = st.st_atime_ns
        if _stat.S_ISREG(st.st_mode):
            e["size"] = st.st_size
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            e["sha256"] = h.hexdigest()
        elif _stat.S_ISLNK(st.st_mode):
            e["size"] = st.st_size
            e["target"] = os.readlink(path)
        if not _stat.S_ISLNK(st.st_mode):
            e["xattrs"] = {k: os.getxattr(path, k) for k in sorted(os.listxattr(path))
                           if k.startswith("user.")}
        out[rel] = e

    entry(root, ".")
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            entry(p, os.path.relpath(p, root))
    return out


def diff_snapshots(a: dict, b: dict, limit: int = 20) -> list[str]:
    """Human-readable differences between two snapshots (empty list: equal)."""
    out = []
    for k in sorted(set(a) | set(b)):
        if k not in a:
            out.append(f"+ {k}")
        elif k not in b:
            out.append(f"- {k}")
        elif a[k] != b[k]:
            keys = {x for x in set(a[k]) | set(b[k]) if a[k].get(x) != b[k].get(x)}
            out.append(f"~ {k}: " + ", ".join(
                f"{x}: {a[k].get(x)!r:.80} -> {b[k].get(x)!r:.80}" for x in sorted(keys)))
        if len(out) >= limit:
            out.append("...")
            break
    return out


def find_daemon_pids(image) -> list[int]:
    """pids of pmemfuse processes whose command line mentions IMAGE."""
    pids = []
    img = os.fsencode(str(image))
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if args and os.path.basename(args[0]) == b"pmemfuse" and img in args:
            pids.append(int(d))
    return pids


def kill_image_daemons_and_unmount(image, mnt) -> None:
    """Cleanup for tests that start daemons outside Mount: SIGKILL every daemon serving
    image, drop the mount and remove the mountpoint."""
    for pid in find_daemon_pids(image):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if is_fuse_mounted(mnt):
        lazy_unmount(mnt)
    try:
        os.rmdir(mnt)
    except OSError:
        pass


def write_until_error(fd, chunk: bytes, max_writes: int):
    """Writes chunk up to max_writes times, then fsyncs; returns (bytes written, the first
    OSError or None). With write-back caching the error may only surface at fsync."""
    written, err = 0, None
    try:
        for _ in range(max_writes):
            try:
                written += os.write(fd, chunk)
            except OSError as e:
                err = e
                break
        if err is None:
            try:
                os.fsync(fd)
            except OSError as e:
                err = e
    finally:
        try:
            os.close(fd)
        except OSError as e:
            err = err or e
    return written, err
