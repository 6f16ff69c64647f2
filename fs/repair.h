// fs/repair.h: fsck's repair (fsck.pmemfuse -y, -p). It acts on the findings of
// check_image (fs/check.h) and works in passes: each pass repairs one class of problem
// through the journal, then the image is checked again, until the check is clean or a
// pass changes nothing. What each class of problem becomes is in docs/fsck.md.
//
// Crash safety: every change is a journal transaction that leaves an image the checker
// can read; a crash part-way through leaves some repairs done and the rest still found
// by the next fsck run, which finishes the job. The one direct write, the primary
// superblock copied from the verified backup, is fenced; a torn copy fails its crc and
// the next run copies it again.
//
// Threading: one caller; nothing else may use the region meanwhile (fsck holds the
// device's exclusive lock).
#pragma once

#include <string>
#include <vector>

#include "fs/check.h"

namespace pmemfuse::fs {

struct RepairOptions {
  // Preen (fsck -p): repair only what loses nothing. If the image needs a repair that
  // discards something (a damaged inode, directory block or xattr set), change nothing
  // beyond the superblock and set RepairResult::refused, for a human to run -y.
  bool preen = false;
  Progress progress;  // each check pass's
};

struct RepairResult {
  CheckReport first;                 // the check before any repair
  CheckReport last;                  // the check after the last pass
  std::vector<std::string> actions;  // one line per change made
  bool refused = false;              // preen: the image needs fsck -y
};

// Fails only when the image cannot be checked or a journal commit fails; problems left
// unrepaired are in result.last.
Result<RepairResult> repair_image(mm::Region& region, const RepairOptions& o);

}  // namespace pmemfuse::fs
