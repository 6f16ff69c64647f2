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

from pmemfuse_helpers import (DAEMON, FUSERMOUNT, MiB, Mount, expect_errno, find_daemon_pids,
                              free_blocks, fsck_check, is_fuse_mounted,
                              kill_image_daemons_and_unmount, make_mountpoint, read_file,
                              require, run, wait_free_blocks, write_file)

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


def _start_or_refused(image, mount_factory, opts):
    """A Mount with OPTS, or None if the daemon refused them (exit 2, one line)."""
    m = mount_factory(image, opts, start=False)
    try:
        m.start()
    except AssertionError:
        lines = [ln for ln in m.logs[-1].splitlines() if ln.strip()]
        assert m.last_returncode == 2 and len(lines) == 1, (
            f"{opts}: daemon exited {m.last_returncode} before mounting:\n{m.logs[-1]}")
        return None
    return m


@pytest.mark.parametrize("value", ["1e10", "18446744074", "1e300", "inf"])
def test_huge_flush_interval_is_refused_or_keeps_data_cached(image, mount_factory, value):
    # flush_interval is seconds of DRAM-only life; a large value means "rarely". It must
    # not overflow (into ms, then ns) into "immediately", nor into "never" by accident.
    m = _start_or_refused(image, mount_factory, ["-o", f"flush_interval={value}"])
    if m is None:
        return
    write_unsynced(m / "f", pattern(31, 64 * 1024))
    time.sleep(1.3)  # past the first flusher tick (ticks are at most 1 s apart)
    c = cache(m)
    assert c["dirty_bytes"] == 64 * 1024 and c["flush_batches"] == 0, (
        f"flush_interval={value} s wrote back within 1.3 s: {c}")


def test_sub_millisecond_flush_interval_is_refused_or_flushes_soon(image, mount_factory):
    # 0 means "no timer"; 0.0001 asks for the opposite and must not silently become 0.
    m = _start_or_refused(image, mount_factory, ["-o", "flush_interval=0.0001"])
    if m is None:
        return
    write_unsynced(m / "f", pattern(32, 64 * 1024))
    assert poll(lambda: cache(m)["dirty_bytes"] == 0, timeout=3), (
        f"flush_interval=0.0001: still dirty after 3 s (taken as 0, no timer?): {cache(m)}")


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


def test_flush_on_close_data_is_durable_when_close_returns(image, mount_factory):
    # What the option is for: once close(2) has returned, the data is on pmem. Ten rounds
    # of write, close, SIGKILL right away.
    m = mount_factory(image, ["-o", "flush_interval=0,flush_on_close"])
    lost = []
    for k in range(10):
        data = pattern(52 + k, 300_000)
        write_unsynced(m / f"f{k}", data)
        m.kill9()
        m.start()
        got = read_file(m / f"f{k}")
        if got != data:
            lost.append(f"f{k}: {len(got)} of {len(data)} bytes, "
                        f"{'a prefix' if data.startswith(got) else 'other content'}")
    assert not lost, (f"{len(lost)} of 10 files closed with flush_on_close, then SIGKILL: "
                      f"data lost:\n" + "\n".join(lost))


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


def test_truncate_of_cached_data_updates_mtime_and_the_mtime_persists(image, mount_factory):
    # The size changes 5000 -> 0 (only the cache had the 5000: the media size is still 0),
    # so truncate must set mtime to now (POSIX), and what stat shows must be what a clean
    # unmount stores.
    m = mount_factory(image, NO_TIMER)
    p = m / "f"
    write_unsynced(p, pattern(61, 5000))
    time.sleep(0.02)
    t0 = time.time_ns()
    os.truncate(p, 0)
    seen = os.stat(p).st_mtime_ns
    assert seen >= t0 - 1_000_000, (f"truncate 5000 -> 0 left mtime {t0 - seen} ns before the "
                                    f"truncate (the write's time, not the truncate's)")
    m.remount(NO_TIMER)
    stored = os.stat(p).st_mtime_ns
    assert stored == seen, f"mtime {seen} before a clean unmount, {stored} after remount"


