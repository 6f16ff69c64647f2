"""Bad input to mkfs, the daemon and fsck: a non-zero exit and one clear line on stderr,
never a crash, never a hang."""

import os
import random

import pytest

from pmemfuse_helpers import (DAEMON, FSCK, MKFS, MiB, Mount, MountError, assert_no_crash, fsck,
                              is_fuse_mounted, kill_image_daemons_and_unmount, lazy_unmount,
                              make_mountpoint, mkfs, new_image_path, remove_quietly, require,
                              run)

MAX_LINES = 3  # "one clear line" (a usage hint line or two is tolerated)


def assert_clear_error(cp, what, mentions=()):
    assert_no_crash(cp, what)
    lines = [ln for ln in cp.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) <= MAX_LINES, f"{what}: expected a short message, got:\n{cp.stderr}"
    if mentions:
        low = cp.stderr.lower()
        assert any(m.lower() in low for m in mentions), (
            f"{what}: message should mention one of {mentions}: {cp.stderr!r}")


@pytest.fixture
def scratch():
    """Fresh image path + mountpoint; kills/unmounts anything that got started anyway."""
    img = new_image_path()
    mnt = make_mountpoint()
    yield img, mnt
    kill_image_daemons_and_unmount(img, mnt)
    remove_quietly(img)


def daemon(*args, foreground=True):
    cmd = [require(DAEMON)] + (["-f"] if foreground else []) + list(args)
    return run(cmd, timeout=20)


