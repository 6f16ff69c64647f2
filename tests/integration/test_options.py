"""Daemon options smoke tests: each documented option mounts, serves I/O and unmounts
cleanly."""

import os

import pytest

from pmemfuse_helpers import fsck_check, read_file, write_file

OPTION_SETS = [
    ["-s"],
    ["-d"],
    ["-o", "log_level=debug"],
    ["-o", "log_level=error"],
    ["-o", "log_level=warn,allow_other"],
    ["-o", "rw,noatime,nodev,nosuid"],
]


@pytest.mark.parametrize("args", OPTION_SETS, ids=[" ".join(a) for a in OPTION_SETS])
def test_mount_with_option_serves_io_and_unmounts_cleanly(image, mount_factory, args):
    m = mount_factory(image, args=args)
    os.mkdir(m / "d")
    data = os.urandom(300_000)
    write_file(m.path("d", "f"), data)
    os.setxattr(m.path("d", "f"), "user.k", b"v")
    assert read_file(m.path("d", "f")) == data
    assert os.listdir(m / "d") == ["f"]
    m.unmount()
    rc, out = fsck_check(image)
    assert rc == 0, out
    m.start()
    assert read_file(m.path("d", "f")) == data


def test_log_level_error_is_quiet_on_success(image, mount_factory):
    m = mount_factory(image, args=["-o", "log_level=error"])
    write_file(m / "f", b"x")
    m.unmount()
    assert m.logs[-1].strip() == "", f"unexpected output at log_level=error:\n{m.logs[-1]}"


def test_debug_log_level_logs_something(image, mount_factory):
    m = mount_factory(image, args=["-o", "log_level=debug"])
    write_file(m / "f", b"x")
    m.unmount()
    assert m.logs[-1].strip(), "no output at log_level=debug"


def test_help_and_version_exit_0_without_mounting():
    from pmemfuse_helpers import DAEMON, require, run
    cp = run([require(DAEMON), "--help"], timeout=20)
    assert cp.returncode == 0, cp.stderr
    assert "MOUNTPOINT" in cp.stdout and "-o" in cp.stdout, cp.stdout
    cp = run([require(DAEMON), "-V"], timeout=20)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip(), "no version output"


def _mount_flags(mnt) -> set[str]:
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[1] == str(mnt):
                return set(fields[3].split(","))
    raise AssertionError(f"{mnt} is not mounted")


@pytest.mark.parametrize("args,present,absent", [
    ([], {"nosuid", "nodev"}, set()),
    (["-o", "suid,dev"], set(), {"nosuid", "nodev"}),
    (["-o", "noexec"], {"noexec", "nosuid"}, set()),
], ids=["default", "suid,dev", "noexec"])
def test_mount_flags_reach_the_kernel(image, mount_factory, args, present, absent):
    m = mount_factory(image, args=args)
    flags = _mount_flags(m.mnt)
    assert present <= flags, f"{flags} lacks {present - flags}"
    assert not (absent & flags), f"{flags} has {absent & flags}"
