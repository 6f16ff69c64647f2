"""Crash recovery: SIGKILL the daemon in the middle of a metadata-heavy workload; the next
mount replays the journal and the result must be a consistent, fsck-clean filesystem."""

import collections
import os
import stat
import subprocess
import sys
import time

import pytest

from pmemfuse_helpers import free_blocks, fsck_check, read_file, wait_free_blocks, write_file

WORKLOAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crash_workload.py")
ROUNDS = 8


def start_workload(root, seed, max_s=30.0):
    return subprocess.Popen([sys.executable, WORKLOAD, root, str(seed), str(max_s)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def stop_workload(proc) -> str:
    if proc.poll() is None:
        proc.kill()
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        out = "<workload did not die>"
    return out or ""


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
    """The recovered filesystem must still allocate and free correctly."""
    base = free_blocks(root)
    d = os.path.join(root, "post-recovery")
    os.mkdir(d)
    for i in range(50):
        write_file(os.path.join(d, f"f{i}"), os.urandom(i * 1000))
    for i in range(50):
        assert read_file(os.path.join(d, f"f{i}")) is not None
        os.unlink(os.path.join(d, f"f{i}"))
    os.rmdir(d)
    now = wait_free_blocks(root, base)
    assert abs(now - base) <= 8, f"free blocks {base} -> {now} after create+delete"


def crash_round(mounted, image, seed, run_s):
    wl = start_workload(mounted.mnt, seed)
    try:
        time.sleep(run_s)
        assert wl.poll() is None, f"workload ended early:\n{stop_workload(wl)}"
        t_kill = time.monotonic_ns()
        mounted.kill9()
    finally:
        out = stop_workload(wl)
    bad = errors_before(out, t_kill)
    assert not bad, "unexpected errors before the crash:\n" + "\n".join(bad[:20])
    return out


@pytest.mark.slow
@pytest.mark.timeout_s(300)
def test_kill9_during_metadata_workload_recovers_consistently(mounted, image):
    for rnd in range(ROUNDS):
        crash_round(mounted, image, seed=1000 + rnd, run_s=1.0 + 0.25 * rnd)
        # fsck -n replays the journal in memory only: the crashed image checks clean
        rc, fout = fsck_check(image)
        assert rc == 0, f"round {rnd}: fsck -n of the crashed image exited {rc}:\n{fout}"
        mounted.start()  # journal replay
        counts = verify_tree(mounted.mnt)
        assert counts["dir"] >= 2, counts
        exercise(mounted.mnt)
        mounted.unmount()
        rc, fout = fsck_check(image)
        assert rc == 0, f"round {rnd}: fsck after crash + replay + unmount exited {rc}:\n{fout}"
        mounted.start()
    verify_tree(mounted.mnt)


@pytest.mark.slow
@pytest.mark.timeout_s(300)
def test_kill9_back_to_back_without_clean_unmount(mounted, image):
    # Crash, replay, crash again mid-workload without ever unmounting cleanly.
    for rnd in range(3):
        crash_round(mounted, image, seed=2000 + rnd, run_s=1.0)
        mounted.start()
        verify_tree(mounted.mnt)
    mounted.unmount()
    rc, fout = fsck_check(image)
    assert rc == 0, f"fsck exited {rc}:\n{fout}"


@pytest.mark.timeout_s(300)
def test_fsynced_files_survive_kill9_during_workload(mounted, image):
    durable = {}
    os.mkdir(mounted / "durable")
    os.mkdir(mounted.path("durable", "sub"))
    wl = start_workload(mounted.mnt, seed=77)
    try:
        t_end = time.monotonic() + 1.5
        i = 0
        while time.monotonic() < t_end:
            rel = os.path.join("durable", "sub" if i % 2 else "", f"k{i}")
            data = os.urandom([0, 1, 4096, 5000, 70000][i % 5])
            p = mounted / rel
            fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o640)
            try:
                os.write(fd, data)
                os.setxattr(p, "user.tag", f"tag{i}".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            dfd = os.open(os.path.dirname(p), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            durable[rel] = data
            i += 1
        # overwrite some of them in place, fsynced
        for rel in list(durable)[::3]:
            data = os.urandom(len(durable[rel]) + 10)
            fd = os.open(mounted / rel, os.O_WRONLY)
            try:
                os.pwrite(fd, data, 0)
                os.fsync(fd)
            finally:
                os.close(fd)
            durable[rel] = data
        assert wl.poll() is None, f"workload ended early:\n{stop_workload(wl)}"
        mounted.kill9()
    finally:
        stop_workload(wl)
    assert len(durable) > 10
    mounted.start()
    for rel, data in durable.items():
        p = mounted / rel
        assert os.path.exists(p), f"fsynced file {rel} lost"
        got = read_file(p)
        assert got == data, f"fsynced file {rel}: {len(got)} bytes, expected {len(data)}"
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    for rel in durable:
        i = int(os.path.basename(rel)[1:])
        assert os.getxattr(mounted / rel, "user.tag") == f"tag{i}".encode()
    verify_tree(mounted.mnt)
    mounted.unmount()
    rc, fout = fsck_check(image)
    assert rc == 0, f"fsck exited {rc}:\n{fout}"


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
