"""Hostile images through a real mount: one metadata structure damaged at a time.

Each case damages an unmounted image, then mounts it and touches the damaged object. The
daemon must either refuse the mount with a message naming the structure, or fail just the
access with EUCLEAN (or EIO) while it stays alive and serves everything else; and
`fsck.pmemfuse -n` must report the damage (exit 4). Never a crash, a hang or wrong data.

Damage comes in two kinds: a flipped byte that the structure's crc catches, and a field
set to a bad value with the crc recomputed, which only the verifier's field checks catch.
The unit tests (tests/unit/fs/check_test.cc, verify_test.cc) cover the verifiers in
process; this file covers the daemon, the tools and the feature-flag policy end to end.
Offsets come from docs/format.md, by walking the structures (image_format.py).
"""

from __future__ import annotations

import errno
import os
import shutil
import struct

import pytest

from image_format import BLOCK, KIND_BYTES, Image
from pmemfuse_helpers import (Mount, MountError, expect_errno, fsck, new_image_path, mkfs,
                              read_file, remove_quietly, write_file)

IMAGE_SIZE = "32M"
EUCLEAN = errno.EUCLEAN  # 117, "Structure needs cleaning"


# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------

class Populated:
    """An image to damage copies of, and the inode numbers of the files in it."""

    def __init__(self, path, inos):
        self.path = path
        self.ino = inos


