// tests/unit/fs/helpers.h: shared fixtures for the fs/ unit tests: formatted in-memory
// images, the low-level component stack (journal, space, inode table) built straight
// from a formatted region, byte snapshots of images, temporary image files in /dev/shm,
// and small facade helpers (read a whole range, write a pattern).
#pragma once

#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "fs/filesystem.h"
#include "fs/format.h"
#include "fs/itable.h"
#include "fs/journal.h"
#include "fs/space.h"
#include "mm/region.h"

namespace pmemfuse::fs::testing {

inline constexpr uint64_t kMiB = 1ull << 20;
inline constexpr uint64_t kDefaultImage = 64 * kMiB;

// Unwraps a Result, failing the test with the error message otherwise.
template <class T>
T take(Result<T> r, const char* what = "result") {
  if (!r.ok()) FAIL(what << ": " << errc_name(r.error().code) << ": " << r.error().msg);
  return std::move(*r);
}

inline void require_ok(const Status& s, const char* what = "status") {
  if (!s.ok()) FAIL(what << ": " << errc_name(s.error().code) << ": " << s.error().msg);
}

// An anonymous region of size bytes with a fresh filesystem on it.
inline mm::Region formatted(uint64_t size = kDefaultImage, const MkfsOptions& o = {}) {
  mm::Region r = take(mm::Region::anonymous(size), "anonymous region");
  require_ok(mkfs(r, o), "mkfs");
  return r;
}

inline DiskSuper read_super(const mm::Region& r) {
  DiskSuper sb;
  std::memcpy(&sb, r.at(0), sizeof sb);
  return sb;
}

// A new anonymous region holding a copy of size bytes at base (a crash image, or a
// snapshot of an unmounted filesystem).
inline mm::Region copy_region(const uint8_t* base, uint64_t size) {
  return take(mm::Region::anonymous_copy(base, size), "anonymous copy");
}
inline mm::Region copy_region(const mm::Region& src) { return copy_region(src.base(), src.size()); }

inline std::unique_ptr<Filesystem> mount(mm::Region r, const MountOptions& o = {}) {
  return take(Filesystem::mount(std::move(r), o), "mount");
}

inline std::unique_ptr<Filesystem> mount_fresh(uint64_t size = kDefaultImage) {
  return mount(formatted(size));
}

// Unmounts fs and returns a copy of its image (fs stays alive, unmounted).
inline mm::Region unmount_copy(Filesystem& fs) {
  require_ok(fs.unmount(), "unmount");
  return copy_region(fs.region().base(), fs.region().size());
}

// The components below the facade, opened on a formatted region as mount would.
// Not movable: the components keep references to the region.
struct Stack {
  explicit Stack(mm::Region r) : region(std::move(r)) {
    sb = read_super(region);
    journal = take(Journal::open(region, sb.journal_start, sb.journal_blocks, true), "journal open");
    space = std::make_unique<Space>(region, sb);
    require_ok(space->load(), "space load");
    itable = std::make_unique<InodeTable>(region, *space, *journal, sb);
    require_ok(itable->load(), "itable load");
  }
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;

  Status commit(Tx& tx) { return journal->commit(tx); }

  mm::Region region;
  DiskSuper sb{};
  std::unique_ptr<Journal> journal;
  std::unique_ptr<Space> space;
  std::unique_ptr<InodeTable> itable;
};

inline std::unique_ptr<Stack> make_stack(uint64_t size = kDefaultImage) {
  return std::make_unique<Stack>(formatted(size));
}

// A unique image path in /dev/shm, removed when it goes out of scope.
class TempImage {
 public:
  TempImage() {
    static std::atomic<int> counter{0};
    path_ = "/dev/shm/pmemfuse-fs-unit-" + std::to_string(getpid()) + "-" + std::to_string(counter++) + ".img";
    ::unlink(path_.c_str());
  }
  ~TempImage() { ::unlink(path_.c_str()); }
  TempImage(const TempImage&) = delete;
  TempImage& operator=(const TempImage&) = delete;
  const std::string& path() const { return path_; }

  // Creates the file and writes a fresh filesystem on it.
  void format(uint64_t size = kDefaultImage, const MkfsOptions& o = {}) {
    require_ok(mm::Region::create_file(path_, size), "create_file");
    mm::Region r = open();
    require_ok(mkfs(r, o), "mkfs");
  }
  mm::Region open() const { return take(mm::Region::open(path_, {}), "region open"); }
  std::unique_ptr<Filesystem> mount(const MountOptions& o = {}) const {
    return testing::mount(open(), o);
  }

 private:
  std::string path_;
};

// Reads [off, off + size) of ino into a string (clipped at EOF, as read() is).
inline std::string read_range(Filesystem& fs, uint64_t ino, uint64_t off, uint64_t size) {
  std::string out;
  Status s = fs.read(ino, off, size, [&](const struct iovec* iov, int n) {
    for (int k = 0; k < n; k++) out.append(static_cast<const char*>(iov[k].iov_base), iov[k].iov_len);
  });
  require_ok(s, "read");
  return out;
}

inline std::string read_all(Filesystem& fs, uint64_t ino) {
  uint64_t size = take(fs.getattr(ino), "getattr").size;
  return read_range(fs, ino, 0, size);
}

// Deterministic non-zero content that differs per (seed, offset).
inline std::string pattern(uint64_t n, uint64_t seed, uint64_t off = 0) {
  std::string s(n, '\0');
  for (uint64_t k = 0; k < n; k++) {
    uint64_t x = (off + k) * 0x9E3779B97F4A7C15ull ^ (seed * 0xBF58476D1CE4E5B9ull);
    x ^= x >> 29;
    s[k] = char((x & 0xff) | 1);  // never zero, so holes are distinguishable
  }
  return s;
}

inline void write_str(Filesystem& fs, uint64_t ino, uint64_t off, const std::string& data) {
  uint64_t n = take(fs.write(ino, off, data.data(), data.size()), "write");
  REQUIRE(n == data.size());
}

inline bool all_zero(const std::string& s) {
  for (char c : s)
    if (c != 0) return false;
  return true;
}

inline constexpr uint64_t kRoot = 1;
inline const Caller kCaller{1000, 1000};

inline Attr make_file(Filesystem& fs, uint64_t parent, std::string_view name, uint32_t mode = 0644) {
  return take(fs.mknod(parent, name, S_IFREG | mode, 0, kCaller), "mknod");
}
inline Attr make_dir(Filesystem& fs, uint64_t parent, std::string_view name) {
  return take(fs.mkdir(parent, name, 0755, kCaller), "mkdir");
}

}  // namespace pmemfuse::fs::testing
