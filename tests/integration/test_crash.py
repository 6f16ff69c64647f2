"""Crash recovery: SIGKILL the daemon at random moments of a concurrent workload, then
check what recovery promises (docs/architecture.md §3: metadata changes are journaled and
durable when they return; file data once fsync'd: writes without fsync may sit in the
DRAM write-back cache and be lost, but never read back as garbage).

test_kill9_rounds_*: round after round on one image, so damage would accumulate. 4 worker
processes run a mixed workload (crash_workload.py --manifest: creates, appends,
overwrites, O_TRUNC rewrites, mmap writes, files of hundreds of extents, truncates,
fallocate/punch/zero, xattrs, mkdir/rmdir, renames across directories and over existing
names, links, unlinks, unlinks of open files, symlinks, chmod, utime, a shared growing
directory, large writes) while a reaper deletes an old round. Each worker logs every
operation to a manifest on local disk before it starts and again once it (and its fsync)
returned. 50-500 ms in (seeded), the daemon gets SIGKILL; then:
  - fsck -n (journal replayed in memory) must find the image clean;
  - some rounds kill the next daemon again during its recovery, some let fsck -p replay;
  - the mount replays the journal; each worker's namespace must equal its manifest: the
    completed operations exactly, the one in flight either way (data byte by byte old or
    new); rounds verified before must be unchanged (pinned snapshots, inode numbers
    included; file data re-read every 10 rounds); the half-deleted round may only have
    lost entries; nothing else exists on the mount;
  - every 10 rounds an allocation check, a clean unmount and fsck -f -n; otherwise a
    clean unmount, an unmount with a SIGKILL in the middle, or none (the next kill then
    hits a daemon that recovered and never unmounted).
The inode table is filled to just below a chunk boundary first, so the workload grows it.
Rounds alternate the daemon's threading (-s, clone_fd). The seed is printed on failure:
PMEMFUSE_KILL_SEED=N reruns it (thread timing still varies), PMEMFUSE_KILL_ROUNDS=N runs
N rounds instead of 50 (the device-dax variant runs N/5, at least 5).
"""

import collections
import contextlib
import json
import os
import random
import select
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

import crash_workload as cw
from pmemfuse_helpers import (DAEMON, FUSERMOUNT, MiB, Mount, diff_snapshots, free_blocks,
                              fsck, is_fuse_mounted, lazy_unmount, mkfs, read_file, require,
                              write_file)

WORKLOAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crash_workload.py")
# The same, imported rather than run as a script, so its compiled form is cached
# (compiling it takes ~50 ms, once per round otherwise).
WORKLOAD_CACHED = [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv.pop(1)); "
                   "import crash_workload; crash_workload.main(sys.argv[1:])",
                   os.path.dirname(WORKLOAD)]

KILL_ROUNDS = int(os.environ.get("PMEMFUSE_KILL_ROUNDS", "50"))
WORKERS = 4
KEEP = 3              # rounds re-verified each round before the reaper deletes them; round 0 stays
KILL_DELAY = (0.05, 0.5)  # seconds of workload before the SIGKILL
FULL_CHECK_EVERY = 10
STALL_PROBE = 0.1   # seconds before the kill in which some worker must have logged progress
STALL_LIMIT = 5.0   # ... or, failing that, within this much longer: else the daemon is hung
INODE_CHUNK_BLOCKS = 512  # fs/format.h kChunkBlocks: the inode table grows by this much
INODES_PER_CHUNK = (INODE_CHUNK_BLOCKS - 1) * 16  # kInodesPerChunk (256-byte inodes)
PREFILL = "prefill"
TRUNCATE_KILLS = 150


# --------------------------------------------------------------------------------------
# Checks shared with test_concurrency
# --------------------------------------------------------------------------------------

def errors_before(output: str, t_ns: int) -> list[str]:
    bad = []
    for line in output.splitlines():
        if line.startswith("ERR "):
            _, ts, rest = line.split(" ", 2)
            if int(ts) < t_ns:
                bad.append(rest)
    return bad


