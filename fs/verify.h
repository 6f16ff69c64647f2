// fs/verify.h: one verifier per metadata type, shared by mount, fsck and the tools, so
// they can never disagree about what is valid. Each returns kCorrupt with a message that
// names the structure, the block and the field. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "fs/format.h"
#include "mm/result.h"

namespace pmemfuse::fs {

uint32_t super_crc(const DiskSuper& sb);
uint32_t inode_crc(const DiskInode& d);
// crc of orphan table slot `slot` naming inode ino (format.md §11).
uint32_t orphan_slot_crc(uint64_t ino, uint64_t slot);
void seal_inode(DiskInode& d);

// Geometry and checksum of a superblock copy for a device of device_blocks blocks.
Status verify_super(const DiskSuper& sb, uint64_t device_blocks, const char* which);
// The backup copy, for when the primary fails verification: it sits in the filesystem's
// last block, which may lie up to 2047 blocks before the device's end. Returns the copy
// and its block.
Result<std::pair<DiskSuper, uint64_t>> find_backup_super(const uint8_t* base, uint64_t device_blocks);
Status verify_bitmap_block(const uint8_t* blk, uint64_t bno, uint64_t index, const char* what);
Status verify_itable_index(const uint8_t* blk, uint64_t bno, const DiskSuper& sb);
// An in-use inode: checksum, type, flags, map bounds.
Status verify_inode(const DiskInode& d, uint64_t ino, uint64_t block_count);
Status verify_extent(const DiskExtent& e, uint64_t ino, uint64_t block_count, const std::string& where);
Status verify_leaf(const uint8_t* blk, uint64_t bno, uint64_t owner, uint64_t block_count);
Status verify_dir_block(const uint8_t* blk, uint64_t bno, uint64_t owner, uint64_t lblk);
// Packed xattr entries (inline area or block body).
Status verify_xattr_entries(const uint8_t* p, uint32_t len, uint64_t owner, const std::string& where);
Status verify_xattr_block(const uint8_t* blk, uint64_t bno, uint64_t owner);

inline Error corrupt(const std::string& msg) { return make_error(Errc::kCorrupt, msg); }

}  // namespace pmemfuse::fs