def fill(path, size, kind):
    with open(path, "wb") as f:
        if kind == "zeros":
            f.truncate(size)
        else:
            rnd = random.Random(size)
            for _ in range(size // MiB):
                f.write(rnd.randbytes(MiB))


FG = pytest.mark.parametrize("foreground", [True, False], ids=["fg", "daemonize"])


# --------------------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------------------

@FG
def test_mount_missing_image_fails_cleanly(scratch, foreground):
    img, mnt = scratch
    cp = daemon(img, mnt, foreground=foreground)
    assert_clear_error(cp, "mount of a missing image", mentions=(img, "no such file",
                                                                 "not found", "does not exist"))
    assert not is_fuse_mounted(mnt)


@FG
@pytest.mark.parametrize("kind", ["zeros", "random"])
def test_mount_1mib_file_fails_cleanly(scratch, foreground, kind):
    img, mnt = scratch
    fill(img, MiB, kind)
    cp = daemon(img, mnt, foreground=foreground)
    assert_clear_error(cp, f"mount of a 1 MiB {kind} file")
    assert not is_fuse_mounted(mnt)


@FG
@pytest.mark.parametrize("kind", ["zeros", "random"])
def test_mount_64mib_non_image_fails_cleanly(scratch, foreground, kind):
    img, mnt = scratch
    fill(img, 64 * MiB, kind)
    before = open(img, "rb").read(8192)
    cp = daemon(img, mnt, foreground=foreground)
    assert_clear_error(cp, f"mount of a 64 MiB {kind} file")
    assert not is_fuse_mounted(mnt)
    assert open(img, "rb").read(8192) == before, "a failed mount modified the file"


@FG
def test_mount_on_missing_mountpoint_fails_cleanly(scratch, foreground):
    img, mnt = scratch
    mkfs(img, "64M")
    missing = os.path.join(mnt, "does-not-exist")
    cp = daemon(img, missing, foreground=foreground)
    assert_clear_error(cp, "mount on a missing mountpoint")
    assert not is_fuse_mounted(missing)


def test_mount_on_regular_file_mountpoint_fails_cleanly(scratch):
    img, mnt = scratch
    mkfs(img, "64M")
    f = os.path.join(mnt, "file")
    open(f, "w").close()
    try:
        cp = daemon(img, f)
        assert_clear_error(cp, "mount on a regular file")
    finally:
        if is_fuse_mounted(f):
            lazy_unmount(f)
        os.unlink(f)


def test_mount_directory_as_image_fails_cleanly(scratch):
    img, mnt = scratch
    d = make_mountpoint()
    try:
        cp = daemon(d, mnt)
        assert_clear_error(cp, "mount of a directory as image")
        assert not is_fuse_mounted(mnt)
    finally:
        os.rmdir(d)


@FG
def test_mount_unknown_o_option_fails_cleanly(scratch, foreground):
    img, mnt = scratch
    mkfs(img, "64M")
    cp = daemon("-o", "bogus_option", img, mnt, foreground=foreground)
    assert_clear_error(cp, "-o bogus_option", mentions=("bogus_option",))
    assert not is_fuse_mounted(mnt)


@FG
def test_mount_unknown_flag_fails_cleanly(scratch, foreground):
    img, mnt = scratch
    mkfs(img, "64M")
    cp = daemon("--bogus", img, mnt, foreground=foreground)
    assert_clear_error(cp, "--bogus", mentions=("bogus",))
    assert not is_fuse_mounted(mnt)


def test_mount_bad_log_level_fails_cleanly(scratch):
    img, mnt = scratch
    mkfs(img, "64M")
    cp = daemon("-o", "log_level=loud", img, mnt)
    assert_clear_error(cp, "-o log_level=loud", mentions=("log_level", "loud"))
    assert not is_fuse_mounted(mnt)


def test_mount_missing_arguments_fails_cleanly():
    cp = daemon()
    assert_no_crash(cp, "pmemfuse without arguments")
    cp = run([require(DAEMON), "/dev/shm/only-one-arg"], timeout=20)
    assert_no_crash(cp, "pmemfuse with one argument")


def test_second_mount_of_same_image_is_refused(image, mount_factory):
    first = mount_factory(image)
    second = Mount(image)
    try:
        with pytest.raises(MountError) as ei:
            second.start()
        assert second.last_returncode not in (None, 0, 134, 139) and second.last_returncode > 0
        assert second.logs[-1].strip(), "no message from the refused second mount"
    finally:
        second.close()
    # the first mount is unaffected
    with open(first / "f", "wb") as f:
        f.write(b"ok")
    first.unmount()
    rc, out = fsck(image, "-f", "-n")
    assert rc == 0, out
    del ei


# --------------------------------------------------------------------------------------
# mkfs
# --------------------------------------------------------------------------------------

def test_mkfs_too_small_size_fails_cleanly(scratch):
    img, _ = scratch
    cp = mkfs(img, "1M", check=False)
    assert_clear_error(cp, "mkfs --size 1M")
    cp = mkfs(img, "15M", check=False)
    assert_clear_error(cp, "mkfs --size 15M")


def test_mkfs_existing_1mib_file_without_size_fails_cleanly(scratch):
    img, _ = scratch
    fill(img, MiB, "zeros")
    cp = mkfs(img, None, check=False)
    assert_clear_error(cp, "mkfs of a 1 MiB file")


def test_mkfs_minimum_16mib_works(scratch, mount_factory):
    img, _ = scratch
    mkfs(img, "16M")
    assert os.stat(img).st_size == 16 * MiB
    m = mount_factory(img)
    with open(m / "f", "wb") as f:
        f.write(b"tiny fs")
    m.unmount()
    rc, out = fsck(img, "-f", "-n")
    assert rc == 0, out


@pytest.mark.parametrize("size", ["0", "abc", "-5M", "12Q", ""])
def test_mkfs_invalid_size_fails_cleanly(scratch, size):
    img, _ = scratch
    cp = run([require(MKFS), "--size", size, "-f", img], timeout=30)
    assert_clear_error(cp, f"mkfs --size {size!r}")


def test_mkfs_without_arguments_or_bad_flag_fails_cleanly(scratch):
    img, _ = scratch
    assert_no_crash(run([require(MKFS)], timeout=30), "mkfs without arguments")
    cp = run([require(MKFS), "--bogus", img], timeout=30)
    assert_clear_error(cp, "mkfs --bogus", mentions=("bogus",))
    assert not os.path.exists(img)


def test_mkfs_in_missing_directory_fails_cleanly():
    cp = run([require(MKFS), "--size", "64M", "-f", "/nonexistent-dir-pmemfuse/x.img"],
             timeout=30)
    assert_clear_error(cp, "mkfs in a missing directory")


def test_mkfs_without_size_uses_existing_file_size(scratch):
    img, _ = scratch
    fill(img, 48 * MiB, "zeros")
    mkfs(img, None)
    assert os.stat(img).st_size == 48 * MiB
    rc, out = fsck(img, "-f", "-n")
    assert rc == 0, out


# --------------------------------------------------------------------------------------
# fsck
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["zeros", "random"])
def test_fsck_non_image_exits_8_or_4_with_message(scratch, kind):
    img, _ = scratch
    fill(img, 64 * MiB, kind)
    cp = run([require(FSCK), "-n", img], timeout=60)
    assert cp.returncode in (4, 8), f"fsck of a {kind} file exited {cp.returncode}: {cp.stderr}"
    assert (cp.stderr + cp.stdout).strip(), "fsck gave no message"
    assert "terminate called" not in cp.stderr


