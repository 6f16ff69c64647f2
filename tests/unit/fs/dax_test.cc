// tests/unit/fs/dax_test.cc: the DAX data path (fs/dax.cc) through the Filesystem facade:
// the flag, its inheritance and the dax= modes; toggling a file with dirty cached pages;
// DAX writes durable when they return; in-place overwrites not waiting for each other;
// reads through DAX windows, and windows torn down when blocks go.
#include <catch2/catch.hpp>

#include <chrono>
#include <future>
#include <string>

#include "fs/filesystem.h"
#include "tests/unit/fs/helpers.h"

using namespace pmemfuse;
using namespace pmemfuse::fs;
using namespace pmemfuse::fs::testing;
using namespace std::chrono_literals;

namespace {

MountOptions with(DaxMode mode, uint64_t cache_pages = 0, uint64_t window_bytes = 0) {
  MountOptions o;
  o.dax = mode;
  o.cache_pages = cache_pages;
  o.flush_interval_ms = 0;
  o.dax_window_bytes = window_bytes;
  return o;
}

DaxState dax(Filesystem& fs, uint64_t ino) { return take(fs.dax_state(ino), "dax_state"); }

void set_dax(Filesystem& fs, uint64_t ino, bool on) { take(fs.set_dax(ino, on), "set_dax"); }

}  // namespace

TEST_CASE("the DAX flag is inherited from the directory and kept across mounts", "[dax]") {
  auto fs = mount(formatted(), with(DaxMode::kInode));
  uint64_t d = make_dir(*fs, kRoot, "d").ino;
  uint64_t before = make_file(*fs, d, "before").ino;
  set_dax(*fs, d, true);
  uint64_t f = make_file(*fs, d, "f").ino;
  uint64_t sub = make_dir(*fs, d, "sub").ino;
  uint64_t deep = make_file(*fs, sub, "deep").ino;
  CHECK_FALSE(dax(*fs, before).flag);
  for (uint64_t ino : {d, f, sub, deep}) CHECK(dax(*fs, ino).flag);
  CHECK(dax(*fs, deep).effective);
  CHECK(take(fs->getattr(f)).dax);
  CHECK_FALSE(take(fs->getattr(before)).dax);
  uint64_t link = take(fs->symlink(d, "l", "f", kCaller)).ino;
  auto refused = fs->set_dax(link, true);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == Errc::kInvalid);

  auto again = mount(unmount_copy(*fs), with(DaxMode::kInode));
  CHECK(dax(*again, f).effective);
  CHECK_FALSE(dax(*again, before).effective);
}

TEST_CASE("dax=always and dax=never decide for every file; the flag is kept", "[dax]") {
  mm::Region r = formatted();
  uint64_t plain, flagged;
  {
    auto fs = mount(std::move(r), with(DaxMode::kInode));
    plain = make_file(*fs, kRoot, "plain").ino;
    flagged = make_file(*fs, kRoot, "flagged").ino;
    set_dax(*fs, flagged, true);
    r = unmount_copy(*fs);
  }
  auto always = mount(copy_region(r), with(DaxMode::kAlways));
  CHECK(dax(*always, plain).effective);
  CHECK_FALSE(dax(*always, plain).flag);
  CHECK(dax(*always, kRoot).effective);  // files created anywhere will be DAX
  auto never = mount(copy_region(r), with(DaxMode::kNever));
  CHECK_FALSE(dax(*never, flagged).effective);
  CHECK(dax(*never, flagged).flag);
  CHECK(take(never->set_dax(plain, true)) == false);  // the flag changes, the path not
}

TEST_CASE("switching a file to DAX writes its dirty cached pages back first", "[dax]") {
  auto fs = mount(formatted(), with(DaxMode::kInode, 256));
  uint64_t f = make_file(*fs, kRoot, "f").ino;
  std::string data = pattern(300 * 1024 + 5, 1);
  write_str(*fs, f, 0, data);
  REQUIRE(fs->cache()->stats().dirty_pages > 0);
  CHECK(take(fs->set_dax(f, true)) == true);
  CHECK(fs->cache()->stats().dirty_pages == 0);
  CHECK(fs->cache()->stats().cached_pages == 0);
  // What the media holds now, without the unmount's writeback.
  auto media = mount(copy_region(fs->region()));
  CHECK(read_all(*media, f) == data);
  // And back: buffered again, the data is read through the cache path.
  CHECK(take(fs->set_dax(f, false)) == true);
  CHECK(read_all(*fs, f) == data);
}

