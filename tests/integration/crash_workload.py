"""Workloads for the crash and concurrency tests, run as separate processes that the tests
SIGKILL together with the daemon; also the model the crash test checks recovery against.

Two modes:

  crash_workload.py ROOT SEED MAX_SECONDS
    The random namespace workload (test_concurrency): random creates, writes, mkdirs,
    renames, unlinks, rmdirs, symlinks, hard links, truncates and xattr sets under ROOT
    until MAX_SECONDS pass or the filesystem goes away (ENOTCONN). Errors a random
    workload naturally causes (ENOENT, EEXIST, ...) are ignored; any other error is
    printed as "ERR <CLOCK_MONOTONIC ns> <errno name> <op> <path>".

  crash_workload.py --manifest MNT ROUND WORKERS SEED MANIFEST_DIR REAP_ROUND MAX_SECONDS
    The kill-round workload (test_crash): forks WORKERS workers and, if REAP_ROUND >= 0, a
    reaper, prints "READY <pids>" and waits for them. Worker I owns the namespace
    "rROUND/wI/..." plus the names "grow/rROUNDwI-*" in the shared, growing directory
    "grow" (both created by the test beforehand). It keeps a Model of its namespace, picks
    valid operations from it and logs each to MANIFEST_DIR/rROUND-wI.log:

        B <op as JSON>          before the operation starts
        E <seq> <extra JSON>    after it returned (after its fsync, for data operations)
        X <ns> <errno> <seq>    an error; the worker stops (expected once the daemon dies)

    one os.write per line (no buffering: the line survives a SIGKILL of the worker). So
    after a crash every operation is either complete (E) or the single one in flight (B
    without E), whose outcome may be either. The reaper deletes round REAP_ROUND (its tree
    and its names in grow) at the same time, so the kill also lands on big frees.

What a completed operation promises (docs/architecture.md): namespace changes, xattrs,
chmod, utime and truncate are journaled and durable when they return; file data (it goes
through the DRAM write-back cache) is checked exactly only once fsync/fdatasync returned,
and mtime only after fsync. Model.expect() turns a manifest into the states the recovered
namespace may be in; diff() compares a scan() of the mount against one of them.
"""

import ctypes
import errno
import hashlib
import json
import mmap
import os
import random
import stat
import sys
import time

# ======================================================================================
# The random namespace workload (test_concurrency)
# ======================================================================================

EXPECTED = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR,
            errno.EINVAL, errno.ENODATA, errno.EXDEV, errno.EPERM}
GONE = {errno.ENOTCONN, errno.ECONNABORTED}


def random_main(root, seed, max_s):
    rnd = random.Random(seed)
    deadline = time.monotonic() + max_s
    os.makedirs(os.path.join(root, "w"), exist_ok=True)

    def rdir():
        depth = rnd.choice([0, 1, 1, 2])
        parts = ["w"]
        if depth >= 1:
            parts.append(f"d{rnd.randrange(6)}")
        if depth >= 2:
            parts.append(f"e{rnd.randrange(4)}")
        return os.path.join(root, *parts)

    def rpath():
        kind = rnd.choice("fffffdl")
        if kind == "d":
            return os.path.join(rdir(), f"{'d' if rnd.random() < .5 else 'e'}{rnd.randrange(6)}")
        return os.path.join(rdir(), f"{kind}{rnd.randrange(25)}")

    def op_create(p):
        fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        try:
            os.write(fd, rnd.randbytes(rnd.choice([0, 10, 100, 4096, 5000, 20000])))
            if rnd.random() < 0.1:
                os.fsync(fd)
        finally:
            os.close(fd)

    def op_append(p):
        fd = os.open(p, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, rnd.randbytes(rnd.randrange(1, 9000)))
        finally:
            os.close(fd)

    def op_symlink(p):
        # Targets never resolve ("zz" is never created), so no operation can follow a
        # symlink out of the mount.
        n = rnd.choice([5, 60, 95, 200, 3000])
        os.symlink(("zz/" * 1000)[:n], p)

    def op_setxattr(p):
        # at most ~2.8 KiB in total per inode: fits one xattr block on any design
        k = rnd.randrange(4)
        size = rnd.choice([1, 10, 30, 300, 2500]) if k == 0 else rnd.choice([1, 10, 30, 100])
        os.setxattr(p, f"user.k{k}", rnd.randbytes(size))

    def op_removexattr(p):
        os.removexattr(p, f"user.k{rnd.randrange(4)}")

    ops = [
        (12, "create", lambda: op_create(rpath())),
        (4, "append", lambda: op_append(rpath())),
        (6, "mkdir", lambda: os.mkdir(rpath())),
        (8, "rename", lambda: os.rename(rpath(), rpath())),
        (8, "unlink", lambda: os.unlink(rpath())),
        (4, "rmdir", lambda: os.rmdir(rpath())),
        (4, "symlink", lambda: op_symlink(rpath())),
        (3, "link", lambda: os.link(rpath(), rpath())),
        (4, "truncate", lambda: os.truncate(rpath(), rnd.choice([0, 1, 4095, 4097, 30000]))),
        (5, "setxattr", lambda: op_setxattr(rpath())),
        (2, "removexattr", lambda: op_removexattr(rpath())),
        (2, "chmod", lambda: os.chmod(rpath(), rnd.choice([0o600, 0o755, 0o644]))),
        (2, "utime", lambda: os.utime(rpath(), ns=(rnd.randrange(1 << 60), rnd.randrange(1 << 60)))),
    ]
    names = [o[1] for o in ops]
    weights = [o[0] for o in ops]
    fns = {o[1]: o[2] for o in ops}
    nops = 0
    while time.monotonic() < deadline:
        name = rnd.choices(names, weights)[0]
        try:
            fns[name]()
            nops += 1
        except OSError as e:
            if e.errno in GONE:
                break
            if e.errno not in EXPECTED:
                print(f"ERR {time.monotonic_ns()} {errno.errorcode.get(e.errno, e.errno)} "
                      f"{name} {e.filename}", flush=True)
    print(f"OPS {nops}", flush=True)


