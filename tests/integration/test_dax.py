"""The DAX data path (fs/dax.cc, docs/dax.md) through a real mount: the flag (xattr and
the chattr/lsattr ioctls), inheritance, the dax= mount modes, toggling with dirty cached
pages, direct I/O past the kernel's page cache, durability without fsync, mmap coherence,
truncate and punch under readers and mappings, the DAX windows, and unmodified programs
(fio with verification, sqlite3) on DAX files.
"""

import ctypes
import errno
import json
import mmap
import os
import random
import shutil
import signal
import subprocess
import sys
import threading

import pytest

from pmemfuse_helpers import (DAEMON, MiB, Mount, expect_errno, fsck_check, make_mountpoint,
                              read_file, run, write_file)

DAX = "user.pmemfuse.dax"
EFFECTIVE = "user.pmemfuse.dax_effective"
STATS = "user.pmemfuse.stats"
PAGE = 4096
NO_TIMER = ["-o", "flush_interval=0"]


def flag(path) -> bytes:
    return os.getxattr(path, DAX)


def effective(path) -> bytes:
    return os.getxattr(path, EFFECTIVE)


def set_dax(path, on: bool = True) -> None:
    os.setxattr(path, DAX, b"1" if on else b"0")


def stats(m: Mount) -> dict:
    return json.loads(os.getxattr(m.mnt, STATS))


