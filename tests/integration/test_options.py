"""Daemon options smoke tests: each documented option mounts, serves I/O and unmounts
cleanly."""

import errno
import os
import signal
import subprocess
import time

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
    assert all(str(image) in line for line in m.logs[-1].splitlines() if line.strip()), (
        f"a log line does not name the device {image}:\n{m.logs[-1]}")


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


def _atime(p) -> int:
    return os.stat(p).st_atime_ns


def _read(p):
    with open(p, "rb") as f:
        f.read()


# Whether a second read of a file, and a second listing of a directory, move atime.
@pytest.mark.parametrize("opt,file_moves,dir_moves", [
    ("strictatime", True, True),
    ("relatime", False, False),
    ("noatime", False, False),
    ("strictatime,nodiratime", True, False),
])
def test_atime_mount_options(image, mount_factory, opt, file_moves, dir_moves):
    m = mount_factory(image, args=["-o", opt])
    os.mkdir(m / "d")
    write_file(m.path("d", "f"), b"data")
    for _ in range(2):  # the first reads may move atime under relatime (atime <= ctime)
        before_f, before_d = _atime(m.path("d", "f")), _atime(m / "d")
        time.sleep(0.01)
        _read(m.path("d", "f"))
        os.listdir(m / "d")
    assert (_atime(m.path("d", "f")) != before_f) == file_moves, f"file atime under {opt}"
    assert (_atime(m / "d") != before_d) == dir_moves, f"directory atime under {opt}"


def test_generic_mount_options_are_accepted(image, mount_factory):
    opts = ("defaults,atime,diratime,norelatime,nostrictatime,lazytime,nolazytime,silent,"
            "loud,mand,nomand,symfollow,owner,group,nofail,_netdev,x-systemd.automount")
    m = mount_factory(image, args=["-o", opts])
    write_file(m / "f", b"x")
    assert read_file(m / "f") == b"x"


def test_nosymfollow_refuses_to_follow_symlinks(image, mount_factory):
    m = mount_factory(image, args=["-o", "nosymfollow"])
    write_file(m / "target", b"x")
    os.symlink("target", m / "link")
    assert "nosymfollow" in _mount_flags(m.mnt)
    assert os.readlink(m / "link") == "target"
    with pytest.raises(OSError) as e:
        open(m / "link", "rb")
    assert e.value.errno == errno.ELOOP


def test_sigterm_after_unmount_does_not_cut_the_write_back_short(image, mount_factory):
    """systemd stops a mount unit by unmounting, then SIGTERMs what is left of it."""
    from pmemfuse_helpers import FUSERMOUNT
    m = mount_factory(image, args=["-o", "flush_interval=0,cache_size=512M"])
    data = os.urandom(1 << 20) * 200
    write_file(m / "f", data)
    subprocess.run([FUSERMOUNT, "-u", m.mnt], check=True, timeout=20)
    rc = m.signal(signal.SIGTERM)
    assert rc == 0, f"daemon exited {rc}; log:\n{m.logs[-1]}"
    rc, out = fsck_check(image)
    assert rc == 0, out
    m.start()
    assert read_file(m / "f") == data
