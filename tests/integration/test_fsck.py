"""fsck.pmemfuse repair on real images: damage an unmounted image offline (offsets from
docs/format.md, checksums recomputed so only the intended inconsistency remains), then
`fsck -n` reports it and changes nothing (exit 4), `fsck -y` repairs it (exit 1), a
second `fsck -n` finds it clean (exit 0), and a mount shows the data. Also preen's
limits and the usage / operational exit codes."""

from __future__ import annotations

import hashlib
import os
import random
import struct
from pathlib import Path

import pytest

from image_format import crc32c
from pmemfuse_helpers import FSCK, fsck, require, run

BLOCK = 4096
INODE_SIZE = 256
INODES_PER_CHUNK = 511 * 16
BITMAP_HEADER = 64
DIR_HEADER = 32


class Image:
    """An unmounted image, read and written at the offsets of docs/format.md."""

    def __init__(self, path):
        self.f = open(path, "r+b")
        sb = self.read(0, 256)
        (self.block_count, self.journal_start, self.journal_blocks, self.bitmap_start,
         self.bitmap_blocks, self.itable_index) = struct.unpack_from("<6Q", sb, 32)
        idx = self.read(self.itable_index * BLOCK, BLOCK)
        nchunks = struct.unpack_from("<I", idx, 8)[0]
        self.chunks = list(struct.unpack_from(f"<{nchunks}Q", idx, 16))

    def close(self):
        self.f.close()

    def read(self, off, n) -> bytearray:
        self.f.seek(off)
        return bytearray(self.f.read(n))

    def write(self, off, data):
        self.f.seek(off)
        self.f.write(bytes(data))

    # Metadata blocks carry their crc at byte 4, over the whole block with the crc zeroed.
    def reseal_block(self, bno):
        blk = self.read(bno * BLOCK, BLOCK)
        blk[4:8] = b"\0\0\0\0"
        struct.pack_into("<I", blk, 4, crc32c(blk))
        self.write(bno * BLOCK, blk)

    def set_bit(self, bitmap_start, i, value: bool):
        bno = bitmap_start + i // (8 * (BLOCK - BITMAP_HEADER))
        bit = i % (8 * (BLOCK - BITMAP_HEADER))
        off = bno * BLOCK + BITMAP_HEADER + bit // 8
        byte = self.read(off, 1)[0]
        byte = byte | (1 << bit % 8) if value else byte & ~(1 << bit % 8)
        self.write(off, bytes([byte]))
        self.reseal_block(bno)

    def inode_off(self, ino):
        c, s = divmod(ino - 1, INODES_PER_CHUNK)
        return (self.chunks[c] + 1) * BLOCK + s * INODE_SIZE

    def inode(self, ino) -> bytearray:
        return self.read(self.inode_off(ino), INODE_SIZE)

    def put_inode(self, ino, d: bytearray):
        d[0:4] = b"\0\0\0\0"
        struct.pack_into("<I", d, 0, crc32c(d))
        self.write(self.inode_off(ino), d)

    def set_inode_field(self, ino, fmt, offset, value):
        d = self.inode(ino)
        struct.pack_into(fmt, d, offset, value)
        self.put_inode(ino, d)

    def first_pblk(self, ino) -> int:
        # Inline extent 0 at byte 120: u32 lblk, u32 len_flags, u64 pblk.
        return struct.unpack_from("<Q", self.inode(ino), 128)[0]

    def unname(self, dir_ino, name: bytes):
        """Turns the record naming `name` in the directory's first block into free space
        (ino 0), leaving the inode it named and every count as they were."""
        bno = self.first_pblk(dir_ino)
        blk = self.read(bno * BLOCK, BLOCK)
        off = DIR_HEADER
        while off < BLOCK:
            ino, rec_len, name_len = struct.unpack_from("<QHB", blk, off)
            if ino and bytes(blk[off + 12:off + 12 + name_len]) == name:
                struct.pack_into("<Q", blk, off, 0)
                self.write(bno * BLOCK, blk)
                self.reseal_block(bno)
                return
            off += rec_len
        raise AssertionError(f"no entry {name!r} in the first block of directory {dir_ino}")


def digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def pattern(n, seed) -> bytes:
    return bytes(((k * 7 + seed * 13) % 251) + 1 for k in range(n))


ROOT = 1


