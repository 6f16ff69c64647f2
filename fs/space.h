// fs/space.h: block allocation inside transactions. Joins the DRAM free-run index
// (mm::BlockAllocator) with the on-media free-space bitmap: an allocation sets bits in
// the transaction and is undone if the transaction aborts; a free clears bits and gives
// the blocks back to the index only after the transaction commits. Thread-safe.
#pragma once

#include <vector>

#include "fs/format.h"
#include "fs/journal.h"
#include "mm/allocator.h"
#include "mm/region.h"

namespace pmemfuse::fs {

class Space {
 public:
  Space(mm::Region& region, const DiskSuper& sb);
  // Verifies every bitmap block and builds the free-run index.
  Status load();
  Result<std::vector<mm::Run>> alloc(Tx& tx, uint64_t n, uint64_t goal);
  Result<mm::Run> alloc_contig(Tx& tx, uint64_t n, uint64_t align);
  void free(Tx& tx, mm::Run r);
  uint64_t free_blocks() const { return alloc_.free_blocks(); }
  uint64_t count_fits(uint64_t n, uint64_t align) const { return alloc_.count_fits(n, align); }
  uint64_t total_blocks() const { return block_count_; }
  // Reads bit b of the on-media bitmap (fsck).
  bool bit(uint64_t b) const;

 private:
  mm::Region& region_;
  uint64_t bitmap_start_;
  uint64_t bitmap_blocks_;
  uint64_t block_count_;
  mm::BlockAllocator alloc_;
};

}  // namespace pmemfuse::fs
