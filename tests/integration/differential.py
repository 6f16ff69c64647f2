"""Randomized differential testing: the same seeded operation sequence runs on a pmemfuse
mount and on a tmpfs directory, and every outcome is compared.

The engine (DiffEngine) generates operations from a seeded RNG, applies each one to both
sides (pmemfuse first, then tmpfs), and compares the return value or errno (and, for reads,
the bytes). After every operation it also compares lstat() of the paths the operation
touched and of their parents. At checkpoints the whole trees are compared (names, types,
modes incl. setuid/setgid/sticky, owners, link counts, sizes, sha256 of contents, symlink
targets, user.* xattrs, and mtimes that were set explicitly with utimensat).

Operations are plain JSON-able dicts that carry everything needed to re-run them (written
data comes from a per-operation seed), so a failing sequence can be replayed and shrunk
(`minimize`). Reproduce a run with PMEMFUSE_DIFF_SEED=n (see test_differential.py).

Things that legitimately differ between filesystems and are not compared: inode numbers,
st_blocks, directory st_size, atime, ctime, mtimes not set explicitly, the exact offsets
SEEK_DATA/SEEK_HOLE report for files whose allocation was changed by fallocate or
copy_file_range (only consistency with the data is checked there), and xattr sets that do
not fit pmemfuse's documented per-inode xattr space (40 bytes inline + one 4064-byte
block, like ext4 without ea_inode): a set that cannot fit may fail with ENOSPC/E2BIG.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import bisect
import random
import shutil
import stat
import tempfile
import time
from typing import Callable

from pmemfuse_helpers import diff_snapshots, snapshot

# --------------------------------------------------------------------------------------
# Syscalls Python does not wrap
# --------------------------------------------------------------------------------------

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                            ctypes.c_uint]
_libc.fallocate64.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_Timespec),
                            ctypes.c_int]

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
XATTR_CREATE = 1
XATTR_REPLACE = 2

KiB = 1024
MiB = 1024 * KiB
BLOCK = 4096
# pmemfuse's per-inode xattr space (docs/format.md §10): 40 bytes inline + one block of
# 4064 bytes; each entry takes 4 bytes + name + value.
XATTR_MUST_FIT = 4064
XATTR_CANNOT_FIT = 4064 + 40


def _check(ret: int, *paths) -> int:
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), *paths[:1])
    return ret


def renameat2(old: str, new: str, flags: int) -> None:
    _check(_libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags),
           old)


def fallocate(fd: int, mode: int, off: int, length: int) -> None:
    _check(_libc.fallocate64(fd, mode, off, length))


def _ts(v) -> _Timespec:
    if v == "now":
        return _Timespec(0, UTIME_NOW)
    if v == "omit":
        return _Timespec(0, UTIME_OMIT)
    return _Timespec(v // 10**9, v % 10**9)


# pmemfuse stores times as signed 64-bit nanoseconds since the epoch and, like ext4 at its
# own limits, clamps what lies outside (before 1677, after 2262). The reference side is
# handed the clamped value, so both should then hold the same time.
NS_MIN, NS_MAX = -2**63, 2**63 - 1


def clamp_time(v):
    return min(max(v, NS_MIN), NS_MAX) if isinstance(v, int) else v


def utimensat(path: str, atime, mtime, follow: bool) -> None:
    times = (_Timespec * 2)(_ts(atime), _ts(mtime))
    _check(_libc.utimensat(AT_FDCWD, os.fsencode(path), times,
                           0 if follow else AT_SYMLINK_NOFOLLOW), path)


def _data(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def ename(e: int) -> str:
    if e == errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return errno.errorcode.get(e, str(e))


# --------------------------------------------------------------------------------------
# The path pool
# --------------------------------------------------------------------------------------

DIRS = ["", "a", "b", "a/c", "a/d", "b/e", "a/c/g"]      # parents (created at the start)
DIR_WEIGHTS = [4, 4, 3, 3, 2, 2, 2]
FILE_NAMES = [f"f{i}" for i in range(22)]
DIR_NAMES = ["a", "b", "c", "d", "e", "g", "h", "k"]
LINK_NAMES = ["s0", "s1", "s2", "s3", "s4"]
ALL_NAMES = FILE_NAMES + DIR_NAMES + LINK_NAMES
NAME_255 = "N" * 255
NAME_256 = "M" * 256
XATTR_NAMES = ["user.a", "user.b", "user.c", "user.dd", "user.long_attribute_name",
               "user.x" * 3]
XATTR_NAME_255 = "user." + "x" * 250
XATTR_NAME_256 = "user." + "y" * 251

SETUP_OPS = [{"op": "mkdir", "path": d, "mode": 0o755} for d in DIRS if d]

OP_WEIGHTS = {
    "create": 6, "write": 14, "read": 8, "truncate": 5, "fallocate": 6, "rename": 8,
    "link": 3, "unlink": 5, "mkdir": 5, "rmdir": 3, "symlink": 3, "setxattr": 6,
    "getxattr": 2, "listxattr": 2, "removexattr": 3, "chmod": 3, "chown": 2,
    "utimens": 3, "copy_file_range": 4, "lseek": 4, "stat": 2, "readdir": 2,
    "readlink": 1, "open_fd": 4, "close_fd": 2, "fd_write": 4, "fd_read": 2,
    "fd_truncate": 1, "fd_stat": 1, "fd_fsync": 1,
}


class Mismatch(AssertionError):
    """pmemfuse and tmpfs disagreed."""

    def __init__(self, msg: str, kind: str = "op"):
        super().__init__(msg)
        self.kind = kind


# --------------------------------------------------------------------------------------
# One side (a directory on pmemfuse or on tmpfs)
# --------------------------------------------------------------------------------------

class Side:
    def __init__(self, name: str, root: str, emulate_zero_range: bool):
        self.name = name
        self.root = root
        self.emulate_zero_range = emulate_zero_range
        self.fds: dict[int, tuple[int, int]] = {}  # slot -> (fd, open flags)

    def p(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def close_all(self) -> None:
        for fd, _ in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()

    def fd(self, slot: int) -> int:
        if slot not in self.fds:
            raise OSError(errno.EBADF, "slot not open")
        return self.fds[slot][0]


def _stat_summary(st: os.stat_result) -> tuple:
    fmt = stat.S_IFMT(st.st_mode)
    return (stat.filemode(st.st_mode), oct(stat.S_IMODE(st.st_mode)), st.st_nlink,
            st.st_uid, st.st_gid, None if stat.S_ISDIR(st.st_mode) else st.st_size,
            fmt)


def _resolve_off(fd: int, spec) -> int:
    kind, v = spec
    if kind == "abs":
        return v
    return max(0, os.fstat(fd).st_size + v)


def _resolve_size_path(path: str, spec) -> int:
    kind, v = spec
    if kind == "abs":
        return v
    try:
        return max(0, os.stat(path).st_size + v)
    except OSError:
        return max(0, v)


def execute(side: Side, op: dict):
    """Run OP on SIDE; returns a comparable value or raises OSError."""
    k = op["op"]
    P = side.p
    if k == "create":
        flags = os.O_CREAT | os.O_WRONLY
        if op.get("excl"):
            flags |= os.O_EXCL
        if op.get("trunc"):
            flags |= os.O_TRUNC
        os.close(os.open(P(op["path"]), flags, op["mode"]))
        return 0
    if k == "write":
        fd = os.open(P(op["path"]), os.O_WRONLY | (os.O_APPEND if op.get("append") else 0))
        try:
            data = _data(op["seed"], op["len"])
            if op.get("append"):
                return os.write(fd, data)
            return os.pwrite(fd, data, _resolve_off(fd, op["off"]))
        finally:
            os.close(fd)
    if k == "read":
        fd = os.open(P(op["path"]), os.O_RDONLY)
        try:
            return os.pread(fd, op["len"], _resolve_off(fd, op["off"]))
        finally:
            os.close(fd)
    if k == "truncate":
        path = P(op["path"])
        os.truncate(path, _resolve_size_path(path, op["size"]))
        return 0
    if k == "fallocate":
        fd = os.open(P(op["path"]), os.O_RDWR)
        try:
            off = _resolve_off(fd, op["off"])
            mode, length = op["mode"], op["len"]
            if side.emulate_zero_range and mode & FALLOC_FL_ZERO_RANGE:
                # tmpfs has no ZERO_RANGE: punch the range, then extend like ZERO_RANGE
                fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, length)
                if not mode & FALLOC_FL_KEEP_SIZE and off + length > os.fstat(fd).st_size:
                    os.ftruncate(fd, off + length)
            else:
                fallocate(fd, mode, off, length)
            return 0
        finally:
            os.close(fd)
    if k == "rename":
        renameat2(P(op["src"]), P(op["dst"]), op["flags"])
        return 0
    if k == "link":
        os.link(P(op["src"]), P(op["dst"]), follow_symlinks=False)
        return 0
    if k == "unlink":
        os.unlink(P(op["path"]))
        return 0
    if k == "mkdir":
        os.mkdir(P(op["path"]), op["mode"])
        return 0
    if k == "rmdir":
        os.rmdir(P(op["path"]))
        return 0
    if k == "symlink":
        os.symlink(op["target"], P(op["path"]))
        return 0
    if k == "setxattr":
        os.setxattr(P(op["path"]), op["name"], _data(op["seed"], op["len"]), op["flags"],
                    follow_symlinks=op["follow"])
        return 0
    if k == "getxattr":
        return os.getxattr(P(op["path"]), op["name"], follow_symlinks=op["follow"])
    if k == "listxattr":
        return sorted(os.listxattr(P(op["path"]), follow_symlinks=op["follow"]))
    if k == "removexattr":
        os.removexattr(P(op["path"]), op["name"], follow_symlinks=op["follow"])
        return 0
    if k == "chmod":
        os.chmod(P(op["path"]), op["mode"])
        return 0
    if k == "chown":
        os.chown(P(op["path"]), op["uid"], op["gid"], follow_symlinks=op["follow"])
        return 0
    if k == "utimens":
        fix = (lambda v: v) if side.name == "pmemfuse" else clamp_time
        utimensat(P(op["path"]), fix(op["atime"]), fix(op["mtime"]), op["follow"])
        return 0
    if k == "copy_file_range":
        fin = os.open(P(op["src"]), os.O_RDONLY)
        try:
            fout = os.open(P(op["dst"]), os.O_WRONLY)
            try:
                return os.copy_file_range(fin, fout, op["len"], _resolve_off(fin, op["off_in"]),
                                          _resolve_off(fout, op["off_out"]))
            finally:
                os.close(fout)
        finally:
            os.close(fin)
    if k == "lseek":
        fd = os.open(P(op["path"]), os.O_RDONLY)
        try:
            off = _resolve_off(fd, op["off"])
            return (off, os.lseek(fd, off, op["whence"]))
        finally:
            os.close(fd)
    if k == "stat":
        return _stat_summary(os.lstat(P(op["path"])))
    if k == "readdir":
        return sorted(os.listdir(P(op["path"])))
    if k == "readlink":
        return os.readlink(P(op["path"]))
    if k == "open_fd":
        slot = op["slot"]
        if slot in side.fds:
            os.close(side.fds.pop(slot)[0])
        flags = os.O_RDWR
        if op.get("creat"):
            flags |= os.O_CREAT
        if op.get("trunc"):
            flags |= os.O_TRUNC
        if op.get("append"):
            flags |= os.O_APPEND
        side.fds[slot] = (os.open(P(op["path"]), flags, 0o644), flags)
        return 0
    if k == "close_fd":
        fd = side.fd(op["slot"])
        del side.fds[op["slot"]]
        os.close(fd)
        return 0
    if k == "fd_write":
        fd = side.fd(op["slot"])
        data = _data(op["seed"], op["len"])
        if side.fds[op["slot"]][1] & os.O_APPEND:
            return os.write(fd, data)
        return os.pwrite(fd, data, _resolve_off(fd, op["off"]))
    if k == "fd_read":
        fd = side.fd(op["slot"])
        return os.pread(fd, op["len"], _resolve_off(fd, op["off"]))
    if k == "fd_truncate":
        fd = side.fd(op["slot"])
        os.ftruncate(fd, _resolve_off(fd, op["size"]))
        return 0
    if k == "fd_stat":
        return _stat_summary(os.fstat(side.fd(op["slot"])))
    if k == "fd_fsync":
        os.fsync(side.fd(op["slot"]))
        return 0
    raise ValueError(f"unknown op {k}")


def run_op(side: Side, op: dict):
    """("ok", value) or ("err", errno name)."""
    try:
        return ("ok", execute(side, op))
    except OSError as e:
        return ("err", ename(e.errno))


# --------------------------------------------------------------------------------------
# Describing operations and results
# --------------------------------------------------------------------------------------

_FALLOC_NAMES = [(FALLOC_FL_KEEP_SIZE, "KEEP_SIZE"), (FALLOC_FL_PUNCH_HOLE, "PUNCH_HOLE"),
                 (FALLOC_FL_ZERO_RANGE, "ZERO_RANGE")]


def _short(s) -> str:
    s = str(s)
    if len(s) > 24 and len(set(s)) == 1:
        return f"{s[0]!r}*{len(s)}"
    return repr(s) if len(s) <= 40 else repr(s[:20]) + f"...({len(s)} chars)"


def _path(p: str) -> str:
    # long names shortened; "" is the test root
    parts = [(_short(x)[1:-1] if len(x) <= 40 else f"<{len(x)}x{x[0]}>") for x in p.split("/")]
    return "'" + ("/".join(parts) if p else ".") + "'"


def _off(spec) -> str:
    kind, v = spec
    return str(v) if kind == "abs" else f"EOF{v:+d}"


def describe(op: dict) -> str:
    k = op["op"]
    g = op.get
    if k == "create":
        fl = "O_CREAT|O_WRONLY" + ("|O_EXCL" if g("excl") else "") + ("|O_TRUNC" if g("trunc") else "")
        return f"close(open({_path(op['path'])}, {fl}, {oct(op['mode'])}))"
    if k == "write":
        if g("append"):
            return f"write(open({_path(op['path'])}, O_WRONLY|O_APPEND), {op['len']} bytes)"
        return f"pwrite(open({_path(op['path'])}, O_WRONLY), {op['len']} bytes, off={_off(op['off'])})"
    if k == "read":
        return f"pread(open({_path(op['path'])}, O_RDONLY), {op['len']}, off={_off(op['off'])})"
    if k == "truncate":
        return f"truncate({_path(op['path'])}, {_off(op['size'])})"
    if k == "fallocate":
        m = "|".join(n for b, n in _FALLOC_NAMES if op["mode"] & b) or "0"
        return (f"fallocate(open({_path(op['path'])}, O_RDWR), {m}, off={_off(op['off'])}, "
                f"len={op['len']})")
    if k == "rename":
        f = {0: "0", RENAME_NOREPLACE: "RENAME_NOREPLACE", RENAME_EXCHANGE: "RENAME_EXCHANGE"}
        return f"renameat2({_path(op['src'])}, {_path(op['dst'])}, {f[op['flags']]})"
    if k == "link":
        return f"link({_path(op['src'])}, {_path(op['dst'])})"
    if k in ("unlink", "rmdir", "readdir", "readlink"):
        return f"{k}({_path(op['path'])})"
    if k == "stat":
        return f"lstat({_path(op['path'])})"
    if k == "mkdir":
        return f"mkdir({_path(op['path'])}, {oct(op['mode'])})"
    if k == "symlink":
        return f"symlink({_short(op['target'])}, {_path(op['path'])})"
    lx = "" if g("follow", True) else "l"
    if k == "setxattr":
        f = {0: "0", XATTR_CREATE: "XATTR_CREATE", XATTR_REPLACE: "XATTR_REPLACE"}[op["flags"]]
        return (f"{lx}setxattr({_path(op['path'])}, {_short(op['name'])}, {op['len']} bytes, "
                f"{f})")
    if k in ("getxattr", "removexattr"):
        return f"{lx}{k}({_path(op['path'])}, {_short(op['name'])})"
    if k == "listxattr":
        return f"{lx}listxattr({_path(op['path'])})"
    if k == "chmod":
        return f"chmod({_path(op['path'])}, {oct(op['mode'])})"
    if k == "chown":
        return f"{lx}chown({_path(op['path'])}, {op['uid']}, {op['gid']})"
    if k == "utimens":
        return (f"utimensat({_path(op['path'])}, atime={op['atime']}, mtime={op['mtime']}"
                f"{'' if op['follow'] else ', AT_SYMLINK_NOFOLLOW'})")
    if k == "copy_file_range":
        return (f"copy_file_range({_path(op['src'])} @{_off(op['off_in'])} -> "
                f"{_path(op['dst'])} @{_off(op['off_out'])}, len={op['len']})")
    if k == "lseek":
        w = {os.SEEK_DATA: "SEEK_DATA", os.SEEK_HOLE: "SEEK_HOLE"}[op["whence"]]
        return f"lseek(open({_path(op['path'])}, O_RDONLY), {_off(op['off'])}, {w})"
    if k == "open_fd":
        fl = "O_RDWR" + ("|O_CREAT" if g("creat") else "") + ("|O_TRUNC" if g("trunc") else "") \
            + ("|O_APPEND" if g("append") else "")
        return f"fd{op['slot']} = open({_path(op['path'])}, {fl})"
    if k == "close_fd":
        return f"close(fd{op['slot']})"
    if k == "fd_write":
        return f"pwrite(fd{op['slot']}, {op['len']} bytes, off={_off(op['off'])})"
    if k == "fd_read":
        return f"pread(fd{op['slot']}, {op['len']}, off={_off(op['off'])})"
    if k == "fd_truncate":
        return f"ftruncate(fd{op['slot']}, {_off(op['size'])})"
    if k == "fd_stat":
        return f"fstat(fd{op['slot']})"
    if k == "fd_fsync":
        return f"fsync(fd{op['slot']})"
    return json.dumps(op)


def fmt_result(res) -> str:
    kind, v = res
    if kind == "err":
        return v
    if isinstance(v, bytes):
        return f"<{len(v)} bytes sha256:{hashlib.sha256(v).hexdigest()[:12]}>"
    return repr(v)


def _first_diff(a: bytes, b: bytes) -> str:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            j = i
            while j < n and a[j] != b[j]:
                j += 1
            return (f"first difference at byte {i} (run of {j - i}): pmemfuse "
                    f"{a[i:i + 8].hex()} vs tmpfs {b[i:i + 8].hex()}; "
                    f"pmemfuse bytes there are {'all zero' if not any(a[i:j]) else 'not zero'}")
    return f"lengths differ: {len(a)} vs {len(b)}"


# --------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------

class DiffEngine:
    def __init__(self, pm_root: str, tmp_root: str, seed: int, *, skip=(),
                 xattrs: bool = True, log_tail: int = 30):
        self.pm = Side("pmemfuse", pm_root, emulate_zero_range=False)
        self.tmp = Side("tmpfs", tmp_root, emulate_zero_range=True)
        self.seed = seed
        self.rnd = random.Random(seed)
        self.skip = set(skip)
        if not xattrs:
            self.skip |= {"setxattr", "getxattr", "listxattr", "removexattr"}
        self.weights = {k: w for k, w in OP_WEIGHTS.items() if k not in self.skip}
        self.kinds = list(self.weights)
        self.cum = []
        total = 0
        for k in self.kinds:
            total += self.weights[k]
            self.cum.append(total)
        self.log_tail = log_tail
        self.ops: list[dict] = []          # every op applied, in order
        self.log: list[str] = []           # one line per op: description -> results
        self.explicit_mtimes: set[int] = set()
        self.tainted: set[int] = set()     # tmpfs inode numbers touched by fallocate/cfr
        self.stats: dict[str, dict[str, int]] = {}  # op -> {"ok" or errno name: count}
        self._cache_age = 10**9
        self._files: list[str] = []
        self._dirs: list[str] = []
        self._links: list[str] = []
        self.phase = "ops"

    # -- existing entries (from the tmpfs side) ----------------------------------------

    def _refresh(self) -> None:
        files, dirs, links = [], [], []
        root = self.tmp.root
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            rel = "" if rel == "." else rel
            for n in dirnames + filenames:
                p = f"{rel}/{n}" if rel else n
                m = os.lstat(os.path.join(dirpath, n)).st_mode
                (dirs if stat.S_ISDIR(m) else links if stat.S_ISLNK(m) else files).append(p)
        self._files, self._dirs, self._links = sorted(files), sorted(dirs), sorted(links)
        self._cache_age = 0

    # -- random choices ----------------------------------------------------------------

    def _pick(self, seq):
        return seq[self.rnd.randrange(len(seq))]

    def _parent(self) -> str:
        # mostly an existing directory (at most 3 levels deep, so the tree stays bounded),
        # sometimes one from the fixed pool, which may not exist (ENOENT)
        if self.rnd.random() < 0.75:
            shallow = [d for d in self._dirs if d.count("/") < 3]
            if shallow and self.rnd.random() > 0.12:
                return self._pick(shallow)
            return ""
        return self.rnd.choices(DIRS, DIR_WEIGHTS)[0]

    def rpath(self, kind: str = "any", existing: float = 0.5) -> str:
        """A path from the pool. kind: file, dir, link or any."""
        r = self.rnd
        x = r.random()
        if x < existing:
            pool = {"file": self._files, "dir": self._dirs, "link": self._links,
                    "any": self._files + self._dirs + self._links}[kind]
            if kind == "file" and r.random() < 0.1:
                pool = self._links or pool      # through a symlink
            if pool:
                return self._pick(pool)
        x = r.random()
        par = self._parent()
        if x < 0.02:
            name = NAME_255
        elif x < 0.035:
            name = NAME_256
        elif x < 0.06 and self._files:
            par = self._pick(self._files)      # a file as a parent: ENOTDIR
            name = self._pick(ALL_NAMES)
        else:
            names = {"file": FILE_NAMES, "dir": DIR_NAMES, "link": LINK_NAMES,
                     "any": ALL_NAMES}[kind]
            if r.random() < 0.15:
                names = ALL_NAMES
            name = self._pick(names)
        return f"{par}/{name}" if par else name

    def rsize(self, cap: int = 256 * KiB) -> int:
        r = self.rnd
        x = r.random()
        if x < 0.2:
            n = r.randint(1, 16)
        elif x < 0.45:
            n = r.randint(1, 4096)
        elif x < 0.65:
            n = BLOCK * r.randint(1, 16)
        else:
            n = r.randint(1, cap)
        return min(n, cap)

    def roff(self, limit: int = 3 * MiB):
        r = self.rnd
        x = r.random()
        if x < 0.3:
            return ["eof", r.randint(-9000, 9000)]
        if x < 0.55:
            return ["abs", BLOCK * r.randint(0, limit // BLOCK)]
        if x < 0.62:
            return ["abs", 0]
        return ["abs", r.randint(0, limit)]

    def rmode(self, dir_: bool = False) -> int:
        r = self.rnd
        x = r.random()
        if x < 0.5:
            return r.choice([0o755, 0o700, 0o1777, 0o2775, 0o2755] if dir_ else
                            [0o644, 0o600, 0o755, 0o4755, 0o2755, 0o6711, 0o1644, 0o000])
        return r.randint(0, 0o7777)

    def rtime(self):
        r = self.rnd
        x = r.random()
        if x < 0.15:
            return "now"
        if x < 0.3:
            return "omit"
        if x < 0.31:
            # outside what a signed 64-bit ns count holds (before 1677 / after 2262)
            v = r.choice([r.randint(2**63, 2**64), -r.randint(2**63 + 1, 2**64)])
            return v - v % 10**9 + r.randint(0, 10**9 - 1)
        sec = r.choice([r.randint(-2**31, -1), r.randint(0, 2**31 - 1),
                        r.randint(2**31, 9_000_000_000), 0, r.randint(10**9, 1_700_000_000)])
        return sec * 10**9 + r.randint(0, 10**9 - 1)

    def gen(self) -> dict:
        if self._cache_age >= 4:
            self._refresh()
        self._cache_age += 1
        r = self.rnd
        k = self.kinds[min(len(self.kinds) - 1,
                           bisect.bisect_right(self.cum, r.random() * self.cum[-1]))]
        seed = r.getrandbits(48)
        if k == "create":
            return {"op": k, "path": self.rpath("file", 0.35), "mode": self.rmode(),
                    "excl": r.random() < 0.3, "trunc": r.random() < 0.2}
        if k == "write":
            op = {"op": k, "path": self.rpath("file", 0.85), "len": self.rsize(), "seed": seed}
            if r.random() < 0.1:
                op["append"] = True
            else:
                op["off"] = self.roff()
            return op
        if k == "read":
            return {"op": k, "path": self.rpath("file", 0.85), "off": self.roff(),
                    "len": self.rsize()}
        if k == "truncate":
            x = r.random()
            size = (["eof", r.randint(-20000, 20000)] if x < 0.4 else
                    ["abs", BLOCK * r.randint(0, 1024)] if x < 0.6 else
                    ["abs", 0] if x < 0.65 else ["abs", r.randint(0, 4 * MiB)])
            return {"op": k, "path": self.rpath("file", 0.85), "size": size}
        if k == "fallocate":
            mode = r.choice([0, 0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                             FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE,
                             FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE])
            length = 0 if r.random() < 0.03 else self.rsize(1 * MiB)
            return {"op": k, "path": self.rpath("file", 0.85), "mode": mode,
                    "off": self.roff(), "len": length}
        if k == "rename":
            x = r.random()
            src = self.rpath("any", 0.75)
            if x < 0.08 and self._dirs:
                src = self._pick(self._dirs)                 # into its own subtree
                dst = f"{src}/{self._pick(ALL_NAMES)}" if r.random() < 0.7 else \
                    f"{src}/c/{self._pick(DIR_NAMES)}"
            elif x < 0.12:
                dst = src + "/."
            elif x < 0.55:
                dst = self.rpath("any", 0.6)
            else:
                kind = "dir" if src in self._dirs else "file"
                dst = self.rpath(kind, 0.5)
            flags = r.choices([0, RENAME_NOREPLACE, RENAME_EXCHANGE], [6, 2, 2])[0]
            return {"op": k, "src": src, "dst": dst, "flags": flags}
        if k == "link":
            src = self.rpath(r.choice(["file", "file", "file", "link", "dir"]), 0.85)
            return {"op": k, "src": src, "dst": self.rpath("file", 0.3)}
        if k == "unlink":
            return {"op": k, "path": self.rpath(r.choice(["file", "file", "link", "any"]), 0.7)}
        if k == "mkdir":
            return {"op": k, "path": self.rpath("dir", 0.2), "mode": self.rmode(True)}
        if k == "rmdir":
            x = r.random()
            p = self.rpath("dir", 0.7)
            if x < 0.05:
                p = p + "/."
            elif x < 0.1:
                p = self.rpath("file", 0.8)
            return {"op": k, "path": p}
        if k == "symlink":
            x = r.random()
            if x < 0.5:
                target = self._pick(ALL_NAMES)
            elif x < 0.7:
                target = f"{self._pick(DIR_NAMES)}/{self._pick(FILE_NAMES)}"
            elif x < 0.85:
                target = "t" * r.randint(1, 300)
            elif x < 0.97:
                target = "u" * r.choice([95, 96, 97, 4000, 4095])
            else:
                target = "v" * 4096                             # ENAMETOOLONG
            return {"op": k, "path": self.rpath("link", 0.2), "target": target}
        if k in ("setxattr", "getxattr", "removexattr", "listxattr"):
            x = r.random()
            path = "" if x < 0.05 else self.rpath("any", 0.85)
            op = {"op": k, "path": path, "follow": r.random() < 0.85}
            if k == "listxattr":
                return op
            y = r.random()
            op["name"] = (XATTR_NAME_255 if y < 0.03 else XATTR_NAME_256 if y < 0.05 else
                          "user." if y < 0.055 else self._pick(XATTR_NAMES))
            if y >= 0.055 and r.random() < (0.3 if k == "setxattr" else 0.6):
                try:        # a name the target has
                    have = sorted(os.listxattr(self.tmp.p(path), follow_symlinks=op["follow"]))
                except OSError:
                    have = []
                if have:
                    op["name"] = self._pick(have)
            if k == "setxattr":
                z = r.random()
                op["len"] = (r.randint(0, 64) if z < 0.55 else r.randint(65, 1000) if z < 0.85
                             else r.randint(1001, 3000))
                op["seed"] = seed
                op["flags"] = r.choices([0, XATTR_CREATE, XATTR_REPLACE], [6, 2, 2])[0]
            return op
        if k == "chmod":
            p = "" if r.random() < 0.03 else self.rpath("any", 0.85)
            return {"op": k, "path": p, "mode": self.rmode(p in self._dirs or p == "")}
        if k == "chown":
            return {"op": k, "path": self.rpath("any", 0.85),
                    "uid": r.choice([0, 1000, 65534, -1]), "gid": r.choice([0, 100, 1000, -1]),
                    "follow": r.random() < 0.8}
        if k == "utimens":
            p = "" if r.random() < 0.03 else self.rpath("any", 0.85)
            op = {"op": k, "path": p, "atime": self.rtime(), "mtime": self.rtime(),
                  "follow": r.random() < 0.8}
            if isinstance(op["mtime"], int):
                self.explicit_mtimes.add(clamp_time(op["mtime"]))
            return op
        if k == "copy_file_range":
            src = self.rpath("file", 0.9)
            dst = src if r.random() < 0.1 else self.rpath("file", 0.85)
            return {"op": k, "src": src, "dst": dst, "off_in": self.roff(), "off_out": self.roff(),
                    "len": self.rsize(512 * KiB)}
        if k == "lseek":
            x = r.random()
            off = (["abs", BLOCK * r.randint(0, 1000)] if x < 0.5 else
                   ["eof", r.randint(-10000, 100)] if x < 0.8 else ["abs", r.randint(0, 4 * MiB)])
            return {"op": k, "path": self.rpath("file", 0.9), "off": off,
                    "whence": r.choice([os.SEEK_DATA, os.SEEK_HOLE])}
        if k in ("stat", "readdir", "readlink"):
            kind = {"stat": "any", "readdir": "dir", "readlink": "link"}[k]
            return {"op": k, "path": self.rpath(kind, 0.85)}
        slot = r.randrange(4)
        if k != "open_fd" and self.tmp.fds and r.random() < 0.9:
            slot = self._pick(sorted(self.tmp.fds))
        if k == "open_fd":
            return {"op": k, "slot": slot, "path": self.rpath("file", 0.8),
                    "creat": r.random() < 0.3, "trunc": r.random() < 0.1,
                    "append": r.random() < 0.1}
        if k == "fd_write":
            return {"op": k, "slot": slot, "off": self.roff(), "len": self.rsize(),
                    "seed": seed}
        if k == "fd_read":
            return {"op": k, "slot": slot, "off": self.roff(), "len": self.rsize()}
        if k == "fd_truncate":
            return {"op": k, "slot": slot,
                    "size": r.choice([["abs", r.randint(0, 3 * MiB)],
                                      ["eof", r.randint(-10000, 10000)]])}
        return {"op": k, "slot": slot}

    # -- applying and comparing --------------------------------------------------------

    def fail(self, msg: str, kind: str = "op"):
        raise Mismatch(f"pmemfuse/tmpfs mismatch (seed={self.seed}, phase={self.phase}): "
                       f"{msg}\nlast {min(self.log_tail, len(self.log))} ops:\n  "
                       + "\n  ".join(self.log[-self.log_tail:]), kind)

    def _xattr_budget(self, op: dict):
        """(min, max) bytes of xattr entries the target holds after a successful set, or None
        if the set cannot succeed on tmpfs anyway."""
        path = self.tmp.p(op["path"])
        try:
            names = os.listxattr(path, follow_symlinks=op["follow"])
            total = 0
            for n in names:
                if n != op["name"]:
                    total += 4 + len(n.encode()) + len(os.getxattr(path, n,
                                                                   follow_symlinks=op["follow"]))
        except OSError:
            return None
        return total + 4 + len(op["name"].encode()) + op["len"]

    def apply(self, op: dict) -> None:
        idx = len(self.ops)
        self.ops.append(op)
        desc = f"#{idx} {describe(op)}"
        k = op["op"]
        budget = self._xattr_budget(op) if k == "setxattr" else None
        pm = run_op(self.pm, op)
        if (k == "setxattr" and budget is not None and budget > XATTR_MUST_FIT
                and pm in (("err", "ENOSPC"), ("err", "E2BIG"))):
            # does not fit pmemfuse's documented xattr space: not applied on tmpfs either
            self.log.append(f"{desc} -> {fmt_result(pm)} (needs {budget} bytes of xattr "
                            f"space; tmpfs side skipped)")
            self._count(k, pm)
            self._post_check(op, desc)
            return
        tmp = run_op(self.tmp, op)
        line = f"{desc} -> {fmt_result(pm)}"
        if pm != tmp:
            line += f" | tmpfs: {fmt_result(tmp)}"
        self.log.append(line)
        self._count(k, tmp)
        if k == "lseek":
            if not os.path.isdir(self.tmp.p(op["path"])):
                # directories: tmpfs refuses SEEK_DATA/SEEK_HOLE (EINVAL), FUSE directories
                # use generic_file_llseek (like ext4); not a pmemfuse matter
                self._check_lseek(op, pm, tmp, desc)
        elif pm != tmp:
            extra = ""
            if pm == ("err", "ENOENT") and tmp[0] == "ok":
                extra += "\n  " + self._enoent_diag(op)
            if pm[0] == tmp[0] == "ok" and isinstance(pm[1], bytes):
                extra = "\n  " + _first_diff(pm[1], tmp[1])
            if k == "setxattr" and pm[0] == "ok" and budget is not None \
                    and budget > XATTR_CANNOT_FIT:
                extra += f"\n  (the xattrs need {budget} bytes, more than pmemfuse can hold)"
            self.fail(f"op #{idx} {describe(op)}\n  pmemfuse: {fmt_result(pm)}\n"
                      f"  tmpfs:    {fmt_result(tmp)}{extra}")
        if k in ("fallocate", "copy_file_range") and tmp[0] == "ok":
            # their allocation may legitimately differ (unwritten extents, punched pages)
            try:
                self.tainted.add(os.stat(self.tmp.p(op.get("dst", op.get("path")))).st_ino)
            except OSError:
                pass
        self._post_check(op, desc)

    def _enoent_diag(self, op: dict) -> str:
        """Which path component pmemfuse cannot find, now and 1.5 s later."""
        out = []
        for key in ("path", "src", "dst"):
            p = op.get(key)
            if not p:
                continue
            for attempt in (0, 1):
                if attempt:
                    time.sleep(1.5)
                parts, cur = p.split("/"), ""
                for c in parts:
                    cur = f"{cur}/{c}" if cur else c
                    got = self._lstat(self.pm, cur)
                    if isinstance(got, str):
                        par = os.path.dirname(cur)
                        try:
                            listed = c in os.listdir(self.pm.p(par))
                        except OSError as e:
                            listed = ename(e.errno)
                        out.append(f"{'after 1.5 s' if attempt else 'at once'}: pmemfuse "
                                   f"lstat({_path(cur)}) -> {got}; name in readdir of the "
                                   f"parent: {listed}; tmpfs: {self._lstat(self.tmp, cur)}")
                        break
                else:
                    out.append(f"{'after 1.5 s' if attempt else 'at once'}: every component "
                               f"of {_path(p)} resolves on pmemfuse")
        return "\n  ".join(out)

    def _count(self, k: str, res) -> None:
        d = self.stats.setdefault(k, {})
        key = "ok" if res[0] == "ok" else res[1]
        d[key] = d.get(key, 0) + 1

    def _check_lseek(self, op, pm, tmp, desc):
        def bad(why):
            self.fail(f"{desc}\n  pmemfuse: {fmt_result(pm)}\n  tmpfs:    {fmt_result(tmp)}"
                      f"\n  {why}")
        if pm[0] != tmp[0] or (pm[0] == "err" and pm != tmp):
            bad("errno differs")
        if pm[0] == "err":
            return
        (off, r), (toff, tr) = pm[1], tmp[1]
        if off != toff:
            bad("file sizes differ")
        path = self.tmp.p(op["path"])
        with open(path, "rb") as f:
            data = f.read()
        size = len(data)
        if op["whence"] == os.SEEK_DATA:
            if not off <= r < size:
                bad(f"SEEK_DATA answer {r} outside [{off}, {size})")
            if any(data[off:r]):
                bad(f"SEEK_DATA skipped non-zero data in [{off}, {r})")
        else:
            if not off <= r <= size:
                bad(f"SEEK_HOLE answer {r} outside [{off}, {size}]")
            if r < size and any(data[r:min(size, (r // BLOCK + 1) * BLOCK)]):
                bad(f"SEEK_HOLE reported a hole at {r} over non-zero data")
        st = os.stat(path)
        if r != tr and st.st_ino not in self.tainted:
            bad("different answer for a file whose allocation came only from writes and "
                "truncates (holes at the same 4 KiB granularity on both)")

    def _post_check(self, op: dict, desc: str) -> None:
        paths = set()
        for key in ("path", "src", "dst"):
            p = op.get(key)
            if p is None:
                continue
            paths.add(p)
            paths.add(os.path.dirname(p.rstrip("/")))
        for p in sorted(paths):
            a = self._lstat(self.pm, p)
            b = self._lstat(self.tmp, p)
            if a != b:
                # is it persistent? (tells a stale kernel cache from a daemon answer)
                again = self._lstat(self.pm, p)
                time.sleep(1.5)
                later = self._lstat(self.pm, p)
                self.fail(f"after {desc}: lstat({_path(p)})\n  pmemfuse: {a}\n  tmpfs:    {b}"
                          f"\n  (pmemfuse again at once: {again}; after 1.5 s: {later})",
                          "stat")

    @staticmethod
    def _lstat(side: Side, p: str):
        try:
            return _stat_summary(os.lstat(side.p(p)))
        except OSError as e:
            return ename(e.errno)

    # -- whole trees -------------------------------------------------------------------

    def _snap(self, root: str) -> dict:
        s = snapshot(root, with_ino=False)
        for e in s.values():
            # mtimes only where one side holds a value set explicitly with utimensat
            e["mtime_ns"] = e["mtime_ns"] if e["mtime_ns"] in self.explicit_mtimes else None
        return s

    def compare_trees(self, label: str) -> None:
        try:
            a = self._snap(self.pm.root)
        except OSError as e:
            self.fail(f"snapshot of the pmemfuse tree failed at {label}: {e}", "tree")
        b = self._snap(self.tmp.root)
        if a != b:
            d = diff_snapshots(a, b, limit=30)
            for rel in sorted(set(a) & set(b)):
                if a[rel]["mtime_ns"] != b[rel]["mtime_ns"]:
                    raw = [self._mtime(side, rel) for side in (self.pm, self.tmp)]
                    d.append(f"{rel}: mtime_ns None = not a value set with utimensat; raw "
                             f"mtime_ns pmemfuse {raw[0]}, tmpfs {raw[1]}")
            self.fail(f"trees differ at {label} (- only on pmemfuse, + only on tmpfs, "
                      f"~ pmemfuse -> tmpfs):\n  " + "\n  ".join(d), "tree")

    @staticmethod
    def _mtime(side: Side, rel: str):
        try:
            return os.lstat(side.p("" if rel == "." else rel)).st_mtime_ns
        except OSError as e:
            return ename(e.errno)

    def close_fds(self) -> None:
        self.pm.close_all()
        self.tmp.close_all()

    def set_pm_root(self, root: str) -> None:
        self.pm.root = root

    # -- driving -----------------------------------------------------------------------

    def run(self, nops: int, *, remount: Callable[[], None] | None = None,
            check_every: int = 1000) -> None:
        """SETUP_OPS, then NOPS random operations; a full tree compare every CHECK_EVERY ops
        and, halfway, a pmemfuse remount (with fds closed) followed by a tree compare."""
        for op in SETUP_OPS:
            self.apply(dict(op))
        for i in range(1, nops + 1):
            self.apply(self.gen())
            if remount is not None and i == nops // 2:
                self.close_fds()
                self.compare_trees(f"op {i}, before the mid-run remount")
                self.phase = "mid-run remount"
                remount()
                self.compare_trees(f"op {i}, after the mid-run remount")
                self.phase = "ops"
            elif check_every and i % check_every == 0:
                self.compare_trees(f"op {i}")

    def dump(self, path: str | None = None) -> str:
        """Write the op list as JSON (for replay/minimize); returns the path."""
        if path is None:
            fd, path = tempfile.mkstemp(prefix=f"pmemfuse-diff-seed{self.seed}-",
                                        suffix=".json", dir="/tmp")
            os.close(fd)
        with open(path, "w") as f:
            json.dump({"seed": self.seed, "ops": self.ops,
                       "explicit_mtimes": sorted(self.explicit_mtimes)}, f)
        return path

    def summary(self, detail: bool = False) -> str:
        """Per op kind: successes/total (with DETAIL, the errno counts too)."""
        out = []
        for k, d in sorted(self.stats.items()):
            s = f"{k} {d.get('ok', 0)}/{sum(d.values())}"
            if detail:
                s += " (" + " ".join(f"{e}:{n}" for e, n in sorted(d.items()) if e != "ok") + ")"
            out.append(s)
        return ", ".join(out)


# --------------------------------------------------------------------------------------
# Replay and minimization
# --------------------------------------------------------------------------------------

def reset_root(root: str) -> None:
    """Empty ROOT (keeping it), and give it mode 0755 and no xattrs."""
    for n in os.listdir(root):
        p = os.path.join(root, n)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)
    os.chmod(root, 0o755)
    for n in os.listxattr(root):
        if n.startswith("user."):
            os.removexattr(root, n)


def replay(ops: list[dict], pm_root: str, tmp_root: str, *, explicit_mtimes=(),
           remount: Callable[[], str] | None = None, seed: int = -1) -> Mismatch | None:
    """Reset both roots, apply OPS, compare the trees (and, with REMOUNT, remount and
    compare again). Returns the first Mismatch or None."""
    reset_root(pm_root)
    reset_root(tmp_root)
    eng = DiffEngine(pm_root, tmp_root, seed)
    eng.explicit_mtimes = set(explicit_mtimes)
    try:
        for op in ops:
            eng.apply(op)
        eng.close_fds()
        eng.compare_trees("end of replay")
        if remount is not None:
            eng.phase = "after remount"
            eng.set_pm_root(remount())
            eng.compare_trees("end of replay, after remount")
        return None
    except Mismatch as m:
        return m
    finally:
        eng.close_fds()


def _signature(m: Mismatch) -> tuple:
    first = str(m).split("\n", 1)[0]
    return (m.kind, "after remount" in first)


def minimize(ops: list[dict], pm_root: str, tmp_root: str, *, explicit_mtimes=(),
             remount=None, budget_s: float = 120.0, log=print) -> list[dict]:
    """ddmin over OPS: a smallest-found subsequence that still fails the same way."""
    t_end = time.monotonic() + budget_s
    m0 = replay(ops, pm_root, tmp_root, explicit_mtimes=explicit_mtimes, remount=remount)
    if m0 is None:
        log("minimize: the sequence does not fail on replay")
        return ops
    sig = _signature(m0)

    def fails(seq) -> bool:
        m = replay(seq, pm_root, tmp_root, explicit_mtimes=explicit_mtimes, remount=remount)
        return m is not None and _signature(m) == sig

    # cut everything after the failing op first
    cur = list(ops)
    n = 2
    while len(cur) >= 2 and time.monotonic() < t_end:
        chunk = max(1, len(cur) // n)
        reduced = False
        for i in range(0, len(cur), chunk):
            cand = cur[:i] + cur[i + chunk:]
            if fails(cand):
                cur = cand
                n = max(n - 1, 2)
                reduced = True
                break
            if time.monotonic() > t_end:
                break
        if not reduced:
            if n >= len(cur):
                break
            n = min(len(cur), n * 2)
    log(f"minimize: {len(ops)} -> {len(cur)} ops")
    return cur