def pattern(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


class _CacheStat(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in
                ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")]


class _CacheStatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_SYS_CACHESTAT = 451  # x86_64, and the generic syscall table


def cached_pages(path) -> int:
    """Pages of PATH in the kernel's page cache (cachestat(2))."""
    fd = os.open(path, os.O_RDONLY)
    try:
        rng, cs = _CacheStatRange(0, 0), _CacheStat()  # len 0: to the end of the file
        if _libc.syscall(_SYS_CACHESTAT, fd, ctypes.byref(rng), ctypes.byref(cs), 0) != 0:
            raise OSError(ctypes.get_errno(), "cachestat")
        return cs.nr_cache
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------
# The flag: xattr, ioctls, inheritance, mount modes
# --------------------------------------------------------------------------------------

def test_flag_through_the_xattr(mounted):
    f = mounted / "f"
    write_file(f, b"x")
    assert flag(f) == b"0" and effective(f) == b"0"
    set_dax(f)
    assert flag(f) == b"1" and effective(f) == b"1"
    os.removexattr(f, DAX)
    assert flag(f) == b"0" and effective(f) == b"0"
    assert DAX not in os.listxattr(f)  # virtual: cp -a and tar do not copy it
    expect_errno(errno.EINVAL, os.setxattr, f, DAX, b"yes")
    expect_errno(errno.EPERM, os.setxattr, f, EFFECTIVE, b"1")
    os.symlink("f", mounted / "l")
    expect_errno(errno.EPERM, os.setxattr, mounted / "l", DAX, b"1", follow_symlinks=False)


def test_flag_survives_remount(mounted):
    write_file(mounted / "f", b"x")
    os.mkdir(mounted / "d")
    set_dax(mounted / "f")
    set_dax(mounted / "d")
    mounted.remount()
    assert flag(mounted / "f") == b"1" and effective(mounted / "f") == b"1"
    assert flag(mounted / "d") == b"1"


def xfs_io(path, cmd) -> str:
    tool = shutil.which("xfs_io") or pytest.fail("xfs_io is missing (tools/deps.sh installs xfsprogs)")
    return run([tool, "-c", cmd, path], check=True).stdout


def test_chattr_and_lsattr_ioctls(mounted):
    f = mounted / "f"
    write_file(f, b"x")
    os.mkdir(mounted / "d")
    for p in (f, mounted / "d"):
        assert "x" not in xfs_io(p, "lsattr").split()[0]
        xfs_io(p, "chattr +x")
        assert "x" in xfs_io(p, "lsattr").split()[0]
        assert flag(p) == b"1"
        xfs_io(p, "chattr -x")
        assert flag(p) == b"0"
    # FS_IOC_SETFLAGS (chattr(1)): DAX is the one flag pmemfuse keeps.
    assert run(["chattr", "+x", f]).returncode == 0 and flag(f) == b"1"
    assert "x" in run(["lsattr", "-d", f], check=True).stdout.split()[0]
    cp = run(["chattr", "+i", f])
    assert cp.returncode != 0 and "Operation not supported" in cp.stderr


def test_ioctls_need_ownership(mounted):
    f = mounted / "f"
    write_file(f, b"x", mode=0o666)
    cp = run(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups",
              "/usr/sbin/xfs_io", "-c", "chattr +x", f])
    assert cp.returncode != 0 or "Operation not permitted" in cp.stderr + cp.stdout
    assert flag(f) == b"0"


def test_directory_flag_is_inherited(mounted):
    d = mounted / "d"
    os.mkdir(d)
    write_file(mounted.path("d", "before"), b"x")
    set_dax(d)
    assert effective(d) == b"1"
    write_file(mounted.path("d", "after"), b"x")
    os.mkdir(mounted.path("d", "sub"))
    write_file(mounted.path("d", "sub", "deep"), b"x")
    assert flag(mounted.path("d", "before")) == b"0"
    for p in ("after", "sub", "sub/deep"):
        assert flag(mounted.path("d", *p.split("/"))) == b"1", p
    assert effective(mounted.path("d", "sub", "deep")) == b"1"
    write_file(mounted / "outside", b"x")
    assert flag(mounted / "outside") == b"0"


@pytest.mark.parametrize("mode,file_flag,want", [
    ("always", b"0", b"1"), ("never", b"1", b"0"), ("inode", b"1", b"1"), ("inode", b"0", b"0")])
def test_mount_modes(image, mount_factory, mode, file_flag, want):
    m = mount_factory(image)
    write_file(m / "f", b"data")
    os.setxattr(m / "f", DAX, file_flag)
    m.unmount()
    m.start(["-o", f"dax={mode}"])
    assert flag(m / "f") == file_flag  # the flag is kept whatever the mode
    assert effective(m / "f") == want
    assert read_file(m / "f") == b"data"


def test_bare_dax_option_means_always(image, mount_factory):
    m = mount_factory(image, ["-o", "dax"])
    write_file(m / "f", b"x")
    assert effective(m / "f") == b"1" and flag(m / "f") == b"0"


@pytest.mark.parametrize("opt", ["dax=sometimes", "dax_window=1M", "dax_window=lots"])
def test_bad_dax_options(image, opt):
    mnt = make_mountpoint()
    try:
        cp = run([DAEMON, "-f", "-o", opt, image, mnt])
        assert cp.returncode == 2, cp
        assert len(cp.stderr.strip().splitlines()) == 1 and opt.split("=")[0] in cp.stderr
    finally:
        os.rmdir(mnt)


# --------------------------------------------------------------------------------------
# The data path
# --------------------------------------------------------------------------------------

def test_dax_reads_bypass_the_page_cache(mounted):
    data = pattern(1, 16 * MiB)
    for name in ("buffered", "dax"):
        write_file(mounted / name, data, fsync=True)
    set_dax(mounted / "dax")
    for name in ("buffered", "dax"):
        # Dropped by a toggle round trip: both start with no cached pages.
        set_dax(mounted / name, name == "dax")
        assert read_file(mounted / name) == data
    assert cached_pages(mounted / "dax") == 0
    assert cached_pages(mounted / "buffered") >= len(data) // PAGE * 9 // 10


def test_toggle_drops_the_kernels_cached_pages(mounted):
    f = mounted / "f"
    data = pattern(8, 4 * MiB)
    write_file(f, data, fsync=True)
    assert read_file(f) == data
    assert cached_pages(f) > 0
    set_dax(f)
    assert cached_pages(f) == 0
    assert read_file(f) == data and cached_pages(f) == 0
    set_dax(f, False)
    assert read_file(f) == data and cached_pages(f) > 0


def test_dax_write_is_durable_without_fsync(image, mount_factory):
    m = mount_factory(image, NO_TIMER)
    os.mkdir(m / "d")
    set_dax(m / "d")
    files = {"new": pattern(2, 3 * MiB + 5), "small": b"tiny"}
    for name, data in files.items():
        fd = os.open(m.path("d", name), os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, data)
        os.close(fd)
    # In-place overwrites and an append, still no fsync.
    over = bytearray(files["new"])
    fd = os.open(m.path("d", "new"), os.O_WRONLY)
    for off in (0, 4096 + 17, 2 * MiB - 3):
        os.pwrite(fd, b"Z" * 100, off)
        over[off:off + 100] = b"Z" * 100
    os.pwrite(fd, b"tail", len(over))
    over += b"tail"
    os.close(fd)
    files["new"] = bytes(over)
    m.kill9()
    rc, out = fsck_check(image)
    assert rc == 0, out
    m.start()
    for name, data in files.items():
        assert read_file(m.path("d", name)) == data, name


def test_toggle_writes_back_dirty_pages_first(image, mount_factory):
    m = mount_factory(image, NO_TIMER)
    data = pattern(3, 2 * MiB + 100)
    write_file(m / "f", data)  # in the daemon's cache only
    assert stats(m)["cache"]["dirty_bytes"] > 0
    set_dax(m / "f")
    assert stats(m)["cache"]["dirty_bytes"] == 0
    m.kill9()  # nothing but what is on pmem survives
    m.start()
    assert read_file(m / "f") == data


def test_data_is_identical_across_toggles(mounted):
    f = mounted / "f"
    want = bytearray(pattern(4, 1 * MiB))
    write_file(f, bytes(want))
    rnd = random.Random(5)
    for round_ in range(6):
        set_dax(f, round_ % 2 == 0)
        fd = os.open(f, os.O_RDWR)
        for _ in range(20):
            off, n = rnd.randrange(0, 2 * MiB), rnd.randrange(1, 70000)
            chunk = rnd.randbytes(n)
            os.pwrite(fd, chunk, off)
            if off > len(want):
                want += bytes(off - len(want))
            want[off:off + n] = chunk
        os.close(fd)
        assert read_file(f) == bytes(want), f"round {round_}"


def test_handle_opened_before_the_toggle_stays_coherent(mounted):
    f = mounted / "f"
    write_file(f, b"a" * 8192)
    old = os.open(f, os.O_RDWR)
    try:
        set_dax(f)
        os.pwrite(old, b"b" * 10, 0)  # an old buffered handle, served by the DAX path now
        assert read_file(f)[:12] == b"b" * 10 + b"aa"
        write_file(f, b"c" * 8192)
        assert os.pread(old, 4, 0) == b"cccc"
    finally:
        os.close(old)


def test_concurrent_dax_writers_to_one_file(mounted):
    f = mounted / "f"
    size, workers = 4 * MiB, 4
    write_file(f, bytes(size), fsync=True)
    set_dax(f)
    share = size // workers

    def work(k):
        fd = os.open(f, os.O_WRONLY)
        try:
            for off in range(k * share, (k + 1) * share, 8192):
                os.pwrite(fd, bytes([k + 1]) * 8192, off)
        finally:
            os.close(fd)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = read_file(f)
    for k in range(workers):
        assert got[k * share:(k + 1) * share] == bytes([k + 1]) * share


def test_mmap_shared_of_a_dax_file(mounted):
    f = mounted / "f"
    write_file(f, pattern(6, 64 * 1024), fsync=True)
    set_dax(f)
    if "does not offer FUSE_DIRECT_IO_ALLOW_MMAP" in mounted.log():
        pytest.skip("the kernel does not offer FUSE_DIRECT_IO_ALLOW_MMAP")
    fd = os.open(f, os.O_RDWR)
    try:
        mm = mmap.mmap(fd, 64 * 1024, mmap.MAP_SHARED)
        # Mapped stores reach pmem on msync and are seen by read(2).
        mm[100:105] = b"HELLO"
        mm.flush()
        assert os.pread(fd, 5, 100) == b"HELLO"
        # write(2) is seen by the mapping.
        os.pwrite(fd, b"WORLD", 8192)
        assert mm[8192:8197] == b"WORLD"
        mm.close()
    finally:
        os.close(fd)
    assert read_file(f)[100:105] == b"HELLO"


def test_mapped_stores_reach_pmem_at_close(image, mount_factory):
    m = mount_factory(image, NO_TIMER)
    f = m / "f"
    write_file(f, bytes(64 * 1024), fsync=True)
    set_dax(f)
    if "does not offer FUSE_DIRECT_IO_ALLOW_MMAP" in m.log():
        pytest.skip("the kernel does not offer FUSE_DIRECT_IO_ALLOW_MMAP")
    fd = os.open(f, os.O_RDWR)
    mm = mmap.mmap(fd, 64 * 1024, mmap.MAP_SHARED)
    mm[5000:5006] = b"STORED"
    mm.close()  # munmap, no msync
    os.close(fd)  # the kernel writes dirty mapped pages back at close (FUSE FLUSH)
    m.kill9()
    m.start()
    assert read_file(f)[5000:5006] == b"STORED"


_TRUNCATE_UNDER_MAPPING = r"""
import mmap, os, signal, sys
path = sys.argv[1]
fd = os.open(path, os.O_RDONLY)
m = mmap.mmap(fd, 1 << 20, mmap.MAP_SHARED, mmap.PROT_READ)
assert m[0] == 0x41
print("mapped", flush=True)
sys.stdin.readline()  # the file is truncated now
try:
    m[900000]
except Exception as e:
    print("error", e, flush=True)
"""


def test_truncate_under_a_mapping_and_a_reader(mounted):
    f = mounted / "f"
    write_file(f, b"A" * MiB, fsync=True)
    set_dax(f)
    if "does not offer FUSE_DIRECT_IO_ALLOW_MMAP" in mounted.log():
        pytest.skip("the kernel does not offer FUSE_DIRECT_IO_ALLOW_MMAP")
    p = subprocess.Popen([sys.executable, "-c", _TRUNCATE_UNDER_MAPPING, f],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "mapped"
        stop = threading.Event()
        seen = []

        def reader():
            while not stop.is_set():
                seen.append(set(read_file(f)) - {0x41, 0})

        t = threading.Thread(target=reader)
        t.start()
        os.truncate(f, 4096)
        os.truncate(f, MiB)  # blocks freed and the range a hole now: zeros, not stale A's
        stop.set()
        t.join()
        assert all(not s for s in seen), "a reader saw bytes that were never written"
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait(timeout=30)
        # Past the old EOF the page is gone (SIGBUS), or it reads the new zeros.
        assert p.returncode in (0, -signal.SIGBUS), p.returncode
    finally:
        p.kill()
        p.wait()
    got = read_file(f)
    assert got[:4096] == b"A" * 4096 and got[4096:] == bytes(MiB - 4096)
    assert mounted.alive()


def test_punch_under_readers(mounted):
    f = mounted / "f"
    write_file(f, b"B" * (4 * MiB), fsync=True)
    set_dax(f)
    stop = threading.Event()
    bad = []

    def reader():
        while not stop.is_set():
            got = read_file(f)
            if len(got) != 4 * MiB or set(got) - {0x42, 0}:
                bad.append(len(got))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    fd = os.open(f, os.O_RDWR)
    try:
        for off in range(0, 4 * MiB, MiB):
            punch(fd, off, MiB // 2)
    finally:
        os.close(fd)
        stop.set()
        for t in threads:
            t.join()
    assert not bad
    got = read_file(f)
    for off in range(0, 4 * MiB, MiB):
        assert got[off:off + MiB // 2] == bytes(MiB // 2)
        assert got[off + MiB // 2:off + MiB] == b"B" * (MiB // 2)


_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def punch(fd, off, n):
    FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
    if _libc.fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, off, n) != 0:
        raise OSError(ctypes.get_errno(), "fallocate")


# --------------------------------------------------------------------------------------
# DAX windows
# --------------------------------------------------------------------------------------

def windows(m: Mount) -> dict:
    s = stats(m)
    assert "dax_windows" in s, s
    return s["dax_windows"]


def test_windows_map_hit_and_tear_down(image, mount_factory):
    m = mount_factory(image, ["-o", "dax_window=8M"])  # 4 slots
    data = pattern(7, 6 * MiB)
    write_file(m / "f", data, fsync=True)
    set_dax(m / "f")
    w0 = windows(m)
    assert w0["slots"] == 4 and w0["mapped"] == 0
    assert read_file(m / "f") == data
    w1 = windows(m)
    assert w1["mapped"] == 3 and w1["misses"] >= 3
    assert read_file(m / "f") == data
    assert windows(m)["hits"] > w1["hits"]
    os.truncate(m / "f", MiB)
    w2 = windows(m)
    assert w2["teardowns"] >= 3 and w2["mapped"] == 0
    assert read_file(m / "f") == data[:MiB]
    set_dax(m / "f", False)
    assert windows(m)["mapped"] == 0


def test_windows_reclaim_and_fallback(image, mount_factory):
    m = mount_factory(image, ["-o", "dax_window=4M"])  # 2 slots
    os.mkdir(m / "d")
    set_dax(m / "d")
    files = {f"f{k}": pattern(10 + k, 3 * MiB) for k in range(3)}
    for name, data in files.items():
        write_file(m.path("d", name), data, fsync=True)
    for _ in range(2):
        for name, data in files.items():
            assert read_file(m.path("d", name)) == data
    assert windows(m)["reclaims"] > 0
    # A hole cannot be windowed: the extents are read one by one.
    fd = os.open(m.path("d", "sparse"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.pwrite(fd, b"end", 1 * MiB)
    os.close(fd)
    before = windows(m)["fallbacks"]
    assert read_file(m.path("d", "sparse")) == bytes(MiB) + b"end"
    assert windows(m)["fallbacks"] > before


def test_windows_on_emulated_device_dax(image_factory, mount_factory):
    img = image_factory("64M", "--emulate-devdax")
    m = mount_factory(img, ["-o", "emulate_devdax"])
    data = pattern(20, 6 * MiB)
    f = m / "f"
    fd = os.open(f, os.O_WRONLY | os.O_CREAT, 0o644)
    os.posix_fallocate(fd, 0, len(data))  # one allocation: 2 MiB-aligned runs
    set_dax(f)
    os.pwrite(fd, data, 0)
    os.close(fd)
    assert read_file(f) == data
    w = windows(m)
    assert w["mapped"] >= 1, w  # device-dax rules: only whole aligned 2 MiB extents
    # A chunk made of 4 KiB pieces cannot be mapped on device-dax: read extent by extent.
    g = m / "g"
    set_dax(m.mnt)
    for off in range(0, 64 * 1024, 8192):
        fd = os.open(g, os.O_WRONLY | os.O_CREAT, 0o644)
        os.pwrite(fd, b"x" * 4096, off)
        os.close(fd)
        write_file(m / f"pad{off}", b"y" * 4096)  # fragments g's extents
    before = windows(m)["fallbacks"]
    assert read_file(g) == b"".join(b"x" * 4096 + (bytes(4096) if off < 56 * 1024 else b"")
                                    for off in range(0, 64 * 1024, 8192))
    assert windows(m)["fallbacks"] > before


def test_no_windows_when_turned_off(image, mount_factory):
    m = mount_factory(image, ["-o", "dax_window=0"])
    write_file(m / "f", b"abc")
    set_dax(m / "f")
    assert read_file(m / "f") == b"abc"
    assert "dax_windows" not in stats(m)


# --------------------------------------------------------------------------------------
# Unmodified programs
# --------------------------------------------------------------------------------------

@pytest.mark.timeout_s(300)
def test_fio_verify_on_dax_files(mounted):
    fio = shutil.which("fio") or pytest.fail("fio is missing (tools/deps.sh installs it)")
    d = mounted / "d"
    os.mkdir(d)
    set_dax(d)
    for rw in ("write", "randwrite"):
        cp = run([fio, "--name=dax", f"--directory={d}", f"--rw={rw}", "--bs=4k,64k",
                  "--size=16M", "--numjobs=2", "--verify=crc32c", "--do_verify=1",
                  "--ioengine=psync", "--group_reporting", "--verify_state_save=0"], timeout=240)
        assert cp.returncode == 0 and "verify:" not in cp.stderr, cp.stdout + cp.stderr


def test_sqlite_on_a_dax_database(mounted):
    sqlite = shutil.which("sqlite3") or pytest.fail("sqlite3 is missing (tools/deps.sh installs it)")
    d = mounted / "db"
    os.mkdir(d)
    set_dax(d)
    db = os.path.join(d, "t.db")
    script = "CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT);\n"
    for b in range(20):
        script += "BEGIN;\n" + "".join(
            f"INSERT INTO t(v) VALUES (hex(randomblob({50 + (b * 50 + i) % 400})));\n" for i in range(50)) + "COMMIT;\n"
    script += "DELETE FROM t WHERE k % 3 = 0;\nVACUUM;\n"
    cp = run([sqlite, db], input=script, timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert effective(db) == b"1"
    out = run([sqlite, db, "PRAGMA integrity_check; SELECT count(*) FROM t;"], check=True).stdout.split()
    assert out == ["ok", str(1000 - 1000 // 3)]
