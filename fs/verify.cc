// fs/verify.cc: structural checks of every metadata type.
#include "fs/verify.h"

#include <sys/stat.h>

#include <cstring>

#include "fs/journal.h"
#include "mm/crc32c.h"

namespace pmemfuse::fs {
namespace {

std::string blk_name(const char* what, uint64_t bno) {
  return std::string(what) + " (block " + std::to_string(bno) + ")";
}

bool valid_type(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: case S_IFDIR: case S_IFLNK: case S_IFCHR: case S_IFBLK: case S_IFIFO:
    case S_IFSOCK:
      return true;
  }
  return false;
}

}  // namespace

uint32_t super_crc(const DiskSuper& sb) {
  DiskSuper c = sb;
  c.crc = 0;
  return mm::crc32c(0, &c, sizeof c);
}

uint32_t inode_crc(const DiskInode& d) {
  DiskInode c = d;
  c.crc = 0;
  return mm::crc32c(0, &c, sizeof c);
}

void seal_inode(DiskInode& d) { d.crc = inode_crc(d); }

uint32_t orphan_slot_crc(uint64_t ino, uint64_t slot) {
  uint64_t v[2] = {ino, slot};
  return mm::crc32c(0, v, sizeof v);
}

Status verify_super(const DiskSuper& sb, uint64_t device_blocks, const char* which) {
  std::string w = which;
  if (sb.magic != kSuperMagic) return corrupt(w + ": bad magic (not a pmemfuse image)");
  if (sb.crc != super_crc(sb)) return corrupt(w + ": crc mismatch");
  if (sb.version != kFormatVersion) {
    return corrupt(w + ": format version " + std::to_string(sb.version) + " not supported");
  }
  if (sb.block_size != kBlockSize) return corrupt(w + ": block_size " + std::to_string(sb.block_size));
  if (sb.block_count > device_blocks || sb.block_count < kMinBlocks) {
    return corrupt(w + ": block_count " + std::to_string(sb.block_count) + " but the device has " +
                   std::to_string(device_blocks) + " blocks");
  }
  auto inside = [&](uint64_t start, uint64_t n) { return start >= 1 && n <= sb.block_count && start <= sb.block_count - n; };
  if (!inside(sb.journal_start, sb.journal_blocks) || sb.journal_blocks < 16) return corrupt(w + ": journal extent out of range");
  if (!inside(sb.bitmap_start, sb.bitmap_blocks) ||
      sb.bitmap_blocks * kBitsPerBitmapBlock < sb.block_count) {
    return corrupt(w + ": bitmap extent out of range");
  }
  if (!inside(sb.itable_index, 1)) return corrupt(w + ": itable_index out of range");
  if (!inside(sb.orphan_start, sb.orphan_blocks) || sb.orphan_blocks == 0) {
    return corrupt(w + ": orphan table extent out of range");
  }
  if (sb.devdax_align < kBlockSize || (sb.devdax_align & (sb.devdax_align - 1))) {
    return corrupt(w + ": devdax_align " + std::to_string(sb.devdax_align) + " is not a power of two >= 4096");
  }
  if (sb.backup_block != sb.block_count - 1) return corrupt(w + ": backup_block mismatch");
  if (sb.chunk_blocks != kChunkBlocks || sb.inodes_per_chunk != kInodesPerChunk) {
    return corrupt(w + ": inode chunk geometry");
  }
  if (sb.root_ino != 1) return corrupt(w + ": root_ino " + std::to_string(sb.root_ino));
  if (sb.state != kStateClean && sb.state != kStateMounted) return corrupt(w + ": state field");
  return {};
}

Result<std::pair<DiskSuper, uint64_t>> find_backup_super(const uint8_t* base, uint64_t device_blocks) {
  for (uint64_t bc = device_blocks; bc >= kMinBlocks && bc + 2048 >= device_blocks; bc--) {
    DiskSuper b;
    std::memcpy(&b, base + (bc - 1) * kBlockSize, sizeof b);
    if (verify_super(b, device_blocks, "backup superblock")) return std::make_pair(b, bc - 1);
  }
  return corrupt("no valid backup superblock");
}

