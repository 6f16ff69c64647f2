"""Progress of long operations (fs/progress.h, tools/progress.h): drawn on stderr when it
is a terminal, absent when it is not (pipes, logs, cron)."""

import os
import pty
import subprocess

import pytest

from pmemfuse_helpers import FSCK, MKFS, require, run


def on_terminal(cmd) -> str:
    """Runs cmd with stderr on a pseudo-terminal; returns what it drew there."""
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert p.wait(timeout=60) == 0
        return out.decode(errors="replace")
    finally:
        os.close(master)


@pytest.mark.parametrize("tool,args,phase", [
    (MKFS, ["--size", "64M", "-f"], "writing metadata"),
    (FSCK, ["-n"], "checking inodes"),
])
def test_progress_only_on_a_terminal(image, tool, args, phase):
    cmd = [require(tool), *args, image]
    drawn = on_terminal(cmd)
    assert phase in drawn and "100%" in drawn, drawn
    cp = run(cmd, check=True)
    assert phase not in cp.stderr and "\r" not in cp.stderr, cp.stderr