def test_write_after_a_future_utime_sets_mtime_to_now(image, mount_factory):
    # utime to 2100, then write: the write's time (now) replaces it, in stat and on pmem
    m = mount_factory(image, NO_TIMER)
    p = m / "f"
    write_synced(p, pattern(62, 5000))
    future = 4_102_444_800 * 10**9  # 2100-01-01
    os.utime(p, ns=(future, future))
    t0 = time.time_ns()
    write_unsynced(p, b"new", 100)
    t1 = time.time_ns()
    seen = os.stat(p).st_mtime_ns
    assert t0 - 1_000_000 <= seen <= t1 + 1_000_000, (
        f"mtime after a write is {seen}, not the write's time (in [{t0}, {t1}]); the utime "
        f"set {future}")
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    m.kill9()
    m.start()
    stored = os.stat(p).st_mtime_ns
    assert stored == seen, f"mtime {seen} after write + fsync, {stored} after SIGKILL + remount"


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


@pytest.mark.image_size("32M")
def test_writes_accepted_near_a_full_device_all_reach_pmem(image, mount_factory):
    # Cached writes reserve their blocks: a write that returned must be writable back.
    # Fill a small device without fsync until ENOSPC, then fsync: no error, nothing lost.
    m = mount_factory(image, NO_TIMER)
    files, k, err = {}, 0, None
    while err is None and k < 100:
        data = pattern(130 + k, 1 * MiB + 1000 * k)
        fd = os.open(m / f"f{k}", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            view, done = memoryview(data), 0
            while view:
                n = os.write(fd, view)
                view, done = view[n:], done + n
        except OSError as e:
            err = e
        finally:
            os.close(fd)
        files[f"f{k}"] = data[:done]
        k += 1
    assert err is not None and err.errno == errno.ENOSPC, f"no ENOSPC after {k} MiB: {err!r}"
    assert free_blocks(m.mnt) < 300, f"ENOSPC with {free_blocks(m.mnt)} blocks free"
    for name in files:  # every accepted byte must be writable back
        fd = os.open(m / name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    s = stats(m)
    assert s["cache"]["dirty_bytes"] == 0 and s["writeback"]["errors"] == 0, s
    m.kill9()
    m.start(NO_TIMER)
    bad = [n for n, d in files.items() if read_file(m / n) != d]
    assert not bad, f"fsync'd files differ after SIGKILL near a full device: {bad}"


@pytest.mark.parametrize("how", ["unlinked", "unlinked-while-open", "truncated"])
def test_space_held_by_dirty_pages_comes_back(image, mount_factory, how):
    # Dirty pages hold block reservations (statfs counts them as used); dropping the data
    # without writing it back must return them, and nothing may leak across a remount.
    m = mount_factory(image, NO_TIMER)
    base = free_blocks(m.mnt)
    p = m / "f"
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, pattern(140, 8 * MiB))
        held = base - free_blocks(m.mnt)
        assert held >= 8 * MiB // PAGE, f"8 MiB of dirty pages hold only {held} blocks"
        if how == "unlinked-while-open":
            os.unlink(p)
            os.write(fd, pattern(141, MiB))  # more dirty pages of an orphan
        elif how == "truncated":
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
    if how == "unlinked":
        os.unlink(p)
    after = wait_free_blocks(m.mnt, base)
    assert abs(after - base) <= 8, f"free blocks {base} -> {after} ({how})"
    assert cache(m)["dirty_bytes"] == 0, cache(m)
    m.remount(NO_TIMER)
    assert abs(free_blocks(m.mnt) - base) <= 8, f"free {base} -> {free_blocks(m.mnt)} after remount"


@pytest.mark.timeout_s(90)
def test_small_cache_concurrent_writers_readers_and_syncs(image, mount_factory):
    # 256K of cache (64 pages) shared by 4 writers of 2 MiB files, readers, fsync and
    # truncate: writers wait for pages, the flusher and fsync compete for the same files.
    # No hang, no error, and every file ends exactly as its writer left it.
    m = mount_factory(image, ["-o", "cache_size=256K,flush_interval=0"])
    size = 2 * MiB
    models, errors = {}, []
    stop = threading.Event()

    def writer(w):
        rng = random.Random(150 + w)
        p = m / f"w{w}"
        model = bytearray(size)
        write_synced(p, bytes(model))
        fd = os.open(p, os.O_RDWR)
        try:
            for k in range(300):
                off = rng.randrange(size)
                n = min(rng.choice([100, PAGE, 3 * PAGE + 1, 64 * 1024]), size - off)
                data = rng.randbytes(n)
                os.pwrite(fd, data, off)
                model[off:off + n] = data
                if k % 50 == 49:
                    os.fsync(fd)
                if k == 150:  # shrink and regrow: the tail reads as zeros
                    cut = rng.randrange(size)
                    os.ftruncate(fd, cut)
                    os.ftruncate(fd, size)
                    model[cut:] = bytes(size - cut)
                if k % 60 == 0:
                    got = os.pread(fd, size, 0)
                    if got != model:
                        i = next(i for i in range(size) if got[i] != model[i])
                        errors.append(f"w{w} step {k}: byte {i} reads {got[i]}, wrote {model[i]}")
                        return
            os.fsync(fd)
        except OSError as e:
            errors.append(f"w{w}: {e!r}")
        finally:
            os.close(fd)
            models[p] = bytes(model)

    def reader():
        rng = random.Random(160)
        while not stop.is_set():
            try:
                with open(m / f"w{rng.randrange(4)}", "rb") as f:
                    f.seek(rng.randrange(size))
                    f.read(rng.choice([PAGE, 256 * 1024]))
            except FileNotFoundError:
                pass
            except OSError as e:
                errors.append(f"reader: {e!r}")
                return

    def syncer():
        while not stop.is_set():
            try:
                sync_all(m)
            except OSError as e:
                errors.append(f"sync: {e!r}")
                return
            time.sleep(0.01)

    helpers = [threading.Thread(target=reader), threading.Thread(target=syncer)]
    writers = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in helpers + writers:
        t.start()
    for t in writers:
        t.join(timeout=60)
    stop.set()
    for t in helpers:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in writers + helpers), (
        f"threads still running after 60 s (hang?); cache {cache(m)}")
    assert not errors, "\n".join(errors[:10])
    c = cache(m)
    assert c["cached_bytes"] <= c["capacity_bytes"], c
    assert c["pressure_waits"] > 0 and c["evictions"] > 0, f"the cache was never full: {c}"
    m.kill9()
    m.start(["-o", "cache_size=256K"])
    bad = [os.path.basename(p) for p, d in models.items() if read_file(p) != d]
    assert not bad, f"files differ from their last fsync'd state after SIGKILL: {bad}; {c}"