Status verify_bitmap_block(const uint8_t* blk, uint64_t bno, uint64_t index, const char* what) {
  DiskBitmapHeader h;
  std::memcpy(&h, blk, sizeof h);
  if (h.magic != kBitmapMagic) return corrupt(blk_name(what, bno) + ": bad magic");
  if (!block_crc_ok(blk)) return corrupt(blk_name(what, bno) + ": crc mismatch");
  if (h.index != index) return corrupt(blk_name(what, bno) + ": index " + std::to_string(h.index));
  return {};
}

Status verify_itable_index(const uint8_t* blk, uint64_t bno, const DiskSuper& sb) {
  DiskItableIndex x;
  std::memcpy(&x, blk, sizeof x);
  std::string n = blk_name("inode table index", bno);
  if (x.magic != kItableMagic) return corrupt(n + ": bad magic");
  if (!block_crc_ok(blk)) return corrupt(n + ": crc mismatch");
  if (x.nchunks == 0 || x.nchunks > kMaxChunks) return corrupt(n + ": nchunks " + std::to_string(x.nchunks));
  for (uint32_t i = 0; i < x.nchunks; i++) {
    if (x.chunks[i] == 0 || x.chunks[i] + sb.chunk_blocks > sb.block_count) {
      return corrupt(n + ": chunk " + std::to_string(i) + " at block " + std::to_string(x.chunks[i]) + " out of range");
    }
  }
  return {};
}

Status verify_extent(const DiskExtent& e, uint64_t ino, uint64_t block_count, const std::string& where) {
  uint32_t len = e.len_flags & kExtentMaxLen;
  if (len == 0 || e.pblk == 0 || e.pblk >= block_count || len > block_count - e.pblk ||
      uint64_t(e.lblk) + len > kMaxFileBlocks) {
    return corrupt("inode " + std::to_string(ino) + ": " + where + " extent {lblk " +
                   std::to_string(e.lblk) + ", pblk " + std::to_string(e.pblk) + ", len " +
                   std::to_string(len) + "} out of range");
  }
  return {};
}

// Each extent in range, sorted by file block and not overlapping the one before.
static Status verify_extent_list(const DiskExtent* e, uint32_t n, uint64_t ino, uint64_t block_count,
                                 const std::string& where) {
  for (uint32_t i = 0; i < n; i++) {
    PF_CHECK(verify_extent(e[i], ino, block_count, where));
    if (i > 0 && uint64_t(e[i - 1].lblk) + (e[i - 1].len_flags & kExtentMaxLen) > e[i].lblk) {
      return corrupt("inode " + std::to_string(ino) + ": " + where + " extents overlap or are unsorted at " +
                     std::to_string(i));
    }
  }
  return {};
}

Status verify_inode(const DiskInode& d, uint64_t ino, uint64_t block_count) {
  std::string n = "inode " + std::to_string(ino);
  if (d.crc != inode_crc(d)) return corrupt(n + ": crc mismatch");
  if (!valid_type(d.mode)) return corrupt(n + ": mode " + std::to_string(d.mode) + " has no valid type");
  if (d.flags & ~kInodeFlagsKnown) return corrupt(n + ": unknown flags " + std::to_string(d.flags));
  if (d.xattr_inline_len > kInlineXattrBytes) return corrupt(n + ": xattr_inline_len " + std::to_string(d.xattr_inline_len));
  if (d.xattr_block >= block_count) return corrupt(n + ": xattr_block out of range");
  bool chained = d.flags & kInodeChained, inl = d.flags & kInodeInlineData;
  if (chained && inl) return corrupt(n + ": both chained and inline-data flags");
  if (inl && (!S_ISLNK(d.mode) || d.size > kInlineBytes)) return corrupt(n + ": inline data size " + std::to_string(d.size));
  if (chained) {
    if (d.map.chain.head == 0 || d.map.chain.head >= block_count || d.map.chain.nleaves == 0) {
      return corrupt(n + ": extent chain head out of range");
    }
  } else if (!inl) {
    if (d.nextents > kInlineExtents) return corrupt(n + ": nextents " + std::to_string(d.nextents) + " inline");
    PF_CHECK(verify_extent_list(d.map.extents, d.nextents, ino, block_count, "inline"));
  }
  return {};
}

