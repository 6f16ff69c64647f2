"""The DRAM write-back cache (mm/page_cache.h, fs/buffered.cc) seen from outside: what is
durable when (fsync/fdatasync, user.pmemfuse.sync, the flush timer, flush_on_close,
SIGTERM and unmount; nothing else survives a SIGKILL, and what does not survive leaves old
data, never garbage), write coalescing, the memory bound under a large write, the kernel's
writeback_cache mode, the control xattrs on the mount root, and the cache options.

The counters come from `user.pmemfuse.stats` (daemon/control.h). Most tests mount with
flush_interval=0, so nothing reaches pmem behind the test's back.
"""

import errno
import hashlib
import json
import mmap
import os
import random
import shutil
import signal
import subprocess
import threading
import time

import pytest

from pmemfuse_helpers import (DAEMON, MiB, Mount, expect_errno, fsck, fsck_check,
                              is_fuse_mounted, make_mountpoint, read_file, require, run,
                              write_file)

STATS = "user.pmemfuse.stats"
SYNC = "user.pmemfuse.sync"
PAGE = 4096
NO_TIMER = ["-o", "flush_interval=0"]


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------

def stats(m: Mount) -> dict:
    return json.loads(os.getxattr(m.mnt, STATS))


def cache(m: Mount) -> dict:
    s = stats(m)
    assert "cache" in s, f"no cache section in {s}"
    return s["cache"]


def sync_all(m: Mount) -> None:
    os.setxattr(m.mnt, SYNC, b"1")


def write_unsynced(path, data: bytes, off: int | None = None) -> None:
    """Write (create if needed) without fsync; off=None truncates and writes from 0."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if off is None else 0)
    fd = os.open(path, flags, 0o644)
    try:
        view, pos = memoryview(data), off or 0
        while view:
            n = os.pwrite(fd, view, pos)
            view, pos = view[n:], pos + n
    finally:
        os.close(fd)


def write_synced(path, data: bytes, how: str = "fsync") -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        (os.fsync if how == "fsync" else os.fdatasync)(fd)
    finally:
        os.close(fd)


def poll(fn, timeout: float, interval: float = 0.05):
    """Calls fn until it returns something true or TIMEOUT passes; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def assert_fsck_clean(image, what: str) -> str:
    """fsck.pmemfuse -f -n (a crashed image's journal replayed in memory): exit 0, clean."""
    rc, out = fsck_check(image)
    assert rc == 0 and ": clean," in out, f"fsck -f -n {what} exited {rc}:\n{out}"
    return out


def old_or_new_problem(got: bytes, old: bytes, new: bytes) -> str | None:
    """None if GOT is a state a crash may leave between OLD and NEW: size between the two,
    every byte the old or the new one (zero past a version's end)."""
    lo, hi = sorted((len(old), len(new)))
    if not lo <= len(got) <= hi:
        return f"size {len(got)} not between {len(old)} and {len(new)}"
    n = len(got)
    o, w = old[:n].ljust(n, b"\0"), new[:n].ljust(n, b"\0")
    for a in range(0, n, PAGE):
        g = got[a:a + PAGE]
        if g == o[a:a + PAGE] or g == w[a:a + PAGE]:
            continue
        for i in range(a, min(n, a + PAGE)):
            if got[i] != o[i] and got[i] != w[i]:
                return f"byte {i} is {got[i]:#04x}: neither old {o[i]:#04x} nor new {w[i]:#04x}"
    return None


