// fs/itable.cc: slot allocation, chunk growth, inode I/O.
#include "fs/itable.h"

#include <cstring>
#include <string>

#include "fs/verify.h"

namespace pmemfuse::fs {

InodeTable::InodeTable(mm::Region& region, Space& space, Journal& journal, const DiskSuper& sb)
    : region_(region),
      space_(space),
      journal_(journal),
      index_bno_(sb.itable_index),
      block_count_(sb.block_count) {}

Status InodeTable::load() {
  DiskSuper sb{};
  sb.chunk_blocks = kChunkBlocks;
  sb.block_count = block_count_;
  const uint8_t* blk = region_.at(index_bno_ * kBlockSize);
  PF_CHECK(verify_itable_index(blk, index_bno_, sb));
  DiskItableIndex x;
  std::memcpy(&x, blk, sizeof x);
  std::lock_guard lk(mu_);
  chunks_.clear();
  used_ = 0;
  for (uint32_t i = 0; i < x.nchunks; i++) {
    const uint8_t* bm = region_.at(x.chunks[i] * kBlockSize);
    PF_CHECK(verify_bitmap_block(bm, x.chunks[i], i, "inode chunk bitmap"));
    Chunk c{x.chunks[i], std::vector<uint64_t>((kInodesPerChunk + 63) / 64), 0};
    std::memcpy(c.used.data(), bm + sizeof(DiskBitmapHeader), kInodesPerChunk / 8);
    for (uint64_t w : c.used) c.nused += __builtin_popcountll(w);
    used_ += c.nused;
    chunks_.push_back(std::move(c));
  }
  return {};
}

bool InodeTable::valid(uint64_t ino) const {
  std::lock_guard lk(mu_);
  return ino >= 1 && (ino - 1) / kInodesPerChunk < chunks_.size();
}

uint64_t InodeTable::offset(uint64_t ino) const {
  std::lock_guard lk(mu_);
  const Chunk& c = chunks_[(ino - 1) / kInodesPerChunk];
  return (c.bno + 1) * kBlockSize + ((ino - 1) % kInodesPerChunk) * kInodeSize;
}

bool InodeTable::in_use(uint64_t ino) const {
  std::lock_guard lk(mu_);
  uint64_t ci = (ino - 1) / kInodesPerChunk, slot = (ino - 1) % kInodesPerChunk;
  return ci < chunks_.size() && (chunks_[ci].used[slot / 64] >> (slot % 64)) & 1;
}

Result<DiskInode> InodeTable::read(uint64_t ino) const {
  if (!valid(ino) || !in_use(ino)) {
    return make_error(Errc::kNotFound, "inode " + std::to_string(ino) + " is not in use");
  }
  DiskInode d;
  std::memcpy(&d, region_.at(offset(ino)), sizeof d);
  PF_CHECK(verify_inode(d, ino, block_count_));
  return d;
}

void InodeTable::write(Tx& tx, uint64_t ino, DiskInode& d) const {
  seal_inode(d);
  tx.put(offset(ino), d);
}

bool InodeTable::take_slot_locked(uint64_t* ino) {
  for (uint32_t ci = hint_; ci < chunks_.size(); ci++) {
    Chunk& c = chunks_[ci];
    if (c.nused == kInodesPerChunk) {
      if (ci == hint_) hint_++;
      continue;
    }
    for (uint32_t w = 0; w < c.used.size(); w++) {
      if (c.used[w] == ~0ull) continue;
      uint32_t slot = w * 64 + __builtin_ctzll(~c.used[w]);
      if (slot >= kInodesPerChunk) break;
      c.used[w] |= 1ull << (slot % 64);
      c.nused++;
      used_++;
      *ino = uint64_t(ci) * kInodesPerChunk + slot + 1;
      return true;
    }
  }
  return false;
}

Status InodeTable::grow_locked() {
  if (chunks_.size() >= kMaxChunks) {
    return make_error(Errc::kNoSpace, "inode table: all " + std::to_string(kMaxChunks) + " chunks in use");
  }
  Tx tx(region_);
  auto run = space_.alloc_contig(tx, kChunkBlocks, kChunkBlocks);
  if (!run) run = space_.alloc_contig(tx, kChunkBlocks, 1);
  if (!run) return make_error(Errc::kNoSpace, "inode table: no free run of 2 MiB for a new chunk");
  // The chunk is unreachable until the index names it, so it is initialized directly.
  uint32_t index = uint32_t(chunks_.size());
  region_.zero(run->start * kBlockSize, kChunkBlocks * kBlockSize);
  uint8_t bm[kBlockSize] = {};
  DiskBitmapHeader h{kBitmapMagic, 0, index, {}};
  std::memcpy(bm, &h, sizeof h);
  seal_block(bm);
  region_.write(run->start * kBlockSize, bm, kBlockSize);
  uint8_t* x = tx.stage(index_bno_);
  DiskItableIndex idx;
  std::memcpy(&idx, x, sizeof idx);
  idx.chunks[idx.nchunks++] = run->start;
  std::memcpy(x, &idx, sizeof idx);
  seal_block(x);
  PF_CHECK(journal_.commit(tx));
  chunks_.push_back(Chunk{run->start, std::vector<uint64_t>((kInodesPerChunk + 63) / 64), 0});
  return {};
}

Result<std::pair<uint64_t, uint32_t>> InodeTable::alloc(Tx& tx) {
  uint64_t ino = 0;
  {
    std::lock_guard lk(mu_);
    if (!take_slot_locked(&ino)) {
      PF_CHECK(grow_locked());
      take_slot_locked(&ino);
    }
  }
  uint64_t slot = (ino - 1) % kInodesPerChunk;
  tx.set_bits(chunk_block(uint32_t((ino - 1) / kInodesPerChunk)), slot, 1);
  tx.on_abort([this, ino] {
    std::lock_guard lk(mu_);
    uint64_t ci = (ino - 1) / kInodesPerChunk, s = (ino - 1) % kInodesPerChunk;
    chunks_[ci].used[s / 64] &= ~(1ull << (s % 64));
    chunks_[ci].nused--;
    used_--;
    hint_ = std::min<uint32_t>(hint_, uint32_t(ci));
  });
  DiskInode old;
  std::memcpy(&old, region_.at(offset(ino)), sizeof old);
  // A slot freed earlier keeps its generation; a never-used slot is all zeros.
  uint32_t gen = old.crc == inode_crc(old) && old.crc != 0 ? old.generation + 1 : 1;
  return std::make_pair(ino, gen);
}

void InodeTable::free(Tx& tx, uint64_t ino) {
  uint32_t ci = uint32_t((ino - 1) / kInodesPerChunk);
  uint64_t slot = (ino - 1) % kInodesPerChunk;
  tx.clear_bits(chunk_block(ci), slot, 1);
  tx.on_commit([this, ci, slot] {
    std::lock_guard lk(mu_);
    chunks_[ci].used[slot / 64] &= ~(1ull << (slot % 64));
    chunks_[ci].nused--;
    used_--;
    hint_ = std::min(hint_, ci);
  });
}

uint64_t InodeTable::used() const {
  std::lock_guard lk(mu_);
  return used_;
}

uint64_t InodeTable::capacity() const {
  std::lock_guard lk(mu_);
  return uint64_t(chunks_.size()) * kInodesPerChunk;
}

uint32_t InodeTable::nchunks() const {
  std::lock_guard lk(mu_);
  return uint32_t(chunks_.size());
}

uint64_t InodeTable::chunk_block(uint32_t i) const {
  std::lock_guard lk(mu_);
  return chunks_[i].bno;
}

}  // namespace pmemfuse::fs
