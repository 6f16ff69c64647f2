// fs/check.cc: fsck's checker. Reads only (after the journal replay); every problem
// becomes a line of text and, where repair can act on it, a finding (fs/check.h).
#include "fs/check.h"

#include <sys/stat.h>

#include <cstring>
#include <map>
#include <set>

#include "fs/bmap.h"
#include "fs/dir.h"
#include "fs/format.h"
#include "fs/itable.h"
#include "fs/journal.h"
#include "fs/space.h"
#include "fs/verify.h"
#include "fs/xattr.h"

namespace pmemfuse::fs {
namespace {

constexpr size_t kMaxListed = 200;
constexpr uint64_t kMaxBitmapLines = 10;  // then one summary line

using Kind = BlockOwner::Kind;
using Field = FieldFinding::Field;

std::string str(uint64_t v) { return std::to_string(v); }

uint8_t dtype(uint32_t mode) { return uint8_t((mode & S_IFMT) >> 12); }

std::string describe(const BlockOwner& o) {
  switch (o.kind) {
    case Kind::kMetadata: return "filesystem metadata";
    case Kind::kLeaf: return "inode " + str(o.ino) + " extent leaf";
    case Kind::kXattr: return "inode " + str(o.ino) + " xattr block";
    case Kind::kDirBlock: return "inode " + str(o.ino) + " directory block " + str(o.lblk);
    case Kind::kData: return "inode " + str(o.ino) + " data block " + str(o.lblk);
  }
  return "?";
}

// Blocks mapped and written from file block 0 on, without a gap: a directory's real
// size (directories grow one block at a time and never have holes).
uint64_t mapped_prefix(const ExtentMap& map) {
  uint64_t n = 0;
  for (const Extent* e = map.find(0); e && e->lblk == n && !e->unwritten; e = map.find(n)) n = e->end();
  return n;
}

class Checker {
 public:
  Checker(mm::Region& r, CheckReport& rep, const Progress& p) : r_(r), rep_(rep), progress_(p) {}
  Status run();

 private:
  struct Info {
    DiskInode d;
    uint64_t refs = 0;     // directory entries naming it
    uint64_t subdirs = 0;  // directories: entries that are directories
    uint64_t namer = 0;    // the first directory found naming it
    std::vector<EntryFinding> names;  // directories: every entry naming it
    std::vector<uint64_t> children;   // directories: the inodes its entries name
  };

  void problem(const std::string& s) {
    rep_.problem_count++;
    if (rep_.problems.size() < kMaxListed) rep_.problems.push_back(s);
  }
  void damaged(uint64_t ino, const std::string& s) {
    problem(s);
    rep_.damaged_inodes.push_back(ino);
  }
  void field(uint64_t ino, Field f, uint64_t want, const std::string& s) {
    problem(s);
    rep_.fields.push_back({ino, f, want});
  }
  void claim(uint64_t start, uint64_t len, const BlockOwner& o);
  void claim_metadata();
  void claim_inode(uint64_t ino, const DiskInode& d, const ExtentMap& map);
  void collect_owners();
  Status load_super();
  void check_inode(uint64_t ino);
  void check_dir(uint64_t ino, Info& info);
  void check_dir_names();
  void check_links();
  void check_reachable();
  void check_orphans();
  void check_bitmap();