@pytest.fixture
def populated(image, mount_factory):
    """An unmounted image holding a (3 blocks), b (1 block), lost (1 block) and d/x; returns
    (image, {name: inode number})."""
    m = mount_factory(image)
    top = Path(m.mnt)
    files = {"a": pattern(3 * BLOCK, 1), "b": pattern(BLOCK, 2), "lost": pattern(BLOCK, 3)}
    for name, data in files.items():
        (top / name).write_bytes(data)
    (top / "d").mkdir()
    (top / "d" / "x").write_bytes(b"x" * 5000)
    inos = {name: os.stat(top / name).st_ino for name in ["a", "b", "lost", "d", "d/x"]}
    m.unmount()
    return image, inos


def expect_repair(image, *, flag="-y"):
    """fsck -n: problems, exit 4, image unchanged; fsck FLAG: exit 1; fsck -n: exit 0."""
    before = digest(image)
    rc, out = fsck(image, "-n")
    assert rc == 4, f"fsck -n of a damaged image exited {rc}:\n{out}"
    assert digest(image) == before, "fsck -n changed the image"
    rc, out = fsck(image, flag)
    print(out)  # shown with -rP
    assert rc == 1, f"fsck {flag} exited {rc}:\n{out}"
    assert "repaired:" in out, out
    rc, again = fsck(image, "-f", "-n")
    assert rc == 0, f"fsck -n after fsck {flag} exited {rc}:\n{again}\nrepair output:\n{out}"
    return out


@pytest.mark.image_size("64M")
def test_every_class_of_damage_at_once_is_repaired(populated, mount_factory):
    image, inos = populated
    img = Image(image)
    try:
        a_block = img.first_pblk(inos["a"])
        img.set_inode_field(inos["a"], "<I", 16, 5)                  # nlink
        img.set_inode_field(inos["b"], "<Q", 128, a_block + 1)       # b's block is a's too
        img.set_bit(img.bitmap_start, a_block + 2, False)            # a's block marked free
        img.set_bit(img.bitmap_start, img.block_count - 10, True)    # leaked
        img.set_bit(img.chunks[0], inos["d/x"] - 1, False)           # d/x's inode freed
        img.unname(ROOT, b"lost")                                    # lost loses its name
        label = img.read(152, 1)
        img.write(152, bytes([label[0] ^ 0x20]))                     # primary superblock crc
    finally:
        img.close()
    out = expect_repair(image)
    assert "primary superblock restored" in out, out
    assert "reconnected as /lost+found/#" in out, out
    m = mount_factory(image)
    top = Path(m.mnt)
    assert (top / "a").read_bytes() == pattern(3 * BLOCK, 1)
    assert os.stat(top / "a").st_nlink == 1
    assert (top / "b").read_bytes() == pattern(3 * BLOCK, 1)[BLOCK:2 * BLOCK]  # its own copy
    with open(top / "b", "r+b") as f:
        f.write(b"\0" * BLOCK)
    assert (top / "a").read_bytes() == pattern(3 * BLOCK, 1)
    assert (top / "lost+found" / f"#{inos['lost']}").read_bytes() == pattern(BLOCK, 3)
    assert not (top / "lost").exists()
    assert os.listdir(top / "d") == []
    m.unmount()
    rc, out = fsck(image, "-f", "-n")
    assert rc == 0, out


@pytest.mark.image_size("64M")
def test_preen_repairs_what_loses_nothing(populated, mount_factory):
    image, inos = populated
    img = Image(image)
    try:
        img.set_inode_field(inos["d"], "<I", 16, 7)
        img.set_bit(img.bitmap_start, img.block_count - 10, True)
        img.unname(ROOT, b"lost")
    finally:
        img.close()
    expect_repair(image, flag="-p")
    m = mount_factory(image)
    top = Path(m.mnt)
    assert os.stat(top / "d").st_nlink == 2
    assert (top / "lost+found" / f"#{inos['lost']}").read_bytes() == pattern(BLOCK, 3)
    m.unmount()


@pytest.mark.image_size("64M")
def test_preen_refuses_to_clear_a_damaged_inode_and_y_clears_it(populated, mount_factory):
    image, inos = populated
    img = Image(image)
    try:
        off = img.inode_off(inos["b"]) + 32  # size, under the inode crc
        img.write(off, bytes([img.read(off, 1)[0] ^ 1]))
    finally:
        img.close()
    before = digest(image)
    rc, out = fsck(image, "-p")
    assert rc == 4, f"fsck -p exited {rc}:\n{out}"
    assert "fsck.pmemfuse -y" in out, out
    assert digest(image) == before, "a refused preen changed the image"
    out = expect_repair(image)
    assert f"inode {inos['b']}: damaged, cleared" in out, out
    m = mount_factory(image)
    top = Path(m.mnt)
    assert not (top / "b").exists()
    assert (top / "a").read_bytes() == pattern(3 * BLOCK, 1)
    m.unmount()


