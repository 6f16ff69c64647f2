// fs/bmap.h: the block map of one inode: file block -> device block, as extents. Up to
// kInlineExtents live in the inode; beyond that, in a chain of leaf blocks that each cover
// a key range of file blocks, so a change rewrites only the leaves around it. The map is
// held in DRAM (an ordered map) and loaded with the inode. Callers hold the inode's lock
// exclusively for changes; changes are staged in the caller's transaction.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "fs/format.h"
#include "fs/journal.h"
#include "fs/space.h"

namespace pmemfuse::fs {

struct Extent {
  uint64_t lblk = 0;   // first file block
  uint64_t len = 0;    // blocks
  uint64_t pblk = 0;   // first device block
  bool unwritten = false;  // allocated, reads as zeros (fallocate)
  uint64_t end() const { return lblk + len; }
  bool operator==(const Extent&) const = default;
};

class ExtentMap {
 public:
  static Result<ExtentMap> load(const mm::Region& region, uint64_t ino, const DiskInode& d,
                                uint64_t block_count);

  // The extent containing lblk, else the first after it; nullptr when there is none.
  const Extent* find(uint64_t lblk) const;
  const std::map<uint64_t, Extent>& extents() const { return ext_; }
  const std::vector<uint64_t>& leaves() const { return leaves_; }
  // Device block after the last block mapped before lblk: the allocation goal there.
  uint64_t goal(uint64_t lblk) const;

  // Maps [lo, hi) to `add` (extents inside the range, non-overlapping); the rest of the
  // range becomes a hole. Returns the device runs that were mapped in [lo, hi) and no
  // longer are: the caller frees them in tx. Updates d (inline extents or chain, and
  // blocks for leaves) and stages leaves in tx. On error nothing has changed.
  Result<std::vector<mm::Run>> replace(Tx& tx, Space& space, uint64_t ino, DiskInode& d,
                                       uint64_t lo, uint64_t hi, std::vector<Extent> add);

 private:
  struct Window {
    std::vector<uint64_t> old_keys;
    std::vector<Extent> fresh;
    std::vector<mm::Run> removed;
  };
  Window plan(uint64_t lo, uint64_t hi, std::vector<Extent> add) const;
  void store_inline(Tx& tx, Space& space, DiskInode& d);
  void build_chain(Tx& tx, uint64_t ino, DiskInode& d, const std::vector<uint64_t>& blocks);
  void repack(Tx& tx, Space& space, uint64_t ino, DiskInode& d, size_t i_lo, size_t i_hi,
              std::vector<uint64_t> fresh_blocks, size_t p);
  static void write_leaf(Tx& tx, uint64_t bno, uint64_t ino, uint64_t next,
                         const std::vector<Extent>& e, size_t from, size_t n);

  std::map<uint64_t, Extent> ext_;
  std::vector<uint64_t> leaves_;     // chain order
  std::vector<uint64_t> leaf_key_;   // leaves_[i] holds keys in [leaf_key_[i], leaf_key_[i+1])
  std::vector<uint32_t> leaf_count_;
};

}  // namespace pmemfuse::fs