def verify_tree(root) -> dict:
    """Walk everything: lstat, read every file, readlink, xattrs; check directory nlink
    and that each file's nlink equals the number of names that refer to it. Returns
    counts per type."""
    counts = collections.Counter()
    names_per_ino = collections.Counter()
    nlink_of = {}
    problems = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: problems.append(repr(e))):
        st = os.lstat(dirpath)
        subdirs = [d for d in dirnames if stat.S_ISDIR(os.lstat(os.path.join(dirpath, d)).st_mode)]
        if st.st_nlink != 2 + len(subdirs):
            problems.append(f"{dirpath}: nlink {st.st_nlink} != 2 + {len(subdirs)} subdirs")
        os.listxattr(dirpath)
        counts["dir"] += 1
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                data = read_file(p)
                if len(data) != st.st_size:
                    problems.append(f"{p}: read {len(data)} bytes, st_size {st.st_size}")
                for k in os.listxattr(p):
                    os.getxattr(p, k)
                names_per_ino[st.st_ino] += 1
                nlink_of[st.st_ino] = st.st_nlink
                counts["file"] += 1
            elif stat.S_ISLNK(st.st_mode):
                t = os.readlink(p)
                if len(os.fsencode(t)) != st.st_size:
                    problems.append(f"{p}: readlink length {len(t)} != st_size {st.st_size}")
                counts["symlink"] += 1
            elif not stat.S_ISDIR(st.st_mode):
                problems.append(f"{p}: unexpected file type {oct(st.st_mode)}")
    for ino, n in names_per_ino.items():
        if nlink_of[ino] != n:
            problems.append(f"inode {ino}: nlink {nlink_of[ino]} but {n} names")
    assert not problems, "inconsistent tree after recovery:\n" + "\n".join(problems[:30])
    return counts


def exercise(root):
    """The recovered filesystem must still allocate and free correctly: creating and
    deleting 50 files gives back every block, except that the inode table may have grown by
    one chunk (it never shrinks)."""
    base = free_blocks(root)
    d = os.path.join(root, "post-recovery")
    os.mkdir(d)
    for i in range(50):
        write_file(os.path.join(d, f"f{i}"), os.urandom(i * 1000))
    for i in range(50):
        assert read_file(os.path.join(d, f"f{i}")) is not None
        os.unlink(os.path.join(d, f"f{i}"))
    os.rmdir(d)
    # Blocks of unlinked files come back once FUSE's RELEASE/FORGET arrive (asynchronous).
    deadline = time.monotonic() + 10
    while True:
        now = free_blocks(root)
        ok = [t for t in (base, base - INODE_CHUNK_BLOCKS) if abs(now - t) <= 8]
        if ok or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert ok, (f"free blocks {base} -> {now} after create+delete (allowed: the same, or "
                f"{INODE_CHUNK_BLOCKS} fewer if the inode table grew)")


# --------------------------------------------------------------------------------------
# Kill rounds
# --------------------------------------------------------------------------------------

