// fs/dir.h: directories. On media: blocks of variable-length records (format.h) mapped
// through the directory's extent map; entries never move, so a record's byte position
// (block index * kBlockSize + offset) is a stable readdir cookie across inserts and
// deletes. In DRAM: a hash index name -> position and per-block free space, built when
// the directory is loaded, so lookup and insert stay O(1) with millions of entries.
// Callers hold the directory inode's lock (exclusively for changes).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "fs/bmap.h"

namespace pmemfuse::fs {

struct DirEntry {
  uint64_t ino = 0;
  uint8_t type = 0;   // DT_*
  uint64_t pos = 0;   // stable position of the record
};

class Directory {
 public:
  // Verifies every block and builds the index.
  static Result<std::unique_ptr<Directory>> load(const mm::Region& region, uint64_t ino,
                                                 const ExtentMap& map, uint64_t nblocks);
  std::optional<DirEntry> find(const mm::Region& region, const ExtentMap& map,
                               std::string_view name) const;
  // Adds name -> ino; grows the directory by a block when no block has room.
  Status add(Tx& tx, Space& space, uint64_t dir_ino, DiskInode& d, ExtentMap& map,
             std::string_view name, uint64_t ino, uint8_t type);
  void remove(Tx& tx, const ExtentMap& map, const DirEntry& e, std::string_view name);
  // Points an existing entry at another inode (rename over an existing name).
  void retarget(Tx& tx, const ExtentMap& map, const DirEntry& e, uint64_t ino, uint8_t type);
  // Formats blk as block lblk of directory owner holding no entries (not sealed).
  static void init_block(uint8_t* blk, uint64_t owner, uint64_t lblk);
  // Calls fn(name, entry, next_cookie) for entries at positions >= from, in position
  // order, until fn returns false.
  void list(const mm::Region& region, const ExtentMap& map, uint64_t from,
            const std::function<bool(std::string_view, const DirEntry&, uint64_t)>& fn) const;
  uint64_t blocks() const { return max_free_.size(); }

 private:
  static uint64_t hash(std::string_view name);
  static uint64_t pblk(const ExtentMap& map, uint64_t lblk);
  void account(uint64_t lblk, const uint8_t* blk);

  std::unordered_multimap<uint64_t, uint64_t> by_hash_;  // name hash -> position
  std::vector<uint16_t> max_free_;  // per block: largest record that fits
  std::set<uint64_t> roomy_;        // blocks that fit a record of any name length
};

}  // namespace pmemfuse::fs
