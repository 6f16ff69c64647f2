"""Byte-level access to an unmounted pmemfuse image at the offsets of docs/format.md, for
tests that damage images on purpose: read and write fields, walk the inode table, the
extent maps and the journal, and recompute crc32c checksums after an edit."""

from __future__ import annotations

import hashlib
import struct

BLOCK = 4096
KIND_BYTES = 1  # DiskTxRecord.kind of a byte record
TX_MAGIC = 0x4E585854
JOURNAL_MAGIC = 0x4C4E524A


def _crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


class Image:
    """Byte-level access to an unmounted image: read fields, write them, reseal crcs."""

    def __init__(self, path):
        self.path = path

    def read(self, off, n):
        with open(self.path, "rb") as f:
            f.seek(off)
            return f.read(n)

    def write(self, off, data):
        with open(self.path, "r+b") as f:
            f.seek(off)
            f.write(data)

    def u32(self, off):
        return struct.unpack("<I", self.read(off, 4))[0]

    def u64(self, off):
        return struct.unpack("<Q", self.read(off, 8))[0]

    def put_u32(self, off, v):
        self.write(off, struct.pack("<I", v))

    def put_u64(self, off, v):
        self.write(off, struct.pack("<Q", v))

    def flip(self, off):
        self.write(off, bytes([self.read(off, 1)[0] ^ 0x5A]))

    def sha256(self):
        with open(self.path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    # -- crcs: the crc field is zero while the crc is computed --

    def _reseal(self, off, length, crc_at):
        raw = bytearray(self.read(off, length))
        raw[crc_at:crc_at + 4] = b"\0\0\0\0"
        self.put_u32(off + crc_at, crc32c(bytes(raw)))

    def reseal_block(self, bno):
        self._reseal(bno * BLOCK, BLOCK, 4)

    def reseal_super(self, off=0):
        self._reseal(off, 256, 8)

    def reseal_inode(self, ino):
        self._reseal(self.inode_off(ino), 256, 0)

    # -- superblock (§3) --

    @property
    def block_count(self):
        return self.u64(32)

    journal_start = property(lambda self: self.u64(40))
    journal_blocks = property(lambda self: self.u64(48))
    bitmap_start = property(lambda self: self.u64(56))
    itable_index = property(lambda self: self.u64(72))
    orphan_start = property(lambda self: self.u64(104))

    def backup_off(self):
        return (self.block_count - 1) * BLOCK

    # -- inodes (§5, §6) --

    def chunk(self, c):
        return self.u64(self.itable_index * BLOCK + 16 + 8 * c)

    def inode_off(self, ino):
        c, s = divmod(ino - 1, 8176)
        return (self.chunk(c) + 1) * BLOCK + s * 256

    def inode_flags(self, ino):
        return self.u32(self.inode_off(ino) + 20)

    def extents(self, ino):
        """Inline extents as (lblk, len, pblk)."""
        base = self.inode_off(ino)
        n = struct.unpack("<H", self.read(base + 112, 2))[0]
        out = []
        for k in range(n):
            lblk, len_flags, pblk = struct.unpack("<IIQ", self.read(base + 120 + 16 * k, 16))
            out.append((lblk, len_flags & 0x7FFFFFFF, pblk))
        return out

    def chain_head(self, ino):
        assert self.inode_flags(ino) & 4, f"inode {ino} is not chained"
        return self.u64(self.inode_off(ino) + 120)

    def xattr_block(self, ino):
        return self.u64(self.inode_off(ino) + 88)

    def dir_block(self, ino, lblk):
        for start, length, pblk in self.extents(ino):
            if start <= lblk < start + length:
                return pblk + lblk - start
        raise AssertionError(f"directory {ino} has no block {lblk}")

    # -- journal (§12) --

    def journal_header_slot(self):
        """Offset of the header slot replay uses."""
        best = None
        for slot in (0, 1):
            off = self.journal_start * BLOCK + 64 * slot
            if self.u32(off) != JOURNAL_MAGIC:
                continue
            if best is None or self.u64(off + 8) > self.u64(best + 8):
                best = off
        assert best is not None, "no journal header slot"
        return best

    def transactions(self):
        """Committed transactions from the log head: [(header offset, seq, body_bytes)],
        assuming none wraps (true for the small workloads here)."""
        hdr = self.journal_header_slot()
        lsn, seq, log_bytes = self.u64(hdr + 16), self.u64(hdr + 24), self.u64(hdr + 32)
        log = (self.journal_start + 1) * BLOCK
        out = []
        while True:
            off = log + lsn % log_bytes
            magic, _crc, s, tlsn, body = struct.unpack("<IIQQI", self.read(off, 28))
            if magic != TX_MAGIC or s != seq or tlsn != lsn:
                return out
            assert lsn % log_bytes + 32 + body <= log_bytes, "transaction wraps"
            out.append((off, seq, body))
            lsn += (32 + body + 63) // 64 * 64
            seq += 1

    def reseal_tx(self, off, body):
        self._reseal(off, 32 + body, 4)
