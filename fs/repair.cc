// fs/repair.cc: the repair passes behind fsck -y and -p. Each pass is one Repairer over
// the components mount uses (journal, space, inode table, extent maps, directories), fed
// by the findings of the check just made; nothing here re-derives the format's rules.
#include "fs/repair.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <set>
#include <type_traits>

#include "fs/bmap.h"
#include "fs/dir.h"
#include "fs/format.h"
#include "fs/itable.h"
#include "fs/journal.h"
#include "fs/space.h"
#include "fs/verify.h"

namespace pmemfuse::fs {
namespace {

// A pass repairs one class of problem; a tangle (a damaged root, then its lost
// subtrees, then their link counts) takes a few. Beyond this, something is not
// converging: stop and report what is left.
constexpr int kMaxPasses = 12;
constexpr std::string_view kLostFound = "lost+found";

using Kind = BlockOwner::Kind;
using Field = FieldFinding::Field;

std::string str(uint64_t v) { return std::to_string(v); }

uint8_t dtype(uint32_t mode) { return uint8_t((mode & S_IFMT) >> 12); }

int64_t now_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Which claim on a block claimed twice keeps it: filesystem metadata, then an inode's
// own metadata (leaves, xattr and directory blocks, whose headers name their owner),
// then file data; among equals, the first claim the check met.
int rank(Kind k) { return k == Kind::kMetadata ? 0 : k == Kind::kData ? 2 : 1; }

// Sets the field f names to f.want; returns " name old -> new".
std::string set_field(DiskInode& d, const FieldFinding& f) {
  auto change = [&](const char* name, auto& v) {
    std::string s = std::string(" ") + name + " " + str(v) + " -> " + str(f.want);
    v = static_cast<std::remove_reference_t<decltype(v)>>(f.want);
    return s;
  };
  switch (f.field) {
    case Field::kNlink: return change("nlink", d.nlink);
    case Field::kBlocks: return change("blocks", d.blocks);
    case Field::kEntries: return change("entries", d.entries);
    case Field::kSize: return change("size", d.size);
    case Field::kParent: return change("parent", d.parent);
  }
  return {};
}

bool loses_data(const CheckReport& rep) {
  return !rep.damaged_inodes.empty() || !rep.damaged_dirs.empty() || !rep.damaged_xattrs.empty();
}

// An inode with its block map and, for a directory loaded whole, its index.
struct Loaded {
  uint64_t ino = 0;
  DiskInode d{};
  ExtentMap map;
  std::unique_ptr<Directory> dir;
};

class Repairer {
 public:
  Repairer(mm::Region& r, const CheckReport& rep, bool preen, std::vector<std::string>& actions)
      : r_(r), rep_(rep), preen_(preen), actions_(actions) {}
  // One pass; true if anything changed.
  Result<bool> run();

 private:
  Status commit(Tx& tx, const std::string& what);
  Result<Loaded> load(uint64_t ino, bool whole_dir) const;
  Result<Loaded*> cached(uint64_t ino);
  Status remap(Loaded& i, uint64_t lblk, const uint8_t* content, bool unwritten, const std::string& what);

  Status fix_bitmap();
  Status fix_damage();
  Status clear_inode(uint64_t ino);
  Status recreate_root();
  Status fix_dir_blocks(uint64_t ino);
  Status drop_bad_xattrs(uint64_t ino);
  Status fix_orphan_table();
  Status fix_shared();
  Status give_up(const BlockOwner& o, uint64_t block);
  Status fix_fields();
  Status fix_namespace();
  Status remove_entry(const EntryFinding& e, const std::string& why);
  Status retype_entry(const EntryFinding& e);
  Result<Loaded*> lost_found();
  Status reconnect(uint64_t ino);

