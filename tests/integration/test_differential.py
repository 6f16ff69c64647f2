"""Randomized differential test: pmemfuse against tmpfs (engine in differential.py).

Each seed runs the same random sequence of operations (creates, writes, reads, truncates,
fallocate, renames incl. RENAME_NOREPLACE/RENAME_EXCHANGE, links, unlinks, mkdir/rmdir,
symlinks, xattrs, chmod/chown, utimensat, copy_file_range, SEEK_DATA/SEEK_HOLE, operations
on long-lived file descriptors incl. unlinked-but-open files) on a fresh pmemfuse mount and
on a private tmpfs, compares every outcome, compares the whole trees every 1000 operations,
remounts pmemfuse halfway, and at the end compares the trees, unmounts, runs fsck and
compares again after a remount.

Environment:
  PMEMFUSE_DIFF_SEED=n[,m...]  run only these seeds (default: seeds 1-5)
  PMEMFUSE_DIFF_OPS=n          operations per seed (default 5000)
  PMEMFUSE_DIFF_SKIP=a,b       leave out these operation kinds (e.g. fallocate,lseek)
  PMEMFUSE_DIFF_MINIMIZE=1     on a mismatch, shrink the operation list (ddmin, <= 2 min)
                               and print the shortest failing sequence found

On a mismatch the message names the seed, the failing operation and the last 30
operations, and the whole op list is saved as JSON under /tmp for differential.replay().
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time

import pytest

from differential import DiffEngine, Mismatch, describe, minimize, replay
from pmemfuse_helpers import TMP_PREFIX, TMP_ROOT, fsck_check

DEFAULT_SEEDS = [1, 2, 3, 4, 5]
SEEDS = ([int(s) for s in os.environ["PMEMFUSE_DIFF_SEED"].split(",") if s.strip()]
         if os.environ.get("PMEMFUSE_DIFF_SEED") else DEFAULT_SEEDS)
OPS = int(os.environ.get("PMEMFUSE_DIFF_OPS", "5000"))
SKIP = [s.strip() for s in os.environ.get("PMEMFUSE_DIFF_SKIP", "").split(",") if s.strip()]
MINIMIZE = os.environ.get("PMEMFUSE_DIFF_MINIMIZE", "") not in ("", "0")
TIMEOUT_S = max(180.0, 60.0 + OPS * 0.03) + (180.0 if MINIMIZE else 0.0)


def _is_mounted(path: str) -> bool:
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


@pytest.fixture
def tmpfs_dir():
    """A private tmpfs (512 MiB) on a fresh directory; unmounted and removed at teardown."""
    d = tempfile.mkdtemp(prefix=TMP_PREFIX + "tmpfs-", dir=TMP_ROOT)
    cp = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512M,mode=0755", "tmpfs", d],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                        timeout=30)
    if cp.returncode != 0:
        os.rmdir(d)
        pytest.fail(f"cannot mount a tmpfs on {d}: {cp.stdout}", pytrace=False)
    try:
        yield d
    finally:
        for args in (["umount", d], ["umount", "-l", d]):
            if not _is_mounted(d):
                break
            subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=30)
        try:
            os.rmdir(d)
        except OSError:
            pass


def _tmpfs_has_user_xattrs(root: str) -> bool:
    try:
        os.setxattr(root, "user.probe", b"1")
        os.removexattr(root, "user.probe")
        return True
    except OSError:
        return False


@pytest.mark.image_size("512M")
@pytest.mark.timeout_s(TIMEOUT_S)
@pytest.mark.parametrize("seed", SEEDS)
def test_differential_against_tmpfs(seed, image, mounted, tmpfs_dir):
    pm_root = mounted.path("w")
    tmp_root = os.path.join(tmpfs_dir, "w")
    os.mkdir(pm_root, 0o755)
    os.mkdir(tmp_root, 0o755)
    os.chmod(pm_root, 0o755)
    os.chmod(tmp_root, 0o755)
    xattrs = _tmpfs_has_user_xattrs(tmp_root)
    old_umask = os.umask(0o022)
    eng = DiffEngine(pm_root, tmp_root, seed, skip=SKIP, xattrs=xattrs)
    t0 = time.monotonic()
    failure = None
    try:
        eng.run(OPS, remount=mounted.remount)
        eng.close_fds()
        eng.compare_trees("the end")
        eng.phase = "final unmount"
        mounted.unmount()
        rc, out = fsck_check(image)
        assert rc == 0, f"seed {seed}: fsck.pmemfuse -f -n after the final unmount exited " \
                        f"{rc}:\n{out}"
        mounted.start()
        eng.phase = "after remount"
        eng.compare_trees("the end, after a remount")
    except Mismatch as m:
        eng.close_fds()
        dump = eng.dump()
        log = mounted.log() if mounted.proc is not None else (mounted.logs[-1] if mounted.logs
                                                                 else "")
        tail = "\n".join(log.splitlines()[-15:])
        msg = (f"{m}\n\ndaemon log (tail):\n{tail}\n\nrerun: PMEMFUSE_DIFF_SEED={seed} PMEMFUSE_DIFF_OPS={OPS}"
               f"{' PMEMFUSE_DIFF_SKIP=' + ','.join(SKIP) if SKIP else ''} "
               f"/usr/bin/python3 -m pytest tests/integration/test_differential.py\n"
               f"op list: {dump}\n")
        if MINIMIZE and mounted.alive():
            def remount():
                mounted.remount()
                return pm_root
            lines = []
            try:
                small = minimize(eng.ops, pm_root, tmp_root,
                                 explicit_mtimes=eng.explicit_mtimes,
                                 remount=remount if "remount" in m.args[0].split("\n", 1)[0]
                                 or m.kind == "tree" else None, log=lines.append)
                again = replay(small, pm_root, tmp_root, explicit_mtimes=eng.explicit_mtimes)
                msg += ("\n".join(lines) + "\nminimal sequence:\n  "
                        + "\n  ".join(describe(o) for o in small)
                        + (f"\nits mismatch:\n{again}" if again else ""))
            except Exception as e:  # e.g. the daemon died: the mismatch above still stands
                msg += f"\n(minimization stopped: {e!r})"
        failure = msg
    finally:
        eng.close_fds()
        os.umask(old_umask)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    print(f"\nseed {seed}: {len(eng.ops)} ops in {time.monotonic() - t0:.1f}s "
          f"(ok/total per op: {eng.summary()})")
