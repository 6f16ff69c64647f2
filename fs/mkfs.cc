// fs/mkfs.cc: writes an empty filesystem. Layout, in blocks: superblock, inode table
// index, orphan table, journal, free-space bitmap, then free space holding the first
// inode-table chunk on a 2 MiB boundary; the backup superblock is the last block.
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <functional>
#include <random>

#include "fs/filesystem.h"
#include "fs/verify.h"

namespace pmemfuse::fs {
namespace {

int64_t now_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

constexpr uint64_t kPiece = 4096;  // blocks stored between progress reports: 16 MiB

// Blocks [first, first + n) zeroed, in pieces; step(blocks) after each.
void zero_blocks(mm::Region& region, uint64_t first, uint64_t n, const std::function<void(uint64_t)>& step) {
  for (uint64_t b = 0; b < n; b += kPiece) {
    uint64_t k = std::min(kPiece, n - b);
    region.zero((first + b) * kBlockSize, k * kBlockSize);
    step(k);
  }
}

void write_bitmap(mm::Region& region, uint64_t start, uint64_t blocks, uint64_t nbits,
                  const std::function<void(uint64_t)>& step) {
  uint8_t blk[kBlockSize];
  for (uint64_t i = 0; i < blocks; i++) {
    if (i % kPiece == kPiece - 1) step(kPiece);
    std::memset(blk, 0, sizeof blk);
    DiskBitmapHeader h{kBitmapMagic, 0, i, {}};
    std::memcpy(blk, &h, sizeof h);
    seal_block(blk);
    region.write((start + i) * kBlockSize, blk, kBlockSize);
  }
  // Bits past the end stand for blocks that do not exist: never free.
  uint64_t cap = blocks * kBitsPerBitmapBlock;
  if (cap > nbits) apply_bits(region, start, nbits, cap - nbits, true);
}

}  // namespace

Status mkfs(mm::Region& region, const MkfsOptions& o) {
  uint64_t bc = region.size() / kBlockSize;
  if (bc < kMinBlocks) {
    return make_error(Errc::kInvalid, region.path() + ": " + std::to_string(region.size()) +
                                          " bytes is too small (minimum 16 MiB)");
  }
  DiskSuper sb{};
  sb.magic = kSuperMagic;
  sb.version = kFormatVersion;
  sb.block_size = kBlockSize;
  sb.block_count = bc;
  sb.itable_index = 1;
  sb.orphan_start = 2;
  sb.orphan_blocks = kOrphanBlocks;
  sb.journal_start = sb.orphan_start + sb.orphan_blocks;
  sb.journal_blocks = o.journal_blocks ? o.journal_blocks : std::clamp<uint64_t>(bc / 64, 1025, 16384);
  sb.bitmap_start = sb.journal_start + sb.journal_blocks;
  sb.bitmap_blocks = (bc + kBitsPerBitmapBlock - 1) / kBitsPerBitmapBlock;
  uint64_t meta_end = sb.bitmap_start + sb.bitmap_blocks;
  uint64_t chunk = (meta_end + kChunkBlocks - 1) / kChunkBlocks * kChunkBlocks;
  sb.backup_block = bc - 1;
  if (chunk + kChunkBlocks >= sb.backup_block) {
    return make_error(Errc::kInvalid, region.path() + ": too small for the metadata (" +
                                          std::to_string(meta_end) + " blocks) and one inode chunk");
  }
  sb.chunk_blocks = kChunkBlocks;
  sb.inodes_per_chunk = kInodesPerChunk;
  sb.root_ino = 1;
  sb.devdax_align = region.align();
  sb.mkfs_time_ns = now_ns();
  sb.state = kStateClean;
  std::random_device rd;
  for (auto& b : sb.uuid) b = uint8_t(rd());
  std::strncpy(sb.label, o.label.c_str(), sizeof sb.label - 1);

  // Large devices take seconds (a 1 TiB image file: about 8): the metadata is zeroed and
  // the bitmap written in pieces, with progress between them.
  ProgressPhase ph(o.progress, "writing metadata", meta_end + sb.bitmap_blocks);
  uint64_t done = 0;
  auto step = [&](uint64_t n) { ph.set(done += n); };
  zero_blocks(region, 0, meta_end, step);
  Journal::format(region, sb.journal_start, sb.journal_blocks);
  write_bitmap(region, sb.bitmap_start, sb.bitmap_blocks, bc, step);
  apply_bits(region, sb.bitmap_start, 0, meta_end, true);
  apply_bits(region, sb.bitmap_start, chunk, kChunkBlocks, true);
  apply_bits(region, sb.bitmap_start, sb.backup_block, 1, true);

  region.zero(chunk * kBlockSize, kChunkBlocks * kBlockSize);
  write_bitmap(region, chunk, 1, kBitsPerBitmapBlock, [](uint64_t) {});
  apply_bits(region, chunk, 0, 1, true);  // slot 0: the root, inode 1

  uint8_t blk[kBlockSize] = {};
  DiskItableIndex idx{};
  idx.magic = kItableMagic;
  idx.nchunks = 1;
  idx.chunks[0] = chunk;
  std::memcpy(blk, &idx, sizeof idx);
  seal_block(blk);
  region.write(sb.itable_index * kBlockSize, blk, kBlockSize);

  DiskInode root{};
  root.mode = S_IFDIR | 0755;
  root.uid = o.root_uid;
  root.gid = o.root_gid;
  root.nlink = 2;
  root.generation = 1;
  root.atime_ns = root.mtime_ns = root.ctime_ns = root.btime_ns = sb.mkfs_time_ns;
  root.parent = 1;
  seal_inode(root);
  region.write((chunk + 1) * kBlockSize, &root, sizeof root);

  sb.crc = super_crc(sb);
  region.fence();  // everything else is durable before the superblock names it
  region.write(sb.backup_block * kBlockSize, &sb, sizeof sb);
  region.write(0, &sb, sizeof sb);
  region.fence();
  return {};
}

}  // namespace pmemfuse::fs