def _pid_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def _stop_launcher(proc, pids) -> str:
    """SIGKILL the workload (launcher, workers, reaper: one process group) and wait until
    every one of them is gone, so none can touch the next mount. Returns its stderr."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        err = "<launcher did not die>"
    deadline = time.monotonic() + 30
    while not all(_pid_gone(p) for p in pids):
        assert time.monotonic() < deadline, f"workers {pids} still alive 30 s after SIGKILL"
        time.sleep(0.01)
    return err or ""


def _read_ready(proc, timeout=20.0) -> list[int]:
    r, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if r else ""
    if not line.startswith("READY"):
        err = proc.stderr.read() if proc.poll() is not None else ""
        raise AssertionError(f"workload did not start: {line!r}; stderr: {err}")
    return [int(x) for x in line.split()[1:]]


class KillRounds:
    """One image, many rounds of workload + SIGKILL + recovery + verification."""

    def __init__(self, image, mnt_holder: Mount, mdir, seed, args_for, fsck_extra=(),
                 prefill=False):
        self.image, self.m, self.mdir = image, mnt_holder, str(mdir)
        self.prefill = prefill
        self.prefilled: set[str] = set()
        self.seed = seed
        self.rng = random.Random(seed)
        self.args_for = args_for
        self.fsck_extra = list(fsck_extra)
        self.pinned: dict[int, dict[int, dict]] = {}  # round -> worker -> scan without data
        self.stats = collections.Counter()
        self.seconds = collections.Counter()

    # -- helpers ------------------------------------------------------------------------

    def fsck_clean(self, *flags) -> str:
        """fsck must find no problem. Exit 0, or with -p 1 if it replayed the journal (with
        -n the replay is in memory only and the exit stays 0: tools/fsck.cc)."""
        rc, out = fsck(self.image, *flags, *self.fsck_extra)
        replayed = "committed transactions replayed" in out
        expect = 1 if replayed and "-n" not in flags else 0
        assert rc == expect and ": clean," in out, (
            f"fsck.pmemfuse {' '.join(flags)} exited {rc} (expected {expect}):\n{out}")
        if replayed:
            self.stats[f"fsck {flags[-1]} replayed a journal"] += 1
        return out

    def fill_inode_table(self) -> None:
        """Empty files up to 200 inodes short of the first chunk's end, so the workload
        grows the inode table under the kills."""
        sv = os.statvfs(self.m.mnt)
        n = max(0, INODES_PER_CHUNK - (sv.f_files - sv.f_ffree) - 200)
        os.mkdir(self.m / PREFILL)

        def make(names):
            for name in names:
                os.close(os.open(self.m.path(PREFILL, name), os.O_CREAT | os.O_WRONLY, 0o644))

        names = [f"p{i}" for i in range(n)]
        threads = [threading.Thread(target=make, args=(names[k::2],)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.prefilled = set(names)

    def kill_during_recovery(self, args) -> None:
        """Start the daemon on the crashed image and SIGKILL it within its first 30 ms:
        in the middle of the journal replay, the orphan reclaim, or just after."""
        delay = self.rng.uniform(0, 0.03)
        p = subprocess.Popen([require(DAEMON), "-f", *args, self.image, self.m.mnt],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            time.sleep(delay)
        finally:
            p.kill()
            p.wait(timeout=30)
            if is_fuse_mounted(self.m.mnt):
                lazy_unmount(self.m.mnt)
                self.stats["daemon killed after its recovery, mounted"] += 1
            else:
                self.stats["daemon killed before or during its recovery"] += 1

    def kill_during_unmount(self) -> None:
        """Start fusermount3 -u and SIGKILL the daemon 0-4 ms later: before the unmount,
        while the daemon writes back times, marks the image clean and checkpoints the
        journal (about a millisecond here), or after it exited."""
        p = subprocess.Popen([FUSERMOUNT, "-u", self.m.mnt], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        try:
            time.sleep(self.rng.uniform(0, 0.004))
            self.m.kill9()
        finally:
            p.wait(timeout=20)
        rc = self.m.last_returncode
        self.stats["daemon killed around its unmount" if rc == -signal.SIGKILL else
                   f"daemon done unmounting before the kill (exit {rc})"] += 1

    def grow_names(self) -> list[str]:
        return os.listdir(self.m / cw.GROW)

    def reap_candidate(self) -> int:
        old = sorted(r for r in self.pinned if r != 0)
        return old[0] if len(old) >= KEEP else -1

    # -- one round ------------------------------------------------------------------------

    def workload_and_kill(self, rnd: int, reap: int) -> float:
        for i in range(WORKERS):
            os.makedirs(self.m.path(*cw.namespace(rnd, i)[0].split("/")), 0o755)
        rseed = self.rng.randrange(1 << 40)
        proc = subprocess.Popen(
            [*WORKLOAD_CACHED, "--manifest", self.m.mnt, str(rnd), str(WORKERS),
             str(rseed), self.mdir, str(reap), "120"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True)
        pids = []
        try:
            pids = _read_ready(proc)
            delay = self.rng.uniform(*KILL_DELAY)
            time.sleep(max(0.0, delay - STALL_PROBE))
            stalled = self.stalled(rnd, delay)
            ended_early = proc.poll() is not None
            t_kill = time.monotonic_ns()
            self.m.kill9()
        finally:
            err = _stop_launcher(proc, pids)
        assert "crashed" not in err and "Traceback" not in err, f"workload bug:\n{err}"
        return t_kill, stalled, ended_early

    def stalled(self, rnd: int, delay: float) -> bool:
        """Sleeps the rest of the delay (STALL_PROBE). If no worker logged anything in that
        time, waits up to STALL_LIMIT for progress; True if none came (a hung daemon)."""
        logs = [os.path.join(self.mdir, f"r{rnd}-w{i}.log") for i in range(WORKERS)]

        def logged():
            return sum(os.path.getsize(p) for p in logs if os.path.exists(p))

        if delay < STALL_PROBE:
            time.sleep(delay)
            return False
        before = logged()
        time.sleep(STALL_PROBE)
        if logged() != before:
            return False
        self.stats["rounds with a pause in progress before the kill"] += 1
        deadline = time.monotonic() + STALL_LIMIT
        while logged() == before:
            if time.monotonic() > deadline:
                return True
            time.sleep(0.01)
        return False

    def manifests(self, rnd: int, t_kill: int) -> list[dict]:
        out = []
        for i in range(WORKERS):
            man = cw.parse_manifest(os.path.join(self.mdir, f"r{rnd}-w{i}.log"))
            assert not man["problems"], man["problems"]
            early = [e for e in man["errors"] if e[0] < t_kill]
            assert not early, f"worker {i}: errors before the kill: {early}"
            out.append(man)
        reap_log = os.path.join(self.mdir, f"r{rnd}-reap.log")
        if os.path.exists(reap_log):
            early = [e for e in cw.parse_manifest(reap_log)["errors"] if e[0] < t_kill]
            assert not early, f"reaper: errors before the kill: {early}"
        return out

    def verify(self, rnd: int, mans: list[dict], reap: int, read_pinned: bool) -> None:
        """Checks every namespace: this round's against its manifests, earlier rounds'
        against what they were when verified (their file data only if READ_PINNED), the
        round being deleted for entries that changed, and the mount for strays."""
        grow = self.grow_names()
        seen = {cw.GROW}
        problems = []
        # this round: the manifests
        current = {}
        for i, man in enumerate(mans):
            root, prefix = cw.namespace(rnd, i)
            obs = cw.scan(self.m.mnt, root, prefix, grow)
            seen.update(obs)
            model = cw.replay(root, prefix, man["done"])
            cands = model.expect(man["inflight"])
            diffs = [(label, cw.diff(c, obs)) for label, c in cands]
            if all(d for _, d in diffs):
                problems.append(
                    f"worker {i}: {len(man['done'])} operations done, in flight: "
                    f"{json.dumps(man['inflight'])[:300]}\n" + "\n".join(
                        f"  against the state {label}:\n    " + "\n    ".join(d)
                        for label, d in diffs))
            files = {id(n): n for n in model.names.values() if isinstance(n, cw.FileNode)}
            self.stats["files checked exactly"] += sum(n.check == "exact" for n in files.values())
            self.stats["files with mtime checked"] += sum(n.mtime_ns is not None
                                                          for n in files.values())
            current[i] = cw.strip_data(obs)
            self.stats["operations completed"] += len(man["done"])
            self.stats["operations in flight at the kill"] += man["inflight"] is not None
            if man["inflight"]:
                self.stats[f"in flight: {man['inflight']['op']}"] += 1
            self.stats["names checked"] += len(obs)
        # earlier rounds: unchanged since they were verified
        for r, snaps in self.pinned.items():
            for i, snap in snaps.items():
                root, prefix = cw.namespace(r, i)
                obs = cw.scan(self.m.mnt, root, prefix, grow, with_data=False, read=read_pinned)
                seen.update(obs)
                if not read_pinned:
                    snap = cw.strip_data(snap, ("sha256",))
                if r == reap:
                    # being deleted when the kill came: entries may be gone, none changed
                    # (a directory's and a linked file's nlink may have dropped)
                    obs, snap = cw.strip_data(obs, ("nlink",)), cw.strip_data(snap, ("nlink",))
                    for p, e in obs.items():
                        if e != snap.get(p):
                            problems.append(f"round {r} (being deleted): {p}: {e} "
                                            f"!= pinned {snap.get(p)}")
                elif obs != snap:
                    problems.append(f"round {r} worker {i} changed since it was verified:\n  "
                                    + "\n  ".join(diff_snapshots(snap, obs)))
            seen.add(f"r{r}")
        seen.add(f"r{rnd}")
        if self.prefill:
            got = set(os.listdir(self.m / PREFILL))
            if got != self.prefilled:
                problems.append(f"{PREFILL}: {len(self.prefilled - got)} names missing, "
                                f"{len(got - self.prefilled)} unexpected")
            seen.add(PREFILL)
            seen.update(f"{PREFILL}/{n}" for n in got)
        # nothing else on the mount
        for dirpath, dirnames, filenames in os.walk(self.m.mnt):
            prefix = dirpath[len(self.m.mnt) + 1:]
            for n in dirnames + filenames:
                rel = f"{prefix}/{n}" if prefix else n
                if rel not in seen:
                    problems.append(f"{rel}: exists but belongs to no namespace")
        assert not problems, ("recovered state differs from the manifests:\n"
                              + "\n".join(problems[:40]))
        self.pinned[rnd] = current
        sv = os.statvfs(self.m.mnt)
        used = 100 * (sv.f_blocks - sv.f_bfree) // sv.f_blocks
        self.stats["most space used, %"] = max(self.stats["most space used, %"], used)
        self.stats["most inodes used"] = max(self.stats["most inodes used"],
                                             sv.f_files - sv.f_ffree)

    def finish_reap(self, reap: int) -> None:
        if reap < 0:
            return
        for n in self.grow_names():
            if n.startswith(f"r{reap}w"):
                os.unlink(self.m.path(cw.GROW, n))
        if os.path.lexists(self.m / f"r{reap}"):
            shutil.rmtree(self.m / f"r{reap}")
        del self.pinned[reap]

    @contextlib.contextmanager
    def timed(self, what: str):
        t = time.monotonic()
        try:
            yield
        finally:
            self.seconds[what] += time.monotonic() - t

    def run(self, rounds: int) -> None:
        self.m.start(self.args_for(0))
        os.mkdir(self.m / cw.GROW)
        if self.prefill:
            with self.timed("prefill"):
                self.fill_inode_table()
        for rnd in range(rounds):
            ctx = (f"round {rnd} of {rounds}, seed {self.seed} "
                   f"(PMEMFUSE_KILL_SEED={self.seed} reruns it)")
            try:
                reap = self.reap_candidate()
                with self.timed("workload"):
                    t_kill, stalled, ended_early = self.workload_and_kill(rnd, reap)
                mans = self.manifests(rnd, t_kill)
                assert not ended_early, "the workload ended before the kill"
                assert not stalled, (f"no worker progressed for {STALL_LIMIT} s before the kill "
                                     f"(daemon hung?)")
                with self.timed("fsck"):
                    self.fsck_clean("-n")
                if rnd % 5 == 1:
                    with self.timed("mount"):
                        self.kill_during_recovery(self.args_for(rnd))
                if rnd % 7 == 3:
                    with self.timed("fsck"):
                        self.fsck_clean("-p")  # the replay done by fsck for real
                with self.timed("mount"):
                    self.m.start(self.args_for(rnd))
                full = rnd % FULL_CHECK_EVERY == FULL_CHECK_EVERY - 1 or rnd == rounds - 1
                with self.timed("verify"):
                    self.verify(rnd, mans, reap, read_pinned=full)
                    self.finish_reap(reap)
                if full:
                    with self.timed("full check"):
                        if rnd == rounds - 1:
                            verify_tree(self.m.mnt)  # link counts across namespaces too
                        exercise(self.m.mnt)
                        self.m.unmount()
                        self.fsck_clean("-f", "-n")
                    if rnd < rounds - 1:
                        with self.timed("mount"):
                            self.m.start(self.args_for(rnd + 1))
                elif rnd % 3 == 1:
                    with self.timed("mount"):
                        self.kill_during_unmount()
                        self.m.start(self.args_for(rnd + 1))
                elif rnd % 3 == 0:
                    with self.timed("mount"):
                        self.m.unmount()
                        self.m.start(self.args_for(rnd + 1))
                # else: the next kill hits this recovered daemon, never cleanly unmounted
            except AssertionError as e:
                raise AssertionError(f"{ctx}:\n{e}\nstats so far: {dict(self.stats)}") from e
            except BaseException:
                print(f"failed in {ctx}", flush=True)
                raise
        print(f"kill rounds: {rounds}, seed {self.seed}: " +
              ", ".join(f"{k} {v}" for k, v in sorted(self.stats.items())) + "; seconds: " +
              ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items()), flush=True)


def kill_seed() -> int:
    env = os.environ.get("PMEMFUSE_KILL_SEED")
    return int(env) if env else random.SystemRandom().randrange(1 << 31)


@pytest.mark.slow
@pytest.mark.image_size("256M")
@pytest.mark.timeout_s(max(240, 4 * KILL_ROUNDS))
def test_kill9_rounds_mixed_workload(image, tmp_path):
    cycle = [[], ["-s"], [], ["-o", "clone_fd"]]
    m = Mount(image)  # started by KillRounds, with per-round arguments
    try:
        KillRounds(image, m, tmp_path, kill_seed(), lambda r: cycle[r % 4],
                   prefill=True).run(KILL_ROUNDS)
    finally:
        m.close()


@pytest.mark.slow
@pytest.mark.timeout_s(max(240, 2 * KILL_ROUNDS))
def test_kill9_rounds_emulated_devdax(image_factory, tmp_path):
    img = image_factory(None)
    with open(img, "wb") as f:
        f.truncate(256 * MiB)
    mkfs(img, None, "--emulate-devdax")
    rounds = max(5, KILL_ROUNDS // 5)
    args = lambda r: ["-o", "emulate_devdax"] + (["-s"] if r % 2 else [])  # noqa: E731
    m = Mount(img)
    try:
        KillRounds(img, m, tmp_path, kill_seed(), args, ["--emulate-devdax"]).run(rounds)
    finally:
        m.close()


def truncated_state(got: bytes, orig: bytes, sizes) -> bool:
    """The old file, one truncated to a size of the loop, or (the rewrite after a kill not
    yet fsync'd when the next kill came) one cut to a smaller size and grown again: zeros
    past the cut."""
    if len(got) not in (*sizes, len(orig)):
        return False
    if got == orig[:len(got)]:
        return True
    # Only a truncate grows a file without data, and only to a size of the loop: at the
    # full size every byte must be there (the bug this test guards against left zeros).
    return len(got) in sizes and any(
        p < len(got) and got[:p] == orig[:p] and not any(got[p:]) for p in sizes)


@pytest.mark.slow
def test_kill9_during_shrinking_truncate_keeps_old_or_new_size(image, mount_factory):
    # A shrinking truncate to an unaligned size is one transaction, so a kill leaves either
    # the old file or the truncated one (with the DRAM cache, also one grown again by a
    # later truncate, when the rewrite in between was not yet fsync'd). It once zeroed the new last block's tail in place
    # before committing: killed in between, the file kept its old size with zeros where
    # fsync'd data had been. The window is microseconds; many short kills find it.
    kills, seed = TRUNCATE_KILLS, kill_seed()
    rng = random.Random(seed)
    sizes = (100, 4196, 5000, 8292, 9000)
    orig = random.Random(1).randbytes(3 * 4096).replace(b"\0", b"\1")
    m = mount_factory(image)
    write_file(m / "f", orig)
    damaged = []
    for k in range(kills):
        stop = threading.Event()

        def loop():
            try:
                fd = os.open(m / "f", os.O_RDWR)
                while not stop.is_set():
                    os.ftruncate(fd, rng.choice(sizes))
                    os.pwrite(fd, orig, 0)
                    os.fsync(fd)
            except OSError:
                pass  # the daemon is gone

        t = threading.Thread(target=loop)
        t.start()
        time.sleep(rng.uniform(0.002, 0.02))
        m.kill9()
        stop.set()
        t.join(timeout=30)
        m.start()
        got = read_file(m / "f")
        if not truncated_state(got, orig, sizes):
            i = next((i for i in range(min(len(got), len(orig))) if got[i] != orig[i]), len(got))
            damaged.append(f"kill {k}: size {len(got)}, first wrong byte {i}")
            write_file(m / "f", orig)
    assert not damaged, (f"{len(damaged)} of {kills} kills during truncate + rewrite left a "
                         f"state that is neither the old file nor a truncated one (seed "
                         f"{seed}):\n" + "\n".join(damaged[:10]))
    m.unmount()
    rc, out = fsck(image, "-f", "-n")
    assert rc == 0, f"fsck -f -n exited {rc}:\n{out}"


# --------------------------------------------------------------------------------------
# Targeted replay cases
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("metadata", ["xattr-blocks", "directory-blocks"])
def test_replay_does_not_clobber_reused_blocks_with_stale_metadata(mounted, image, metadata):
    # Metadata blocks written through the journal are freed, then reused as file data
    # (fsynced). After a crash the replay must not write the old metadata over the data
    # (the classic missing-revoke bug).
    if metadata == "xattr-blocks":
        for i in range(20):
            p = mounted / f"x{i}"
            write_file(p, b"")
            os.setxattr(p, "user.big", os.urandom(3000))
            os.removexattr(p, "user.big")
    else:
        for i in range(4):
            d = mounted / f"dir{i}"
            os.mkdir(d)
            for j in range(300):
                write_file(os.path.join(d, f"entry-with-a-longish-name-{j:04d}"), b"")
            for j in range(300):
                os.unlink(os.path.join(d, f"entry-with-a-longish-name-{j:04d}"))
            os.rmdir(d)
    data = {}
    for i in range(40):
        p = mounted / f"data{i}"
        data[p] = os.urandom(8192)
        fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            os.write(fd, data[p])
            os.fsync(fd)
        finally:
            os.close(fd)
    target = "s" * 3000
    os.symlink(target, mounted / "long-symlink")
    mounted.kill9()
    mounted.start()
    bad = {os.path.basename(p): read_file(p)[:8] for p, d in data.items() if read_file(p) != d}
    assert not bad, f"fsynced file data overwritten after crash + replay: {bad}"
    assert os.readlink(mounted / "long-symlink") == target