TEST_CASE("DAX writes reach the media when they return, on a cached mount", "[dax]") {
  auto fs = mount(formatted(), with(DaxMode::kAlways, 256));
  uint64_t f = make_file(*fs, kRoot, "f").ino;
  std::string data = pattern(70000, 2);
  write_str(*fs, f, 0, data);                     // allocating
  write_str(*fs, f, 4096 + 3, pattern(5000, 3));  // in place
  data.replace(4096 + 3, 5000, pattern(5000, 3));
  CHECK(fs->cache()->stats().app_bytes == 0);
  auto media = mount(copy_region(fs->region()));
  CHECK(read_all(*media, f) == data);
  CHECK(take(media->getattr(f)).size == data.size());
}

TEST_CASE("in-place DAX overwrites do not wait for each other; allocating writes do", "[dax]") {
  auto fs = mount(formatted(), with(DaxMode::kAlways));
  uint64_t f = make_file(*fs, kRoot, "f").ino;
  write_str(*fs, f, 0, pattern(64 * 1024, 4));
  int64_t before = take(fs->getattr(f)).mtime_ns;
  std::future_status overwrite{}, allocate{};
  std::future<void> grow;
  // The reader's sink runs with the inode lock held shared, as a writer storing in place
  // holds it: another in-place writer must get through, one that allocates must wait.
  require_ok(fs->read(f, 0, 4096, [&](const struct iovec*, int) {
    auto w = std::async(std::launch::async, [&] { write_str(*fs, f, 8192, "in place"); });
    overwrite = w.wait_for(5s);
    grow = std::async(std::launch::async, [&] { write_str(*fs, f, 1 << 20, "past EOF"); });
    allocate = grow.wait_for(200ms);
  }));
  CHECK(overwrite == std::future_status::ready);
  CHECK(allocate == std::future_status::timeout);
  grow.wait();
  CHECK(read_range(*fs, f, 8192, 8) == "in place");
  CHECK(read_range(*fs, f, 1 << 20, 8) == "past EOF");
  CHECK(take(fs->getattr(f)).mtime_ns > before);
}

TEST_CASE("DAX reads go through windows, which truncate, punch and toggles tear down", "[dax]") {
  TempImage img;  // windows map the image file: an anonymous region has none
  img.format();
  auto fs = img.mount(with(DaxMode::kAlways, 0, 8 * kMiB));
  REQUIRE(fs->windows() != nullptr);
  uint64_t f = make_file(*fs, kRoot, "f").ino;
  std::string data = pattern(5 * kMiB, 5);
  write_str(*fs, f, 0, data);
  CHECK(read_all(*fs, f) == data);
  auto w = fs->windows()->stats();
  CHECK(w.mapped == 3);
  CHECK(read_all(*fs, f) == data);
  CHECK(fs->windows()->stats().hits > w.hits);

  require_ok(fs->fallocate(f, Filesystem::kFallocPunchHole | Filesystem::kFallocKeepSize, kMiB, 4096));
  data.replace(kMiB, 4096, std::string(4096, '\0'));
  CHECK(read_all(*fs, f) == data);  // the chunk has a hole now: read extent by extent
  CHECK(fs->windows()->stats().fallbacks > 0);

  SetAttr s;
  s.size = 2 * kMiB + 100;
  take(fs->setattr(f, s));
  CHECK(fs->windows()->stats().mapped <= 1);
  s.size = 5 * kMiB;
  take(fs->setattr(f, s));
  data = data.substr(0, 2 * kMiB + 100) + std::string(5 * kMiB - (2 * kMiB + 100), '\0');
  CHECK(read_all(*fs, f) == data);
}
