// mm/region.cc: mapping of image files and device-dax character devices.
#include "mm/region.h"

#include <fcntl.h>
#include <libpmem.h>
#include <linux/magic.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

namespace pmemfuse::mm {
namespace {

std::string errno_text(const std::string& what, const std::string& path) {
  return path + ": " + what + ": " + std::strerror(errno);
}

Result<uint64_t> read_sysfs_u64(const std::string& file) {
  std::ifstream in(file);
  std::string text;
  if (!(in >> text)) return make_error(Errc::kIo, file + ": cannot read");
  errno = 0;
  char* end = nullptr;
  uint64_t v = std::strtoull(text.c_str(), &end, 0);
  if (errno != 0 || end == text.c_str()) return make_error(Errc::kIo, file + ": not a number");
  return v;
}

// Device-dax reports size and alignment through sysfs; the character device itself has
// st_size 0 and refuses ftruncate.
Result<std::pair<uint64_t, uint64_t>> devdax_geometry(const struct stat& st,
                                                      const std::string& path) {
  std::string dir = "/sys/dev/char/" + std::to_string(major(st.st_rdev)) + ":" +
                    std::to_string(minor(st.st_rdev));
  auto size = read_sysfs_u64(dir + "/size");
  if (!size) return make_error(Errc::kInvalid, path + ": not a device-dax device (" +
                                                   size.error().msg + ")");
  auto align = read_sysfs_u64(dir + "/align");
  return std::make_pair(*size, align ? *align : kDevDaxDefaultAlign);
}

// One process at a time owns the media. A daemon that was just unmounted may still be
// writing back, so wait a little before calling the device busy.
Status lock_exclusive(int fd, bool shared, const std::string& path) {
  for (int i = 0; i < 100; i++) {
    if (flock(fd, (shared ? LOCK_SH : LOCK_EX) | LOCK_NB) == 0) return {};
    if (errno != EWOULDBLOCK) return make_error(Errc::kIo, errno_text("lock", path));
    usleep(50000);
  }
  return make_error(Errc::kBusy, path + ": in use by another pmemfuse process (mounted, or being checked): unmount it or let fsck finish first");
}

bool on_tmpfs(int fd) {
  struct statfs sfs;
  return fstatfs(fd, &sfs) == 0 && sfs.f_type == TMPFS_MAGIC;
}

// Reserves an aligned address range and maps the media over it, as device-dax requires.
Result<std::pair<uint8_t*, uint64_t>> map_aligned(int fd, uint64_t len, uint64_t align,
                                                  bool ro, bool cow, const std::string& path) {
  uint64_t slack = align > kPageSize ? align : 0;
  void* r = mmap(nullptr, len + slack, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (r == MAP_FAILED) return make_error(Errc::kIo, errno_text("reserve address range", path));
  auto raw = reinterpret_cast<uintptr_t>(r);
  uintptr_t aligned = slack ? (raw + align - 1) & ~(align - 1) : raw;
  int prot = PROT_READ | (ro && !cow ? 0 : PROT_WRITE);
  int flags = (cow ? MAP_PRIVATE | MAP_NORESERVE : MAP_SHARED) | MAP_FIXED;
  void* m = mmap(reinterpret_cast<void*>(aligned), len, prot, flags, fd, 0);
  if (m == MAP_FAILED) {
    Error e = make_error(Errc::kIo, errno_text("mmap", path));
    munmap(r, len + slack);
    return e;
  }
  if (aligned > raw) munmap(r, aligned - raw);
  uintptr_t end = aligned + len, rend = raw + len + slack;
  if (rend > end) munmap(reinterpret_cast<void*>(end), rend - end);
  return std::make_pair(reinterpret_cast<uint8_t*>(m), len);
}

}  // namespace

Result<uint64_t> parse_size(const std::string& s) {
  if (s.empty() || s[0] < '0' || s[0] > '9') return make_error(Errc::kInvalid, "bad size '" + s + "'");
  size_t pos = 0;
  unsigned long long v = 0;
  try {
    v = std::stoull(s, &pos, 10);
  } catch (...) {
    return make_error(Errc::kInvalid, "bad size '" + s + "'");
  }
  std::string unit = s.substr(pos);
  uint64_t mul = 1;
  if (unit == "" || unit == "b" || unit == "B") mul = 1;
  else if (unit == "k" || unit == "K" || unit == "KiB") mul = 1ull << 10;
  else if (unit == "m" || unit == "M" || unit == "MiB") mul = 1ull << 20;
  else if (unit == "g" || unit == "G" || unit == "GiB") mul = 1ull << 30;
  else if (unit == "t" || unit == "T" || unit == "TiB") mul = 1ull << 40;
  else return make_error(Errc::kInvalid, "bad size unit in '" + s + "' (use K, M, G or T)");
  if (v > UINT64_MAX / mul) return make_error(Errc::kInvalid, "size '" + s + "' too large");
  return static_cast<uint64_t>(v * mul);
}

Result<uint64_t> parse_alignment(const std::string& s) {
  if (s.empty()) return kDevDaxDefaultAlign;
  auto a = parse_size(s);
  if (!a || *a < kPageSize || (*a & (*a - 1))) {
    return make_error(Errc::kInvalid, "bad alignment '" + s + "' (a power of two of at least 4K, e.g. 2M)");
  }
  return a;
}

Status Region::create_file(const std::string& path, uint64_t size) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return make_error(Errc::kIo, errno_text("open", path));
  struct stat st;
  Status s;
  if (fstat(fd, &st) != 0) {
    s = make_error(Errc::kIo, errno_text("stat", path));
  } else if (!S_ISREG(st.st_mode)) {
    s = make_error(Errc::kInvalid, path + ": --size applies to image files only");
  } else if (static_cast<uint64_t>(st.st_size) < size && ftruncate(fd, size) != 0) {
    s = make_error(errno == ENOSPC ? Errc::kNoSpace : Errc::kIo, errno_text("resize", path));
  }
  ::close(fd);
  return s;
}

Result<Region> Region::open(const std::string& path, const RegionOptions& opts) {
  bool ro = opts.read_only || opts.private_copy;
  int fd = ::open(path.c_str(), (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (fd < 0) {
    return make_error(errno == ENOENT ? Errc::kNotFound : Errc::kIo, errno_text("open", path));
  }
  Region r;
  r.fd_ = fd;
  r.path_ = path;
  r.read_only_ = opts.read_only && !opts.private_copy;
  struct stat st;
  if (fstat(fd, &st) != 0) return make_error(Errc::kIo, errno_text("stat", path));
  PF_CHECK(lock_exclusive(fd, ro, path));
  uint64_t len = 0;
  if (S_ISCHR(st.st_mode)) {
    PF_TRY(geo, devdax_geometry(st, path));
    len = geo.first;
    r.align_ = geo.second;
    r.devdax_ = true;
  } else if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) {
    len = S_ISREG(st.st_mode) ? st.st_size : 0;
    if (S_ISBLK(st.st_mode)) {
      off_t end = lseek(fd, 0, SEEK_END);
      len = end > 0 ? end : 0;
    }
    if (opts.emulate_devdax_align) {
      r.align_ = opts.emulate_devdax_align;
      r.devdax_ = true;
    }
  } else {
    return make_error(Errc::kInvalid, path + ": not an image file or a device");
  }
  len &= ~(r.align_ - 1);
  if (len == 0) return make_error(Errc::kInvalid, path + ": empty or smaller than one mapping unit");
  PF_TRY(m, map_aligned(fd, len, r.align_, opts.read_only, opts.private_copy, path));
  r.base_ = r.map_base_ = m.first;
  r.size_ = r.map_len_ = m.second;
  bool cpu = pmem_is_pmem(r.base_, r.size_) || S_ISCHR(st.st_mode) || on_tmpfs(fd);
  r.flush_mode_ = cpu ? FlushMode::kCpu : FlushMode::kMsync;
  r.persister_ = make_pmem_persister(r.flush_mode_);
  return r;
}

Result<Region> Region::anonymous(uint64_t size, std::unique_ptr<Persister> p) {
  void* m = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return make_error(Errc::kIo, errno_text("mmap", "anonymous region"));
  Region r;
  r.base_ = r.map_base_ = static_cast<uint8_t*>(m);
  r.size_ = r.map_len_ = size;
  r.path_ = "(memory)";
  r.persister_ = p ? std::move(p) : make_pmem_persister(FlushMode::kCpu);
  return r;
}

Result<Region> Region::anonymous_copy(const uint8_t* src, uint64_t size) {
  PF_TRY(r, anonymous(size));
  // The new mapping reads as zeros: copying only non-zero pages keeps copies of mostly
  // empty images cheap (no page is faulted in for them).
  static const uint8_t zero_page[kPageSize] = {};
  uint64_t off = 0;
  for (; off + kPageSize <= size; off += kPageSize) {
    if (std::memcmp(src + off, zero_page, kPageSize) != 0) std::memcpy(r.base() + off, src + off, kPageSize);
  }
  if (off < size) std::memcpy(r.base() + off, src + off, size - off);
  return r;
}

Region::Region(Region&& o) noexcept { *this = std::move(o); }

Region& Region::operator=(Region&& o) noexcept {
  if (this == &o) return *this;
  reset();
  base_ = std::exchange(o.base_, nullptr);
  map_base_ = std::exchange(o.map_base_, nullptr);
  size_ = std::exchange(o.size_, 0);
  map_len_ = std::exchange(o.map_len_, 0);
  align_ = o.align_;
  fd_ = std::exchange(o.fd_, -1);
  devdax_ = o.devdax_;
  read_only_ = o.read_only_;
  flush_mode_ = o.flush_mode_;
  path_ = std::move(o.path_);
  persister_ = std::move(o.persister_);
  std::swap(stored_, o.stored_);
  return *this;
}

Region::~Region() { reset(); }

void Region::reset() {
  if (map_base_) munmap(map_base_, map_len_);
  if (fd_ >= 0) ::close(fd_);
  map_base_ = base_ = nullptr;
  fd_ = -1;
}

}  // namespace pmemfuse::mm
