// daemon/ops.cc: decode, call fs::Filesystem, reply.
#include "daemon/ops.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "daemon/control.h"
#include "daemon/reply.h"

namespace pmemfuse::daemon {
namespace {

Context& ctx(fuse_req_t req) { return *static_cast<Context*>(fuse_req_userdata(req)); }
fs::Filesystem& fsys(fuse_req_t req) { return *ctx(req).fs; }

struct timespec to_ts(int64_t ns) {
  int64_t sec = ns / 1000000000, rem = ns % 1000000000;
  if (rem < 0) sec -= 1, rem += 1000000000;  // tv_nsec is never negative, even before 1970
  return {time_t(sec), long(rem)};
}

struct stat to_stat(const fs::Attr& a) {
  struct stat st {};
  st.st_ino = a.ino;
  st.st_mode = a.mode;
  st.st_nlink = a.nlink;
  st.st_uid = a.uid;
  st.st_gid = a.gid;
  st.st_rdev = a.rdev;
  st.st_size = off_t(a.size);
  st.st_blksize = fs::kBlockSize;
  st.st_blocks = blkcnt_t(a.blocks * (fs::kBlockSize / 512));
  st.st_atim = to_ts(a.atime_ns);
  st.st_mtim = to_ts(a.mtime_ns);
  st.st_ctim = to_ts(a.ctime_ns);
  return st;
}

fuse_entry_param to_entry(fuse_req_t req, const fs::Attr& a) {
  fuse_entry_param e{};
  e.ino = a.ino;
  e.generation = a.generation;
  e.attr = to_stat(a);
  e.attr_timeout = ctx(req).opts->attr_timeout;
  e.entry_timeout = ctx(req).opts->entry_timeout;
  return e;
}

// Before the reply, so a stat once the call has returned sees the new atime: an access
// that moved atime makes the kernel's cached attributes stale. Only attributes are
// invalidated (offset -1), which takes no inode or page locks.
void touch_atime(Context& c, fuse_ino_t ino) {
  if (c.fs->touch_atime(ino) && c.se) fuse_lowlevel_notify_inval_inode(c.se, ino, -1, 0);
}

fs::Caller caller(fuse_req_t req) {
  const fuse_ctx* c = fuse_req_ctx(req);
  // On acl mounts the kernel does not apply the umask (FUSE_CAP_DONT_MASK): the filesystem
  // decides between it and a default ACL.
  return {c->uid, c->gid, ctx(req).opts->acl ? uint32_t(c->umask) : 0u};
}

// Times are stored as signed 64-bit nanoseconds (1677..2262); as ext4 does at its own
// limits, a time outside is clamped rather than wrapped.
int64_t to_ns(const struct timespec& ts) {
  __int128 ns = __int128(ts.tv_sec) * 1000000000 + ts.tv_nsec;
  return ns > INT64_MAX ? INT64_MAX : ns < INT64_MIN ? INT64_MIN : int64_t(ns);
}

void reply_entry(fuse_req_t req, Reply& r, const Result<fs::Attr>& a) {
  if (!a) return r.error(a.error());
  r.entry(to_entry(req, *a));
}

void op_init(void* userdata, fuse_conn_info* conn) {
  const Options& o = *static_cast<Context*>(userdata)->opts;
  conn->time_gran = 1;
  if (conn->capable & FUSE_CAP_EXPORT_SUPPORT) conn->want |= FUSE_CAP_EXPORT_SUPPORT;
  // FS_IOC_FSGETXATTR and friends (the DAX flag) reach directories too.
  if (conn->capable & FUSE_CAP_IOCTL_DIR) conn->want |= FUSE_CAP_IOCTL_DIR;
  if (o.writeback_cache && (conn->capable & FUSE_CAP_WRITEBACK_CACHE)) conn->want |= FUSE_CAP_WRITEBACK_CACHE;
  else conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  // The kernel clears setuid/setgid on write, truncate and chown by itself (as for ext4)
  // when we do not claim to.
  conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
  if (o.acl) {
    if (!(conn->capable & FUSE_CAP_POSIX_ACL)) {
      spdlog::warn("the kernel offers no FUSE POSIX ACL support (Linux 4.9 or later does): -o acl has no effect, ACLs cannot be set");
    } else {
      conn->want |= FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK;
    }
  }
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Reply r(req);
  auto a = fsys(req).lookup(parent, name);
  if (!a && a.error().code == Errc::kNotFound) {
    // A negative entry the kernel may cache for entry_timeout.
    fuse_entry_param e{};
    e.entry_timeout = ctx(req).opts->entry_timeout;
    return r.entry(e);
  }
  reply_entry(req, r, a);
}

void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n) {
  Reply r(req);
  fsys(req).forget(ino, n);
  r.none();
}

void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  Reply r(req);
  for (size_t i = 0; i < count; i++) fsys(req).forget(forgets[i].ino, forgets[i].nlookup);
  r.none();
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  Reply r(req);
  auto a = fsys(req).getattr(ino);
  if (!a) return r.error(a.error());
  r.attr(to_stat(*a), ctx(req).opts->attr_timeout);
}

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* st, int to_set, fuse_file_info*) {
  Reply r(req);
  fs::SetAttr s;
  if (to_set & FUSE_SET_ATTR_MODE) s.mode = st->st_mode;
  if (to_set & FUSE_SET_ATTR_UID) s.uid = st->st_uid;
  if (to_set & FUSE_SET_ATTR_GID) s.gid = st->st_gid;
  if (to_set & FUSE_SET_ATTR_SIZE) s.size = uint64_t(st->st_size);
  using T = fs::SetAttr::Time;
  if (to_set & FUSE_SET_ATTR_ATIME_NOW) s.atime = T::kNow;
  else if (to_set & FUSE_SET_ATTR_ATIME) s.atime = T::kSet, s.atime_ns = to_ns(st->st_atim);
  if (to_set & FUSE_SET_ATTR_MTIME_NOW) s.mtime = T::kNow;
  else if (to_set & FUSE_SET_ATTR_MTIME) s.mtime = T::kSet, s.mtime_ns = to_ns(st->st_mtim);
  auto a = fsys(req).setattr(ino, s);
  if (!a) return r.error(a.error());
  r.attr(to_stat(*a), ctx(req).opts->attr_timeout);
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  Reply r(req);
  auto t = fsys(req).readlink(ino);
  if (!t) return r.error(t.error());
  r.readlink(t->c_str());
}

