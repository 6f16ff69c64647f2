// fs/namespace.cc: lookup, create, link, unlink, rename, symlinks and readdir. Namespace
// changes hold ns_mu_ exclusively, then the inodes they touch in inode-number order;
// lookup and readdir hold it shared, so they never wait on a rename holding their inodes.
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "fs/acl.h"
#include "fs/filesystem.h"
#include "fs/verify.h"

namespace pmemfuse::fs {
namespace {

uint8_t dtype(uint32_t mode) { return uint8_t((mode & S_IFMT) >> 12); }

Status check_name(std::string_view name) {
  if (name.size() > kMaxNameLen) return make_error(Errc::kNameTooLong, std::string(name.substr(0, 32)) + "...");
  if (name.empty() || name == "." || name == ".." || name.find('/') != name.npos ||
      name.find('\0') != name.npos) {
    return make_error(Errc::kInvalid, "bad name '" + std::string(name) + "'");
  }
  return {};
}

// Locks distinct inodes exclusively in inode-number order.
template <class Ref>
std::vector<std::unique_lock<std::shared_mutex>> lock_all(std::vector<Ref> refs) {
  std::sort(refs.begin(), refs.end(), [](const Ref& a, const Ref& b) { return a->ino < b->ino; });
  refs.erase(std::unique(refs.begin(), refs.end(), [](const Ref& a, const Ref& b) { return a->ino == b->ino; }),
             refs.end());
  std::vector<std::unique_lock<std::shared_mutex>> locks;
  for (auto& r : refs) locks.emplace_back(r->mu);
  return locks;
}

}  // namespace

Result<Attr> Filesystem::lookup(uint64_t parent, std::string_view name) {
  if (name.size() > kMaxNameLen) return make_error(Errc::kNameTooLong, "name longer than 255 bytes");
  std::shared_lock ns(ns_mu_);
  PF_TRY(p, get(parent));
  uint64_t target;
  {
    std::shared_lock pl(p->mu);
    if (!S_ISDIR(p->d.mode)) return make_error(Errc::kNotDir, "inode " + std::to_string(parent));
    if (name == ".") target = parent;
    else if (name == "..") target = p->d.parent;
    else {
      auto e = p->dir->find(region_, p->map, name);
      if (!e) return make_error(Errc::kNotFound, std::string(name));
      target = e->ino;
    }
  }
  PF_TRY(i, get(target));
  pin_kernel(i);
  std::shared_lock il(i->mu);
  return attr_of(*i);
}

Status Filesystem::store_symlink(Tx& tx, Inode& i, std::string_view target) {
  i.d.size = target.size();
  if (target.size() <= kInlineBytes) {
    i.d.flags |= kInodeInlineData;
    std::memcpy(i.d.map.data, target.data(), target.size());
    return {};
  }
  PF_TRY(runs, space_->alloc(tx, 1, 0));
  region_.write(runs[0].start * kBlockSize, target.data(), target.size());
  PF_TRY(removed, i.map.replace(tx, *space_, i.ino, i.d, 0, 1, {{0, 1, runs[0].start, false}}));
  i.d.blocks += 1;
  return {};
}

Result<Attr> Filesystem::create_node(uint64_t parent, std::string_view name, uint32_t mode,
                                     uint32_t rdev, const Caller& c, std::string_view target) {
  PF_CHECK(writable());
  PF_CHECK(check_name(name));
  std::unique_lock ns(ns_mu_);
  PF_TRY(p, get(parent));
  std::unique_lock pl(p->mu);
  if (!S_ISDIR(p->d.mode)) return make_error(Errc::kNotDir, "inode " + std::to_string(parent));
  if (p->d.nlink == 0) return make_error(Errc::kNotFound, "directory was removed");
  if (p->dir->find(region_, p->map, name)) return make_error(Errc::kExists, std::string(name));
  bool is_dir = S_ISDIR(mode);
  if (is_dir && p->d.nlink >= kMaxLinks) return make_error(Errc::kTooManyLinks, "parent has too many subdirectories");
  Tx tx(region_);
  PF_TRY(slot, itable_->alloc(tx));
  auto i = std::make_shared<Inode>(slot.first);
  int64_t t = now();
  DiskInode& d = i->d;
  d.mode = mode;
  d.uid = c.uid;
  d.gid = c.gid;
  if (p->d.mode & S_ISGID) {  // a setgid directory hands on its group, and to directories the bit
    d.gid = p->d.gid;
    if (is_dir) d.mode |= S_ISGID;
  }
  d.nlink = is_dir ? 2 : 1;
  d.generation = slot.second;
  d.rdev = rdev;
  d.atime_ns = d.mtime_ns = d.ctime_ns = d.btime_ns = t;
  if (is_dir || S_ISREG(mode)) d.flags |= p->d.flags & kInodeDax;  // as ext4 and XFS
  i->dax = dax_for(d);
  if (is_dir) {
    d.parent = parent;
    i->dir = std::make_unique<Directory>();
  }
  if (S_ISLNK(mode)) PF_CHECK(store_symlink(tx, *i, target));
  else if (opts_.acl) PF_CHECK(inherit_acls(tx, *p, *i, c));
  PF_CHECK(p->dir->add(tx, *space_, parent, p->d, p->map, name, i->ino, dtype(mode)));
  p->d.entries++;
  if (is_dir) p->d.nlink++;
  p->d.mtime_ns = p->d.ctime_ns = t;
  write_inode(tx, *p);
  write_inode(tx, *i);
  PF_CHECK(commit(tx));
  i->kernel_refs = 1;
  std::lock_guard ic(icache_mu_);
  icache_[i->ino] = i;
  return attr_of(*i);
}

// On acl mounts the kernel leaves the umask to us: a directory's default ACL replaces it,
// as on ext4; without one the umask applies.
Status Filesystem::inherit_acls(Tx& tx, Inode& parent, Inode& child, const Caller& c) {
  PF_TRY(pxs, load_xattrs(region_, parent.ino, parent.d));
  auto dflt = std::find_if(pxs.begin(), pxs.end(), [](const Xattr& x) { return x.name == kAclDefault; });
  if (dflt == pxs.end()) {
    child.d.mode &= ~(c.umask & 0777);
    return {};
  }
  PF_TRY(acl, parse_acl(dflt->value));
  uint32_t perm = child.d.mode & 0777;
  Acl access = acl_for_create(acl, &perm);
  child.d.mode = (child.d.mode & ~0777u) | perm;
  std::vector<Xattr> xs;
  if (!acl_is_mode(access)) xs.push_back({std::string(kAclAccess), encode_acl(access)});
  if (S_ISDIR(child.d.mode)) xs.push_back(*dflt);
  return store_xattrs(tx, *space_, child.ino, child.d, xs);
}

Result<Attr> Filesystem::mknod(uint64_t parent, std::string_view name, uint32_t mode,
                               uint32_t rdev, const Caller& c) {
  if (S_ISDIR(mode) || S_ISLNK(mode)) return make_error(Errc::kInvalid, "mknod of a directory or symlink");
  if ((mode & S_IFMT) == 0) mode |= S_IFREG;
  return create_node(parent, name, mode, rdev, c, {});
}

Result<Attr> Filesystem::mkdir(uint64_t parent, std::string_view name, uint32_t mode, const Caller& c) {
  return create_node(parent, name, S_IFDIR | (mode & 07777), 0, c, {});
}

Result<Attr> Filesystem::symlink(uint64_t parent, std::string_view name, std::string_view target,
                                 const Caller& c) {
  if (target.empty()) return make_error(Errc::kNotFound, "empty symlink target");
  if (target.size() > kMaxSymlinkLen) return make_error(Errc::kNameTooLong, "symlink target longer than 4095 bytes");
  return create_node(parent, name, S_IFLNK | 0777, 0, c, target);
}

Result<std::string> Filesystem::readlink(uint64_t ino) {
  PF_TRY(i, get(ino));
  std::shared_lock lk(i->mu);
  if (!S_ISLNK(i->d.mode)) return make_error(Errc::kInvalid, "not a symlink");
  if (i->d.flags & kInodeInlineData) return std::string(i->d.map.data, i->d.size);
  const Extent* e = i->map.find(0);
  if (!e || e->lblk != 0 || i->d.size > kBlockSize) {
    return corrupt("symlink inode " + std::to_string(ino) + ": target block missing");
  }
  return std::string(reinterpret_cast<const char*>(region_.at(e->pblk * kBlockSize)), i->d.size);
}

Result<Attr> Filesystem::link(uint64_t ino, uint64_t parent, std::string_view name) {
  PF_CHECK(writable());
  PF_CHECK(check_name(name));
  std::unique_lock ns(ns_mu_);
  PF_TRY(i, get(ino));
  PF_TRY(p, get(parent));
  auto locks = lock_all(std::vector<InodeRef>{i, p});
  if (S_ISDIR(i->d.mode)) return make_error(Errc::kPerm, "hard link to a directory");
  if (!S_ISDIR(p->d.mode)) return make_error(Errc::kNotDir, "inode " + std::to_string(parent));
  if (p->d.nlink == 0 || i->d.nlink == 0) return make_error(Errc::kNotFound, "removed");
  if (i->d.nlink >= kMaxLinks) return make_error(Errc::kTooManyLinks, "inode " + std::to_string(ino));
  if (p->dir->find(region_, p->map, name)) return make_error(Errc::kExists, std::string(name));
  Tx tx(region_);
  PF_CHECK(p->dir->add(tx, *space_, parent, p->d, p->map, name, ino, dtype(i->d.mode)));
  int64_t t = now();
  p->d.entries++;
  p->d.mtime_ns = p->d.ctime_ns = t;
  i->d.nlink++;
  i->d.ctime_ns = t;
  write_inode(tx, *p);
  write_inode(tx, *i);
  PF_CHECK(commit(tx));
  pin_kernel(i);
  return attr_of(*i);
}

// Removes one name of the victim (a directory's only one). An inode left with no name
// enters the orphan table in tx and stays there until it is freed. When the table is full
// the unlink still succeeds: only a crash before the last close would then leave the
// inode for fsck to find, which beats failing rm.
void Filesystem::drop_link_locked(Tx& tx, const InodeRef& victim) {
  victim->d.nlink = S_ISDIR(victim->d.mode) ? 0 : victim->d.nlink - 1;
  if (victim->d.nlink == 0 && !orphan_add(tx, *victim)) info_.orphans_untracked++;
}

Status Filesystem::after_unlink(const InodeRef& victim) {
  maybe_drop(victim);
  return {};
}

Status Filesystem::remove_entry(uint64_t parent, std::string_view name, bool want_dir) {
  PF_CHECK(writable());
  if (name.size() > kMaxNameLen) return make_error(Errc::kNameTooLong, "name longer than 255 bytes");
  std::unique_lock ns(ns_mu_);
  PF_TRY(p, get(parent));
  if (!S_ISDIR(p->d.mode)) return make_error(Errc::kNotDir, "inode " + std::to_string(parent));
  auto e = p->dir->find(region_, p->map, name);
  if (!e) return make_error(Errc::kNotFound, std::string(name));
  PF_TRY(v, get(e->ino));
  {
    auto locks = lock_all(std::vector<InodeRef>{p, v});
    bool is_dir = S_ISDIR(v->d.mode);
    if (want_dir && !is_dir) return make_error(Errc::kNotDir, std::string(name));
    if (!want_dir && is_dir) return make_error(Errc::kIsDir, std::string(name));
    if (is_dir && v->d.entries) return make_error(Errc::kNotEmpty, std::string(name));
    int64_t t = now();
    Tx tx(region_);
    drop_link_locked(tx, v);
    p->dir->remove(tx, p->map, *e, name);
    p->d.entries--;
    if (is_dir) p->d.nlink--;
    p->d.mtime_ns = p->d.ctime_ns = t;
    v->d.ctime_ns = t;
    write_inode(tx, *p);
    write_inode(tx, *v);
    PF_CHECK(commit(tx));
  }
  ns.unlock();
  return after_unlink(v);
}

Status Filesystem::unlink(uint64_t parent, std::string_view name) { return remove_entry(parent, name, false); }
Status Filesystem::rmdir(uint64_t parent, std::string_view name) { return remove_entry(parent, name, true); }

Result<bool> Filesystem::is_ancestor(uint64_t anc, uint64_t ino) {
  for (uint32_t depth = 0; depth < 1u << 16; depth++) {
    if (ino == anc) return true;
    if (ino == sb_.root_ino) return false;
    PF_TRY(i, get(ino));
    ino = i->d.parent;  // parent pointers change only under ns_mu_, which the caller holds
  }
  return corrupt("directory parent chain of inode " + std::to_string(ino) + " does not reach the root");
}

Status Filesystem::rename(uint64_t parent, std::string_view name, uint64_t newparent,
                          std::string_view newname, uint32_t flags) {
  PF_CHECK(writable());
  PF_CHECK(check_name(name));
  PF_CHECK(check_name(newname));
  bool exchange = flags & kRenameExchange;
  std::unique_lock ns(ns_mu_);
  PF_TRY(p1, get(parent));
  PF_TRY(p2, get(newparent));
  if (!S_ISDIR(p1->d.mode) || !S_ISDIR(p2->d.mode)) return make_error(Errc::kNotDir, "rename parent");
  auto se = p1->dir->find(region_, p1->map, name);
  if (!se) return make_error(Errc::kNotFound, std::string(name));
  auto de = p2->dir->find(region_, p2->map, newname);
  if (de && (flags & kRenameNoReplace)) return make_error(Errc::kExists, std::string(newname));
  if (!de && exchange) return make_error(Errc::kNotFound, std::string(newname));
  if (de && de->ino == se->ino) return {};
  PF_TRY(s, get(se->ino));
  InodeRef d;
  if (de) {
    PF_TRY(dr, get(de->ino));
    d = dr;
  }
  bool s_dir = S_ISDIR(s->d.mode), d_dir = d && S_ISDIR(d->d.mode);
  if (s_dir && parent != newparent) {
    PF_TRY(loop, is_ancestor(s->ino, newparent));
    if (loop) return make_error(Errc::kInvalid, "cannot move a directory into itself");
  }
  if (exchange && d_dir && parent != newparent) {
    PF_TRY(loop, is_ancestor(d->ino, parent));
    if (loop) return make_error(Errc::kInvalid, "cannot move a directory into itself");
  }
  if (d && !exchange) {
    if (s_dir && !d_dir) return make_error(Errc::kNotDir, std::string(newname));
    if (!s_dir && d_dir) return make_error(Errc::kIsDir, std::string(newname));
    if (d_dir && d->d.entries) return make_error(Errc::kNotEmpty, std::string(newname));
  }
  if (s_dir && !d_dir && parent != newparent && p2->d.nlink >= kMaxLinks) {
    return make_error(Errc::kTooManyLinks, "target directory has too many subdirectories");
  }
  std::vector<InodeRef> refs{p1, s};
  if (p2 != p1) refs.push_back(p2);
  if (d) refs.push_back(d);
  int64_t t = now();
  {
    auto locks = lock_all(refs);
    Tx tx(region_);
    if (exchange) {
      p1->dir->retarget(tx, p1->map, *se, d->ino, dtype(d->d.mode));
      p2->dir->retarget(tx, p2->map, *de, s->ino, dtype(s->d.mode));
      if (parent != newparent) {
        if (s_dir) s->d.parent = newparent, p1->d.nlink--, p2->d.nlink++;
        if (d_dir) d->d.parent = parent, p2->d.nlink--, p1->d.nlink++;
      }
      d->d.ctime_ns = t;
    } else if (d) {
      drop_link_locked(tx, d);
      p1->dir->remove(tx, p1->map, *se, name);
      p1->d.entries--;
      p2->dir->retarget(tx, p2->map, *de, s->ino, dtype(s->d.mode));
      if (d_dir) p2->d.nlink--;
      d->d.ctime_ns = t;
    } else {
      PF_CHECK(p2->dir->add(tx, *space_, newparent, p2->d, p2->map, newname, s->ino, dtype(s->d.mode)));
      p2->d.entries++;
      p1->dir->remove(tx, p1->map, *se, name);
      p1->d.entries--;
    }
    if (!exchange && s_dir && parent != newparent) {
      s->d.parent = newparent;
      p1->d.nlink--;
      p2->d.nlink++;
    }
    s->d.ctime_ns = t;
    p1->d.mtime_ns = p1->d.ctime_ns = p2->d.mtime_ns = p2->d.ctime_ns = t;
    for (auto& r : refs) write_inode(tx, *r);
    PF_CHECK(commit(tx));
  }
  ns.unlock();
  if (d && !exchange) return after_unlink(d);
  return {};
}

Status Filesystem::readdir(uint64_t ino, uint64_t cookie, bool plus, const DirFiller& fn) {
  std::shared_lock ns(ns_mu_);
  PF_TRY(i, get(ino));
  std::shared_lock lk(i->mu);
  if (!S_ISDIR(i->d.mode)) return make_error(Errc::kNotDir, "inode " + std::to_string(ino));
  if (cookie < 1 && !fn(".", attr_of(*i), 1)) return {};
  if (cookie < 2) {
    Attr up;
    up.ino = i->d.parent;
    up.mode = S_IFDIR;
    if (!fn("..", up, 2)) return {};
  }
  Status st;
  i->dir->list(region_, i->map, cookie, [&](std::string_view name, const DirEntry& e, uint64_t next) {
    Attr a;
    a.ino = e.ino;
    a.mode = uint32_t(e.type) << 12;
    InodeRef c;
    if (plus) {
      auto r = get(e.ino);
      if (!r) {
        st = std::move(r.error());
        return false;
      }
      c = *r;
      std::shared_lock cl(c->mu);
      a = attr_of(*c);
    }
    if (!fn(name, a, next)) return false;
    if (plus) pin_kernel(c);
    return true;
  });
  return st;
}

}  // namespace pmemfuse::fs
