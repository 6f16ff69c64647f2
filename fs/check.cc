// fs/check.cc: fsck's checker.
#include "fs/check.h"

#include <sys/stat.h>

#include <cstring>
#include <unordered_map>

#include "fs/bmap.h"
#include "fs/dir.h"
#include "fs/format.h"
#include "fs/itable.h"
#include "fs/journal.h"
#include "fs/space.h"
#include "fs/verify.h"
#include "fs/xattr.h"
#include "mm/crc32c.h"

namespace pmemfuse::fs {
namespace {

constexpr size_t kMaxListed = 200;

class Checker {
 public:
  Checker(mm::Region& r, CheckReport& rep) : r_(r), rep_(rep) {}
  Status run();

 private:
  void problem(const std::string& s) {
    rep_.problem_count++;
    if (rep_.problems.size() < kMaxListed) rep_.problems.push_back(s);
  }
  void own(uint64_t start, uint64_t len, const std::string& who);
  Status load_super();
  void check_inode(uint64_t ino);
  void check_dir(uint64_t ino, const DiskInode& d, const ExtentMap& map);
  void check_links();
  void check_orphans();
  void check_bitmap();

  struct Info {
    DiskInode d;
    uint64_t refs = 0;     // directory entries naming it
    uint64_t subdirs = 0;  // directories: entries that are directories
  };
  mm::Region& r_;
  CheckReport& rep_;
  DiskSuper sb_{};
  std::unique_ptr<Journal> journal_;
  std::unique_ptr<Space> space_;
  std::unique_ptr<InodeTable> itable_;
  std::vector<uint64_t> used_;  // ownership bitset
  std::unordered_map<uint64_t, Info> inodes_;
};

void Checker::own(uint64_t start, uint64_t len, const std::string& who) {
  if (start + len > sb_.block_count || start + len < start) {
    problem(who + ": blocks " + std::to_string(start) + "+" + std::to_string(len) + " beyond the device");
    return;
  }
  for (uint64_t b = start; b < start + len; b++) {
    uint64_t& w = used_[b / 64];
    if (w & (1ull << (b % 64))) problem("block " + std::to_string(b) + " owned twice (again by " + who + ")");
    w |= 1ull << (b % 64);
  }
}

Status Checker::load_super() {
  uint64_t dev_blocks = r_.size() / kBlockSize;
  std::memcpy(&sb_, r_.at(0), sizeof sb_);
  Status s = verify_super(sb_, dev_blocks, "primary superblock");
  if (s) return {};
  if (sb_.magic != kSuperMagic) {
    DiskSuper b;
    std::memcpy(&b, r_.at((dev_blocks - 1) * kBlockSize), sizeof b);
    if (b.magic != kSuperMagic) {
      return make_error(Errc::kInvalid, r_.path() + ": not a pmemfuse image (no superblock magic in either copy)");
    }
  }
  problem(s.error().msg);
  rep_.primary_super_bad = true;
  // The backup sits in the last block of the filesystem, which may be smaller than the device.
  for (uint64_t bc = dev_blocks; bc >= kMinBlocks && bc + 2048 >= dev_blocks; bc--) {
    DiskSuper b;
    std::memcpy(&b, r_.at((bc - 1) * kBlockSize), sizeof b);
    if (verify_super(b, dev_blocks, "backup superblock")) {
      sb_ = b;
      rep_.backup_block = bc - 1;
      return {};
    }
  }
  return make_error(Errc::kCorrupt, r_.path() + ": " + s.error().msg + ", and no valid backup superblock");
}

Status Checker::run() {
  PF_CHECK(load_super());
  if (sb_.incompat & ~kIncompatKnown) {
    return make_error(Errc::kNotSupported, "unknown incompatible features; a newer fsck.pmemfuse is needed");
  }
  rep_.blocks_total = sb_.block_count;
  PF_TRY(j, Journal::open(r_, sb_.journal_start, sb_.journal_blocks, true));
  journal_ = std::move(j);
  rep_.replayed = journal_->pending_at_open();
  if (!rep_.primary_super_bad) std::memcpy(&sb_, r_.at(0), sizeof sb_);
  used_.assign((sb_.block_count + 63) / 64, 0);
  own(0, sb_.bitmap_start + sb_.bitmap_blocks, "metadata area");
  own(sb_.backup_block, 1, "backup superblock");
  space_ = std::make_unique<Space>(r_, sb_);
  for (uint64_t i = 0; i < sb_.bitmap_blocks; i++) {
    if (Status s = verify_bitmap_block(r_.at((sb_.bitmap_start + i) * kBlockSize), sb_.bitmap_start + i, i, "block bitmap"); !s) {
      problem(s.error().msg);
    }
  }
  itable_ = std::make_unique<InodeTable>(r_, *space_, *journal_, sb_);
  PF_CHECK(itable_->load());  // index and chunk bitmaps: nothing can be walked without them
  for (uint32_t c = 0; c < itable_->nchunks(); c++) {
    own(itable_->chunk_block(c), kChunkBlocks, "inode chunk " + std::to_string(c));
  }
  uint64_t cap = itable_->capacity();
  for (uint64_t ino = 1; ino <= cap; ino++) {
    if (itable_->in_use(ino)) check_inode(ino);
  }
  for (auto& [ino, info] : inodes_) {
    if (!S_ISDIR(info.d.mode)) continue;
    auto map = ExtentMap::load(r_, ino, info.d, sb_.block_count);
    if (map) check_dir(ino, info.d, *map);
  }
  check_links();
  check_orphans();
  check_bitmap();
  return {};
}

void Checker::check_inode(uint64_t ino) {
  DiskInode d;
  std::memcpy(&d, r_.at(itable_->offset(ino)), sizeof d);
  if (Status s = verify_inode(d, ino, sb_.block_count); !s) return problem(s.error().msg);
  std::string who = "inode " + std::to_string(ino);
  auto map = ExtentMap::load(r_, ino, d, sb_.block_count);
  if (!map) return problem(map.error().msg);
  rep_.inodes++;
  inodes_[ino].d = d;
  uint64_t counted = 0, last_written_end = 0;
  for (uint64_t b : map->leaves()) own(b, 1, who + " extent leaf"), counted++;
  for (auto& [k, e] : map->extents()) {
    own(e.pblk, e.len, who + " data");
    counted += e.len;
    if (!e.unwritten) last_written_end = e.end();
  }
  if (d.xattr_block) {
    own(d.xattr_block, 1, who + " xattr block");
    counted++;
  }
  if (auto xs = load_xattrs(r_, ino, d); !xs) problem(xs.error().msg);
  if (counted != d.blocks) {
    problem(who + ": blocks field says " + std::to_string(d.blocks) + ", extents and metadata hold " + std::to_string(counted));
  }
  uint64_t size_blocks = (d.size + kBlockSize - 1) / kBlockSize;
  if (S_ISREG(d.mode) && last_written_end > size_blocks && !(d.flags & kInodeOrphan)) {
    problem(who + ": written data past EOF (size " + std::to_string(d.size) + ", data to block " +
            std::to_string(last_written_end) + ")");
  }
  if (S_ISLNK(d.mode) && !(d.flags & kInodeInlineData) && (d.size > kBlockSize || !map->find(0))) {
    problem(who + ": symlink target block missing");
  }
  if (!S_ISREG(d.mode) && !S_ISDIR(d.mode) && !S_ISLNK(d.mode) && !map->extents().empty()) {
    problem(who + ": special file has data blocks");
  }
}

void Checker::check_dir(uint64_t ino, const DiskInode& d, const ExtentMap& map) {
  rep_.directories++;
  auto dir = Directory::load(r_, ino, map, d.size / kBlockSize);
  if (!dir) return problem(dir.error().msg);
  uint64_t entries = 0;
  (*dir)->list(r_, map, 0, [&](std::string_view name, const DirEntry& e, uint64_t) {
    entries++;
    std::string where = "directory " + std::to_string(ino) + " entry '" + std::string(name) + "'";
    auto it = inodes_.find(e.ino);
    if (it == inodes_.end()) {
      problem(where + " points to inode " + std::to_string(e.ino) + ", which is free or damaged");
      return true;
    }
    Info& t = it->second;
    t.refs++;
    if (e.type != ((t.d.mode & S_IFMT) >> 12)) problem(where + ": entry type disagrees with the inode's mode");
    if (S_ISDIR(t.d.mode)) {
      inodes_[ino].subdirs++;
      if (t.d.parent != ino) problem(where + ": directory's parent field is " + std::to_string(t.d.parent));
    }
    return true;
  });
  if (entries != d.entries) {
    problem("directory " + std::to_string(ino) + ": entries field says " + std::to_string(d.entries) +
            ", blocks hold " + std::to_string(entries));
  }
}

void Checker::check_links() {
  for (auto& [ino, t] : inodes_) {
    std::string who = "inode " + std::to_string(ino);
    bool orphan = t.d.flags & kInodeOrphan;
    if (ino == sb_.root_ino) {
      if (t.refs) problem("root directory has " + std::to_string(t.refs) + " entries naming it");
      if (t.d.nlink != 2 + t.subdirs) problem("root directory: nlink " + std::to_string(t.d.nlink) + ", expected " + std::to_string(2 + t.subdirs));
      continue;
    }
    if (t.refs == 0 && !orphan) problem(who + ": in use but not in any directory (lost)");
    if (S_ISDIR(t.d.mode)) {
      if (t.refs > 1) problem(who + ": directory named by " + std::to_string(t.refs) + " entries");
      uint64_t want = t.refs ? 2 + t.subdirs : 0;
      if (t.d.nlink != want) problem(who + ": nlink " + std::to_string(t.d.nlink) + ", expected " + std::to_string(want));
    } else if (t.d.nlink != t.refs) {
      problem(who + ": nlink " + std::to_string(t.d.nlink) + ", but " + std::to_string(t.refs) + " directory entries");
    }
  }
}

void Checker::check_orphans() {
  std::unordered_map<uint64_t, uint64_t> slot_of;
  for (uint64_t s = 0; s < sb_.orphan_blocks * kOrphanSlotsPerBlock; s++) {
    DiskOrphanSlot slot;
    std::memcpy(&slot, r_.at(sb_.orphan_start * kBlockSize + s * sizeof slot), sizeof slot);
    if (slot.ino == 0 && slot.crc == 0) continue;
    uint64_t v[2] = {slot.ino, s};
    if (slot.crc != mm::crc32c(0, v, sizeof v)) {
      problem("orphan table slot " + std::to_string(s) + ": crc mismatch");
      continue;
    }
    slot_of[slot.ino] = s;
  }
  for (auto& [ino, t] : inodes_) {
    bool flagged = t.d.flags & kInodeOrphan;
    auto it = slot_of.find(ino);
    if (flagged && (it == slot_of.end() || t.d.orphan_slot != it->second + 1)) {
      problem("inode " + std::to_string(ino) + ": marked orphan but missing from the orphan table");
    }
    if (!flagged && it != slot_of.end()) problem("orphan table slot " + std::to_string(it->second) + " names inode " + std::to_string(ino) + ", which is not an orphan");
  }
}

void Checker::check_bitmap() {
  uint64_t leaked = 0, unmarked = 0;
  for (uint64_t b = 0; b < sb_.block_count; b++) {
    bool owned = used_[b / 64] & (1ull << (b % 64));
    bool marked = space_->bit(b);
    rep_.blocks_used += owned;
    if (owned == marked) continue;
    if (marked) leaked++;
    else unmarked++;
    if (leaked + unmarked <= 10) {
      problem("block " + std::to_string(b) + (marked ? ": marked used in the bitmap but owned by nothing"
                                                     : ": in use but marked free in the bitmap"));
    }
  }
  if (leaked + unmarked > 10) {
    problem("bitmap: " + std::to_string(leaked) + " blocks leaked, " + std::to_string(unmarked) + " in use but free");
  }
}

}  // namespace

void restore_primary_super(mm::Region& region, const CheckReport& report) {
  DiskSuper b;
  std::memcpy(&b, region.at(report.backup_block * kBlockSize), sizeof b);
  region.write(0, &b, sizeof b);
  region.fence();
}

Result<CheckReport> check_image(mm::Region& region) {
  CheckReport rep;
  Checker c(region, rep);
  PF_CHECK(c.run());
  return rep;
}

}  // namespace pmemfuse::fs