def test_daemonized_mount_runs_the_flush_timer(image):
    # The flusher thread is started after fuse_daemonize's fork (threads do not survive it)
    mnt = make_mountpoint()
    try:
        cp = run([require(DAEMON), "-o", "flush_interval=0.5", image, mnt], timeout=30)
        assert cp.returncode == 0, cp.stderr
        data = pattern(170, 256 * 1024)
        write_unsynced(os.path.join(mnt, "f"), data)
        c = json.loads(os.getxattr(mnt, STATS))["cache"]
        assert c["dirty_bytes"] > 0, c
        ok = poll(lambda: json.loads(os.getxattr(mnt, STATS))["cache"]["dirty_bytes"] == 0, 5)
        assert ok, f"daemonized: still dirty 5 s after the write with flush_interval=0.5"
        for pid in find_daemon_pids(image):
            os.kill(pid, signal.SIGKILL)
        run([FUSERMOUNT, "-uz", mnt], timeout=20)
        deadline = time.monotonic() + 10
        while find_daemon_pids(image) and time.monotonic() < deadline:
            time.sleep(0.05)
        with Mount(image) as m:
            assert read_file(m / "f") == data, "timer-written data lost at SIGKILL (daemonized)"
    finally:
        kill_image_daemons_and_unmount(image, mnt)


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
        assert os.stat(p).st_size == len(model)
        m.unmount()


def test_writeback_cache_mtime_seen_before_unmount_is_the_one_stored(image, mount_factory):
    # With writeback_cache the kernel keeps mtime (coarse clock) and sends it in SETATTR
    # only when its value changed; a WRITE that reaches the daemon in the same tick must
    # not leave a different (later, daemon-clock) mtime on pmem. Ten files, each written
    # twice in quick succession, so some second write lands in the first one's tick.
    m = mount_factory(image, ["-o", "writeback_cache"])
    seen = {}
    for k in range(10):
        p = m / f"f{k}"
        write_file(p, pattern(120 + k, 5000))
        fd = os.open(p, os.O_WRONLY)
        try:
            os.pwrite(fd, b"again", 100)
        finally:
            os.close(fd)
        seen[p] = os.stat(p).st_mtime_ns
    m.remount(["-o", "writeback_cache"])
    changed = {os.path.basename(p): (t, os.stat(p).st_mtime_ns) for p, t in seen.items()
               if os.stat(p).st_mtime_ns != t}
    assert not changed, (f"{len(changed)} of 10 files have another mtime after a clean "
                         f"remount (seen before -> stored): {changed}")


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
            subprocess.run([FUSERMOUNT, "-uz", mnt], timeout=20)
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