def _populate(mnt):
    write_file(os.path.join(mnt, "small"), b"hello, small file\n")
    write_file(os.path.join(mnt, "other"), b"an undamaged neighbour\n")
    d = os.path.join(mnt, "dir")
    os.mkdir(d)
    for k in range(300):  # several directory blocks
        write_file(os.path.join(d, f"entry-with-a-longish-name-{k:04d}"), b"")
    fd = os.open(os.path.join(mnt, "frag"), os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        for k in range(10):  # every other block: 10 extents, more than fit inline
            os.pwrite(fd, b"f", 2 * k * BLOCK)
    finally:
        os.close(fd)
    write_file(os.path.join(mnt, "xf"), b"data of a file with a big xattr")
    os.setxattr(os.path.join(mnt, "xf"), "user.big", b"x" * 3000)
    os.symlink("L" * 2000, os.path.join(mnt, "link"))
    names = ["small", "other", "dir", "frag", "xf", "link"]
    return {n: os.lstat(os.path.join(mnt, n)).st_ino for n in names}


@pytest.fixture(scope="module")
def pristine():
    """Cleanly unmounted image with one of each structure."""
    path = new_image_path()
    mkfs(path, IMAGE_SIZE)
    with Mount(path) as m:
        inos = _populate(m.mnt)
        m.unmount()
    yield Populated(path, inos)
    remove_quietly(path)


@pytest.fixture(scope="module")
def crashed():
    """Image of a daemon killed with committed transactions still in the log and an
    unlinked file still open (so in the orphan table)."""
    path = new_image_path()
    mkfs(path, IMAGE_SIZE)
    with Mount(path) as m:
        # File data is fsync'd: only then is it on media (and in the log) before the kill.
        write_file(m / "kept", b"kept across the crash", fsync=True)
        fd = os.open(m / "orphan", os.O_CREAT | os.O_RDWR, 0o644)
        os.write(fd, b"o" * 3 * BLOCK)
        os.fsync(fd)
        os.unlink(m / "orphan")
        # A freeing transaction moves the log head past everything before it (§12.5),
        # so replay does not rewrite the orphan slot; the files after it stay in the log.
        write_file(m / "freed", b"f" * BLOCK, fsync=True)
        os.truncate(m / "freed", 0)
        for k in range(3):
            write_file(m / f"late{k}", b"late", fsync=True)
        inos = {"kept": os.stat(m / "kept").st_ino, "orphan": os.fstat(fd).st_ino}
        m.kill9()
        try:
            os.close(fd)
        except OSError:
            pass
    img = Image(path)
    assert len(img.transactions()) >= 3, "the crash left no committed transactions to replay"
    yield Populated(path, inos)
    remove_quietly(path)


@pytest.fixture
def damaged():
    """copy(populated) -> Image of a fresh copy, removed at teardown."""
    copies = []

    def copy(src: Populated):
        p = new_image_path()
        shutil.copyfile(src.path, p)
        copies.append(p)
        return Image(p)

    yield copy
    for p in copies:
        remove_quietly(p)


# --------------------------------------------------------------------------------------
# Expectations
# --------------------------------------------------------------------------------------

def assert_fsck_reports(img: Image, *words):
    rc, out = fsck(img.path, "-f", "-n")
    assert rc == 4, f"fsck -n: expected exit 4 (errors left uncorrected), got {rc}:\n{out}"
    low = out.lower()
    for w in words:
        assert w.lower() in low, f"fsck -n output should mention {w!r}:\n{out}"


def assert_mount_refused(img: Image, *words, unchanged=True):
    """The daemon refuses img with a message containing words. With unchanged, it must
    not have written a byte (only journal replay may write before a refusal)."""
    before = img.sha256() if unchanged else None
    m = Mount(img.path)
    try:
        with pytest.raises(MountError):
            m.start()
        rc = m.last_returncode
        assert rc is not None and rc > 0, f"daemon exit {rc} (crash?):\n{m.logs[-1]}"
        log = m.logs[-1].lower()
        assert "sanitizer" not in log and "terminate called" not in log, m.logs[-1]
        for w in words:
            assert w.lower() in log, f"refusal should mention {w!r}:\n{m.logs[-1]}"
    finally:
        m.close()
    if unchanged:
        assert img.sha256() == before, "the refused mount changed the image"


def assert_unclean(fn, *args):
    """fn(*args) fails with EUCLEAN (or EIO), not any other way."""
    with pytest.raises(OSError) as ei:
        fn(*args)
    assert ei.value.errno in (EUCLEAN, errno.EIO), (
        f"{fn.__name__}{args}: expected EUCLEAN or EIO, got {errno.errorcode.get(ei.value.errno)}")


class served:
    """Mounts img; on exit requires the daemon to be alive, the neighbour file intact
    and a clean unmount."""

    def __init__(self, img: Image, neighbour="other", content=b"an undamaged neighbour\n"):
        self.m = Mount(img.path)
        self.neighbour, self.content = neighbour, content

    def __enter__(self):
        self.m.start()
        return self.m

    def __exit__(self, exc_type, *_):
        try:
            if exc_type is None:
                assert self.m.alive(), f"daemon died:\n{self.m.log()}"
                assert read_file(self.m / self.neighbour) == self.content
                rc = self.m.unmount(check=False)
                assert rc == 0, f"daemon exit {rc} at unmount:\n{self.m.logs[-1]}"
        finally:
            self.m.close()


# --------------------------------------------------------------------------------------
# Superblock, journal, bitmaps, inode table: refused at mount
# --------------------------------------------------------------------------------------

def test_superblock_flipped_byte_refuses_mount(pristine, damaged):
    img = damaged(pristine)
    img.flip(32)  # block_count, under the crc
    assert_mount_refused(img, "superblock")
    assert_fsck_reports(img, "superblock", "crc")


def test_superblock_bad_field_with_valid_crc_refuses_mount(pristine, damaged):
    img = damaged(pristine)
    img.put_u64(40, img.block_count + 10)  # journal_start past the end
    img.reseal_super()
    assert_mount_refused(img, "superblock", "journal")
    assert_fsck_reports(img, "superblock", "journal")


def test_both_journal_header_slots_damaged_refuses_mount(pristine, damaged):
    img = damaged(pristine)
    hdr = img.journal_start * BLOCK
    img.flip(hdr + 16)
    img.flip(hdr + 64 + 16)
    assert_mount_refused(img, "journal header")
    assert_fsck_reports(img, "journal header")


def test_one_journal_header_slot_damaged_falls_back_to_the_other(pristine, damaged):
    # Two slots exist so that a torn header write is survivable: damage to the newer one
    # is indistinguishable from that and must not cost the filesystem.
    img = damaged(pristine)
    img.flip(img.journal_header_slot() + 16)
    with served(img) as m:
        assert read_file(m / "small") == b"hello, small file\n"
    rc, out = fsck(img.path, "-f", "-n")
    assert rc == 0, out


def test_journal_record_out_of_range_with_valid_crc_refuses_mount(crashed, damaged):
    img = damaged(crashed)
    off, _seq, body = img.transactions()[0]
    _dest, _length, kind = struct.unpack("<QIH", img.read(off + 32, 14))
    assert kind == KIND_BYTES
    img.put_u64(off + 32, img.block_count * BLOCK)  # first record: past the device
    img.reseal_tx(off, body)
    assert_mount_refused(img, "journal", "out of range")
    assert_fsck_reports(img, "journal", "out of range")


def test_journal_record_wrapping_past_2_64_refuses_mount(crashed, damaged):
    # dest + len overflows to a small number: must not pass the range check.
    img = damaged(crashed)
    off, _seq, body = img.transactions()[0]
    _dest, length, _kind = struct.unpack("<QIH", img.read(off + 32, 14))
    img.put_u64(off + 32, (1 << 64) - length // 2 - 1)
    img.reseal_tx(off, body)
    assert_mount_refused(img, "journal", "out of range")
    assert_fsck_reports(img, "journal", "out of range")


def test_journal_transaction_damaged_with_successors_refuses_mount(crashed, damaged):
    # A torn commit is always the last transaction; a bad crc with a valid transaction
    # after it is damage, and stopping replay there would roll back part of the tree.
    img = damaged(crashed)
    off, seq, body = img.transactions()[0]
    img.flip(off + 32 + body // 2)
    assert_mount_refused(img, "journal", f"transaction {seq}", "crc")
    assert_fsck_reports(img, "journal", f"transaction {seq}")


def test_journal_last_transaction_damaged_is_taken_as_torn_and_fsck_reports(crashed, damaged):
    # A bad crc in the last transaction looks exactly like a commit torn by power loss,
    # so replay stops before it. Here it had been applied before the daemon was killed,
    # so replaying the older transactions rolls back the blocks they share with it and
    # leaves what it allocated unreferenced: the mount cannot tell, fsck reports it.
    img = damaged(crashed)
    off, _seq, body = img.transactions()[-1]
    img.flip(off + 32 + body // 2)
    with served(img, neighbour="kept", content=b"kept across the crash"):
        pass
    assert_fsck_reports(img, "owned by nothing")


def test_block_bitmap_damaged_refuses_mount(pristine, damaged):
    img = damaged(pristine)
    img.flip(img.bitmap_start * BLOCK + 64 + 100)  # a bit byte
    assert_mount_refused(img, "block bitmap", f"block {img.bitmap_start}")
    assert_fsck_reports(img, "bitmap", "crc")


def test_inode_table_index_damaged_refuses_mount(pristine, damaged):
    img = damaged(pristine)
    img.flip(img.itable_index * BLOCK + 16)  # chunk 0's block number
    assert_mount_refused(img, "inode table index")
    assert_fsck_reports(img, "inode table index")


def test_inode_table_index_chunk_out_of_range_refuses_mount(pristine, damaged):
    img = damaged(pristine)
    img.put_u64(img.itable_index * BLOCK + 16, img.block_count)
    img.reseal_block(img.itable_index)
    assert_mount_refused(img, "inode table index", "out of range")
    assert_fsck_reports(img, "inode table index", "out of range")


def test_inode_chunk_bitmap_damaged_refuses_mount(pristine, damaged):
    img = damaged(pristine)
    img.flip(img.chunk(0) * BLOCK + 64 + 2000)
    assert_mount_refused(img, "inode chunk bitmap")
    assert_fsck_reports(img, "inode chunk bitmap")


def test_root_inode_damaged_refuses_mount(pristine, damaged):
    img = damaged(pristine)
    img.flip(img.inode_off(1) + 56)  # mtime
    assert_mount_refused(img, "inode 1")
    assert_fsck_reports(img, "inode 1")


def test_orphan_slot_damaged_refuses_mount(crashed, damaged):
    img = damaged(crashed)
    ino = crashed.ino["orphan"]
    slot = img.u64(img.inode_off(ino) + 96) - 1
    assert slot >= 0 and img.u64(img.orphan_start * BLOCK + 16 * slot) == ino
    img.flip(img.orphan_start * BLOCK + 16 * slot + 8)  # its crc
    assert_mount_refused(img, "orphan table", unchanged=False)  # replayed first
    assert_fsck_reports(img, "orphan table slot", "crc")


# --------------------------------------------------------------------------------------
# Per-object structures: that object fails with EUCLEAN, everything else works
# --------------------------------------------------------------------------------------

def test_inode_damaged_fails_only_its_own_access(pristine, damaged):
    img = damaged(pristine)
    ino = pristine.ino["small"]
    img.flip(img.inode_off(ino) + 32)  # size
    with served(img) as m:
        assert_unclean(os.stat, m / "small")
        assert_unclean(read_file, m / "small")
    assert_fsck_reports(img, f"inode {ino}", "crc")


def test_inode_extent_out_of_range_with_valid_crc_fails_access(pristine, damaged):
    img = damaged(pristine)
    ino = pristine.ino["small"]
    img.put_u64(img.inode_off(ino) + 120 + 8, img.block_count + 1)  # extent 0's pblk
    img.reseal_inode(ino)
    with served(img) as m:
        assert_unclean(read_file, m / "small")
    assert_fsck_reports(img, f"inode {ino}", "out of range")


def test_symlink_inode_damaged_fails_readlink(pristine, damaged):
    img = damaged(pristine)
    ino = pristine.ino["link"]
    img.flip(img.inode_off(ino) + 32)  # size: the target length
    with served(img) as m:
        assert_unclean(os.readlink, m / "link")
    assert_fsck_reports(img, f"inode {ino}")


def test_extent_leaf_damaged_fails_only_its_file(pristine, damaged):
    img = damaged(pristine)
    ino = pristine.ino["frag"]
    leaf = img.chain_head(ino)
    img.flip(leaf * BLOCK + 40)  # inside the first extent
    with served(img) as m:
        assert_unclean(read_file, m / "frag")
    assert_fsck_reports(img, "extent leaf", f"block {leaf}", "crc")


def test_extent_leaf_bad_count_with_valid_crc_fails_access(pristine, damaged):
    img = damaged(pristine)
    leaf = img.chain_head(pristine.ino["frag"])
    img.put_u32(leaf * BLOCK + 24, 0)  # count
    img.reseal_block(leaf)
    with served(img) as m:
        assert_unclean(read_file, m / "frag")
    assert_fsck_reports(img, "extent leaf", "count")


def test_directory_block_damaged_fails_only_that_directory(pristine, damaged):
    img = damaged(pristine)
    ino = pristine.ino["dir"]
    blk = img.dir_block(ino, 1)
    img.flip(blk * BLOCK + 32 + 12 + 3)  # a name byte of the first entry
    with served(img) as m:
        assert_unclean(os.listdir, m / "dir")
        assert_unclean(os.stat, m.path("dir", "entry-with-a-longish-name-0000"))
    assert_fsck_reports(img, "dir block", f"block {blk}", "crc")


def test_directory_entry_bad_rec_len_with_valid_crc_fails_access(pristine, damaged):
    img = damaged(pristine)
    blk = img.dir_block(pristine.ino["dir"], 0)
    img.write(blk * BLOCK + 32 + 8, struct.pack("<H", 4000))  # first rec_len: past the block
    img.reseal_block(blk)
    with served(img) as m:
        assert_unclean(os.listdir, m / "dir")
    assert_fsck_reports(img, "dir block", "rec_len")


def test_xattr_block_damaged_fails_only_xattr_access(pristine, damaged):
    img = damaged(pristine)
    ino = pristine.ino["xf"]
    blk = img.xattr_block(ino)
    assert blk
    img.flip(blk * BLOCK + 100)
    with served(img) as m:
        assert read_file(m / "xf") == b"data of a file with a big xattr"
        assert_unclean(os.getxattr, m / "xf", "user.big")
        assert_unclean(os.listxattr, m / "xf")
    assert_fsck_reports(img, "xattr block", f"block {blk}", "crc")


def test_xattr_block_used_too_large_with_valid_crc_fails_access(pristine, damaged):
    img = damaged(pristine)
    blk = img.xattr_block(pristine.ino["xf"])
    img.put_u32(blk * BLOCK + 16, 5000)  # used > 4064
    img.reseal_block(blk)
    with served(img) as m:
        assert_unclean(os.getxattr, m / "xf", "user.big")
    assert_fsck_reports(img, "xattr block", "used")


# --------------------------------------------------------------------------------------
# Feature flags (format.md §3.1)
# --------------------------------------------------------------------------------------

UNKNOWN_BIT = 1 << 31


def set_feature(img: Image, field_off: int, bit: int):
    """Sets a feature bit in both superblocks, as a newer mkfs would have written it."""
    for base in (0, img.backup_off()):
        img.put_u32(base + field_off, img.u32(base + field_off) | bit)
        img.reseal_super(base)


def test_unknown_incompat_bit_refuses_mount_and_fsck_unchanged(pristine, damaged):
    img = damaged(pristine)
    set_feature(img, 28, UNKNOWN_BIT)
    before = img.sha256()
    assert_mount_refused(img, "incompatible", "0x80000000")
    rc, out = fsck(img.path, "-f", "-n")
    assert rc == 8, f"fsck -n of an unknown incompat feature: expected 8, got {rc}:\n{out}"
    assert "incompatible" in out.lower(), out
    rc, out = fsck(img.path, "-f", "-y")
    assert rc == 8, f"fsck -y of an unknown incompat feature: expected 8, got {rc}:\n{out}"
    assert img.sha256() == before, "image changed"


def test_unknown_ro_compat_bit_mounts_read_only_and_leaves_image_unchanged(pristine, damaged):
    img = damaged(pristine)
    set_feature(img, 24, UNKNOWN_BIT)
    before = img.sha256()
    with served(img) as m:
        assert read_file(m / "small") == b"hello, small file\n"
        assert len(os.listdir(m / "dir")) == 300
        assert os.getxattr(m / "xf", "user.big") == b"x" * 3000
        expect_errno(errno.EROFS, write_file, m / "new", b"x")
        expect_errno(errno.EROFS, os.mkdir, m / "newdir")
        expect_errno(errno.EROFS, os.unlink, m / "small")
        expect_errno(errno.EROFS, os.setxattr, m / "small", "user.n", b"v")
        with pytest.raises(OSError) as ei:
            with open(m / "small", "r+b") as f:
                f.write(b"changed")
        assert ei.value.errno == errno.EROFS
    assert img.sha256() == before, "a read-only mount changed the image"


def test_unknown_ro_compat_bit_with_journal_to_replay_refuses_mount(crashed, damaged):
    # Replay writes, and an unknown ro_compat feature forbids writes: refuse rather than
    # show the tree as it was before the last committed transactions.
    img = damaged(crashed)
    set_feature(img, 24, UNKNOWN_BIT)
    assert_mount_refused(img, "replay", "read-only-compatible")


def test_unknown_compat_bit_is_ignored(pristine, damaged):
    img = damaged(pristine)
    set_feature(img, 20, UNKNOWN_BIT)
    with served(img) as m:
        write_file(m / "new", b"compat features do not restrict writes")
    rc, out = fsck(img.path, "-f", "-n")
    assert rc == 0, out


def test_fsck_refuses_unknown_ro_compat_bit_unchanged(pristine, damaged):
    # As e2fsck: a checker that does not know a feature cannot tell damage from it.
    img = damaged(pristine)
    set_feature(img, 24, UNKNOWN_BIT)
    before = img.sha256()
    for mode in ("-n", "-y"):
        rc, out = fsck(img.path, "-f", mode)
        assert rc == 8, f"fsck {mode} of an unknown ro_compat feature: expected 8, got {rc}:\n{out}"
        assert "read-only" in out.lower() or "ro_compat" in out.lower(), out
    assert img.sha256() == before, "image changed"
