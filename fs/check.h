// fs/check.h: the whole-image consistency check behind fsck.pmemfuse. Replays the
// journal first (into the region it is given: callers pass a private copy for -n), then
// verifies every structure with the same verifiers as mount, and cross-checks: every
// block owned once, the bitmap agrees with ownership, link counts, sizes against
// extents, directory entries against live inodes, the orphan table.
#pragma once

#include <string>
#include <vector>

#include "mm/region.h"
#include "mm/result.h"

namespace pmemfuse::fs {

struct CheckReport {
  std::vector<std::string> problems;  // one line each, naming the object
  uint64_t problem_count = 0;         // problems may be capped; this is not
  uint64_t replayed = 0;              // journal transactions replayed first
  uint64_t inodes = 0;
  uint64_t directories = 0;
  uint64_t blocks_used = 0;
  uint64_t blocks_total = 0;
  bool primary_super_bad = false;     // the backup superblock was used
  uint64_t backup_block = 0;          // where the valid backup was found
};

// Fails (kInvalid/kCorrupt/kNotSupported) only when the image cannot be checked at all.
Result<CheckReport> check_image(mm::Region& region);

// Repair: copies the valid backup superblock (report.backup_block) over the primary.
void restore_primary_super(mm::Region& region, const CheckReport& report);

}  // namespace pmemfuse::fs