void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  Reply r(req);
  reply_entry(req, r, fsys(req).mknod(parent, name, mode, uint32_t(rdev), caller(req)));
}

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  Reply r(req);
  reply_entry(req, r, fsys(req).mkdir(parent, name, mode, caller(req)));
}

void op_symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  Reply r(req);
  reply_entry(req, r, fsys(req).symlink(parent, name, target, caller(req)));
}

void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name) {
  Reply r(req);
  reply_entry(req, r, fsys(req).link(ino, parent, name));
}

void reply_status(Reply& r, const Status& s) {
  if (!s) return r.error(s.error());
  r.err(0);
}

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Reply r(req);
  reply_status(r, fsys(req).unlink(parent, name));
}

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Reply r(req);
  reply_status(r, fsys(req).rmdir(parent, name));
}

void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
               const char* newname, unsigned int flags) {
  Reply r(req);
  uint32_t f = 0;
  if (flags & RENAME_NOREPLACE) f |= fs::Filesystem::kRenameNoReplace;
  if (flags & RENAME_EXCHANGE) f |= fs::Filesystem::kRenameExchange;
  if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) return r.err(EINVAL);
  reply_status(r, fsys(req).rename(parent, name, newparent, newname, f));
}

// DAX opens bypass the kernel's page cache: each read and write is one request, served
// straight from and to pmem. Buffered ones keep the kernel's cache across opens: data
// changes only through this mount, which keeps it coherent (a DAX toggle drops it).
void set_data_path(fuse_file_info* fi, bool dax) {
  fi->direct_io = dax;
  fi->keep_cache = !dax;
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Reply r(req);
  auto a = fsys(req).getattr(ino);
  if (!a) return r.error(a.error());
  if (S_ISDIR(a->mode)) return r.err(EISDIR);
  if (fi->flags & O_TRUNC && (fi->flags & O_ACCMODE) != O_RDONLY) {
    fs::SetAttr s;
    s.size = 0;
    s.mtime = fs::SetAttr::Time::kNow;
    auto t = fsys(req).setattr(ino, s);
    if (!t) return r.error(t.error());
  }
  Context& c = ctx(req);  // req is freed by the reply
  if (Status s = c.fs->open(ino); !s) return r.error(s.error());
  set_data_path(fi, a->dax);
  // The kernel never updates atime on FUSE and serves cached reads itself: a reader's
  // open is where relatime can see the access.
  if ((fi->flags & O_ACCMODE) != O_WRONLY) touch_atime(c, ino);
  r.open(fi);
}