def test_fsck_missing_file_exits_8(scratch):
    img, _ = scratch
    cp = run([require(FSCK), "-n", img], timeout=60)
    assert cp.returncode == 8, f"exit {cp.returncode}: {cp.stderr}"
    assert cp.stderr.strip()


def test_fsck_usage_error_exits_16():
    cp = run([require(FSCK)], timeout=30)
    assert cp.returncode == 16, f"fsck without arguments exited {cp.returncode}: {cp.stderr}"
    assert (cp.stderr + cp.stdout).strip()
    cp = run([require(FSCK), "--bogus", "/dev/shm/x"], timeout=30)
    assert cp.returncode == 16, f"fsck --bogus exited {cp.returncode}: {cp.stderr}"


def test_fsck_on_fresh_image_is_clean(image):
    rc, out = fsck(image, "-f", "-n")
    assert rc == 0, out
    rc, out = fsck(image, "-n")
    assert rc == 0, out


# --------------------------------------------------------------------------------------
# Corrupted images: detect, never crash
# --------------------------------------------------------------------------------------

def corrupt(img, offset, nbytes, seed):
    rnd = random.Random(seed)
    with open(img, "r+b") as f:
        f.seek(offset)
        old = f.read(nbytes)
        f.seek(offset)
        f.write(bytes(b ^ (rnd.randrange(1, 256)) for b in old))


def test_fsck_detects_corrupted_superblock(image):
    corrupt(image, 32, 8, seed=1)  # block_count, covered by the superblock crc
    rc, out = fsck(image, "-f", "-n")
    assert rc in (4, 8), f"fsck -n of an image with a corrupted superblock exited {rc}:\n{out}"


@pytest.mark.parametrize("seed", range(6))
def test_corrupted_metadata_never_crashes_fsck_or_daemon(image, mount_factory, seed):
    rnd = random.Random(seed)
    # Hit the first 4 MiB (superblock, journal, bitmap, inode-table index / first chunk).
    for _ in range(8):
        corrupt(image, rnd.randrange(0, 4 * MiB - 64), rnd.choice([1, 8, 64]), rnd.random())
    rc, out = fsck(image, "-f", "-n")
    assert rc in (0, 4, 8), f"fsck -n exited {rc}:\n{out}"
    assert "terminate called" not in out and "Segmentation" not in out, out
    m = mount_factory(image, start=False)
    try:
        m.start()
    except MountError:
        assert m.last_returncode is not None and m.last_returncode > 0, (
            f"daemon died with {m.last_returncode} on a corrupted image:\n{m.logs[-1]}")
        assert m.last_returncode not in (134, 139), m.logs[-1]
        return
    try:
        for dirpath, dirnames, filenames in os.walk(m.mnt):
            for n in filenames:
                try:
                    open(os.path.join(dirpath, n), "rb").read()
                except OSError:
                    pass
        with open(m / "new", "wb") as f:
            f.write(b"x")
    except OSError:
        pass
    assert m.alive(), f"daemon crashed on a corrupted image:\n{m.log()}"
    rc = m.unmount(check=False)
    assert rc is not None and rc >= 0 and rc not in (134, 139), f"daemon exit {rc}:\n{m.logs[-1]}"


def test_fsck_y_repairs_corrupted_primary_superblock_from_backup(image, mount_factory):
    m = mount_factory(image)
    with open(m / "f", "wb") as f:
        f.write(b"survives superblock repair")
    m.unmount()
    corrupt(image, 32, 8, seed=2)  # primary superblock's block_count; backup intact
    rc, out = fsck(image, "-f", "-n")
    assert rc == 4, f"fsck -n: expected 4 (errors left uncorrected), got {rc}:\n{out}"
    rc, out = fsck(image, "-f", "-y")
    assert rc == 1, f"fsck -y: expected 1 (errors corrected), got {rc}:\n{out}"
    rc, out = fsck(image, "-f", "-n")
    assert rc == 0, f"fsck -n after repair: expected 0, got {rc}:\n{out}"
    m.start()
    with open(m / "f", "rb") as f:
        assert f.read() == b"survives superblock repair"


def test_fsck_preen_on_clean_image_exits_0(image):
    rc, out = fsck(image, "-p")
    assert rc == 0, out
    rc, out = fsck(image, "-f", "-p")
    assert rc == 0, out