# ======================================================================================
# The kill-round workload: model
# ======================================================================================

# File data goes through the DRAM write-back cache (fs/buffered.cc, on by default), so it
# is durable only once fsync/fdatasync returned: only fsync'd data is checked exactly, and
# data never fsync'd must read as a prefix of what was written, or zeros, never garbage.
# True would check unsynced data exactly too (right only with cache_size=0).
WRITE_IS_DURABLE = False

GROW = "grow"  # the shared directory every worker adds names to
FALLOC_MODES = {"alloc": 0, "keep": 1, "punch": 1 | 2, "zero": 16, "zero_keep": 16 | 1}


def payload(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def namespace(rnd: int, worker: int) -> tuple[str, str]:
    """(root directory, name prefix in GROW) of worker WORKER in round RND."""
    return f"r{rnd}/w{worker}", f"r{rnd}w{worker}-"


class FileNode:
    """A regular file (one inode; hard links share the node). check says how its data is
    compared: "exact"; "prefix" (size <= len(data), each byte data[i] or 0: data that may
    not have reached media yet); "mix" (an operation in flight from `old` to `data`: size
    between the two, each byte the old one or the new one)."""
    __slots__ = ("data", "check", "old", "mode", "xattrs", "xattr_alts", "mtime_ns")

    def __init__(self, data=b"", check="exact", mode=0o644):
        self.data, self.check, self.old, self.mode = data, check, None, mode
        self.xattrs, self.xattr_alts, self.mtime_ns = {}, None, None

    def copy(self):
        n = FileNode(self.data, self.check, self.mode)
        n.old, n.xattrs, n.xattr_alts = self.old, dict(self.xattrs), self.xattr_alts
        n.mtime_ns = self.mtime_ns
        return n


class DirNode:
    __slots__ = ("xattrs",)

    def __init__(self):
        self.xattrs = {}

    def copy(self):
        n = DirNode()
        n.xattrs = dict(self.xattrs)
        return n


class LinkNode:
    __slots__ = ("target",)

    def __init__(self, target):
        self.target = target

    def copy(self):
        return LinkNode(self.target)


def new_content(old: bytes, op: dict) -> bytes:
    """File data after data operation OP (append, pwrite, trunc, falloc) on OLD."""
    k = op["op"]
    if k == "append":
        return old + payload(op["seed"], op["len"])
    if k == "pwrite":
        off, data = op["off"], payload(op["seed"], op["len"])
        buf = bytearray(old)
        if off > len(buf):
            buf += bytes(off - len(buf))
        buf[off:off + len(data)] = data
        return bytes(buf)
    if k == "scatter":  # COUNT chunks of LEN bytes, STRIDE apart: one extent each
        buf = bytearray(old)
        for i in range(op["count"]):
            off, data = op["off"] + i * op["stride"], payload(op["seed"] + i, op["len"])
            if off > len(buf):
                buf += bytes(off - len(buf))
            buf[off:off + len(data)] = data
        return bytes(buf)
    if k == "rewrite":
        return payload(op["seed"], op["len"])
    if k == "mmap":
        buf = bytearray(old)
        buf[op["off"]:op["off"] + op["len"]] = payload(op["seed"], op["len"])
        return bytes(buf)
    if k == "trunc":
        return old[:op["size"]] + bytes(max(0, op["size"] - len(old)))
    if k == "falloc":
        mode, off, end = op["mode"], op["off"], op["off"] + op["len"]
        buf = bytearray(old)
        if mode in ("alloc", "zero") and end > len(buf):
            buf += bytes(end - len(buf))
        if mode in ("punch", "zero", "zero_keep"):
            stop = min(end, len(buf))
            if stop > off:
                buf[off:stop] = bytes(stop - off)
        return bytes(buf)
    raise ValueError(k)


DATA_OPS = ("append", "pwrite", "scatter", "rewrite", "mmap", "trunc", "falloc")


class Model:
    """The namespace of one worker: path relative to the mount -> node. The worker root
    is in it (created by the test); GROW itself is not, only the worker's names in it."""

    def __init__(self, root: str, grow_prefix: str):
        self.root, self.grow_prefix = root, grow_prefix
        self.names: dict = {root: DirNode()}

    def clone(self) -> "Model":
        m = Model(self.root, self.grow_prefix)
        memo = {}
        for p, n in self.names.items():
            if id(n) not in memo:
                memo[id(n)] = n.copy()
            m.names[p] = memo[id(n)]
        return m

    def apply(self, op: dict, extra: dict | None = None) -> None:
        """The effect of OP once it returned; EXTRA is what its E line recorded."""
        extra = extra or {}
        k, names = op["op"], self.names
        if k == "create":
            n = FileNode(payload(op["seed"], op["len"]),
                         "exact" if op["sync"] != "none" or WRITE_IS_DURABLE else "prefix",
                         op["mode"])
            if op.get("xattr"):
                name, vlen, vseed = op["xattr"]
                n.xattrs[name] = payload(vseed, vlen)
            n.mtime_ns = extra.get("mtime")
            names[op["path"]] = n
        elif k in DATA_OPS:
            n = names[op["path"]]
            n.data = new_content(n.data, op)
            n.mtime_ns = extra.get("mtime")
        elif k == "sync":
            n = names[op["path"]]
            n.check = "exact"
            n.mtime_ns = extra.get("mtime")
        elif k == "mkdir":
            names[op["path"]] = DirNode()
        elif k in ("rmdir", "unlink", "unlink_open"):
            del names[op["path"]]
        elif k == "symlink":
            names[op["path"]] = LinkNode(op["target"])
        elif k == "link":
            names[op["dst"]] = names[op["src"]]
        elif k == "rename":
            src, dst = op["src"], op["dst"]
            if names.get(dst) is names[src]:
                return  # two names of one inode: rename does nothing
            if isinstance(names[src], DirNode):
                names.pop(dst, None)  # an empty directory
                moved = [p for p in names if p == src or p.startswith(src + "/")]
                for p in moved:
                    names[dst + p[len(src):]] = names.pop(p)
            else:
                names[dst] = names.pop(src)
        elif k == "setxattr":
            names[op["path"]].xattrs[op["name"]] = payload(op["seed"], op["len"])
        elif k == "removexattr":
            del names[op["path"]].xattrs[op["name"]]
        elif k == "chmod":
            names[op["path"]].mode = op["mode"]
        elif k == "utime":
            names[op["path"]].mtime_ns = op["mtime"]
        else:
            raise ValueError(f"unknown op {k}")

    def expect(self, inflight: dict | None) -> list[tuple[str, "Model"]]:
        """The states the namespace may be in after a crash, as (label, model) pairs, given
        that this model holds every completed operation and INFLIGHT (or None) was in
        flight."""
        if inflight is None:
            return [("all operations done", self)]
        k = inflight["op"]
        post = self.clone()
        post.apply(inflight)
        if k == "create":
            # The name may exist with part of the data, with or without its xattr.
            n = post.names[inflight["path"]]
            n.check = "prefix"
            n.xattr_alts = [{}, n.xattrs]
            return [("without the create in flight", self), ("with it, partly done", post)]
        if k == "trunc":
            # One setattr: the new size commits in one transaction (a long trim frees the
            # rest past the new EOF later), so all or nothing, data included.
            return [("without the trunc in flight", self), ("with the trunc in flight", post)]
        if k in DATA_OPS:
            # Partly done is possible (several requests, batches, in-place zeroing of
            # partial blocks by fallocate): old/new byte by byte. mtime: unknown.
            n = post.names[inflight["path"]]
            n.check, n.old, n.mtime_ns = "mix", self.names[inflight["path"]].data, None
            if k == "rewrite":
                n.check = "mix_from_empty"  # O_TRUNC first: any size up to the larger
            return [(f"the {k} in flight partly done (each byte old or new)", post)]
        # one journaled change: all or nothing
        return [(f"without the {k} in flight", self), (f"with the {k} in flight", post)]


# ======================================================================================
# Manifest
# ======================================================================================

def parse_manifest(path: str) -> dict:
    """{"done": [(op, extra)], "inflight": op or None, "errors": [(ns, errno, seq)],
    "problems": [...]} from a worker's log; a torn last line is ignored."""
    done, errors, problems = [], [], []
    inflight = None
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raw = b""
    lines = raw.split(b"\n")
    for line in lines[:-1]:  # the last piece has no newline: torn or empty
        line = line.decode()
        tag, _, rest = line.partition(" ")
        if tag == "B":
            if inflight is not None:
                problems.append(f"{path}: B after B without E: {line[:200]}")
            inflight = json.loads(rest)
        elif tag == "E":
            seq, _, extra = rest.partition(" ")
            if inflight is None or inflight["seq"] != int(seq):
                problems.append(f"{path}: E {seq} does not end the operation in flight")
                continue
            done.append((inflight, json.loads(extra)))
            inflight = None
        elif tag == "X":
            ns, err, seq = rest.split(" ", 2)
            errors.append((int(ns), err, seq))
        else:
            problems.append(f"{path}: bad line {line[:200]!r}")
    return {"done": done, "inflight": inflight, "errors": errors, "problems": problems}


def replay(root: str, grow_prefix: str, done) -> Model:
    m = Model(root, grow_prefix)
    for op, extra in done:
        m.apply(op, extra)
    return m


# ======================================================================================
# Observation and comparison
# ======================================================================================

def user_xattrs(path: str) -> dict:
    return {k: os.getxattr(path, k, follow_symlinks=False)
            for k in sorted(os.listxattr(path, follow_symlinks=False)) if k.startswith("user.")}


def observe(mnt: str, rel: str, with_data: bool = True, read: bool = True) -> dict:
    """What the mount says about REL: type, ino, nlink, permission bits, and per type
    size/sha256/mtime (+ data), symlink target, user.* xattrs. With read=False, file data
    is not read (no sha256)."""
    p = os.path.join(mnt, rel)
    st = os.lstat(p)
    e = {"ino": st.st_ino, "nlink": st.st_nlink, "mode": stat.S_IMODE(st.st_mode)}
    if stat.S_ISDIR(st.st_mode):
        e.update(type="d", xattrs=user_xattrs(p))
    elif stat.S_ISREG(st.st_mode):
        e.update(type="f", size=st.st_size, mtime_ns=st.st_mtime_ns, xattrs=user_xattrs(p))
        if not read:
            return e
        with open(p, "rb") as f:
            data = f.read()
        e["sha256"] = hashlib.sha256(data).hexdigest()
        if len(data) != st.st_size:
            e["read_len"] = len(data)
        if with_data:
            e["data"] = data
    elif stat.S_ISLNK(st.st_mode):
        e.update(type="l", size=st.st_size, target=os.readlink(p))
        del e["mode"]
    else:
        e["type"] = f"unexpected mode {st.st_mode:o}"
    return e


def scan(mnt: str, root: str, grow_prefix: str, grow_names, with_data: bool = True,
         read: bool = True) -> dict:
    """{relpath: observe()} for the namespace: ROOT, everything below it, and the names in
    GROW_NAMES (a listing of GROW) that start with GROW_PREFIX."""
    out = {}
    top = os.path.join(mnt, root)
    if os.path.lexists(top):
        out[root] = observe(mnt, root, with_data, read)
        for dirpath, dirnames, filenames in os.walk(top):
            prefix = dirpath[len(mnt.rstrip("/")) + 1:]
            for n in dirnames + filenames:
                out[f"{prefix}/{n}"] = observe(mnt, f"{prefix}/{n}", with_data, read)
    for n in grow_names:
        if n.startswith(grow_prefix):
            out[f"{GROW}/{n}"] = observe(mnt, f"{GROW}/{n}", with_data, read)
    return out


def strip_data(obs: dict, drop=("data",)) -> dict:
    return {p: {k: v for k, v in e.items() if k not in drop} for p, e in obs.items()}


def _bytes_problem(got: bytes, allowed: list, what: str) -> str | None:
    """None if every byte of GOT equals the byte at its offset in one of ALLOWED (past a
    version's end, that version allows 0)."""
    n = len(got)
    vs = [v[:n].ljust(n, b"\0") for v in allowed]
    if any(got == v for v in vs):
        return None
    for a in range(0, n, 4096):
        g = got[a:a + 4096]
        if any(g == v[a:a + 4096] for v in vs):
            continue
        for i in range(a, min(n, a + 4096)):
            if all(got[i] != v[i] for v in vs):
                return (f"{what}: byte {i} is {got[i]:#04x}, expected one of "
                        f"{sorted({v[i] for v in vs})}")
    return None


def _file_problem(node: FileNode, e: dict) -> str | None:
    if "read_len" in e:
        return f"read {e['read_len']} bytes but st_size is {e['size']}"
    got = e["data"]
    if node.check == "exact":
        if got != node.data:
            if len(got) != len(node.data):
                return f"size {len(got)}, expected {len(node.data)} (fsync'd/durable data)"
            i = next(i for i in range(len(got)) if got[i] != node.data[i])
            return f"content differs from byte {i} (size {len(got)}; fsync'd/durable data)"
        return None
    if node.check == "prefix":
        if len(got) > len(node.data):
            return f"size {len(got)} > {len(node.data)} bytes ever written"
        return _bytes_problem(got, [node.data, b""], "unsynced data")
    lo, hi = sorted((len(node.old), len(node.data)))
    if node.check == "mix_from_empty":
        lo = 0
    if not lo <= len(got) <= hi:
        return f"size {len(got)} not between old {len(node.old)} and new {len(node.data)}"
    return _bytes_problem(got, [node.old, node.data], "data under the operation in flight")


def diff(model: Model, obs: dict, limit: int = 20) -> list[str]:
    """Differences between MODEL and a scan() of its namespace; [] if equal."""
    out = []
    names = model.names
    kids = {}
    for p, n in names.items():
        if isinstance(n, DirNode) and p != model.root:
            kids[p.rsplit("/", 1)[0]] = kids.get(p.rsplit("/", 1)[0], 0) + 1
    links = {}
    for n in names.values():
        links[id(n)] = links.get(id(n), 0) + 1
    ino_of, node_of = {}, {}
    for p in sorted(set(names) | set(obs)):
        if len(out) >= limit:
            out.append("...")
            break
        if p not in obs:
            out.append(f"{p}: missing")
            continue
        e = obs[p]
        if p not in names:
            out.append(f"{p}: should not exist (type {e['type']})")
            continue
        n = names[p]
        want = {FileNode: "f", DirNode: "d", LinkNode: "l"}[type(n)]
        if e["type"] != want:
            out.append(f"{p}: type {e['type']}, expected {want}")
            continue
        if want == "l":
            if e["target"] != n.target or e["size"] != len(os.fsencode(n.target)):
                out.append(f"{p}: symlink target {e['target'][:40]!r}... differs")
            continue
        # inode identity: names of one node share an inode, different nodes do not
        if ino_of.setdefault(id(n), e["ino"]) != e["ino"]:
            out.append(f"{p}: inode {e['ino']}, other names of this file have {ino_of[id(n)]}")
        if node_of.setdefault(e["ino"], id(n)) != id(n):
            out.append(f"{p}: inode {e['ino']} is also another file's")
        if want == "d":
            if e["nlink"] != 2 + kids.get(p, 0):
                out.append(f"{p}: directory nlink {e['nlink']}, expected {2 + kids.get(p, 0)}")
            if e["xattrs"] != n.xattrs:
                out.append(f"{p}: xattrs {sorted(e['xattrs'])}, expected {sorted(n.xattrs)}")
            continue
        if e["nlink"] != links[id(n)]:
            out.append(f"{p}: nlink {e['nlink']}, expected {links[id(n)]}")
        if e["mode"] != n.mode:
            out.append(f"{p}: mode {e['mode']:o}, expected {n.mode:o}")
        alts = n.xattr_alts or [n.xattrs]
        if e["xattrs"] not in alts:
            out.append(f"{p}: xattrs { {k: len(v) for k, v in e['xattrs'].items()} }, "
                       f"expected one of {[{k: len(v) for k, v in a.items()} for a in alts]}")
        if n.mtime_ns is not None and e["mtime_ns"] != n.mtime_ns:
            out.append(f"{p}: mtime {e['mtime_ns']}, expected {n.mtime_ns} (set by utime or "
                       f"made durable by fsync)")
        prob = _file_problem(n, e)
        if prob:
            out.append(f"{p}: {prob}")
    return out


# ======================================================================================
# The kill-round workload: workers
# ======================================================================================

_libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc's fallocate
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]