void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
  Reply r(req);
  auto a = fsys(req).mknod(parent, name, S_IFREG | (mode & 07777), 0, caller(req));
  if (!a) return r.error(a.error());
  if (Status s = fsys(req).open(a->ino); !s) {
    fsys(req).forget(a->ino, 1);
    return r.error(s.error());
  }
  set_data_path(fi, a->dax);
  fuse_entry_param e = to_entry(req, *a);
  r.create(e, fi);
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  Reply r(req);
  touch_atime(ctx(req), ino);
  Status s = fsys(req).read(ino, uint64_t(off), size, [&](const struct iovec* v, int n) {
    if (n == 0) r.buf(nullptr, 0);
    else r.iov(v, n);
  });
  if (!s) return r.error(s.error());
}

void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, fuse_file_info*) {
  Reply r(req);
  uint32_t m = 0;
  if (mode & FALLOC_FL_KEEP_SIZE) m |= fs::Filesystem::kFallocKeepSize;
  if (mode & FALLOC_FL_PUNCH_HOLE) m |= fs::Filesystem::kFallocPunchHole;
  if (mode & FALLOC_FL_ZERO_RANGE) m |= fs::Filesystem::kFallocZeroRange;
  if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) return r.err(EOPNOTSUPP);
  if (off < 0 || len <= 0) return r.err(EINVAL);
  reply_status(r, fsys(req).fallocate(ino, m, uint64_t(off), uint64_t(len)));
}

void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info*) {
  Reply r(req);
  if (whence != SEEK_DATA && whence != SEEK_HOLE) return r.err(EINVAL);
  if (off < 0) return r.err(ENXIO);
  auto pos = fsys(req).seek_data(ino, uint64_t(off), whence == SEEK_HOLE);
  if (!pos) return r.error(pos.error());
  r.lseek(off_t(*pos));
}

void op_write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off, fuse_file_info*) {
  Reply r(req);
  auto n = fsys(req).write(ino, uint64_t(off), buf, size);
  if (!n) return r.error(n.error());
  r.write(*n);
}

void op_flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  Reply r(req);
  // FLUSH comes with every close(2), which waits for it; RELEASE comes after it returned.
  if (ctx(req).opts->flush_on_close) return reply_status(r, fsys(req).fsync(ino, false));
  // ENOSYS would stop the kernel sending FLUSH, one round trip less per close, yet
  // creates ran at half the rate with it (docs/architecture.md, section 9).
  r.err(0);
}

void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  Reply r(req);
  fsys(req).release(ino);
  r.err(0);
}

void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info*) {
  Reply r(req);
  reply_status(r, fsys(req).fsync(ino, datasync != 0));
}

