// mm/allocator.h: the page-sized block allocator's DRAM side. The free-space bitmap on
// media is owned by fs/ (changed only inside journal transactions); this index of free
// runs is built from it at mount and answers allocations. A block freed by a transaction
// is given back here only after that transaction commits, so it is never handed out
// while its freeing could still be rolled back. Thread-safe (one internal mutex).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "mm/result.h"

namespace pmemfuse::mm {

struct Run {
  uint64_t start = 0;  // first block
  uint64_t len = 0;    // blocks
  bool operator==(const Run&) const = default;
};

class BlockAllocator {
 public:
  // Large requests (at least this many blocks) start on a boundary of this many blocks
  // when free space allows: 2 MiB, the huge-page and device-dax mapping unit.
  static constexpr uint64_t kHugeBlocks = 512;

  // Declares a run free; used while building the index and to return blocks.
  void add_free(Run r);
  // Allocates n blocks, preferring one run that starts at goal (so a file stays
  // contiguous), else runs after it. All or nothing: kNoSpace leaves the index unchanged.
  Result<std::vector<Run>> alloc(uint64_t n, uint64_t goal);
  // Allocates exactly one run of n blocks starting on an align-block boundary.
  Result<Run> alloc_contig(uint64_t n, uint64_t align);
  // Returns runs to the index (after the transaction that freed them committed).
  void free(const std::vector<Run>& runs);
  uint64_t free_blocks() const;
  // How many runs of n contiguous blocks, each starting on an align boundary, could be
  // carved from free space.
  uint64_t count_fits(uint64_t n, uint64_t align) const;
  bool is_free(uint64_t block) const;

 private:
  void take_locked(uint64_t start, uint64_t len);
  void add_locked(Run r);
  bool take_aligned_locked(uint64_t n, uint64_t align, Run* out);

  mutable std::mutex mu_;
  std::map<uint64_t, uint64_t> runs_;  // start -> length; guarded by mu_
  uint64_t free_ = 0;                  // guarded by mu_
};

}  // namespace pmemfuse::mm