SIZES = [0, 1, 100, 4095, 4096, 4097, 8192, 12289, 65536, 200_000]
SIZE_WEIGHTS = [3, 2, 4, 2, 3, 2, 2, 2, 2, 1]
LARGE = [1_048_576 + 12_345, 2_300_000]
BUDGET = 6 * 1024 * 1024  # bytes of data a worker writes per round, beyond which sizes stay small
SYNCS = ["fsync", "fsync", "fdatasync", "none"]


def _fallocate(fd, mode, off, length):
    if _libc.fallocate(fd, mode, off, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class Worker:
    """One worker process: picks operations valid in its Model, logs B, does them, logs E."""

    def __init__(self, mnt, rnd_no, index, seed, log_path):
        self.mnt = mnt
        self.root, self.grow_prefix = namespace(rnd_no, index)
        self.model = Model(self.root, self.grow_prefix)
        self.rnd = random.Random(seed)
        self.log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.seq = 0
        self.counter = 0
        self.written = 0
        self.open_fds = []  # descriptors of files unlinked while open

    def log(self, line: str) -> None:
        os.write(self.log_fd, (line + "\n").encode())

    def abs(self, rel):
        return os.path.join(self.mnt, rel)

    # -- choosing -------------------------------------------------------------------

    def size(self):
        r = self.rnd
        if self.written < BUDGET and r.random() < 0.03:
            return r.choice(LARGE)
        n = r.choices(SIZES, SIZE_WEIGHTS)[0]
        return n if self.written < BUDGET else min(n, 4097)

    def new_name(self, parent, kind):
        self.counter += 1
        r = self.rnd
        if parent == GROW:
            # names of varied length, so records of many sizes fill the directory blocks
            return f"{GROW}/{self.grow_prefix}{self.counter}-{'g' * r.choice([0, 8, 40, 150])}"
        return f"{parent}/{kind}{self.counter}"

    def choose(self):
        r, names = self.rnd, self.model.names
        dirs = [p for p, n in names.items() if isinstance(n, DirNode)]
        files = [p for p, n in names.items() if isinstance(n, FileNode)]
        exact = [p for p in files if names[p].check == "exact"]
        nondirs = [p for p, n in names.items() if not isinstance(n, DirNode)]
        subdirs = [p for p in dirs if p != self.root]
        empty = [d for d in subdirs if not any(p.startswith(d + "/") for p in names)]
        ops = ["create"] * 14 + ["touch"] * 10 + ["mkdir"] * 5 + ["symlink"] * 3
        if exact:
            ops += ["append"] * 7 + ["pwrite"] * 6 + ["trunc"] * 4 + ["falloc"] * 4
            ops += ["rewrite"] * 2 + ["scatter"] * 1
            if any(names[p].data for p in exact):
                ops += ["mmap"] * 2
        if files:
            ops += ["link"] * 4 + ["chmod"] * 2 + ["utime"] * 2
            if len(exact) < len(files):
                ops += ["sync"] * 2
        if nondirs:
            ops += ["rename"] * 10 + ["unlink"] * 7
        if files:
            ops += ["unlink_open"] * 2
        if subdirs:
            ops += ["rename_dir"] * 3
        if empty:
            ops += ["rmdir"] * 3
        ops += ["setxattr"] * 5
        if any(names[p].xattrs for p in dirs + files):
            ops += ["removexattr"] * 2
        k = r.choice(ops)
        if k == "create":
            parent = r.choice(dirs + [GROW])
            xattr = None
            if r.random() < 0.3:
                xattr = ["user.a", r.choice([1, 30, 300, 2500]), r.randrange(1 << 60)]
            n = self.size()
            self.written += n
            return {"op": "create", "path": self.new_name(parent, "f"), "len": n,
                    "seed": r.randrange(1 << 60), "mode": r.choice([0o644, 0o640, 0o600]),
                    "xattr": xattr, "sync": r.choice(SYNCS), "syncdir": r.random() < 0.2}
        if k == "touch":
            return {"op": "create", "path": self.new_name(GROW, "t"), "len": 0, "seed": 0,
                    "mode": 0o644, "xattr": None, "sync": "none", "syncdir": False}
        if k == "mkdir":
            return {"op": "mkdir", "path": self.new_name(r.choice(dirs), "d")}
        if k == "symlink":
            target = ("zz/" * 1400)[:r.choice([1, 60, 96, 97, 200, 3000, 4095])]
            return {"op": "symlink", "path": self.new_name(r.choice(dirs + [GROW]), "s"),
                    "target": target}
        if k == "mmap":
            p = r.choice([p for p in exact if names[p].data])
            size = len(names[p].data)
            off = r.randrange(size)
            return {"op": k, "path": p, "off": off, "len": r.randint(1, min(size - off, 70_000)),
                    "seed": r.randrange(1 << 60), "sync": r.choice(SYNCS[:3])}
        if k in DATA_OPS:
            p = r.choice(exact)
            size = len(names[p].data)
            op = {"op": k, "path": p, "sync": r.choice(SYNCS[:3])}
            if k == "append":
                op.update(len=max(1, self.size()), seed=r.randrange(1 << 60))
                self.written += op["len"]
            elif k == "pwrite":
                op.update(off=r.randrange(size + 8193), len=max(1, self.size()),
                          seed=r.randrange(1 << 60))
                self.written += op["len"]
            elif k == "scatter":
                # hundreds of extents: leaf chains; later truncates, punches and unlinks
                # of the file free them in several transactions (kTrimBatch = 256)
                op.update(off=r.randrange(size + 8193),
                          count=r.choices([20, 300, 600], [6, 2, 1])[0],
                          stride=r.choice([8192, 12288 + 100]), len=r.choice([4096, 100]),
                          seed=r.randrange(1 << 60))
            elif k == "rewrite":
                op.update(len=self.size(), seed=r.randrange(1 << 60))
                self.written += op["len"]
            elif k == "trunc":
                op.update(size=r.choice([0, 1, 4096, size // 2, size + 1, size + 70_000,
                                         r.randrange(size + 1)]),
                          sync=r.choice(["none", "fsync"]))
            else:
                op.update(mode=r.choice(list(FALLOC_MODES)), off=r.randrange(size + 8193),
                          len=r.choice([1, 4096, 5000, 65536, 300_000]))
            return op
        if k == "sync":
            return {"op": "sync", "path": r.choice([p for p in files if names[p].check != "exact"])}
        if k == "link":
            return {"op": "link", "src": r.choice(files),
                    "dst": self.new_name(r.choice(dirs + [GROW]), "l")}
        if k == "chmod":
            return {"op": "chmod", "path": r.choice(files), "mode": r.choice([0o600, 0o640, 0o755])}
        if k == "utime":
            return {"op": "utime", "path": r.choice(files), "atime": r.randrange(1 << 61),
                    "mtime": r.randrange(10**9, 1 << 61)}
        if k == "rename":
            src = r.choice(nondirs)
            if r.random() < 0.35 and len(nondirs) > 1:
                dst = r.choice([p for p in nondirs if p != src])  # over an existing name
            else:
                dst = self.new_name(r.choice(dirs + [GROW]), "m")
            return {"op": "rename", "src": src, "dst": dst}
        if k == "rename_dir":
            src = r.choice(subdirs)
            inside = [d for d in dirs if d != src and not d.startswith(src + "/")]
            over = [d for d in empty if d != src and not d.startswith(src + "/")]
            if over and r.random() < 0.3:
                return {"op": "rename", "src": src, "dst": r.choice(over)}
            return {"op": "rename", "src": src, "dst": self.new_name(r.choice(inside), "n")}
        if k == "unlink":
            return {"op": "unlink", "path": r.choice(nondirs)}
        if k == "unlink_open":
            # unlinked while open: the inode stays (an orphan if it was the last name)
            # until the descriptor closes, maybe rounds of ops later, maybe at the kill
            p = r.choice(files)
            return {"op": k, "path": p,
                    "write": sum(n is names[p] for n in names.values()) == 1,
                    "len": r.choice([0, 4096, 300_000]), "seed": r.randrange(1 << 60)}
        if k == "rmdir":
            return {"op": "rmdir", "path": r.choice(empty)}
        if k == "setxattr":
            p = r.choice(dirs + files)
            name = r.choice(["user.a", "user.b", "user.c", "user.d"])
            n = r.choice([1, 30, 300, 2500]) if name == "user.a" else r.choice([1, 10, 100])
            return {"op": "setxattr", "path": p, "name": name, "len": n,
                    "seed": r.randrange(1 << 60)}
        if k == "removexattr":
            p = r.choice([p for p in dirs + files if names[p].xattrs])
            return {"op": "removexattr", "path": p, "name": r.choice(sorted(names[p].xattrs))}
        raise AssertionError(k)

    # -- doing ----------------------------------------------------------------------

    @staticmethod
    def sync(fd, how) -> dict:
        if how == "fsync":
            os.fsync(fd)
            return {"mtime": os.fstat(fd).st_mtime_ns}
        if how == "fdatasync":
            os.fdatasync(fd)
        return {}

    @staticmethod
    def write_all(fd, data, off=None):
        view = memoryview(data)
        while view:
            n = os.write(fd, view) if off is None else os.pwrite(fd, view, off)
            if off is not None:
                off += n
            view = view[n:]

    def do(self, op) -> dict:
        k = op["op"]
        A = self.abs
        if k == "create":
            fd = os.open(A(op["path"]), os.O_CREAT | os.O_EXCL | os.O_WRONLY, op["mode"])
            try:
                self.write_all(fd, payload(op["seed"], op["len"]))
                if op["xattr"]:
                    name, vlen, vseed = op["xattr"]
                    os.setxattr(fd, name, payload(vseed, vlen))
                extra = self.sync(fd, op["sync"])
            finally:
                os.close(fd)
            if op["syncdir"]:
                dfd = os.open(os.path.dirname(A(op["path"])), os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            return extra
        if k == "trunc" and op["sync"] == "none":
            os.truncate(A(op["path"]), op["size"])
            return {}
        if k == "unlink_open":
            fd = os.open(A(op["path"]), os.O_RDWR)
            self.open_fds.append(fd)
            os.unlink(A(op["path"]))
            if op["write"]:  # the last name is gone: nobody can see this data
                self.write_all(fd, payload(op["seed"], op["len"]), 0)
                os.fsync(fd)
            while len(self.open_fds) > 6 or (self.open_fds and self.rnd.random() < 0.1):
                os.close(self.open_fds.pop(0))
            return {}
        if k in DATA_OPS or k == "sync":
            flags = {"append": os.O_WRONLY | os.O_APPEND, "rewrite": os.O_WRONLY | os.O_TRUNC,
                     "mmap": os.O_RDWR}.get(k, os.O_WRONLY)
            fd = os.open(A(op["path"]), flags)
            try:
                if k in ("append", "rewrite"):
                    self.write_all(fd, payload(op["seed"], op["len"]))
                elif k == "pwrite":
                    self.write_all(fd, payload(op["seed"], op["len"]), op["off"])
                elif k == "scatter":
                    for i in range(op["count"]):
                        self.write_all(fd, payload(op["seed"] + i, op["len"]),
                                       op["off"] + i * op["stride"])
                elif k == "mmap":
                    # through the page cache and writeback: msync, then fsync
                    size = os.fstat(fd).st_size
                    with mmap.mmap(fd, size) as mm:
                        mm[op["off"]:op["off"] + op["len"]] = payload(op["seed"], op["len"])
                        mm.flush()
                elif k == "trunc":
                    os.ftruncate(fd, op["size"])
                elif k == "falloc":
                    _fallocate(fd, FALLOC_MODES[op["mode"]], op["off"], op["len"])
                return self.sync(fd, op.get("sync", "fsync"))
            finally:
                os.close(fd)
        if k == "mkdir":
            os.mkdir(A(op["path"]), 0o755)
        elif k == "rmdir":
            os.rmdir(A(op["path"]))
        elif k == "unlink":
            os.unlink(A(op["path"]))
        elif k == "symlink":
            os.symlink(op["target"], A(op["path"]))
        elif k == "link":
            os.link(A(op["src"]), A(op["dst"]))
        elif k == "rename":
            os.rename(A(op["src"]), A(op["dst"]))
        elif k == "setxattr":
            os.setxattr(A(op["path"]), op["name"], payload(op["seed"], op["len"]))
        elif k == "removexattr":
            os.removexattr(A(op["path"]), op["name"])
        elif k == "chmod":
            os.chmod(A(op["path"]), op["mode"])
        elif k == "utime":
            os.utime(A(op["path"]), ns=(op["atime"], op["mtime"]))
        else:
            raise AssertionError(k)
        return {}

    def run(self, deadline):
        while time.monotonic() < deadline:
            op = self.choose()
            self.seq += 1
            op["seq"] = self.seq
            self.log("B " + json.dumps(op, separators=(",", ":")))
            try:
                extra = self.do(op)
            except OSError as e:
                self.log(f"X {time.monotonic_ns()} {errno.errorcode.get(e.errno, e.errno)} "
                         f"{self.seq} {op['op']} {e}")
                return
            self.model.apply(op, extra)
            self.log(f"E {self.seq} {json.dumps(extra)}")


def reap(mnt, rnd_no, seed, log_path):
    """Delete round RND_NO (its tree and its names in GROW) in random order."""
    r = random.Random(seed)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        grow = [os.path.join(mnt, GROW, n) for n in os.listdir(os.path.join(mnt, GROW))
                if n.startswith(f"r{rnd_no}w")]
        r.shuffle(grow)
        for p in grow:
            os.unlink(p)
        top = os.path.join(mnt, f"r{rnd_no}")
        for dirpath, dirnames, filenames in os.walk(top, topdown=False):
            for n in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                os.unlink(os.path.join(dirpath, n))
            os.rmdir(dirpath)
        os.write(fd, b"DONE\n")
    except OSError as e:
        os.write(fd, f"X {time.monotonic_ns()} {errno.errorcode.get(e.errno, e.errno)} 0 "
                     f"reap {e}\n".encode())


def manifest_main(mnt, rnd_no, workers, seed, mdir, reap_round, max_s):
    os.umask(0)
    deadline = time.monotonic() + max_s
    pids = []
    jobs = [("w", i) for i in range(workers)] + ([("reap", 0)] if reap_round >= 0 else [])
    for kind, i in jobs:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                if kind == "w":
                    Worker(mnt, rnd_no, i, seed * 64 + i,
                           os.path.join(mdir, f"r{rnd_no}-w{i}.log")).run(deadline)
                else:
                    reap(mnt, reap_round, seed * 64 + 63, os.path.join(mdir, f"r{rnd_no}-reap.log"))
            except BaseException as e:  # a bug in this file: say so loudly
                sys.stderr.write(f"worker {kind}{i} crashed: {e!r}\n")
                import traceback
                traceback.print_exc()
                code = 3
            finally:
                sys.stderr.flush()
                os._exit(code)
        pids.append(pid)
    print("READY " + " ".join(map(str, pids)), flush=True)
    worst = 0
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        worst = max(worst, os.waitstatus_to_exitcode(status))
    print("DONE", flush=True)
    sys.exit(worst)


def main(argv):
    if argv[0] == "--manifest":
        a = argv[1:]
        manifest_main(a[0], int(a[1]), int(a[2]), int(a[3]), a[4], int(a[5]), float(a[6]))
    else:
        random_main(argv[0], int(argv[1]), float(argv[2]))


if __name__ == "__main__":
    main(sys.argv[1:])
