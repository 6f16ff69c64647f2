"""Emulated device-DAX: the usable size is rounded down to the 2 MiB mapping alignment."""

import hashlib
import os
import struct

import pytest

from pmemfuse_helpers import MiB, fsck, mkfs, read_file, write_file, write_until_error

ODD_SIZE = 65 * MiB + 12 * 1024   # not a multiple of 2 MiB
ROUNDED = 64 * MiB
SUPER_MAGIC = 0x3145535546454D50  # "PMEFUSE1", fs/format.h kSuperMagic


def super_block_count(img) -> int:
    """DiskSuper.block_count (offset 32) of the primary superblock (fs/format.h)."""
    with open(img, "rb") as f:
        raw = f.read(40)
    magic, = struct.unpack_from("<Q", raw, 0)
    assert magic == SUPER_MAGIC, f"no pmemfuse superblock magic at offset 0: {magic:#x}"
    return struct.unpack_from("<Q", raw, 32)[0]


@pytest.fixture
def odd_image(image_factory):
    p = image_factory(None)
    with open(p, "wb") as f:
        f.truncate(ODD_SIZE)
    return p


@pytest.mark.parametrize("flag", ["--emulate-devdax", "--emulate-devdax=2M"])
def test_devdax_mkfs_rounds_size_down_to_2mib(odd_image, flag):
    cp = mkfs(odd_image, None, flag)
    assert cp.returncode == 0
    assert super_block_count(odd_image) * 4096 == ROUNDED, (
        f"block_count {super_block_count(odd_image)} does not match {ROUNDED} bytes")
    rc, out = fsck(odd_image, "-f", "-n", "--emulate-devdax")
    assert rc == 0, f"fsck --emulate-devdax of a fresh devdax image exited {rc}:\n{out}"


def test_devdax_mount_write_read_unmount_fsck_clean(odd_image, mount_factory):
    mkfs(odd_image, None, "--emulate-devdax")
    m = mount_factory(odd_image, args=["-o", "emulate_devdax"])
    sv = os.statvfs(m.mnt)
    assert sv.f_blocks * sv.f_frsize <= ROUNDED, (
        f"statfs reports {sv.f_blocks * sv.f_frsize} bytes, more than the rounded {ROUNDED}")
    data = os.urandom(5 * MiB + 123)
    write_file(m / "f", data)
    os.mkdir(m / "d")
    write_file(m.path("d", "small"), b"devdax")
    os.setxattr(m / "f", "user.x", b"y" * 100)
    assert hashlib.sha256(read_file(m / "f")).digest() == hashlib.sha256(data).digest()
    m.unmount()
    rc, out = fsck(odd_image, "-f", "-n", "--emulate-devdax")
    assert rc == 0, f"fsck --emulate-devdax exited {rc}:\n{out}"
    m.start(["-o", "emulate_devdax"])
    assert read_file(m / "f") == data
    assert read_file(m.path("d", "small")) == b"devdax"
    assert os.getxattr(m / "f", "user.x") == b"y" * 100
    m.unmount()
    rc, out = fsck(odd_image, "-f", "-n", "--emulate-devdax")
    assert rc == 0, out


def test_devdax_fill_to_enospc_stays_within_rounded_size(odd_image, mount_factory):
    # Writing until ENOSPC must never touch the 1 MiB + 12 KiB tail past the 2 MiB boundary.
    with open(odd_image, "r+b") as f:
        f.seek(ROUNDED)
        f.write(b"\xa5" * (ODD_SIZE - ROUNDED))
    mkfs(odd_image, None, "--emulate-devdax")
    with open(odd_image, "rb") as f:
        f.seek(ROUNDED)
        tail_after_mkfs = f.read()
    m = mount_factory(odd_image, args=["-o", "emulate_devdax"])
    chunk = os.urandom(MiB)
    fd = os.open(m / "fill", os.O_CREAT | os.O_WRONLY, 0o644)
    _, err = write_until_error(fd, chunk, 100)
    assert err is not None and err.errno == 28, f"expected ENOSPC, got {err!r}"
    m.unmount()
    with open(odd_image, "rb") as f:
        f.seek(ROUNDED)
        assert f.read() == tail_after_mkfs, "data written past the rounded device size"
    rc, out = fsck(odd_image, "-f", "-n", "--emulate-devdax")
    assert rc == 0, out