def test_fsck_without_y_or_p_reports_and_changes_nothing(populated):
    image, inos = populated
    img = Image(image)
    try:
        img.set_inode_field(inos["a"], "<I", 16, 5)
    finally:
        img.close()
    before = digest(image)
    rc, out = fsck(image)
    assert rc == 4, out
    assert "run fsck.pmemfuse -y" in out, out
    assert digest(image) == before


def test_usage_errors_exit_16(image):
    cp = run([require(FSCK), "-n", "-y", image], timeout=30)
    assert cp.returncode == 16, cp.stderr
    cp = run([require(FSCK), "-n", "-p", image], timeout=30)
    assert cp.returncode == 16, cp.stderr
    cp = run([require(FSCK), "--no-such-option", image], timeout=30)
    assert cp.returncode == 16, cp.stderr


def test_missing_device_exits_8(tmp_path):
    for flag in ("-n", "-y", "-p"):
        cp = run([require(FSCK), flag, str(tmp_path / "absent.img")], timeout=30)
        assert cp.returncode == 8, f"fsck {flag} of a missing device exited {cp.returncode}: {cp.stderr}"
        assert cp.stderr.strip()


def test_clean_image_exits_0_under_every_mode(image):
    for flag in ("-n", "-y", "-p"):
        rc, out = fsck(image, flag)
        assert rc == 0, f"fsck {flag} of a clean image exited {rc}:\n{out}"


def fill_tree(top: Path):
    """Files of several sizes, a directory with enough entries for several blocks, a
    file with enough extents for a leaf chain, xattrs, symlinks, hard links."""
    (top / "many").mkdir()
    for k in range(150):
        (top / "many" / f"file-with-a-long-name-{k:04d}").write_bytes(pattern(100 + k, k))
    (top / "many" / "sub").mkdir()
    (top / "many" / "sub" / "deep").write_bytes(pattern(9000, 5))
    with open(top / "sparse", "wb") as f:
        for k in range(20):
            f.seek(2 * k * BLOCK)
            f.write(pattern(100, k))
    (top / "xf").write_bytes(b"x")
    os.setxattr(top / "xf", "user.big", b"v" * 3000)
    os.symlink("t" * 300, top / "long-link")
    os.symlink("short", top / "short-link")
    os.link(top / "many" / "sub" / "deep", top / "hard")


@pytest.mark.image_size("64M")
@pytest.mark.parametrize("seed", range(8))
def test_y_on_random_damage_never_crashes_and_leaves_what_it_says(image, mount_factory, seed):
    m = mount_factory(image)
    fill_tree(Path(m.mnt))
    m.unmount()
    rnd = random.Random(seed)
    img = Image(image)
    try:
        # Inodes, the bitmap, and the free space after it and after the first chunk,
        # where the directory blocks, leaves, xattr blocks and file data live.
        areas = [(img.chunks[0] + 1, 12), (img.bitmap_start, 1), (img.bitmap_start + 1, 400),
                 (img.chunks[0] + 512, 200)]
        for _ in range(6):
            start, n = rnd.choice(areas)
            off = (start + rnd.randrange(n)) * BLOCK + rnd.randrange(BLOCK)
            img.write(off, bytes([img.read(off, 1)[0] ^ (1 << rnd.randrange(8))]))
    finally:
        img.close()
    rc, out = fsck(image, "-y")
    assert rc in (0, 1, 4), f"fsck -y exited {rc}:\n{out}"
    assert "terminate called" not in out and "Segmentation" not in out, out
    rc_n, out_n = fsck(image, "-f", "-n")
    assert rc_n == (4 if rc == 4 else 0), f"fsck -y exited {rc}, then fsck -n {rc_n}:\n{out}\n{out_n}"
    if rc_n:
        return
    m = mount_factory(image)
    for dirpath, _, filenames in os.walk(m.mnt):
        for n in filenames:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p):
                open(p, "rb").read()
    (Path(m.mnt) / "new").write_bytes(b"after repair")
    m.unmount()
    rc, out = fsck(image, "-f", "-n")
    assert rc == 0, out
