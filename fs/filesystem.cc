// fs/filesystem.cc: mount and unmount, the inode cache, inode lifetime and the orphan
// table, attributes, xattrs and statfs. Namespace operations are in namespace.cc, file
// data in data.cc.
#include "fs/filesystem.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <ctime>

#include "fs/acl.h"
#include "fs/verify.h"

namespace pmemfuse::fs {
namespace {

std::string hex(uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%x", v);
  return b;
}

}  // namespace

Filesystem::Filesystem(mm::Region region, const DiskSuper& sb, const MountOptions& o, bool read_only)
    : region_(std::move(region)), sb_(sb), read_only_(read_only), opts_(o) {
  info_.read_only = read_only;
}

Result<std::unique_ptr<Filesystem>> Filesystem::mount(mm::Region region, const MountOptions& o) {
  uint64_t device_blocks = region.size() / kBlockSize;
  std::string dev = region.path();
  if (device_blocks < kMinBlocks) {
    return make_error(Errc::kInvalid, dev + ": " + std::to_string(region.size()) +
                                          " bytes is too small for a pmemfuse image (minimum 16 MiB)");
  }
  DiskSuper sb;
  std::memcpy(&sb, region.at(0), sizeof sb);
  if (sb.magic != kSuperMagic) {
    return make_error(Errc::kInvalid, dev + ": not a pmemfuse image (no superblock magic); "
                                            "create one with mkfs.pmemfuse");
  }
  if (Status s = verify_super(sb, device_blocks, "superblock"); !s) {
    // The primary changes only through the journal, so a copy torn by a crash during a
    // checkpoint is rewritten by replay; the backup says where the journal is.
    auto backup = find_backup_super(region.base(), device_blocks);
    if (!backup || region.read_only()) {
      return make_error(Errc::kCorrupt, dev + ": " + s.error().msg +
                                            "; run fsck.pmemfuse -n for a full report");
    }
    sb = backup->first;
  }
  if (sb.incompat & ~kIncompatKnown) {
    return make_error(Errc::kNotSupported, dev + ": unknown incompatible features " +
                                               hex(sb.incompat & ~kIncompatKnown) +
                                               "; a newer pmemfuse is needed to mount it");
  }
  bool ro = o.read_only || region.read_only() || (sb.ro_compat & ~kRoCompatKnown);
  std::unique_ptr<Filesystem> fs(new Filesystem(std::move(region), sb, o, ro));
  fs->info_.read_only = ro;
  if (Status s = fs->open_components(); !s) {
    // Refused: the destructor must not "unmount" (write the superblock, its backup and
    // the journal header) from half-loaded, possibly damaged state.
    fs->unmounted_ = true;
    return std::move(s.error());
  }
  if (o.cache_pages) {
    PF_TRY(cache, mm::PageCache::create(o.cache_pages));
    fs->cache_ = std::move(cache);
    fs->cache_->set_pressure_hook([p = fs.get()] { p->kick_flusher(); });
  }
  // Windows map the media file again; an anonymous region (tests) has no file.
  if (o.dax_window_bytes && o.dax != DaxMode::kNever && fs->region_.fd() >= 0) {
    const mm::Region& r = fs->region_;
    PF_TRY(w, mm::DaxWindows::create(r.fd(), o.dax_window_bytes, r.align(), false));
    fs->windows_ = std::move(w);
  }
  return fs;
}

Status Filesystem::open_components() {
  // Replay writes, and an unknown ro_compat feature forbids every write: a journal that
  // needs replay then refuses the mount.
  uint32_t unknown_ro = sb_.ro_compat & ~kRoCompatKnown;
  auto j = Journal::open(region_, sb_.journal_start, sb_.journal_blocks, !region_.read_only() && !unknown_ro);
  if (!j && unknown_ro) j.error().msg += " (unknown read-only-compatible features " + hex(unknown_ro) + ")";
  if (!j) return std::move(j.error());
  journal_ = std::move(*j);
  info_.replayed = journal_->pending_at_open();
  // Replay may have changed the superblock.
  std::memcpy(&sb_, region_.at(0), sizeof sb_);
  if (Status s = verify_super(sb_, region_.size() / kBlockSize, "superblock after journal replay"); !s) {
    return make_error(Errc::kCorrupt, region_.path() + ": " + s.error().msg + "; fsck.pmemfuse -y restores it from the backup");
  }
  space_ = std::make_unique<Space>(region_, sb_);
  PF_CHECK(space_->load(opts_.progress));
  itable_ = std::make_unique<InodeTable>(region_, *space_, *journal_, sb_);
  PF_CHECK(itable_->load());
  PF_CHECK(load_orphans());
  PF_TRY(root, get(sb_.root_ino));
  if (!S_ISDIR(root->d.mode)) return corrupt("root inode is not a directory");
  if (read_only_) return {};
  Tx tx(region_);
  sb_.state = kStateMounted;
  sb_.mount_count++;
  write_super(tx);
  PF_CHECK(commit(tx));
  return finish_orphans();
}

Status Filesystem::load_orphans() {
  for (uint64_t s = sb_.orphan_blocks * kOrphanSlotsPerBlock; s-- > 0;) {
    DiskOrphanSlot slot;
    std::memcpy(&slot, region_.at(sb_.orphan_start * kBlockSize + s * sizeof slot), sizeof slot);
    if (slot.ino == 0 && slot.crc == 0) {
      free_orphan_slots_.push_back(s);
      continue;
    }
    if (slot.crc != orphan_slot_crc(slot.ino, s) || !itable_->valid(slot.ino)) {
      return corrupt("orphan table (block " + std::to_string(sb_.orphan_start + s / kOrphanSlotsPerBlock) +
                     "): slot " + std::to_string(s) + " is damaged");
    }
    orphans_at_mount_.push_back({s, slot.ino});
  }
  return {};
}

Status Filesystem::finish_orphans() {
  for (auto [slot, ino] : orphans_at_mount_) {
    auto got = get(ino);
    if (!got && got.error().code == Errc::kNotFound) {
      return corrupt("orphan table slot " + std::to_string(slot) + " names inode " + std::to_string(ino) +
                     ", which is not in use; run fsck.pmemfuse -y");
    }
    PF_TRY(i, std::move(got));
    std::unique_lock lk(i->mu);
    if (!(i->d.flags & kInodeOrphan) || i->d.orphan_slot != slot + 1) {
      return corrupt("orphan table slot " + std::to_string(slot) + " names inode " +
                     std::to_string(ino) + ", which is not marked orphan there");
    }
    if (i->d.nlink == 0) {
      PF_CHECK(reclaim_locked(*i));
    } else {
      Tx tx(region_);
      PF_CHECK(trim_locked(*i, (i->d.size + kBlockSize - 1) / kBlockSize, tx, false));
    }
    lk.unlock();
    std::lock_guard ic(icache_mu_);
    if (icache_[ino] == i) icache_.erase(ino);
    info_.orphans_reclaimed++;
  }
  orphans_at_mount_.clear();
  return {};
}

Filesystem::~Filesystem() {
  (void)unmount();
  stop_flusher();
}

Status Filesystem::unmount() {
  if (unmounted_) return {};
  stop_flusher();
  Status synced = sync();
  unmounted_ = true;
  if (read_only_ || failed_) return synced;
  std::vector<InodeRef> all;
  {
    std::lock_guard ic(icache_mu_);
    for (auto& [n, i] : icache_) all.push_back(i);
  }
  for (auto& i : all) {
    // The kernel is gone: an unlinked file still open or remembered dies now.
    drop_cached(i);
    std::unique_lock lk(i->mu);
    if (i->d.nlink == 0 && i->d.mode != 0) PF_CHECK(reclaim_locked(*i));
    else PF_CHECK(flush_times_locked(*i));
  }
  Tx tx(region_);
  sb_.state = kStateClean;
  write_super(tx);
  PF_CHECK(commit(tx));
  journal_->checkpoint();
  // The backup follows the primary at every clean unmount.
  region_.write(sb_.backup_block * kBlockSize, &sb_, sizeof sb_);
  region_.fence();
  return synced;
}

// ---- helpers ----

int64_t Filesystem::now() const {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

Status Filesystem::writable() const {
  if (failed_) return make_error(Errc::kIo, "filesystem shut down after a failed commit");
  if (read_only_) return make_error(Errc::kReadOnly, "mounted read-only");
  return {};
}

Status Filesystem::commit(Tx& tx) {
  Status s = journal_->commit(tx);
  if (!s) failed_ = true;  // DRAM state is ahead of media now: stop before it spreads
  return s;
}

void Filesystem::write_super(Tx& tx) {
  sb_.crc = super_crc(sb_);
  tx.put(0, sb_);
}

void Filesystem::write_inode(Tx& tx, Inode& i) {
  fold_times_locked(i);
  itable_->write(tx, i.ino, i.d);
  i.times_dirty = false;
}

Attr Filesystem::attr_of(const Inode& i) const {
  const DiskInode& d = i.d;
  Attr a{i.ino, d.generation, d.mode, d.nlink, d.uid, d.gid, d.rdev, d.size, d.blocks,
         d.atime_ns, d.mtime_ns, d.ctime_ns, d.btime_ns, i.dax};
  if (int64_t m = i.dax_mtime.load(std::memory_order_acquire); m != 0 && m > a.mtime_ns) {
    a.mtime_ns = m;
    a.ctime_ns = std::max(a.ctime_ns, m);
  }
  // Cached writes not yet on media: their size, blocks (reserved, as ext4's delayed
  // allocation counts them) and time.
  if (auto f = cache_ && S_ISREG(d.mode) ? cache_->find(i.ino) : nullptr) {
    a.size = f->size();
    a.blocks += f->reserved_pages();
    if (int64_t m = f->mtime_ns()) {
      a.mtime_ns = m;
      a.ctime_ns = std::max(a.ctime_ns, m);
    }
  }
  return a;
}

// ---- inode cache ----

Result<Filesystem::InodeRef> Filesystem::get(uint64_t ino) {
  {
    std::lock_guard ic(icache_mu_);
    auto it = icache_.find(ino);
    if (it != icache_.end()) return it->second;
  }
  if (!itable_->valid(ino)) return make_error(Errc::kNotFound, "inode " + std::to_string(ino) + " out of range");
  auto i = std::make_shared<Inode>(ino);
  PF_TRY(d, itable_->read(ino));
  i->d = d;
  PF_TRY(map, ExtentMap::load(region_, ino, d, sb_.block_count));
  i->map = std::move(map);
  i->dax = dax_for(d);
  if (S_ISDIR(d.mode) && d.nlink == 0) {
    // Removed, so empty; its blocks may already be freed by a reclaim a crash cut short.
    i->dir = std::make_unique<Directory>();
  } else if (S_ISDIR(d.mode)) {
    if (d.size % kBlockSize) return corrupt("directory inode " + std::to_string(ino) + ": size not block-aligned");
    PF_TRY(dir, Directory::load(region_, ino, i->map, d.size / kBlockSize));
    i->dir = std::move(dir);
  }
  std::lock_guard ic(icache_mu_);
  return icache_.emplace(ino, i).first->second;
}

void Filesystem::pin_kernel(const InodeRef& i) {
  std::lock_guard ic(icache_mu_);
  i->kernel_refs++;
}

bool Filesystem::claim_unused(const InodeRef& i) {
  std::lock_guard ic(icache_mu_);
  if (i->kernel_refs || i->opens || i->dropping) return false;
  i->dropping = true;
  return true;
}

// Called once an inode has no kernel or open references: frees an unlinked inode, or
// writes back and evicts a linked one.
void Filesystem::drop(const InodeRef& i) {
  drop_cached(i);
  std::unique_lock lk(i->mu);
  bool gone = false;
  if (i->d.nlink == 0 && !read_only_ && !failed_) gone = reclaim_locked(*i).ok();
  else (void)flush_times_locked(*i);
  lk.unlock();
  std::lock_guard ic(icache_mu_);
  i->dropping = false;
  // A freed slot may already hold a new inode: erase only this object.
  auto it = icache_.find(i->ino);
  if (it != icache_.end() && it->second == i && (gone || (!i->kernel_refs && !i->opens))) icache_.erase(it);
}

void Filesystem::maybe_drop(const InodeRef& i) {
  if (claim_unused(i)) drop(i);
}

void Filesystem::forget(uint64_t ino, uint64_t n) {
  InodeRef i;
  {
    std::lock_guard ic(icache_mu_);
    auto it = icache_.find(ino);
    if (it == icache_.end()) return;
    i = it->second;
    i->kernel_refs -= std::min(n, i->kernel_refs);
  }
  maybe_drop(i);
}

Status Filesystem::open(uint64_t ino) {
  PF_TRY(i, get(ino));
  std::lock_guard ic(icache_mu_);
  i->opens++;
  return {};
}

void Filesystem::release(uint64_t ino) {
  InodeRef i;
  {
    std::lock_guard ic(icache_mu_);
    auto it = icache_.find(ino);
    if (it == icache_.end()) return;
    i = it->second;
    if (i->opens) i->opens--;
  }
  {
    std::unique_lock lk(i->mu);
    (void)flush_times_locked(*i);
  }
  maybe_drop(i);
}

// Writes timestamps kept only in DRAM. Nothing to do on a read-only or shut-down mount.
Status Filesystem::flush_times_locked(Inode& i) {
  fold_times_locked(i);
  if (!i.times_dirty || read_only_ || failed_) return {};
  Tx tx(region_);
  write_inode(tx, i);
  return commit(tx);
}

// ---- orphans ----

Status Filesystem::orphan_add(Tx& tx, Inode& i) {
  if (i.d.flags & kInodeOrphan) return {};
  uint64_t s;
  {
    std::lock_guard lk(orphan_mu_);
    if (free_orphan_slots_.empty()) {
      return make_error(Errc::kNoSpace, "orphan table full (" +
                                            std::to_string(sb_.orphan_blocks * kOrphanSlotsPerBlock) +
                                            " unlinked files still open)");
    }
    s = free_orphan_slots_.back();
    free_orphan_slots_.pop_back();
  }
  tx.on_abort([this, s] {
    std::lock_guard lk(orphan_mu_);
    free_orphan_slots_.push_back(s);
  });
  DiskOrphanSlot slot{i.ino, orphan_slot_crc(i.ino, s), 0};
  tx.put(sb_.orphan_start * kBlockSize + s * sizeof slot, slot);
  i.d.flags |= kInodeOrphan;
  i.d.orphan_slot = s + 1;
  return {};
}

void Filesystem::orphan_remove(Tx& tx, Inode& i) {
  if (!(i.d.flags & kInodeOrphan)) return;
  uint64_t s = i.d.orphan_slot - 1;
  DiskOrphanSlot empty{};
  tx.put(sb_.orphan_start * kBlockSize + s * sizeof empty, empty);
  tx.on_commit([this, s] {
    std::lock_guard lk(orphan_mu_);
    free_orphan_slots_.push_back(s);
  });
  i.d.flags &= ~kInodeOrphan;
  i.d.orphan_slot = 0;
}

// Frees every block of an unlinked, unreferenced inode, then the inode itself. An inode
// with no data blocks goes in one transaction.
Status Filesystem::reclaim_locked(Inode& i) {
  Tx tx(region_);
  std::unique_ptr<Tx> rest;
  if (!i.map.extents().empty()) {
    (void)orphan_add(tx, i);  // so a crash part-way is finished at mount, if a slot is free
    PF_CHECK(trim_locked(i, 0, tx, true));
    rest = std::make_unique<Tx>(region_);
  }
  Tx& last = rest ? *rest : tx;
  if (i.d.xattr_block) space_->free(last, {i.d.xattr_block, 1});
  orphan_remove(last, i);
  DiskInode cleared{};
  cleared.generation = i.d.generation;
  itable_->write(last, i.ino, cleared);
  itable_->free(last, i.ino);
  PF_CHECK(commit(last));
  i.d = cleared;
  return {};
}

// ---- attributes ----

Result<Attr> Filesystem::getattr(uint64_t ino) {
  PF_TRY(i, get(ino));
  std::shared_lock lk(i->mu);
  return attr_of(*i);
}

Result<Attr> Filesystem::setattr(uint64_t ino, const SetAttr& s) {
  PF_CHECK(writable());
  PF_TRY(i, get(ino));
  std::shared_lock io(i->io_mu);
  auto f = cache_of(*i);
  // Cached writes carry their own mtime until written back: store them first, so an
  // explicit time is not overtaken by an older write.
  if (f && s.mtime != SetAttr::Time::kKeep) PF_CHECK(flush_file(*f));
  std::unique_lock<std::mutex> quiet;
  if (f && s.size) quiet = cache_->quiesce(*f);
  std::unique_lock lk(i->mu);
  fold_times_locked(*i);  // before an explicit time, which must not be overtaken
  int64_t t = now();
  if (s.size) {
    if (S_ISDIR(i->d.mode)) return make_error(Errc::kIsDir, "truncate of a directory");
    if (!S_ISREG(i->d.mode)) return make_error(Errc::kInvalid, "truncate of a special file");
    if (*s.size > kMaxFileBlocks * kBlockSize) return make_error(Errc::kFileTooBig, "size beyond 16 TiB");
  }
  DiskInode saved = i->d;
  if (s.mode) i->d.mode = (i->d.mode & S_IFMT) | (*s.mode & 07777);
  if (s.uid) i->d.uid = *s.uid;
  if (s.gid) i->d.gid = *s.gid;
  if (s.atime == SetAttr::Time::kNow) i->d.atime_ns = t;
  if (s.atime == SetAttr::Time::kSet) i->d.atime_ns = s.atime_ns;
  if (s.mtime == SetAttr::Time::kNow) i->d.mtime_ns = t;
  if (s.mtime == SetAttr::Time::kSet) i->d.mtime_ns = s.mtime_ns;
  i->d.ctime_ns = t;
  Status st;
  bool resized = s.size && *s.size != (f ? f->size() : i->d.size);
  if (s.size && *s.size != i->d.size) {
    st = truncate_locked(*i, *s.size, t);
  } else {
    if (resized) i->d.mtime_ns = t;  // a size only the cache had
    Tx tx(region_);
    if (s.mode && opts_.acl) st = chmod_acl_locked(tx, *i);
    if (st) {
      write_inode(tx, *i);
      st = commit(tx);
    }
  }
  if (!st) {
    // Only the first transaction of a truncate can fail; media still has `saved`.
    PF_CHECK(rollback_locked(*i, saved));
    return std::move(st.error());
  }
  if (f && resized) {
    space_->unreserve(cache_->zero_locked(*f, *s.size, UINT64_MAX));
    cache_->set_size_locked(*f, *s.size);
    cache_->set_mtime_locked(*f, i->d.mtime_ns);
  }
  return attr_of(*i);
}

// ---- xattrs ----

// The namespaces ext4 accepts. POSIX ACL names need the acl mount option.
Status Filesystem::check_xattr_name(std::string_view name) const {
  if (name == kAclAccess || name == kAclDefault) {
    if (!opts_.acl) return make_error(Errc::kNotSupported, "POSIX ACLs need the acl mount option");
    return {};
  }
  for (std::string_view prefix : {"user.", "trusted.", "security."}) {
    if (name.substr(0, prefix.size()) != prefix) continue;
    if (name.size() == prefix.size()) return make_error(Errc::kInvalid, "xattr name '" + std::string(name) + "' is only a namespace");
    return {};
  }
  return make_error(Errc::kNotSupported, "xattr namespace of '" + std::string(name) + "'");
}

Result<std::string> Filesystem::getxattr(uint64_t ino, std::string_view name) {
  PF_CHECK(check_xattr_name(name));
  PF_TRY(i, get(ino));
  std::shared_lock lk(i->mu);
  PF_TRY(xs, load_xattrs(region_, ino, i->d));
  for (auto& x : xs)
    if (x.name == name) return x.value;
  return make_error(Errc::kNoData, std::string(name));
}

Result<std::vector<std::string>> Filesystem::listxattr(uint64_t ino, bool trusted) {
  PF_TRY(i, get(ino));
  std::shared_lock lk(i->mu);
  PF_TRY(xs, load_xattrs(region_, ino, i->d));
  std::vector<std::string> names;
  for (auto& x : xs)
    if (trusted || x.name.rfind("trusted.", 0) != 0) names.push_back(x.name);
  return names;
}

Status Filesystem::setxattr(uint64_t ino, std::string_view name, std::string_view value,
                            XattrFlags f) {
  PF_CHECK(writable());
  if (name.empty() || name.size() > kMaxNameLen) return make_error(Errc::kRange, "xattr name length");
  PF_CHECK(check_xattr_name(name));
  if (value.size() > kXattrBlockBytes) return make_error(Errc::kNoSpace, "xattr value larger than a block");
  bool acl = name == kAclAccess || name == kAclDefault;
  PF_TRY(i, get(ino));
  std::unique_lock lk(i->mu);
  PF_TRY(xs, load_xattrs(region_, ino, i->d));
  auto it = std::find_if(xs.begin(), xs.end(), [&](const Xattr& x) { return x.name == name; });
  if (it != xs.end() && f.create) return make_error(Errc::kExists, std::string(name));
  if (it == xs.end() && f.replace) return make_error(Errc::kNoData, std::string(name));
  Tx tx(region_);
  DiskInode saved = i->d;
  Status s;
  if (acl) {
    s = store_acl(tx, *i, xs, name, value);
  } else {
    if (it != xs.end()) it->value = std::string(value);
    else xs.push_back({std::string(name), std::string(value)});
    s = store_xattrs(tx, *space_, ino, i->d, xs);
  }
  if (!s) {
    i->d = saved;
    return s;
  }
  i->d.ctime_ns = now();
  write_inode(tx, *i);
  return commit(tx);
}

// An access ACL sets the mode's permission bits and is kept only if it says more than
// they do; a default ACL belongs to directories only.
Status Filesystem::store_acl(Tx& tx, Inode& i, std::vector<Xattr>& xs, std::string_view name,
                             std::string_view value) {
  PF_TRY(acl, parse_acl(value));
  bool access = name == kAclAccess;
  if (!access && !S_ISDIR(i.d.mode)) return make_error(Errc::kAccess, "default ACL on a non-directory");
  std::erase_if(xs, [&](const Xattr& x) { return x.name == name; });
  if (access) i.d.mode = (i.d.mode & ~0777u) | acl_mode_bits(acl);
  if (!access || !acl_is_mode(acl)) xs.push_back({std::string(name), encode_acl(acl)});
  return store_xattrs(tx, *space_, i.ino, i.d, xs);
}

Status Filesystem::chmod_acl_locked(Tx& tx, Inode& i) {
  PF_TRY(xs, load_xattrs(region_, i.ino, i.d));
  for (Xattr& x : xs) {
    if (x.name != kAclAccess) continue;
    PF_TRY(acl, parse_acl(x.value));
    acl_chmod(&acl, i.d.mode);
    x.value = encode_acl(acl);
    return store_xattrs(tx, *space_, i.ino, i.d, xs);
  }
  return {};
}

Status Filesystem::removexattr(uint64_t ino, std::string_view name) {
  PF_CHECK(writable());
  PF_CHECK(check_xattr_name(name));
  PF_TRY(i, get(ino));
  std::unique_lock lk(i->mu);
  PF_TRY(xs, load_xattrs(region_, ino, i->d));
  auto it = std::find_if(xs.begin(), xs.end(), [&](const Xattr& x) { return x.name == name; });
  if (it == xs.end()) return make_error(Errc::kNoData, std::string(name));
  xs.erase(it);
  Tx tx(region_);
  PF_CHECK(store_xattrs(tx, *space_, ino, i->d, xs));  // shrinking never needs space
  i->d.ctime_ns = now();
  write_inode(tx, *i);
  return commit(tx);
}

Result<StatFs> Filesystem::statfs() {
  StatFs s;
  s.blocks = sb_.block_count;
  // With a cache, what buffered writes can still get (the slack is for their metadata).
  s.bfree = cache_ ? space_->reservable() : space_->available();
  uint64_t used = itable_->used();
  // The table grows by whole contiguous chunks: count only those free space can hold.
  uint64_t growable = std::min<uint64_t>(kMaxChunks - itable_->nchunks(), space_->count_fits(kChunkBlocks, 1));
  s.ffree = itable_->capacity() - used + growable * kInodesPerChunk;
  s.files = used + s.ffree;
  return s;
}

}  // namespace pmemfuse::fs
