// fs/space.h: block allocation inside transactions. Joins the DRAM free-run index
// (mm::BlockAllocator) with the on-media free-space bitmap: an allocation sets bits in
// the transaction and is undone if the transaction aborts; a free clears bits and gives
// the blocks back to the index only after the transaction commits. Thread-safe.
#pragma once

#include <atomic>
#include <vector>

#include "fs/format.h"
#include "fs/journal.h"
#include "fs/progress.h"
#include "mm/allocator.h"
#include "mm/region.h"

namespace pmemfuse::fs {

class Space {
 public:
  Space(mm::Region& region, const DiskSuper& sb);
  // Verifies every bitmap block and builds the free-run index.
  Status load(const Progress& progress = {});
  // Fails with kNoSpace where it would take reserved blocks, unless it is writeback
  // allocating for data it reserved for (from_reserve).
  Result<std::vector<mm::Run>> alloc(Tx& tx, uint64_t n, uint64_t goal, bool from_reserve = false);
  Result<mm::Run> alloc_contig(Tx& tx, uint64_t n, uint64_t align);
  void free(Tx& tx, mm::Run r);
  uint64_t free_blocks() const { return alloc_.free_blocks(); }
  // Buffered writes reserve a block for each cached page not yet on media, so writeback
  // cannot run out of space for data already acknowledged. kReserveSlack blocks stay
  // unreservable for the metadata writeback needs.
  bool reserve(uint64_t n);
  void unreserve(uint64_t n);
  // Free blocks not reserved: what other allocations may take.
  uint64_t available() const;
  // What buffered writes may still reserve (available less the slack): statfs's free.
  uint64_t reservable() const;
  uint64_t count_fits(uint64_t n, uint64_t align) const { return alloc_.count_fits(n, align); }
  uint64_t total_blocks() const { return block_count_; }
  // Reads bit b of the on-media bitmap (fsck).
  bool bit(uint64_t b) const;

 private:
  mm::Region& region_;
  uint64_t bitmap_start_;
  uint64_t bitmap_blocks_;
  uint64_t block_count_;
  uint64_t slack_;
  mm::BlockAllocator alloc_;
  std::atomic<uint64_t> reserved_{0};
};

}  // namespace pmemfuse::fs