  mm::Region& r_;
  CheckReport& rep_;
  const Progress& progress_;
  DiskSuper sb_{};
  std::unique_ptr<Journal> journal_;
  std::unique_ptr<Space> space_;
  std::unique_ptr<InodeTable> itable_;
  std::vector<uint64_t> used_;  // ownership bitset
  std::map<uint64_t, SharedBlock> shared_;  // blocks claimed twice
  bool collecting_ = false;     // second pass: record the owners of shared_ blocks
  std::map<uint64_t, Info> inodes_;  // usable in-use inodes, ordered: findings are deterministic
};

// First pass: marks ownership and notes blocks claimed again. Second pass (only when
// there were such blocks, as e2fsck's pass 1B): records every owner of those blocks.
void Checker::claim(uint64_t start, uint64_t len, const BlockOwner& o) {
  if (start + len > sb_.block_count || start + len < start) {
    if (!collecting_) problem(describe(o) + ": blocks " + str(start) + "+" + str(len) + " beyond the device");
    return;
  }
  bool mapped = o.kind == Kind::kData || o.kind == Kind::kDirBlock;
  if (collecting_) {
    for (auto it = shared_.lower_bound(start); it != shared_.end() && it->first < start + len; ++it) {
      it->second.owners.push_back({o.kind, o.ino, mapped ? o.lblk + (it->first - start) : 0});
    }
    return;
  }
  for (uint64_t b = start; b < start + len; b++) {
    uint64_t& w = used_[b / 64];
    if (w & (1ull << (b % 64))) {
      BlockOwner at{o.kind, o.ino, mapped ? o.lblk + (b - start) : 0};
      problem("block " + str(b) + " owned twice (again by " + describe(at) + ")");
      shared_[b].block = b;
    }
    w |= 1ull << (b % 64);
  }
}

void Checker::claim_metadata() {
  claim(0, sb_.bitmap_start + sb_.bitmap_blocks, {});
  claim(sb_.backup_block, 1, {});
  for (uint32_t c = 0; c < itable_->nchunks(); c++) claim(itable_->chunk_block(c), kChunkBlocks, {});
}

void Checker::claim_inode(uint64_t ino, const DiskInode& d, const ExtentMap& map) {
  for (uint64_t b : map.leaves()) claim(b, 1, {Kind::kLeaf, ino, 0});
  Kind k = S_ISDIR(d.mode) ? Kind::kDirBlock : Kind::kData;
  for (auto& [key, e] : map.extents()) claim(e.pblk, e.len, {k, ino, e.lblk});
  if (d.xattr_block) claim(d.xattr_block, 1, {Kind::kXattr, ino, 0});
}

void Checker::collect_owners() {
  collecting_ = true;
  claim_metadata();
  for (auto& [ino, info] : inodes_) {
    auto map = ExtentMap::load(r_, ino, info.d, sb_.block_count);
    if (map) claim_inode(ino, info.d, *map);
  }
  collecting_ = false;
  for (auto& [b, s] : shared_) rep_.shared.push_back(std::move(s));
}

// The superblock that says where everything is: the primary, or the backup when the
// primary fails verification. Whether the primary is damaged is decided after the
// journal replay, which rewrites it when a crash tore it during a checkpoint.
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
  auto backup = find_backup_super(r_.base(), dev_blocks);
  if (!backup) return make_error(Errc::kCorrupt, r_.path() + ": " + s.error().msg + ", and no valid backup superblock");
  sb_ = backup->first;
  rep_.backup_block = backup->second;
  return {};
}

Status Checker::run() {
  PF_CHECK(load_super());
  if (sb_.incompat & ~kIncompatKnown) {
    return make_error(Errc::kNotSupported, "unknown incompatible features; a newer fsck.pmemfuse is needed");
  }
  // As e2fsck: what such a feature adds to the format is unknown here, so neither a
  // check nor a repair of it can be trusted.
  if (sb_.ro_compat & ~kRoCompatKnown) {
    return make_error(Errc::kNotSupported, "unknown read-only-compatible (ro_compat) features; a newer fsck.pmemfuse is needed");
  }
  rep_.blocks_total = sb_.block_count;
  PF_TRY(j, Journal::open(r_, sb_.journal_start, sb_.journal_blocks, true));
  journal_ = std::move(j);
  rep_.replayed = journal_->pending_at_open();
  DiskSuper primary;
  std::memcpy(&primary, r_.at(0), sizeof primary);
  if (Status s = verify_super(primary, r_.size() / kBlockSize, "primary superblock"); s) {
    sb_ = primary;
  } else {
    problem(s.error().msg);
    rep_.primary_super_bad = true;
  }
  used_.assign((sb_.block_count + 63) / 64, 0);
  space_ = std::make_unique<Space>(r_, sb_);
  for (uint64_t i = 0; i < sb_.bitmap_blocks; i++) {
    if (Status s = verify_bitmap_block(r_.at((sb_.bitmap_start + i) * kBlockSize), sb_.bitmap_start + i, i, "block bitmap"); !s) {
      problem(s.error().msg);
      rep_.bad_bitmap_blocks.push_back(i);
    }
  }
  itable_ = std::make_unique<InodeTable>(r_, *space_, *journal_, sb_);
  PF_CHECK(itable_->load());  // index and chunk bitmaps: nothing can be walked without them
  claim_metadata();
  if (!itable_->in_use(sb_.root_ino)) damaged(sb_.root_ino, "root directory: inode slot is free");
  uint64_t cap = itable_->capacity();
  ProgressPhase ph(progress_, "checking inodes", cap);
  for (uint64_t ino = 1; ino <= cap; ino++) {
    if (ino % 4096 == 0) ph.set(ino);
    if (itable_->in_use(ino)) check_inode(ino);
  }
  for (auto& [ino, info] : inodes_) {
    if (S_ISDIR(info.d.mode)) check_dir(ino, info);
  }
  check_dir_names();
  check_links();
  check_reachable();
  check_orphans();
  if (!shared_.empty()) collect_owners();
  check_bitmap();
  return {};
}

// An inode that cannot be used is not claimed: its blocks count as free.
void Checker::check_inode(uint64_t ino) {
  DiskInode d;
  std::memcpy(&d, r_.at(itable_->offset(ino)), sizeof d);
  if (Status s = verify_inode(d, ino, sb_.block_count); !s) return damaged(ino, s.error().msg);
  std::string who = "inode " + str(ino);
  auto map = ExtentMap::load(r_, ino, d, sb_.block_count);
  if (!map) return damaged(ino, map.error().msg);
  if (ino == sb_.root_ino && !S_ISDIR(d.mode)) return damaged(ino, "root directory: inode is not a directory");
  const Extent* first = map->find(0);
  if (S_ISLNK(d.mode) && !(d.flags & kInodeInlineData) && (d.size > kBlockSize || !first || first->lblk != 0)) {
    return damaged(ino, who + ": symlink target block missing");
  }
  if (!S_ISREG(d.mode) && !S_ISDIR(d.mode) && !S_ISLNK(d.mode) && !map->extents().empty()) {
    return damaged(ino, who + ": special file has data blocks");
  }
  rep_.inodes++;
  inodes_[ino].d = d;
  claim_inode(ino, d, *map);
  uint64_t counted = map->leaves().size() + (d.xattr_block ? 1 : 0), last_written_end = 0;
  for (auto& [k, e] : map->extents()) {
    counted += e.len;
    if (!e.unwritten) last_written_end = e.end();
  }
  if (auto xs = load_xattrs(r_, ino, d); !xs) {
    problem(xs.error().msg);
    rep_.damaged_xattrs.push_back(ino);
  }
  if (counted != d.blocks) {
    field(ino, Field::kBlocks, counted, who + ": blocks field says " + str(d.blocks) + ", extents and metadata hold " + str(counted));
  }
  uint64_t size_blocks = (d.size + kBlockSize - 1) / kBlockSize;
  if (S_ISREG(d.mode) && last_written_end > size_blocks && !(d.flags & kInodeOrphan)) {
    field(ino, Field::kSize, last_written_end * kBlockSize,
          who + ": written data past EOF (size " + str(d.size) + ", data to block " + str(last_written_end) + ")");
  }
}

void Checker::check_dir(uint64_t ino, Info& info) {
  rep_.directories++;
  auto map = ExtentMap::load(r_, ino, info.d, sb_.block_count);  // loaded once already: cannot fail
  uint64_t nblocks = mapped_prefix(*map);
  if (info.d.size != nblocks * kBlockSize) {
    field(ino, Field::kSize, nblocks * kBlockSize,
          "directory " + str(ino) + ": size " + str(info.d.size) + ", but " + str(nblocks) + " blocks mapped");
  }
  auto dir = Directory::load(r_, ino, *map, nblocks);
  if (!dir) {
    problem(dir.error().msg);
    rep_.damaged_dirs.push_back(ino);
    return;
  }
  uint64_t entries = 0;
  (*dir)->list(r_, *map, 0, [&](std::string_view name, const DirEntry& e, uint64_t) {
    entries++;
    std::string where = "directory " + str(ino) + " entry '" + std::string(name) + "'";
    auto it = inodes_.find(e.ino);
    if (it == inodes_.end()) {
      problem(where + " points to inode " + str(e.ino) + ", which is free or damaged");
      rep_.dangling.push_back({ino, std::string(name), e.ino});
      return true;
    }
    Info& t = it->second;
    t.refs++;
    if (!t.namer) t.namer = ino;
    info.children.push_back(e.ino);
    if (e.type != dtype(t.d.mode)) {
      problem(where + ": entry type disagrees with the inode's mode");
      rep_.bad_types.push_back({ino, std::string(name), e.ino, dtype(t.d.mode)});
    }
    if (S_ISDIR(t.d.mode)) {
      info.subdirs++;
      t.names.push_back({ino, std::string(name), e.ino});
    }
    return true;
  });
  if (entries != info.d.entries) {
    field(ino, Field::kEntries, entries,
          "directory " + str(ino) + ": entries field says " + str(info.d.entries) + ", blocks hold " + str(entries));
  }
}

// A directory has one name: the entry in the directory its parent field names, else the
// first found. The root has none.
void Checker::check_dir_names() {
  for (auto& [ino, t] : inodes_) {
    if (t.names.empty()) continue;
    size_t keep = 0;
    while (keep < t.names.size() && t.names[keep].dir != t.d.parent) keep++;
    if (keep == t.names.size()) keep = 0;
    if (ino == sb_.root_ino) keep = t.names.size();
    for (size_t k = 0; k < t.names.size(); k++) {
      if (k == keep) continue;
      const EntryFinding& e = t.names[k];
      problem("directory " + str(e.dir) + " entry '" + e.name + "' names " +
              (ino == sb_.root_ino ? std::string("the root directory") : "directory " + str(ino) + ", which has a name already"));
      rep_.extra_dir_links.push_back(e);
    }
    if (keep < t.names.size() && t.d.parent != t.names[keep].dir) {
      const EntryFinding& e = t.names[keep];
      field(ino, Field::kParent, e.dir,
            "directory " + str(e.dir) + " entry '" + e.name + "': directory's parent field is " + str(t.d.parent));
    }
  }
}

// Inodes no entry names are left to check_reachable.
void Checker::check_links() {
  for (auto& [ino, t] : inodes_) {
    std::string who = "inode " + str(ino);
    if (ino == sb_.root_ino) {
      if (t.d.nlink != 2 + t.subdirs) {
        field(ino, Field::kNlink, 2 + t.subdirs, "root directory: nlink " + str(t.d.nlink) + ", expected " + str(2 + t.subdirs));
      }
    } else if (t.refs == 0) {
      continue;
    } else if (S_ISDIR(t.d.mode)) {
      if (t.d.nlink != 2 + t.subdirs) {
        field(ino, Field::kNlink, 2 + t.subdirs, who + ": nlink " + str(t.d.nlink) + ", expected " + str(2 + t.subdirs));
      }
    } else if (t.d.nlink != t.refs) {
      field(ino, Field::kNlink, t.refs, who + ": nlink " + str(t.d.nlink) + ", but " + str(t.refs) + " directory entries");
    }
  }
}

// Walks the tree from the root. Of what it does not reach (besides unlinked orphans),
// only the top of each detached piece needs a new name: a directory or file no entry
// names, or, for a cycle of directories, the one where the climb met itself.
void Checker::check_reachable() {
  std::vector<bool> reached(itable_->capacity() + 1);
  auto mark = [&](uint64_t top) {
    std::vector<uint64_t> todo{top};
    while (!todo.empty()) {
      uint64_t x = todo.back();
      todo.pop_back();
      if (reached[x]) continue;
      reached[x] = true;
      const Info& i = inodes_.at(x);
      todo.insert(todo.end(), i.children.begin(), i.children.end());
    }
  };
  if (inodes_.count(sb_.root_ino)) mark(sb_.root_ino);
  for (auto& [ino, t] : inodes_) {
    if (reached[ino] || ((t.d.flags & kInodeOrphan) && t.d.nlink == 0)) continue;
    uint64_t top = ino;
    std::set<uint64_t> seen{top};
    for (uint64_t up = t.namer; up && seen.insert(up).second; up = inodes_.at(up).namer) top = up;
    problem("inode " + str(top) + ": in use but not reachable from the root directory (lost)");
    rep_.unreachable.push_back(top);
    mark(top);
  }
}

// Mount's rules (Filesystem::load_orphans, finish_orphans): every used slot has a valid
// crc and names an in-use inode flagged orphan in that very slot.
void Checker::check_orphans() {
  std::map<uint64_t, uint64_t> slot_ino;
  auto bad_slot = [&](uint64_t s, const std::string& why) {
    problem("orphan table slot " + str(s) + ": " + why);
    rep_.bad_orphan_slots.push_back(s);
  };
  for (uint64_t s = 0; s < sb_.orphan_blocks * kOrphanSlotsPerBlock; s++) {
    DiskOrphanSlot slot;
    std::memcpy(&slot, r_.at(sb_.orphan_start * kBlockSize + s * sizeof slot), sizeof slot);
    if (slot.ino == 0 && slot.crc == 0) continue;
    if (slot.crc != orphan_slot_crc(slot.ino, s)) bad_slot(s, "crc mismatch");
    else slot_ino[s] = slot.ino;
  }
  for (auto [s, ino] : slot_ino) {
    auto it = inodes_.find(ino);
    if (it == inodes_.end()) bad_slot(s, "names inode " + str(ino) + ", which is free or damaged");
    else if (!(it->second.d.flags & kInodeOrphan) || it->second.d.orphan_slot != s + 1) {
      bad_slot(s, "names inode " + str(ino) + ", which is not an orphan in this slot");
    }
  }
  for (auto& [ino, t] : inodes_) {
    if (!(t.d.flags & kInodeOrphan)) continue;
    auto it = slot_ino.find(t.d.orphan_slot - 1);
    if (t.d.orphan_slot == 0 || it == slot_ino.end() || it->second != ino) {
      problem("inode " + str(ino) + ": marked orphan but missing from the orphan table");
      rep_.unregistered_orphans.push_back(ino);
    }
  }
}

void Checker::check_bitmap() {
  uint64_t leaked = 0, unmarked = 0;
  for (uint64_t b = 0; b < sb_.block_count; b++) {
    bool owned = used_[b / 64] & (1ull << (b % 64));
    bool marked = space_->bit(b);
    rep_.blocks_used += owned;
    if (owned == marked) continue;
    std::vector<mm::Run>& runs = marked ? rep_.leaked : rep_.unmarked;
    if (!runs.empty() && runs.back().start + runs.back().len == b) runs.back().len++;
    else runs.push_back({b, 1});
    if (marked) leaked++;
    else unmarked++;
    if (leaked + unmarked <= kMaxBitmapLines) {
      problem("block " + str(b) + (marked ? ": marked used in the bitmap but owned by nothing"
                                          : ": in use but marked free in the bitmap"));
    }
  }
  if (leaked + unmarked > kMaxBitmapLines) {
    problem("bitmap: " + str(leaked) + " blocks leaked, " + str(unmarked) + " in use but free");
  }
}

}  // namespace

void restore_primary_super(mm::Region& region, const CheckReport& report) {
  DiskSuper b;
  std::memcpy(&b, region.at(report.backup_block * kBlockSize), sizeof b);
  region.write(0, &b, sizeof b);
  region.fence();
}

Result<CheckReport> check_image(mm::Region& region, const Progress& progress) {
  CheckReport rep;
  Checker c(region, rep, progress);
  PF_CHECK(c.run());
  return rep;
}

}  // namespace pmemfuse::fs