void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Reply r(req);
  auto a = fsys(req).getattr(ino);
  if (!a) return r.error(a.error());
  if (!S_ISDIR(a->mode)) return r.err(ENOTDIR);
  r.open(fi);
}

void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
  Reply r(req);
  touch_atime(ctx(req), ino);
  std::vector<char> buf(size);
  size_t used = 0;
  Status s = fsys(req).readdir(ino, uint64_t(off), plus, [&](std::string_view name, const fs::Attr& a, uint64_t next) {
    std::string n(name);
    size_t need;
    if (plus) {
      fuse_entry_param e = to_entry(req, a);
      if (name == "." || name == "..") e.ino = 0;  // attributes only, no lookup reference
      need = fuse_add_direntry_plus(req, buf.data() + used, size - used, n.c_str(), &e, off_t(next));
    } else {
      struct stat st {};
      st.st_ino = a.ino;
      st.st_mode = a.mode;
      need = fuse_add_direntry(req, buf.data() + used, size - used, n.c_str(), &st, off_t(next));
    }
    if (need > size - used) return false;
    used += need;
    return true;
  });
  if (!s && used == 0) return r.error(s.error());
  r.buf(buf.data(), used);
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  do_readdir(req, ino, size, off, false);
}

void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  do_readdir(req, ino, size, off, true);
}

void op_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
  Reply r(req);
  r.err(0);
}

void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info*) {
  Reply r(req);
  reply_status(r, fsys(req).fsync(ino, datasync != 0));
}

void op_statfs(fuse_req_t req, fuse_ino_t) {
  Reply r(req);
  auto s = fsys(req).statfs();
  if (!s) return r.error(s.error());
  struct statvfs v {};
  v.f_bsize = v.f_frsize = fs::kBlockSize;
  v.f_blocks = s->blocks;
  v.f_bfree = v.f_bavail = s->bfree;
  v.f_files = s->files;
  v.f_ffree = v.f_favail = s->ffree;
  v.f_namemax = fs::kMaxNameLen;
  r.statfs(v);
}

// After a change of a file's data path, the kernel's cached pages of it are stale: the
// DAX path never fills them, the buffered one trusts them (keep_cache).
Status after_dax_change(Context& c, fuse_ino_t ino, const Result<bool>& changed) {
  if (!changed) return changed.error();
  if (*changed && c.se) fuse_lowlevel_notify_inval_inode(c.se, ino, 0, 0);
  return {};
}

void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags) {
  Reply r(req);
  if (is_control_xattr(ino, name)) {
    Context& c = ctx(req);
    return reply_status(r, after_dax_change(c, ino, control_set(*c.fs, ino, name, std::string_view(value, size))));
  }
  fs::XattrFlags f{(flags & XATTR_CREATE) != 0, (flags & XATTR_REPLACE) != 0};
  reply_status(r, fsys(req).setxattr(ino, name, std::string_view(value, size), f));
}

void reply_sized(Reply& r, size_t size, const std::string& data) {
  if (size == 0) return r.xattr_size(data.size());
  if (size < data.size()) return r.err(ERANGE);
  r.buf(data.data(), data.size());
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Reply r(req);
  auto v = is_control_xattr(ino, name) ? control_get(fsys(req), ino, name) : fsys(req).getxattr(ino, name);
  if (!v) return r.error(v.error());
  reply_sized(r, size, *v);
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Reply r(req);
  // As the VFS does for ext4: trusted.* is visible only to CAP_SYS_ADMIN (root here).
  auto names = fsys(req).listxattr(ino, fuse_req_ctx(req)->uid == 0);
  if (!names) return r.error(names.error());
  std::string all;
  for (const std::string& n : *names) all += n + '\0';
  reply_sized(r, size, all);
}