def rss_anon_kib(pid: int) -> int:
    """Anonymous resident memory of PID (the cache arena is anonymous; the pmem image is a
    shared mapping of a /dev/shm file, counted in RssShmem, so VmRSS would include every
    image page the daemon touched)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError(f"no RssAnon in /proc/{pid}/status")


def pattern(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


# --------------------------------------------------------------------------------------
# Durability points
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["fsync", "fdatasync"])
def test_fsynced_data_survives_sigkill_exactly(image, mount_factory, how):
    m = mount_factory(image, NO_TIMER)
    files = {
        "small": pattern(1, 100),
        "unaligned": pattern(2, 3 * PAGE + 123),
        "big": pattern(3, 3 * MiB + 7),
        "empty": b"",
    }
    for name, data in files.items():
        write_synced(m / name, data, how)
    # an overwrite in the middle and an append of an existing fsync'd file, fsync'd again
    fd = os.open(m / "big", os.O_WRONLY)
    try:
        patch = pattern(4, 10_000)
        os.pwrite(fd, patch, MiB + 5)
        os.lseek(fd, 0, os.SEEK_END)
        os.write(fd, b"tail")
        (os.fsync if how == "fsync" else os.fdatasync)(fd)
    finally:
        os.close(fd)
    big = bytearray(files["big"])
    big[MiB + 5:MiB + 5 + len(patch)] = patch
    files["big"] = bytes(big) + b"tail"
    assert cache(m)["dirty_bytes"] == 0, f"dirty pages left after {how}: {cache(m)}"
    m.kill9()
    m.start()
    for name, data in files.items():
        got = read_file(m / name)
        assert got == data, (f"{name}: {how}'d data differs after SIGKILL + remount "
                             f"(size {len(got)}, expected {len(data)})")


def test_unsynced_write_then_sigkill_leaves_old_or_new_never_garbage(image, mount_factory):
    m = mount_factory(image, NO_TIMER)
    old = pattern(10, 64 * 1024)
    write_synced(m / "f", old)
    write_synced(m / "g", old)
    new = pattern(11, 64 * 1024)
    write_unsynced(m / "f", new, 0)                     # overwrite in place
    write_unsynced(m / "g", pattern(12, 100_000), 0)    # overwrite + grow
    write_unsynced(m / "h", pattern(13, 200_000))       # a new file, data never synced
    assert cache(m)["dirty_bytes"] > 0
    m.kill9()
    assert_fsck_clean(image, "after a SIGKILL with unsynced cached data")
    m.start()
    problems = []
    for name, before, after in [("f", old, new), ("g", old, pattern(12, 100_000)),
                                ("h", b"", pattern(13, 200_000))]:
        p = old_or_new_problem(read_file(m / name), before, after)
        if p:
            problems.append(f"{name}: {p}")
    assert not problems, "unsynced data after SIGKILL is garbage:\n" + "\n".join(problems)
    # the recovered filesystem takes writes and unmounts cleanly
    write_file(m / "after", b"after the crash")
    m.unmount()
    assert_fsck_clean(image, "after recovery and a clean unmount")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_writes_back_cached_data_before_exit(image, mount_factory, sig):
    m = mount_factory(image, NO_TIMER)
    write_synced(m / "over", pattern(20, 300_000))
    files = {"new": pattern(21, 2 * MiB + 3), "over": pattern(22, 300_000),
             "small": b"written right before the signal"}
    for name, data in files.items():
        write_unsynced(m / name, data)
    c = cache(m)
    assert c["dirty_bytes"] >= 2 * MiB, f"expected the writes to be cached: {c}"
    rc = m.signal(sig)
    assert rc is not None, f"daemon did not exit within 30 s of {sig.name}"
    assert rc == 0, f"daemon exited {rc} on {sig.name}; log:\n{m.logs[-1]}"
    assert not m.mounted_after_exit, f"mount left behind after {sig.name}"
    assert_fsck_clean(image, f"after {sig.name}")
    m.start(NO_TIMER)
    for name, data in files.items():
        assert read_file(m / name) == data, f"{name}: cached data lost across {sig.name}"


def test_flush_timer_writes_back_within_the_interval(image, mount_factory):
    m = mount_factory(image, ["-o", "flush_interval=1"])
    data = pattern(30, MiB)
    t0 = time.monotonic()
    write_unsynced(m / "f", data)
    dirty = cache(m)["dirty_bytes"]
    assert dirty >= MiB, f"dirty_bytes {dirty} right after writing 1 MiB"
    clean = poll(lambda: cache(m)["dirty_bytes"] == 0, timeout=5)
    elapsed = time.monotonic() - t0
    assert clean, f"dirty_bytes still {cache(m)['dirty_bytes']} {elapsed:.1f} s after the write"
    # nothing asked for it but the timer: it must not fire well before the interval
    assert elapsed >= 0.8, f"written back after {elapsed:.2f} s with flush_interval=1"
    assert cache(m)["flush_batches"] >= 1
    m.kill9()
    m.start()
    assert read_file(m / "f") == data, "data written back by the timer lost at SIGKILL"


def test_huge_flush_interval_keeps_data_cached(image, mount_factory):
    # flush_interval is seconds of DRAM-only life; a large value must mean "rarely", not
    # overflow into "immediately" (the value is turned into ms and then ns internally).
    m = mount_factory(image, ["-o", "flush_interval=10000000000"])
    write_unsynced(m / "f", pattern(31, 64 * 1024))
    time.sleep(1.5)  # several flusher ticks (at most 1 s apart)
    c = cache(m)
    assert c["dirty_bytes"] == 64 * 1024 and c["flush_batches"] == 0, (
        f"flush_interval=1e10 s wrote back within 1.5 s: {c}")


def test_control_sync_xattr_makes_everything_durable(image, mount_factory, image_factory):
    m = mount_factory(image, NO_TIMER)
    files = {f"f{i}": pattern(40 + i, 50_000 * (i + 1)) for i in range(5)}
    for name, data in files.items():
        write_unsynced(m / name, data)
    assert cache(m)["dirty_bytes"] > 0
    cp = run(["setfattr", "-n", SYNC, "-v", "1", m.mnt], timeout=30)
    assert cp.returncode == 0, f"setfattr -n {SYNC} failed: {cp.stderr}"
    c = cache(m)
    assert c["dirty_bytes"] == 0, f"dirty pages left after {SYNC}: {c}"
    # a copy of the image taken now, while mounted, holds everything
    copy = image_factory(None)
    shutil.copyfile(image, copy)
    assert_fsck_clean(copy, "of a copy taken after the sync xattr")
    with Mount(copy) as mc:
        for name, data in files.items():
            assert read_file(mc / name) == data, f"{name}: missing from the synced copy"
    # and so does the image itself after a SIGKILL
    m.kill9()
    m.start()
    for name, data in files.items():
        assert read_file(m / name) == data, f"{name}: lost at SIGKILL after {SYNC}"


def test_flush_on_close_writes_back_at_close(image, mount_factory):
    m = mount_factory(image, ["-o", "flush_interval=0,flush_on_close"])
    data = pattern(50, 300_000)
    write_unsynced(m / "f", data)  # open, write, close: no fsync
    # RELEASE reaches the daemon asynchronously after close(2) returns; give it a moment
    assert poll(lambda: cache(m)["dirty_bytes"] == 0, timeout=5), (
        f"dirty pages left 5 s after close with flush_on_close: {cache(m)}")
    m.kill9()
    m.start()
    assert read_file(m / "f") == data, "closed file's data lost at SIGKILL with flush_on_close"


def test_without_flush_on_close_close_does_not_write_back(image, mount_factory):
    # the counterpart: with flush_interval=0 and no flush_on_close, close leaves the pages
    # dirty (so the test above measures the option, not something else)
    m = mount_factory(image, NO_TIMER)
    write_unsynced(m / "f", pattern(51, 300_000))
    time.sleep(0.3)
    assert cache(m)["dirty_bytes"] >= 300_000


def test_buffered_truncate_and_utime_then_fsync_survive_sigkill(image, mount_factory):
    # size changes and explicit times applied over cached, unsynced data
    m = mount_factory(image, NO_TIMER)
    a = pattern(60, 10_000)
    write_unsynced(m / "shrunk", a)
    os.truncate(m / "shrunk", 5000)                       # below the cached data
    write_unsynced(m / "grown", a)
    os.truncate(m / "grown", 3 * PAGE + 10)               # above it: zeros after
    write_unsynced(m / "holey", a)
    write_unsynced(m / "holey", b"far", 5 * PAGE + 1)     # a hole between
    write_unsynced(m / "timed", a)
    os.utime(m / "timed", ns=(1_000_000_000, 2_000_000_123))
    expect = {"shrunk": a[:5000], "grown": a + bytes(3 * PAGE + 10 - len(a)),
              "holey": a + bytes(5 * PAGE + 1 - len(a)) + b"far", "timed": a}
    for name, data in expect.items():
        assert read_file(m / name) == data, f"{name}: wrong content before fsync"
        fd = os.open(m / name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    assert os.stat(m / "timed").st_mtime_ns == 2_000_000_123, "fsync overwrote utime's mtime"
    m.kill9()
    m.start()
    for name, data in expect.items():
        assert read_file(m / name) == data, f"{name}: wrong content after SIGKILL + remount"
    assert os.stat(m / "timed").st_mtime_ns == 2_000_000_123, "utime's mtime lost"


def test_writes_racing_writeback_keep_the_last_data(image, mount_factory):
    # Writes that meet pages being written back go to second buffers; what fsync returns
    # after must be the last data written to every page, in DRAM and on pmem.
    m = mount_factory(image, NO_TIMER)
    npages = 256
    path = m / "f"
    write_synced(path, bytes(npages * PAGE))
    model = bytearray(npages * PAGE)
    stop = threading.Event()
    errors = []

    def syncer():
        try:
            while not stop.is_set():
                sync_all(m)
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=syncer)
    t.start()
    rng = random.Random(70)
    fd = os.open(path, os.O_WRONLY)
    try:
        deadline = time.monotonic() + 1.5
        gen = 0
        while time.monotonic() < deadline:
            gen += 1
            page = rng.randrange(npages)
            off = page * PAGE + rng.choice([0, 0, 100, 4000])
            n = rng.choice([PAGE, 200, 3 * PAGE + 5])
            n = min(n, npages * PAGE - off)
            data = (gen.to_bytes(4, "little") * (n // 4 + 1))[:n]
            os.pwrite(fd, data, off)
            model[off:off + n] = data
    finally:
        stop.set()
        t.join(timeout=30)
        os.fsync(fd)
        os.close(fd)
    assert not errors, f"sync xattr failed during writes: {errors}"
    c = cache(m)
    assert read_file(path) == bytes(model), "data read back differs from the last writes"
    assert c["dirty_bytes"] == 0, c
    m.kill9()
    m.start()
    got = read_file(path)
    bad = [i // PAGE for i in range(0, len(got), PAGE) if got[i:i + PAGE] != model[i:i + PAGE]]
    assert got == bytes(model), (f"after fsync + SIGKILL, {len(bad)} pages differ from the "
                                 f"last writes (first: {bad[:8]}); second_buffers "
                                 f"{c['second_buffers']}, {gen} writes")


# --------------------------------------------------------------------------------------
# Coalescing and the memory bound
# --------------------------------------------------------------------------------------

def test_rewrites_of_one_page_coalesce_into_one_pmem_write(image, mount_factory):
    m = mount_factory(image, NO_TIMER)
    write_synced(m / "f", bytes(PAGE))
    before = cache(m)
    fd = os.open(m / "f", os.O_WRONLY)
    try:
        for k in range(1000):
            os.pwrite(fd, k.to_bytes(4, "little") * (PAGE // 4), 0)
    finally:
        os.close(fd)
    mid = cache(m)
    sync_all(m)
    after = cache(m)
    app = after["app_bytes_written"] - before["app_bytes_written"]
    pmem = after["pmem_bytes_written"] - before["pmem_bytes_written"]
    assert app == 1000 * PAGE, f"app_bytes_written grew by {app}, expected {1000 * PAGE}"
    assert mid["pmem_bytes_written"] == before["pmem_bytes_written"], (
        f"pmem written before the sync: {before} -> {mid}")
    assert pmem == PAGE, f"pmem_bytes_written grew by {pmem} for 1000 rewrites of one page"
    last = (999).to_bytes(4, "little") * (PAGE // 4)
    m.kill9()
    m.start()
    assert read_file(m / "f") == last


def test_cache_size_0_has_no_cache_and_writes_go_straight_to_pmem(image, mount_factory):
    m = mount_factory(image, ["-o", "cache_size=0"])
    s = stats(m)
    assert "cache" not in s, f"cache section present with cache_size=0: {s}"
    assert "space" in s and "writeback" in s, s
    data = pattern(80, 1_000_003)
    write_unsynced(m / "f", data)
    assert read_file(m / "f") == data
    sync_all(m)  # nothing to do, must still succeed
    m.kill9()  # without a cache a returned write is on pmem (docs/architecture.md)
    m.start(["-o", "cache_size=0"])
    assert read_file(m / "f") == data


@pytest.mark.image_size("512M")
@pytest.mark.timeout_s(120)
def test_large_write_stays_within_cache_size(image, mount_factory):
    cap = 16 * MiB
    overhead = 24 * MiB  # arena index (~100 B/page), FUSE buffers, threads' stacks, heap
    m = mount_factory(image, ["-o", "cache_size=16M,flush_interval=0"])
    c0 = cache(m)
    assert c0["capacity_bytes"] == cap, c0
    base = rss_anon_kib(m.pid) * 1024
    block = pattern(90, MiB)
    h = hashlib.sha256()
    worst_rss, worst_cached, samples = base, 0, 0
    fd = os.open(m / "big", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for i in range(256):
            chunk = i.to_bytes(8, "little") + block[8:]
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
            h.update(chunk)
            if i % 8 == 0:
                c = cache(m)
                worst_cached = max(worst_cached, c["cached_bytes"])
                assert c["cached_bytes"] <= c["capacity_bytes"], c
                worst_rss = max(worst_rss, rss_anon_kib(m.pid) * 1024)
                samples += 1
    finally:
        os.close(fd)
    c = cache(m)
    worst_rss = max(worst_rss, rss_anon_kib(m.pid) * 1024)
    assert c["cached_bytes"] <= c["capacity_bytes"], c
    assert c["pressure_waits"] > 0 or c["flush_batches"] > 0, (
        f"256 MiB through a 16 MiB cache without writeback: {c}")
    assert worst_rss - base <= cap + overhead, (
        f"daemon anonymous RSS grew by {(worst_rss - base) / MiB:.1f} MiB writing 256 MiB "
        f"through a {cap // MiB} MiB cache (allowed {(cap + overhead) // MiB} MiB); {c}")
    assert c["app_bytes_written"] >= 256 * MiB, c
    m.unmount()
    assert_fsck_clean(image, "after writing 256 MiB through a 16 MiB cache")
    m.start(["-o", "cache_size=16M,flush_interval=0"])
    assert os.stat(m / "big").st_size == 256 * MiB
    h2 = hashlib.sha256()
    with open(m / "big", "rb") as f:
        for piece in iter(lambda: f.read(MiB), b""):
            h2.update(piece)
    assert h2.hexdigest() == h.hexdigest(), "256 MiB file differs after remount"
    c = cache(m)
    assert c["cached_bytes"] <= c["capacity_bytes"], f"reading overfilled the cache: {c}"


# --------------------------------------------------------------------------------------
# The kernel's writeback cache
# --------------------------------------------------------------------------------------

def test_writeback_cache_mixed_workload_and_remount(image, mount_factory):
    args = ["-o", "writeback_cache"]
    m = mount_factory(image, args)
    p = m / "f"
    model = bytearray(pattern(100, 50_000))
    write_file(p, bytes(model))
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    try:
        extra = pattern(101, 12_345)
        os.write(fd, extra)
        model += extra
    finally:
        os.close(fd)
    fd = os.open(p, os.O_RDWR)
    try:
        patch = pattern(102, 9000)
        os.pwrite(fd, patch, 4000)
        model[4000:4000 + len(patch)] = patch
        assert os.pread(fd, len(model) + 10, 0) == bytes(model), "after append + overwrite"
        os.ftruncate(fd, 30_001)
        del model[30_001:]
        assert os.fstat(fd).st_size == 30_001
        os.ftruncate(fd, 40_000)
        model += bytes(40_000 - len(model))
        assert os.pread(fd, 50_000, 0) == bytes(model), "after truncate down and up"
        with mmap.mmap(fd, len(model)) as mm:
            mpatch = pattern(103, 7000)
            mm[20_000:27_000] = mpatch
            mm.flush()
        model[20_000:27_000] = mpatch
        os.pwrite(fd, b"end", 60_000)  # past EOF: a hole
        model += bytes(60_000 - len(model)) + b"end"
    finally:
        os.close(fd)
    assert read_file(p) == bytes(model), "content differs before remount"
    assert os.stat(p).st_size == len(model)
    mtime = os.stat(p).st_mtime_ns
    # a second file never fsync'd, many small appends (the kernel merges them)
    q = m / "appends"
    small = b"".join(pattern(104 + i, 1 + i % 700) for i in range(300))
    fd = os.open(q, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        pos = 0
        for i in range(300):
            n = 1 + i % 700
            os.write(fd, small[pos:pos + n])
            pos += n
    finally:
        os.close(fd)
    assert read_file(q) == small
    m.unmount()
    assert_fsck_clean(image, "after the writeback_cache workload")
    for again in (args, []):
        m.start(again)
        assert read_file(p) == bytes(model), f"content differs after remount with {again}"
        assert read_file(q) == small, f"appends differ after remount with {again}"
        st = os.stat(p)
        assert st.st_size == len(model)
        assert st.st_mtime_ns == mtime, f"mtime {st.st_mtime_ns} != {mtime} before unmount"
        m.unmount()


# --------------------------------------------------------------------------------------
# Control xattrs
# --------------------------------------------------------------------------------------

def test_stats_xattr_is_json_on_the_root_only(mounted):
    write_file(mounted / "f", b"x")
    os.mkdir(mounted / "d")
    cp = run(["getfattr", "--only-values", "-n", STATS, mounted.mnt], timeout=30)
    assert cp.returncode == 0, cp.stderr
    s = json.loads(cp.stdout)
    for k in ("capacity_bytes", "cached_bytes", "dirty_bytes", "hits", "misses",
              "app_bytes_written", "pmem_bytes_written", "flush_batches", "flush_ns_total",
              "flush_ns_max", "second_buffers", "evictions", "pressure_waits"):
        assert isinstance(s["cache"].get(k), int), f"cache.{k} missing: {s}"
    assert isinstance(s["writeback"]["errors"], int) and s["writeback"]["errors"] == 0, s
    assert s["space"]["blocks"] > s["space"]["blocks_free"] > 0, s
    assert s["cache"]["capacity_bytes"] >= 256 * 1024, s
    for p in (mounted / "f", mounted / "d"):
        for name in (STATS, SYNC):
            expect_errno(errno.ENODATA, os.getxattr, p, name)
    expect_errno(errno.ENODATA, os.getxattr, mounted.mnt, SYNC)  # write-only
    expect_errno(errno.EPERM, os.setxattr, mounted.mnt, STATS, b"1")
    cp = run(["setfattr", "-n", STATS, "-v", "1", mounted.mnt], timeout=30)
    assert cp.returncode != 0 and "not permitted" in cp.stderr, (cp.returncode, cp.stderr)
    listed = os.listxattr(mounted.mnt)
    assert STATS not in listed and SYNC not in listed, listed
    expect_errno(errno.ENODATA, os.removexattr, mounted.mnt, STATS)
    # still readable (and unchanged in shape) after all that
    assert "cache" in stats(mounted)


# --------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("opt", ["cache_size=100K", "cache_size=abc", "flush_interval=-1",
                                 "cache_size=", "flush_interval=abc"])
def test_bad_cache_option_exits_2_with_one_line(image, opt):
    mnt = make_mountpoint()
    try:
        cp = run([require(DAEMON), "-f", "-o", opt, image, mnt], timeout=20)
        mounted = is_fuse_mounted(mnt)
    finally:
        if is_fuse_mounted(mnt):
            subprocess.run(["fusermount3", "-uz", mnt], timeout=20)
        os.rmdir(mnt)
    assert not mounted, f"-o {opt} mounted"
    assert cp.returncode == 2, f"-o {opt}: exit {cp.returncode}, stderr {cp.stderr!r}"
    lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"-o {opt}: expected one line on stderr, got {lines}"
    name = opt.split("=")[0]
    assert lines[0].startswith("pmemfuse: ") and name in lines[0], lines[0]


def test_cache_size_is_honoured(image, mount_factory):
    m = mount_factory(image, ["-o", "cache_size=256K"])
    assert cache(m)["capacity_bytes"] == 256 * 1024
    data = pattern(110, 5 * MiB)
    write_unsynced(m / "f", data)  # 20x the cache
    assert read_file(m / "f") == data
    m.remount(["-o", "cache_size=3M"])
    assert cache(m)["capacity_bytes"] == 3 * MiB
    assert read_file(m / "f") == data
