// fs/check.h: the whole-image consistency check behind fsck.pmemfuse. Replays the
// journal first (into the region it is given: callers pass a private copy for -n), then
// verifies every structure with the same verifiers as mount, and cross-checks: every
// block owned once, the bitmap agrees with ownership, link counts, sizes against
// extents, directory entries against live inodes, reachability from the root, the
// orphan table.
//
// Besides one line of text per problem, the report lists what it found as data (the
// findings below), each saying what is wrong and what would be right, so that repair
// (fs/repair.h) acts on the checker's conclusions instead of re-deriving them. The
// findings describe the image as it was checked; after any change, check again.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fs/progress.h"
#include "mm/allocator.h"
#include "mm/region.h"
#include "mm/result.h"

namespace pmemfuse::fs {

// One claim on a block, as the check met them: filesystem metadata first (the metadata
// area, the backup superblock, inode chunks), then inodes in number order.
struct BlockOwner {
  enum class Kind : uint8_t { kMetadata, kLeaf, kXattr, kDirBlock, kData };
  Kind kind = Kind::kMetadata;
  uint64_t ino = 0;   // 0 for filesystem metadata
  uint64_t lblk = 0;  // kDirBlock, kData: the file block mapped to the block
  bool operator==(const BlockOwner&) const = default;
};

struct SharedBlock {
  uint64_t block = 0;
  std::vector<BlockOwner> owners;  // two or more, in the order of the check
};

// A directory entry to remove or correct.
struct EntryFinding {
  uint64_t dir = 0;
  std::string name;
  uint64_t ino = 0;        // what the entry names
  uint8_t want_type = 0;   // bad_types: the DT_* the target's mode calls for
};

// An inode field that disagrees with what the rest of the image says.
struct FieldFinding {
  enum class Field : uint8_t { kNlink, kBlocks, kEntries, kSize, kParent };
  uint64_t ino = 0;
  Field field = Field::kNlink;
  uint64_t want = 0;
  bool operator==(const FieldFinding&) const = default;
};

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

  // Findings. A problem without one (a claim beyond the device) has no repair; a
  // damaged journal, inode table index or chunk slot bitmap stops the check instead.
  std::vector<mm::Run> leaked;                 // marked used in the bitmap, owned by nothing
  std::vector<mm::Run> unmarked;               // owned, marked free in the bitmap
  std::vector<uint64_t> bad_bitmap_blocks;     // index in the bitmap; fail verification
  std::vector<uint64_t> damaged_inodes;        // in use but unusable: inode or extent map fails
                                               // verification, a symlink without its target,
                                               // a special file with blocks, a root that is
                                               // not a directory
  std::vector<uint64_t> damaged_dirs;          // inode fine, a directory block is not
  std::vector<uint64_t> damaged_xattrs;        // inode fine, its xattrs are not
  std::vector<SharedBlock> shared;             // blocks claimed more than once
  std::vector<EntryFinding> dangling;          // entries naming a free or damaged inode
  std::vector<EntryFinding> extra_dir_links;   // entries naming the root, or a directory
                                               // that another entry already names
  std::vector<EntryFinding> bad_types;         // entry type disagrees with the target
  std::vector<uint64_t> unreachable;           // to reconnect: tops of what the root does not reach
  std::vector<FieldFinding> fields;            // nlink, blocks, entries, size, parent
  std::vector<uint64_t> bad_orphan_slots;      // slots to clear: bad crc, or naming an inode
                                               // that is free, damaged or not its orphan
  std::vector<uint64_t> unregistered_orphans;  // flagged orphan, not in the table
};

// Fails (kInvalid/kCorrupt/kNotSupported) only when the image cannot be checked at all.
Result<CheckReport> check_image(mm::Region& region, const Progress& progress = {});

// Repair: copies the valid backup superblock (report.backup_block) over the primary.
void restore_primary_super(mm::Region& region, const CheckReport& report);

}  // namespace pmemfuse::fs
