"""Concurrent namespace and data operations from several processes on one tree (the daemon
is multi-threaded): no unexpected errors, a consistent tree, a clean unmount and fsck."""

import os
import subprocess
import sys

import pytest

from pmemfuse_helpers import diff_snapshots, fsck_check, snapshot
from test_crash import WORKLOAD, errors_before, verify_tree

WORKERS = 4
SECONDS = 4.0


@pytest.mark.parametrize("args", [[], ["-s"]], ids=["multi-thread", "single-thread"])
def test_concurrent_random_workloads_leave_consistent_tree(image, mount_factory, args):
    m = mount_factory(image, args=args)
    os.makedirs(m / "w")
    procs = [subprocess.Popen([sys.executable, WORKLOAD, m.mnt, str(500 + i), str(SECONDS)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(WORKERS)]
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=SECONDS + 60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate(timeout=30)
            out += "\n<worker did not finish: hung filesystem call?>"
        outs.append(out)
        assert p.returncode == 0, f"worker failed:\n{out[-3000:]}"
    for out in outs:
        assert "OPS" in out, out[-2000:]
        bad = errors_before(out, 1 << 62)
        assert not bad, "unexpected errors:\n" + "\n".join(bad[:20])
    verify_tree(m.mnt)
    before = snapshot(m.mnt)
    m.unmount()
    rc, fout = fsck_check(image)
    assert rc == 0, f"fsck after concurrent workload exited {rc}:\n{fout}"
    m.start(args)
    verify_tree(m.mnt)
    diffs = diff_snapshots(before, snapshot(m.mnt))
    assert not diffs, "tree changed across remount:\n" + "\n".join(diffs)