// The header every per-inode metadata block (leaf, directory, xattr) starts with:
// magic at byte 0, crc at 4, owning inode at 8.
static Status verify_owned_block(const uint8_t* blk, uint32_t magic, uint64_t owner, const std::string& n) {
  uint32_t m;
  uint64_t o;
  std::memcpy(&m, blk, sizeof m);
  std::memcpy(&o, blk + 8, sizeof o);
  if (m != magic) return corrupt(n + ": bad magic");
  if (!block_crc_ok(blk)) return corrupt(n + ": crc mismatch");
  if (o != owner) return corrupt(n + ": owner " + std::to_string(o));
  return {};
}

Status verify_leaf(const uint8_t* blk, uint64_t bno, uint64_t owner, uint64_t block_count) {
  DiskExtentLeaf l;
  std::memcpy(&l, blk, sizeof l);
  std::string n = blk_name("extent leaf", bno) + " of inode " + std::to_string(owner);
  PF_CHECK(verify_owned_block(blk, kLeafMagic, owner, n));
  if (l.count == 0 || l.count > kLeafExtents) return corrupt(n + ": count " + std::to_string(l.count));
  if (l.next >= block_count) return corrupt(n + ": next out of range");
  return verify_extent_list(l.extents, l.count, owner, block_count, "leaf " + std::to_string(bno));
}

Status verify_dir_block(const uint8_t* blk, uint64_t bno, uint64_t owner, uint64_t lblk) {
  DiskDirHeader h;
  std::memcpy(&h, blk, sizeof h);
  std::string n = blk_name("dir block", bno) + " of inode " + std::to_string(owner);
  PF_CHECK(verify_owned_block(blk, kDirMagic, owner, n));
  if (h.lblk != lblk) return corrupt(n + ": lblk " + std::to_string(h.lblk) + ", expected " + std::to_string(lblk));
  uint32_t off = sizeof(DiskDirHeader);
  while (off < kBlockSize) {
    DiskDirent e;
    if (off + sizeof e > kBlockSize) return corrupt(n + ": record at " + std::to_string(off) + " truncated");
    std::memcpy(&e, blk + off, sizeof e);
    std::string at = n + ": entry at " + std::to_string(off);
    if (e.rec_len < sizeof e || e.rec_len % 8 || off + e.rec_len > kBlockSize) {
      return corrupt(at + " rec_len " + std::to_string(e.rec_len) + " exceeds block");
    }
    if (e.ino != 0) {
      if (e.name_len == 0 || dirent_size(e.name_len) > e.rec_len) {
        return corrupt(at + " name_len " + std::to_string(e.name_len) + " does not fit");
      }
      const char* name = reinterpret_cast<const char*>(blk + off + sizeof e);
      if (std::memchr(name, '/', e.name_len) || std::memchr(name, 0, e.name_len)) {
        return corrupt(at + " name contains '/' or NUL");
      }
    }
    off += e.rec_len;
  }
  return {};
}

Status verify_xattr_entries(const uint8_t* p, uint32_t len, uint64_t owner, const std::string& where) {
  uint32_t off = 0;
  while (off < len) {
    DiskXattrEntry e;
    std::string n = "inode " + std::to_string(owner) + ": " + where + " xattr at " + std::to_string(off);
    if (off + sizeof e > len) return corrupt(n + " truncated");
    std::memcpy(&e, p + off, sizeof e);
    if (e.name_len == 0 || off + sizeof e + e.name_len + e.value_len > len) {
      return corrupt(n + " name_len/value_len exceed the area");
    }
    off += sizeof e + e.name_len + e.value_len;
  }
  return {};
}

Status verify_xattr_block(const uint8_t* blk, uint64_t bno, uint64_t owner) {
  DiskXattrHeader h;
  std::memcpy(&h, blk, sizeof h);
  std::string n = blk_name("xattr block", bno) + " of inode " + std::to_string(owner);
  PF_CHECK(verify_owned_block(blk, kXattrMagic, owner, n));
  if (h.used > kXattrBlockBytes) return corrupt(n + ": used " + std::to_string(h.used));
  return verify_xattr_entries(blk + sizeof h, h.used, owner, blk_name("xattr block", bno));
}

}  // namespace pmemfuse::fs
