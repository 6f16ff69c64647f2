"""pmemfuse used like a native Linux filesystem: an fstab line mounted by mount(8) through
mount.fuse3, `umount` leaving a clean image, `mkfs -t` / `fsck -t pmemfuse` with fsck(8)'s
exit codes, the man pages (render cleanly, list every option of each --help) and the
example systemd units.

mount(8) drops PATH from the environment of its helper, so mount.fuse3's `/bin/sh -c
'pmemfuse ...'` searches the shell's default path, which starts with /usr/local/sbin. The
fstab tests therefore run in a private mount namespace (a child pytest under `unshare -m`)
that bind-mounts a directory holding a `pmemfuse` link to the build over /usr/local/sbin.
The daemon detaches from mount(8); the tests become a child subreaper so that it is
re-parented to them and its exit status after `umount` can be read."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from image_format import crc32c
from pmemfuse_helpers import (BUILD, DAEMON, FSCK, MKFS, find_daemon_pids, fsck_check,
                              is_fuse_mounted, lazy_unmount, make_mountpoint, read_file,
                              require, run, write_file)

REPO = Path(__file__).resolve().parents[2]
MAN_DIR = REPO / "docs" / "man"
SYSTEMD_DIR = REPO / "docs" / "systemd"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
MOUNT_FUSE3 = shutil.which("mount.fuse3", path=SYSTEM_PATH)
CHILD_ENV = "PMEMFUSE_OPERATOR_PRIVATE_NS"
PR_SET_CHILD_SUBREAPER = 36

# What mount(8) and mount.fuse3 hand the daemon for an fstab line (checked with strace on
# util-linux 2.38 and fuse3 3.14): mount(8) adds rw/ro and passes VFS and userspace
# options such as nofail, _netdev and user; mount.fuse3 drops user, nofail, _netdev, auto,
# noauto and adds dev,suid (owner/group/users make mount(8) add nosuid,nodev,noexec).
OPTIONS_MOUNT_PASSES = ["rw", "dev", "suid", "nodev", "nosuid", "exec", "noexec", "sync",
                        "async", "dirsync", "noatime", "relatime", "atime", "silent",
                        "lazytime", "defaults", "auto", "noauto", "nofail", "_netdev",
                        "user", "nouser", "users", "x-systemd.automount"]


def tools_env(*dirs) -> dict:
    env = dict(os.environ)
    env["PATH"] = ":".join([*map(str, dirs), SYSTEM_PATH])
    return env


# --------------------------------------------------------------------------------------
# Private mount namespace and subreaper
# --------------------------------------------------------------------------------------

def in_private_namespace(request) -> bool:
    """True in the child run (go on with the test); otherwise runs this test again in a
    child pytest inside a new private mount namespace, asserts it passed, and returns
    False (the caller returns)."""
    if os.environ.get(CHILD_ENV) == "1":
        return True
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is needed for a private mount namespace")
    env = dict(os.environ, **{CHILD_ENV: "1", "PMEMFUSE_BUILD": str(BUILD)})
    cp = run(["unshare", "-m", "--propagation", "private", sys.executable, "-m", "pytest",
              f"{__file__}::{request.node.name}", "-q", "-p", "no:cacheprovider"],
             env=env, cwd=str(Path(__file__).parent), timeout=120)
    assert cp.returncode == 0, f"child run failed:\n{cp.stdout}\n{cp.stderr}"
    return False


@contextlib.contextmanager
def subreaper():
    """Daemons that detach from our grandchildren become our children while inside."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def wait_exit(pid: int, timeout: float = 30) -> int:
    """Exit code of our (re-parented) child pid; fails the test if it does not exit."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail(f"pmemfuse {pid} did not exit within {timeout}s after umount")
        time.sleep(0.01)


@pytest.fixture
def system_pmemfuse(tmp_path):
    """Bind-mounts a directory with `pmemfuse` -> the build's daemon over /usr/local/sbin
    (the first directory of /bin/sh's default PATH); only inside the private namespace."""
    assert os.environ.get(CHILD_ENV) == "1"
    d = tmp_path / "sbin"
    d.mkdir()
    (d / "pmemfuse").symlink_to(require(DAEMON))
    run(["mount", "--bind", d, "/usr/local/sbin"], check=True)
    yield
    run(["umount", "-l", "/usr/local/sbin"])


@pytest.fixture
def fresh(image_factory):
    """(image, mountpoint); mounts made by mount(8) are cleaned up whatever happens."""
    image = image_factory("128M")
    mnt = make_mountpoint()
    yield image, mnt
    for pid in find_daemon_pids(image):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    if is_fuse_mounted(mnt):
        lazy_unmount(mnt)
    with contextlib.suppress(OSError):
        os.rmdir(mnt)


def mount_then_pid(cmd, image, mnt, env=None) -> int:
    cp = run(cmd, env=env, timeout=30)
    assert cp.returncode == 0, f"{' '.join(map(str, cmd))} exited {cp.returncode}:\n{cp.stderr}"
    assert is_fuse_mounted(mnt), f"{mnt} is not mounted after {cmd}"
    pids = find_daemon_pids(image)
    assert len(pids) == 1, f"expected one pmemfuse daemon for {image}, found {pids}"
    return pids[0]


def umount_and_check(image, mnt, pid):
    """`umount MNT`; the daemon must then exit 0 and leave a clean image."""
    cp = run(["umount", mnt], timeout=30)
    assert cp.returncode == 0, cp.stderr
    assert not is_fuse_mounted(mnt)
    rc = wait_exit(pid)
    assert rc == 0, f"pmemfuse exited {rc} after umount"
    rc, out = fsck_check(image)
    assert rc == 0, f"fsck.pmemfuse -f -n after umount exited {rc}:\n{out}"


def mount_info(mnt) -> tuple[str, str, str]:
    """(fstype, source, super options) of MNT from /proc/self/mountinfo."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if pre.split()[4] == os.path.realpath(mnt):
                fstype, source, opts = post.split()[:3]
                return fstype, source, pre.split()[5] + "," + opts
    raise AssertionError(f"{mnt} not in mountinfo")


# --------------------------------------------------------------------------------------
# fstab, mount(8), mount.fuse3, umount
# --------------------------------------------------------------------------------------

def test_fstab_line_mounts_through_mount_fuse3_and_umount_leaves_it_clean(
        request, fresh, tmp_path):
    if not in_private_namespace(request):
        return
    request.getfixturevalue("system_pmemfuse")
    image, mnt = fresh
    fstab = tmp_path / "fstab"
    fstab.write_text(f"# test fstab\n{image} {mnt} fuse.pmemfuse "
                     "defaults,dax=inode,cache_size=64M,nofail,_netdev,x-systemd.after=x.mount 0 0\n")
    data = os.urandom(3 << 20)
    with subreaper():
        pid = mount_then_pid(["mount", "-T", fstab, mnt], image, mnt)
        fstype, source, opts = mount_info(mnt)
        assert (fstype, source) == ("fuse.pmemfuse", image)
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[:-1]
        assert [a.decode() for a in cmdline] == [
            "pmemfuse", image, mnt, "-o", "rw,dax=inode,cache_size=64M,dev,suid"], cmdline
        write_file(os.path.join(mnt, "buffered"), data)  # stays in the DRAM cache
        dax = os.path.join(mnt, "dax")
        write_file(dax, b"")
        os.setxattr(dax, "user.pmemfuse.dax", b"1")
        write_file(dax, data[:65536])
        assert os.getxattr(dax, "user.pmemfuse.dax_effective") == b"1"
        umount_and_check(image, mnt, pid)

        pid = mount_then_pid(["mount", "-T", fstab, mnt], image, mnt)
        assert read_file(os.path.join(mnt, "buffered")) == data
        assert read_file(dax) == data[:65536]
        assert os.getxattr(dax, "user.pmemfuse.dax") == b"1"
        umount_and_check(image, mnt, pid)


def test_mount_fuse3_direct_forms_and_the_mount_fuse_pmemfuse_link(fresh, tmp_path):
    """`mount.fuse3 pmemfuse#DEVICE MNT -o ...` and the installed `mount.fuse.pmemfuse`
    link, run by hand (PATH is kept then, so no namespace trick is needed)."""
    if MOUNT_FUSE3 is None:
        pytest.skip("mount.fuse3 (Debian package fuse3) is not installed")
    image, mnt = fresh
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "pmemfuse").symlink_to(require(DAEMON))
    (bindir / "mount.fuse.pmemfuse").symlink_to(MOUNT_FUSE3)
    env = tools_env(bindir)
    with subreaper():
        pid = mount_then_pid([MOUNT_FUSE3, f"pmemfuse#{image}", mnt, "-o",
                              "dax=inode,nofail,_netdev,user,noauto"], image, mnt, env)
        write_file(os.path.join(mnt, "a"), b"first")
        umount_and_check(image, mnt, pid)

        pid = mount_then_pid([bindir / "mount.fuse.pmemfuse", image, mnt, "-o",
                              "rw,cache_size=0,nosuid,nodev"], image, mnt, env)
        assert "nosuid" in mount_info(mnt)[2].split(",")
        assert read_file(os.path.join(mnt, "a")) == b"first"
        umount_and_check(image, mnt, pid)


def test_daemon_accepts_every_option_mount_and_mount_fuse3_pass(image, mount_factory):
    m = mount_factory(image, args=["-o", ",".join(OPTIONS_MOUNT_PASSES)])
    write_file(m / "f", b"x")
    m.unmount()


# --------------------------------------------------------------------------------------
# mkfs(8), fsck(8), install layout
# --------------------------------------------------------------------------------------

def test_mkfs_and_fsck_t_pmemfuse_find_the_tools_on_path(image_factory):
    """mkfs(8) execvp()s mkfs.TYPE on PATH; fsck(8) looks for fsck.TYPE on PATH."""
    img = image_factory(None)
    env = tools_env(Path(require(MKFS)).parent)
    cp = run(["mkfs", "-t", "pmemfuse", "--size", "32M", "-L", "ops", img], env=env)
    assert cp.returncode == 0, cp.stderr
    assert "pmemfuse filesystem" in cp.stdout
    cp = run(["mkfs", "-t", "pmemfuse", img], env=env)
    assert cp.returncode == 1 and "already holds" in cp.stderr, cp  # mkfs.pmemfuse's code
    cp = run(["fsck", "-t", "pmemfuse", "-f", "-n", img], env=env)
    assert cp.returncode == 0 and "clean" in cp.stdout, cp
    cp = run(["fsck", "-N", "-t", "pmemfuse", img], env=env)
    assert str(Path(require(FSCK))) in cp.stdout, cp.stdout  # the checker fsck(8) would run


def corrupt_bitmap(image):
    """Marks one free block in use in the free-space bitmap (crc resealed): fsck finds a
    bit set for an unclaimed block, a problem -n does not repair."""
    block, header = 4096, 64
    with open(image, "r+b") as f:
        sb = f.read(256)
        block_count, _, _, bitmap_start = struct.unpack_from("<4Q", sb, 32)
        victim = block_count // 2  # far from the metadata of a fresh image
        bits = 8 * (block - header)
        bno, bit = bitmap_start + victim // bits, victim % bits
        f.seek(bno * block)
        blk = bytearray(f.read(block))
        blk[header + bit // 8] |= 1 << bit % 8
        blk[4:8] = b"\0\0\0\0"
        struct.pack_into("<I", blk, 4, crc32c(bytes(blk)))
        f.seek(bno * block)
        f.write(blk)


@pytest.mark.parametrize("front_end", ["fsck.pmemfuse", "fsck -t pmemfuse"])
def test_fsck_exit_codes_as_fsck8(front_end, image_factory, tmp_path):
    env = tools_env(Path(require(FSCK)).parent)
    cmd = front_end.split()

    def rc(*args):
        return run([*cmd, *map(str, args)], env=env).returncode

    clean, broken = image_factory("32M"), image_factory("32M")
    corrupt_bitmap(broken)
    assert rc("-f", "-n", clean) == 0
    assert rc("-n", broken) == 4
    assert rc("-n", "-y", clean) == 16
    assert rc("-n", tmp_path / "missing.img") == 8


def test_install_plan_puts_tools_in_sbindir_and_man_pages_in_man8():
    cp = run(["meson", "introspect", "--install-plan", BUILD], timeout=60)
    if cp.returncode != 0:
        pytest.skip(f"meson introspect failed: {cp.stderr.strip()}")
    plan = cp.stdout
    for tool in ("pmemfuse", "mkfs.pmemfuse", "fsck.pmemfuse"):
        assert f'"{{sbindir}}/{tool}"' in plan, tool
    for page in ("pmemfuse.8", "mkfs.pmemfuse.8", "fsck.pmemfuse.8"):
        assert f'"{{mandir}}/man8/{page}"' in plan, page


# --------------------------------------------------------------------------------------
# Man pages
# --------------------------------------------------------------------------------------

PAGES = {"pmemfuse.8": DAEMON, "mkfs.pmemfuse.8": MKFS, "fsck.pmemfuse.8": FSCK}


@pytest.mark.parametrize("page", sorted(PAGES))
def test_man_page_renders_without_warnings(page):
    path = MAN_DIR / page
    cp = run(["groff", "-man", "-ww", "-z", path], timeout=30)
    assert cp.returncode == 0 and cp.stderr == "", cp.stderr
    if shutil.which("man"):
        cp = run(["man", "--warnings", "-l", path], timeout=30,
                 env=dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat"))
        assert cp.returncode == 0 and cp.stderr == "", cp.stderr
        assert "EXIT STATUS" in cp.stdout and "SEE ALSO" in cp.stdout


def plain(roff: str) -> str:
    """roff text with the escapes we use turned into plain characters."""
    roff = re.sub(r"\\f[BIRP]", "", roff)
    roff = roff.replace("\\-", "-").replace("\\(aq", "'").replace("\\ ", " ")
    return re.sub(r"^\.(B|I|BI|IB|BR|RB|IR|RI)\s+", "", roff, flags=re.M)


def man_items(page) -> list[tuple[str, str]]:
    """(tag, body) of every .TP item, in plain text."""
    lines = (MAN_DIR / page).read_text().splitlines()
    items = []
    for i, line in enumerate(lines):
        if line.startswith(".TP") and i + 1 < len(lines):
            body = []
            for nxt in lines[i + 2:]:
                if nxt.startswith((".TP", ".SH", ".SS", ".PP")):
                    break
                body.append(nxt)
            items.append((plain(lines[i + 1]), " ".join(plain(b) for b in body)))
    return items


def help_options(binary) -> dict[str, str]:
    """{option name: default or ''} from `BINARY --help` (pmemfuse's table and CLI11's)."""
    out = run([require(binary), "--help"], timeout=30, check=True).stdout
    opts = {}
    for line in out.splitlines():
        m = re.match(r"^  (\S.*?)(\s{2,}|\s(?=[a-z]))(.*)$", line)
        if not m or line.startswith("  DEVICE"):
            continue
        left, text = m.group(1), m.group(3)
        dflt = re.search(r"\(default: (.*)\)$", text)
        for word in re.split(r",\s*(?=-)", left):  # "-f, --foreground", "-p,-a"
            name = word.split()[0]  # "-s,--size TEXT", "-o OPT[,OPT...]"
            if not name.startswith("-"):
                name = re.split(r"[=\[]", name)[0]  # "cache_size=SIZE", "dax[=MODE]"
            opts[name] = dflt.group(1) if dflt else ""
    return opts


@pytest.mark.parametrize("page", sorted(PAGES))
def test_man_page_documents_every_option_of_help(page):
    options = help_options(PAGES[page])
    assert len(options) >= 8, options
    items = man_items(page)
    for name, dflt in options.items():
        matching = [(tag, body) for tag, body in items
                    if name in re.findall(r"-{0,2}[\w.-]+", tag.replace(",", " "))]
        assert matching, f"{page}: option {name} of --help has no .TP item"
        if dflt:
            assert any(f"Default: {dflt}." in body for _, body in matching), (
                f"{page}: option {name}: --help says default {dflt!r}, the page does not")


# --------------------------------------------------------------------------------------
# systemd units
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("unit,instance", [("mnt-pmem.mount", "mnt-pmem.mount"),
                                           ("pmemfuse@.service", "pmemfuse@mnt-pmem.service")])
def test_systemd_unit_example_verifies(unit, instance, tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    text = (SYSTEMD_DIR / unit).read_text()
    # verify checks that ExecStart= is executable: point it at the build.
    (tmp_path / unit).write_text(text.replace("/usr/local/sbin/pmemfuse", require(DAEMON)))
    cp = run(["systemd-analyze", "verify", "--man=no", tmp_path / instance], timeout=60,
             cwd=tmp_path)
    out = cp.stdout + cp.stderr
    ours = [l for l in out.splitlines() if unit.split("@")[0] in l or str(tmp_path) in l]
    assert cp.returncode == 0 and not ours, out