  mm::Region& r_;
  const CheckReport& rep_;
  const bool preen_;
  std::vector<std::string>& actions_;
  DiskSuper sb_{};
  std::unique_ptr<Journal> journal_;
  std::unique_ptr<Space> space_;
  std::unique_ptr<InodeTable> itable_;
  // fix_namespace's inodes: every change to them goes through these copies.
  std::map<uint64_t, std::unique_ptr<Loaded>> cache_;
  uint64_t changes_ = 0;
};

Result<bool> Repairer::run() {
  std::memcpy(&sb_, r_.at(0), sizeof sb_);
  PF_TRY(j, Journal::open(r_, sb_.journal_start, sb_.journal_blocks, true));
  journal_ = std::move(j);
  PF_CHECK(fix_bitmap());
  space_ = std::make_unique<Space>(r_, sb_);
  PF_CHECK(space_->load());
  itable_ = std::make_unique<InodeTable>(r_, *space_, *journal_, sb_);
  PF_CHECK(itable_->load());
  // Each class changes what the later ones were computed from (clearing an inode frees
  // its claims, removing an entry changes link counts): stop after the first class that
  // changes something, and let the next check see the result.
  for (auto fix : {&Repairer::fix_damage, &Repairer::fix_shared, &Repairer::fix_fields, &Repairer::fix_namespace}) {
    uint64_t before = changes_;
    PF_CHECK((this->*fix)());
    if (changes_ > before) break;
  }
  journal_->checkpoint();  // the next check has nothing to replay
  return changes_ > 0;
}

Status Repairer::commit(Tx& tx, const std::string& what) {
  PF_CHECK(journal_->commit(tx));
  actions_.push_back(what);
  changes_++;
  return {};
}

Result<Loaded> Repairer::load(uint64_t ino, bool whole_dir) const {
  Loaded l;
  l.ino = ino;
  PF_TRY(d, itable_->read(ino));
  l.d = d;
  PF_TRY(map, ExtentMap::load(r_, ino, d, sb_.block_count));
  l.map = std::move(map);
  if (whole_dir && S_ISDIR(d.mode)) {
    PF_TRY(dir, Directory::load(r_, ino, l.map, d.size / kBlockSize));
    l.dir = std::move(dir);
  }
  return l;
}

Result<Loaded*> Repairer::cached(uint64_t ino) {
  auto it = cache_.find(ino);
  if (it != cache_.end()) return it->second.get();
  PF_TRY(l, load(ino, true));
  return cache_.emplace(ino, std::make_unique<Loaded>(std::move(l))).first->second.get();
}

// Maps file block lblk of i to a new block holding content. The block it replaces is
// not freed: it is another owner's, or, owned by nothing, freed by the next bitmap pass.
Status Repairer::remap(Loaded& i, uint64_t lblk, const uint8_t* content, bool unwritten,
                       const std::string& what) {
  Tx tx(r_);
  PF_TRY(runs, space_->alloc(tx, 1, i.map.goal(lblk)));
  uint64_t nb = runs[0].start;
  // Directory blocks are logged like all metadata; file data is written in place and is
  // durable (commit's first fence) before the transaction maps it.
  if (S_ISDIR(i.d.mode)) std::memcpy(tx.stage(nb), content, kBlockSize);
  else r_.write(nb * kBlockSize, content, kBlockSize);
  PF_TRY(removed, i.map.replace(tx, *space_, i.ino, i.d, lblk, lblk + 1, {{lblk, 1, nb, unwritten}}));
  itable_->write(tx, i.ino, i.d);
  return commit(tx, what);
}

// First, so that the allocations of the later repairs never hand out a block in use.
// Split into transactions that fit the log; each is a correct part of the fix.
Status Repairer::fix_bitmap() {
  if (rep_.leaked.empty() && rep_.unmarked.empty() && rep_.bad_bitmap_blocks.empty()) return {};
  size_t limit = journal_->max_tx_bytes() - kBlockSize - 64;  // room for one more record
  auto tx = std::make_unique<Tx>(r_);
  auto next = [&]() -> Status {
    if (tx->encoded_bytes() < limit) return {};
    PF_CHECK(journal_->commit(*tx));
    tx = std::make_unique<Tx>(r_);
    return {};
  };
  for (uint64_t i : rep_.bad_bitmap_blocks) {
    // A new header; the check compared every bit whatever the crc said, so the runs
    // below make the bits right, and applying them reseals the block.
    uint8_t* blk = tx->stage(sb_.bitmap_start + i);
    DiskBitmapHeader h{kBitmapMagic, 0, i, {}};
    std::memcpy(blk, &h, sizeof h);
    seal_block(blk);
    PF_CHECK(next());
  }
  uint64_t set = 0, cleared = 0;
  for (const mm::Run& run : rep_.unmarked) {
    tx->set_bits(sb_.bitmap_start, run.start, run.len);
    set += run.len;
    PF_CHECK(next());
  }
  for (const mm::Run& run : rep_.leaked) {
    tx->clear_bits(sb_.bitmap_start, run.start, run.len);
    // A later repair may reuse the block for file data: no older log record may then
    // be replayed over it.
    tx->mark_frees_blocks();
    cleared += run.len;
    PF_CHECK(next());
  }
  return commit(*tx, "bitmap: " + str(rep_.bad_bitmap_blocks.size()) + " damaged blocks rewritten, " + str(set) +
                         " blocks in use marked used, " + str(cleared) + " blocks owned by nothing marked free");
}

// Repairs that discard what cannot be trusted; preen leaves them to a human.
Status Repairer::fix_damage() {
  if (!preen_) {
    for (uint64_t ino : rep_.damaged_inodes) PF_CHECK(ino == sb_.root_ino ? recreate_root() : clear_inode(ino));
    for (uint64_t ino : rep_.damaged_dirs) PF_CHECK(fix_dir_blocks(ino));
    for (uint64_t ino : rep_.damaged_xattrs) PF_CHECK(drop_bad_xattrs(ino));
  }
  return fix_orphan_table();
}

// Nothing in a damaged inode can be trusted, its block map included: the slot is
// freed, and the blocks it may have held, which the check did not count as owned, were
// freed with the bitmap. The entries naming it are removed by a later pass.
Status Repairer::clear_inode(uint64_t ino) {
  DiskInode old;
  std::memcpy(&old, r_.at(itable_->offset(ino)), sizeof old);
  DiskInode cleared{};
  cleared.generation = old.generation;  // as reclaim does: the next inode here gets a new one
  Tx tx(r_);
  itable_->write(tx, ino, cleared);
  itable_->free(tx, ino);
  return commit(tx, "inode " + str(ino) + ": damaged, cleared");
}

// The root cannot be cleared: it is made again, empty, and what it named is
// reconnected under /lost+found by a later pass.
Status Repairer::recreate_root() {
  uint64_t ino = sb_.root_ino;
  DiskInode old;
  std::memcpy(&old, r_.at(itable_->offset(ino)), sizeof old);
  DiskInode d{};
  d.mode = S_IFDIR | 0755;
  d.nlink = 2;
  d.generation = old.generation + 1;
  d.parent = ino;
  d.atime_ns = d.mtime_ns = d.ctime_ns = d.btime_ns = now_ns();
  Tx tx(r_);
  if (!itable_->in_use(ino)) tx.set_bits(itable_->chunk_block(0), ino - 1, 1);
  itable_->write(tx, ino, d);
  return commit(tx, "root directory: damaged, made again empty");
}

// A directory block that fails verification is replaced by an empty one: its entries
// are lost, and the inodes they named are reconnected by a later pass. The replacement
// is a new block, not the old one rewritten, as the old one may be another owner's.
Status Repairer::fix_dir_blocks(uint64_t ino) {
  PF_TRY(dir, load(ino, false));
  std::vector<uint64_t> bad;
  for (auto& [k, e] : dir.map.extents()) {
    for (uint64_t lb = e.lblk; lb < e.end(); lb++) {
      uint64_t pb = e.pblk + (lb - e.lblk);
      if (!verify_dir_block(r_.at(pb * kBlockSize), pb, ino, lb)) bad.push_back(lb);
    }
  }
  for (uint64_t lb : bad) {
    uint8_t blk[kBlockSize];
    Directory::init_block(blk, ino, lb);
    seal_block(blk);
    Status s = remap(dir, lb, blk, false, "directory " + str(ino) + " block " + str(lb) + ": damaged, replaced by an empty block");
    if (!s && s.error().code != Errc::kNoSpace) return s;  // no space: left as it is
  }
  return {};
}

// The inode is sound but its xattrs are not: the damaged part (the inline area, the
// block) is dropped. The block, owned by nothing now, is freed by the next bitmap pass.
Status Repairer::drop_bad_xattrs(uint64_t ino) {
  PF_TRY(d, itable_->read(ino));
  std::string what = "inode " + str(ino) + ":";
  if (!verify_xattr_entries(d.xattr_inline, d.xattr_inline_len, ino, "inline")) {
    std::memset(d.xattr_inline, 0, sizeof d.xattr_inline);
    d.xattr_inline_len = 0;
    what += " damaged inline xattrs dropped";
  }
  if (d.xattr_block && !verify_xattr_block(r_.at(d.xattr_block * kBlockSize), d.xattr_block, ino)) {
    d.xattr_block = 0;
    d.blocks--;
    what += " damaged xattr block dropped";
  }
  Tx tx(r_);
  itable_->write(tx, ino, d);
  return commit(tx, what);
}

// Bad slots are cleared. An inode flagged orphan but missing from the table goes back
// into its slot if that is free, so the next mount finishes it as it would have (frees
// it if nlink is 0, trims it to its size otherwise); if the slot is taken, the flag is
// cleared and the inode is treated as any other (reconnected if nothing names it).
Status Repairer::fix_orphan_table() {
  auto slot_off = [&](uint64_t s) { return sb_.orphan_start * kBlockSize + s * sizeof(DiskOrphanSlot); };
  for (uint64_t s : rep_.bad_orphan_slots) {
    Tx tx(r_);
    tx.put(slot_off(s), DiskOrphanSlot{});
    PF_CHECK(commit(tx, "orphan table slot " + str(s) + ": damaged, cleared"));
  }
  std::set<uint64_t> taken;
  for (uint64_t ino : rep_.unregistered_orphans) {
    PF_TRY(d, itable_->read(ino));
    uint64_t s = d.orphan_slot - 1;
    DiskOrphanSlot cur{1, 0, 0};  // a slot out of range counts as taken
    if (d.orphan_slot && s < sb_.orphan_blocks * kOrphanSlotsPerBlock) std::memcpy(&cur, r_.at(slot_off(s)), sizeof cur);
    Tx tx(r_);
    if (cur.ino == 0 && cur.crc == 0 && taken.insert(s).second) {
      tx.put(slot_off(s), DiskOrphanSlot{ino, orphan_slot_crc(ino, s), 0});
      PF_CHECK(commit(tx, "inode " + str(ino) + ": put back in orphan table slot " + str(s)));
    } else {
      d.flags &= ~kInodeOrphan;
      d.orphan_slot = 0;
      itable_->write(tx, ino, d);
      PF_CHECK(commit(tx, "inode " + str(ino) + ": orphan flag cleared (its slot is taken)"));
    }
  }
  return {};
}

Status Repairer::fix_shared() {
  for (const SharedBlock& s : rep_.shared) {
    auto win = std::min_element(s.owners.begin(), s.owners.end(),
                                [](const BlockOwner& a, const BlockOwner& b) { return rank(a.kind) < rank(b.kind); });
    for (auto it = s.owners.begin(); it != s.owners.end(); ++it) {
      if (it != win) PF_CHECK(give_up(*it, s.block));
    }
  }
  return {};
}

// A losing claim gets its own copy of the block (e2fsck's "clone multiply-claimed
// blocks"); without space for one, file data is dropped and reads as a hole. A leaf or
// xattr block loses only to filesystem metadata (their headers name their owner, so two
// of them cannot both verify), so its content is not its own: the xattr block is
// dropped, and an inode whose extent leaf is not its own is cleared. Two pieces of
// filesystem metadata overlapping are not repaired.
Status Repairer::give_up(const BlockOwner& o, uint64_t block) {
  std::string who = "inode " + str(o.ino);
  if (o.kind == Kind::kMetadata || (preen_ && (o.kind == Kind::kLeaf || o.kind == Kind::kXattr))) return {};
  if (o.kind == Kind::kLeaf) return clear_inode(o.ino);
  if (o.kind == Kind::kXattr) {
    PF_TRY(d, itable_->read(o.ino));
    if (d.xattr_block != block) return {};
    d.xattr_block = 0;
    d.blocks--;
    Tx tx(r_);
    itable_->write(tx, o.ino, d);
    return commit(tx, who + ": xattr block " + str(block) + " is filesystem metadata; dropped");
  }
  PF_TRY(i, load(o.ino, false));
  const Extent* e = i.map.find(o.lblk);
  if (!e || e->lblk > o.lblk || e->pblk + (o.lblk - e->lblk) != block) return {};  // moved since the check
  std::string at = who + " file block " + str(o.lblk) + ": device block " + str(block) + " claimed twice; ";
  Status s = remap(i, o.lblk, r_.at(block * kBlockSize), e->unwritten, at + "given its own copy");
  if (s || s.error().code != Errc::kNoSpace) return s;
  if (preen_ || o.kind == Kind::kDirBlock) return {};  // left as it is
  Tx tx(r_);
  PF_TRY(removed, i.map.replace(tx, *space_, o.ino, i.d, o.lblk, o.lblk + 1, {}));
  i.d.blocks--;
  itable_->write(tx, o.ino, i.d);
  return commit(tx, at + "no space for a copy, dropped (reads as zeros)");
}

Status Repairer::fix_fields() {
  std::map<uint64_t, std::vector<FieldFinding>> by_ino;
  for (const FieldFinding& f : rep_.fields) by_ino[f.ino].push_back(f);
  for (auto& [ino, fields] : by_ino) {
    PF_TRY(d, itable_->read(ino));
    std::string what = "inode " + str(ino) + ":";
    for (const FieldFinding& f : fields) what += set_field(d, f);
    Tx tx(r_);
    itable_->write(tx, ino, d);
    PF_CHECK(commit(tx, what));
  }
  return {};
}

Status Repairer::fix_namespace() {
  for (const EntryFinding& e : rep_.dangling) PF_CHECK(remove_entry(e, "it named free or damaged inode " + str(e.ino)));
  for (const EntryFinding& e : rep_.extra_dir_links) PF_CHECK(remove_entry(e, "a second name of directory " + str(e.ino)));
  for (const EntryFinding& e : rep_.bad_types) PF_CHECK(retype_entry(e));
  for (uint64_t ino : rep_.unreachable) PF_CHECK(reconnect(ino));
  return {};
}

Status Repairer::remove_entry(const EntryFinding& e, const std::string& why) {
  PF_TRY(p, cached(e.dir));
  auto found = p->dir->find(r_, p->map, e.name);
  if (!found || found->ino != e.ino) return {};
  Tx tx(r_);
  p->dir->remove(tx, p->map, *found, e.name);
  p->d.entries--;
  itable_->write(tx, p->ino, p->d);
  return commit(tx, "directory " + str(e.dir) + ": entry '" + e.name + "' removed (" + why + ")");
}

Status Repairer::retype_entry(const EntryFinding& e) {
  PF_TRY(p, cached(e.dir));
  auto found = p->dir->find(r_, p->map, e.name);
  if (!found || found->ino != e.ino) return {};
  Tx tx(r_);
  p->dir->retarget(tx, p->map, *found, e.ino, e.want_type);
  return commit(tx, "directory " + str(e.dir) + ": entry '" + e.name + "' type corrected");
}

// /lost+found, made if missing, as e2fsck does. A non-directory by that name loses the
// name; the next pass reconnects it like any other nameless inode.
Result<Loaded*> Repairer::lost_found() {
  PF_TRY(root, cached(sb_.root_ino));
  if (auto e = root->dir->find(r_, root->map, kLostFound)) {
    PF_TRY(lf, cached(e->ino));
    if (S_ISDIR(lf->d.mode)) return lf;
    PF_CHECK(remove_entry({root->ino, std::string(kLostFound), e->ino, 0}, "not a directory"));
  }
  Tx tx(r_);
  PF_TRY(slot, itable_->alloc(tx));
  auto lf = std::make_unique<Loaded>();
  lf->ino = slot.first;
  lf->dir = std::make_unique<Directory>();
  DiskInode& d = lf->d;
  d.mode = S_IFDIR | 0700;
  d.nlink = 2;
  d.generation = slot.second;
  d.parent = root->ino;
  d.atime_ns = d.mtime_ns = d.ctime_ns = d.btime_ns = now_ns();
  PF_CHECK(root->dir->add(tx, *space_, root->ino, root->d, root->map, kLostFound, lf->ino, dtype(d.mode)));
  root->d.entries++;
  root->d.nlink++;
  itable_->write(tx, root->ino, root->d);
  itable_->write(tx, lf->ino, d);
  PF_CHECK(commit(tx, "/lost+found created"));
  return cache_.emplace(lf->ino, std::move(lf)).first->second.get();
}

// Names the top of a detached piece /lost+found/#INO. A directory's link count is
// corrected by the next pass, which counts its subdirectories.
Status Repairer::reconnect(uint64_t ino) {
  PF_TRY(lf, lost_found());
  PF_TRY(t, cached(ino));
  std::string name = "#" + str(ino);
  for (uint64_t k = 1; lf->dir->find(r_, lf->map, name); k++) name = "#" + str(ino) + "." + str(k);
  Tx tx(r_);
  PF_CHECK(lf->dir->add(tx, *space_, lf->ino, lf->d, lf->map, name, ino, dtype(t->d.mode)));
  lf->d.entries++;
  if (S_ISDIR(t->d.mode)) {
    lf->d.nlink++;
    t->d.parent = lf->ino;
  } else {
    t->d.nlink = 1;  // a file at the top of a detached piece had no name at all
  }
  itable_->write(tx, lf->ino, lf->d);
  itable_->write(tx, ino, t->d);
  return commit(tx, "inode " + str(ino) + ": reconnected as /lost+found/" + name);
}

}  // namespace

Result<RepairResult> repair_image(mm::Region& region, const RepairOptions& o) {
  RepairResult res;
  PF_TRY(first, check_image(region, o.progress));
  res.first = first;
  res.last = std::move(first);
  if (res.last.primary_super_bad) {
    restore_primary_super(region, res.last);
    res.actions.push_back("primary superblock restored from the backup in block " + str(res.last.backup_block));
    PF_TRY(rep, check_image(region, o.progress));
    res.last = std::move(rep);
  }
  if (o.preen && loses_data(res.last)) {
    res.refused = true;
    return res;
  }
  for (int pass = 0; pass < kMaxPasses && res.last.problem_count > 0; pass++) {
    Repairer fix(region, res.last, o.preen, res.actions);
    PF_TRY(changed, fix.run());
    PF_TRY(rep, check_image(region, o.progress));
    res.last = std::move(rep);
    if (!changed) break;
  }
  return res;
}

}  // namespace pmemfuse::fs