void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  Reply r(req);
  if (is_control_xattr(ino, name)) {
    Context& c = ctx(req);
    return reply_status(r, after_dax_change(c, ino, control_set(*c.fs, ino, name, std::nullopt)));
  }
  reply_status(r, fsys(req).removexattr(ino, name));
}

// The file attribute ioctls (chattr, lsattr, xfs_io's chattr/lsattr), for the one flag
// pmemfuse has: DAX. The kernel checks ownership and sizes before it asks.
void op_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void*, fuse_file_info*, unsigned flags,
              const void* in, size_t in_size, size_t out_size) {
  Reply r(req);
  if (flags & FUSE_IOCTL_COMPAT) return r.err(ENOSYS);
  Context& c = ctx(req);
  if (cmd == FS_IOC_GETFLAGS || cmd == FS_IOC_FSGETXATTR) {
    auto s = c.fs->dax_state(ino);
    if (!s) return r.error(s.error());
    if (cmd == FS_IOC_GETFLAGS) {
      int f = s->flag ? FS_DAX_FL : 0;
      return r.ioctl(&f, std::min(out_size, sizeof f));
    }
    struct fsxattr x {};
    x.fsx_xflags = s->flag ? FS_XFLAG_DAX : 0;
    return r.ioctl(&x, std::min(out_size, sizeof x));
  }
  bool on;
  if (cmd == FS_IOC_SETFLAGS && in_size >= sizeof(int)) {
    int f;
    std::memcpy(&f, in, sizeof f);
    // Other flags (immutable, append-only, ...) are not kept by pmemfuse.
    if (f & ~FS_DAX_FL) return r.err(EOPNOTSUPP);
    on = f & FS_DAX_FL;
  } else if (cmd == FS_IOC_FSSETXATTR && in_size >= sizeof(struct fsxattr)) {
    struct fsxattr x;
    std::memcpy(&x, in, sizeof x);
    if ((x.fsx_xflags & ~FS_XFLAG_DAX) || x.fsx_extsize || x.fsx_projid || x.fsx_cowextsize) return r.err(EOPNOTSUPP);
    on = x.fsx_xflags & FS_XFLAG_DAX;
  } else {
    return r.err(ENOTTY);
  }
  Status s = after_dax_change(c, ino, c.fs->set_dax(ino, on));
  if (!s) return r.error(s.error());
  r.ioctl(nullptr, 0);  // an ioctl's success carries fuse_ioctl_out, even with no data
}

fuse_lowlevel_ops make_ops() {
  fuse_lowlevel_ops o{};
  o.init = op_init;
  o.lookup = op_lookup;
  o.forget = op_forget;
  o.forget_multi = op_forget_multi;
  o.getattr = op_getattr;
  o.setattr = op_setattr;
  o.readlink = op_readlink;
  o.mknod = op_mknod;
  o.mkdir = op_mkdir;
  o.symlink = op_symlink;
  o.link = op_link;
  o.unlink = op_unlink;
  o.rmdir = op_rmdir;
  o.rename = op_rename;
  o.open = op_open;
  o.create = op_create;
  o.read = op_read;
  o.write = op_write;
  o.flush = op_flush;
  o.release = op_release;
  o.fsync = op_fsync;
  o.opendir = op_opendir;
  o.readdir = op_readdir;
  o.readdirplus = op_readdirplus;
  o.releasedir = op_releasedir;
  o.fsyncdir = op_fsyncdir;
  o.statfs = op_statfs;
  o.setxattr = op_setxattr;
  o.getxattr = op_getxattr;
  o.listxattr = op_listxattr;
  o.removexattr = op_removexattr;
  o.fallocate = op_fallocate;
  o.lseek = op_lseek;
  o.ioctl = op_ioctl;
  return o;
}

}  // namespace

const fuse_lowlevel_ops& lowlevel_ops() {
  static const fuse_lowlevel_ops ops = make_ops();
  return ops;
}

}  // namespace pmemfuse::daemon
