// tests/unit/fs/buffered_test.cc: the buffered data path (fs/buffered.cc) through the
// Filesystem facade with the page cache on and no timer: what reads and getattr see
// before writeback, what the media holds before and after fsync and unmount, truncate,
// punch hole and seek over cached pages, space reservations at ENOSPC, and writers not
// waiting for a writeback that is storing their page.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <latch>
#include <memory>
#include <string>
#include <thread>

#include "fs/check.h"
#include "fs/filesystem.h"
#include "mm/persist.h"
#include "tests/unit/fs/helpers.h"

using namespace pmemfuse;
using namespace pmemfuse::fs;
using namespace pmemfuse::fs::testing;
using namespace std::chrono_literals;

namespace {

MountOptions cached(uint64_t pages = 4096) {
  MountOptions o;
  o.cache_pages = pages;
  o.flush_interval_ms = 0;
  return o;
}

Attr attr(Filesystem& fs, uint64_t ino) { return take(fs.getattr(ino), "getattr"); }

// Where two contents first differ (the shorter one's size if it is a prefix); -1 when
// equal. Keeps failure output short for contents of megabytes.
int64_t first_diff(const std::string& a, const std::string& b) {
  if (a == b) return -1;
  return std::mismatch(a.begin(), a.end(), b.begin(), b.end()).first - a.begin();
}

uint64_t dirty_pages(const Filesystem& fs) { return fs.cache()->stats().dirty_pages; }

// What the media holds now: a copy of fs's image (a crash image while fs is mounted),
// mounted without a cache.
std::unique_ptr<Filesystem> media_of(const Filesystem& fs) {
  return mount(copy_region(fs.region()));
}

void expect_consistent(const Filesystem& fs) {
  mm::Region copy = copy_region(fs.region());
  CheckReport rep = take(check_image(copy), "check_image");
  INFO((rep.problems.empty() ? std::string() : rep.problems[0]));
  CHECK(rep.problem_count == 0);
}

void resize(Filesystem& fs, uint64_t ino, uint64_t size) {
  SetAttr s;
  s.size = size;
  take(fs.setattr(ino, s), "truncate");
}

// Appends `chunk`-byte pieces of a pattern to acked (the file's content from offset 0)
// until a write fails or is short, keeping what was acknowledged. The failure must be
// kNoSpace.
void fill_until_full(Filesystem& fs, uint64_t ino, uint64_t chunk, uint64_t limit,
                     std::string& acked) {
  while (acked.size() < limit) {
    std::string p = pattern(chunk, 9, acked.size());
    auto w = fs.write(ino, acked.size(), p.data(), p.size());
    if (!w.ok()) {
      CHECK(w.error().code == Errc::kNoSpace);
      break;
    }
    acked += p.substr(0, *w);
    if (*w < p.size()) break;
  }
}

// Passes stores to the CPU backend; when armed, the next store or fill waits until the
// test releases it (a writeback stuck storing to pmem).
struct Gate {
  std::atomic<bool> armed{false};
  std::latch entered{1};
  std::latch release{1};
};

class GatePersister final : public mm::Persister {
 public:
  explicit GatePersister(std::shared_ptr<Gate> g)
      : gate_(std::move(g)), inner_(mm::make_pmem_persister(mm::FlushMode::kCpu)) {}
  void store(void* dst, const void* src, size_t n) override {
    hold();
    inner_->store(dst, src, n);
  }
  void fill(void* dst, int c, size_t n) override {
    hold();
    inner_->fill(dst, c, n);
  }
  void fence() override { inner_->fence(); }

 private:
  void hold() {
    if (!gate_->armed.exchange(false)) return;
    gate_->entered.count_down();
    gate_->release.wait();
  }
  std::shared_ptr<Gate> gate_;
  std::unique_ptr<mm::Persister> inner_;
};

}  // namespace

TEST_CASE("buffered: a write is seen by read and getattr at once and reaches pmem at fsync",
          "[fs][cache]") {
  auto fs = mount(formatted(), cached());
  uint64_t ino = make_file(*fs, kRoot, "f").ino;
  SetAttr old_time;
  old_time.mtime = SetAttr::Time::kSet;
  old_time.mtime_ns = 1000;
  take(fs->setattr(ino, old_time));

  std::string data = pattern(3 * kBlockSize + 100, 1);
  write_str(*fs, ino, 10, data);
  std::string want = std::string(10, '\0') + data;
  Attr a = attr(*fs, ino);
  CHECK(a.size == want.size());
  CHECK(a.mtime_ns > 1000);
  CHECK(first_diff(read_all(*fs, ino), want) == -1);
  CHECK(dirty_pages(*fs) == 4);

  require_ok(fs->fsync(ino, false));
  CHECK(dirty_pages(*fs) == 0);
  CHECK(fs->cache()->stats().pmem_bytes == 4 * kBlockSize);
  auto media = media_of(*fs);
  CHECK(first_diff(read_all(*media, ino), want) == -1);
  CHECK(attr(*media, ino).mtime_ns == a.mtime_ns);
  CHECK(attr(*fs, ino).mtime_ns == a.mtime_ns);
  expect_consistent(*fs);
}

TEST_CASE("buffered: unsynced data is not on the media until fsync or unmount", "[fs][cache]") {
  auto fs = mount(formatted(), cached());
  uint64_t fresh = make_file(*fs, kRoot, "fresh").ino;
  uint64_t old = make_file(*fs, kRoot, "old").ino;
  std::string first = pattern(2 * kBlockSize, 2), second = pattern(2 * kBlockSize, 3);
  write_str(*fs, old, 0, first);
  require_ok(fs->fsync(old, false));
  write_str(*fs, old, 0, second);
  write_str(*fs, fresh, 0, second);
  {
    auto media = media_of(*fs);
    CHECK(attr(*media, fresh).size == 0);
    CHECK(first_diff(read_all(*media, old), first) == -1);
  }
  require_ok(fs->unmount());
  auto media = media_of(*fs);
  CHECK(first_diff(read_all(*media, fresh), second) == -1);
  CHECK(first_diff(read_all(*media, old), second) == -1);
  expect_consistent(*fs);
}

TEST_CASE("buffered: truncating dirty pages away then extending reads zeros, after fsync too",
          "[fs][cache]") {
  auto fs = mount(formatted(), cached());
  uint64_t ino = make_file(*fs, kRoot, "f").ino;
  uint64_t bfree0 = take(fs->statfs()).bfree;
  write_str(*fs, ino, 0, pattern(4 * kBlockSize, 4));
  CHECK(take(fs->statfs()).bfree == bfree0 - 4);  // reserved for writeback
  resize(*fs, ino, 0);
  CHECK(take(fs->statfs()).bfree == bfree0);  // the reservations came back
  CHECK(dirty_pages(*fs) == 0);

  // Old data on media, newer data cached over it, both cut.
  write_str(*fs, ino, 0, pattern(4 * kBlockSize, 5));
  require_ok(fs->fsync(ino, false));
  std::string data = pattern(4 * kBlockSize, 6);
  write_str(*fs, ino, 0, data);
  const uint64_t cut = kBlockSize + 100;
  resize(*fs, ino, cut);
  CHECK(attr(*fs, ino).size == cut);
  resize(*fs, ino, 4 * kBlockSize);
  std::string want = data.substr(0, cut) + std::string(4 * kBlockSize - cut, '\0');
  CHECK(first_diff(read_all(*fs, ino), want) == -1);
  require_ok(fs->fsync(ino, false));
  CHECK(first_diff(read_all(*fs, ino), want) == -1);
  CHECK(first_diff(read_all(*media_of(*fs), ino), want) == -1);
  expect_consistent(*fs);
}

TEST_CASE("buffered: punched holes over dirty pages read zeros and seek sees cached data",
          "[fs][cache]") {
  auto fs = mount(formatted(), cached());
  uint64_t ino = make_file(*fs, kRoot, "f").ino;
  std::string data = pattern(4 * kBlockSize, 7);
  write_str(*fs, ino, 0, data);

  const uint32_t punch = Filesystem::kFallocPunchHole | Filesystem::kFallocKeepSize;
  require_ok(fs->fallocate(ino, punch, kBlockSize, kBlockSize));      // a whole page
  require_ok(fs->fallocate(ino, punch, 2 * kBlockSize + 10, 20));     // inside a page
  require_ok(fs->fallocate(ino, punch, 3 * kBlockSize, kBlockSize));  // the last page
  std::string want = data;
  std::fill(want.begin() + kBlockSize, want.begin() + 2 * kBlockSize, '\0');
  std::fill(want.begin() + 2 * kBlockSize + 10, want.begin() + 2 * kBlockSize + 30, '\0');
  std::fill(want.begin() + 3 * kBlockSize, want.end(), '\0');
  CHECK(attr(*fs, ino).size == 4 * kBlockSize);
  CHECK(first_diff(read_all(*fs, ino), want) == -1);

  // Seeking writes the cache back first: data only cached counts.
  CHECK(take(fs->seek_data(ino, 0, false)) == 0);
  CHECK(take(fs->seek_data(ino, 0, true)) == kBlockSize);
  CHECK(take(fs->seek_data(ino, kBlockSize, false)) == 2 * kBlockSize);
  CHECK(take(fs->seek_data(ino, 2 * kBlockSize, true)) == 3 * kBlockSize);
  require_ok(fs->fsync(ino, false));
  CHECK(dirty_pages(*fs) == 0);
  CHECK(first_diff(read_all(*fs, ino), want) == -1);
  auto media = media_of(*fs);
  CHECK(attr(*media, ino).size == 4 * kBlockSize);  // the size survives its last page
  CHECK(first_diff(read_all(*media, ino), want) == -1);
  expect_consistent(*fs);
}

TEST_CASE("buffered: writes fail with no space before writeback could; acknowledged data survives",
          "[fs][cache][enospc]") {
  // The cache is larger than the device: only the reservations stop the writes.
  auto fs = mount(formatted(16 * kMiB), cached(8192));
  uint64_t ino = make_file(*fs, kRoot, "f").ino;
  std::string acked;
  fill_until_full(*fs, ino, 256 * 1024, 16 * kMiB, acked);
  fill_until_full(*fs, ino, 1000, 16 * kMiB, acked);
  CHECK(acked.size() > 8 * kMiB);
  CHECK(acked.size() < 16 * kMiB);
  CHECK(attr(*fs, ino).size == acked.size());
  require_ok(fs->fsync(ino, false), "fsync after ENOSPC");
  auto media = media_of(*fs);
  CHECK(attr(*media, ino).size == acked.size());
  CHECK(first_diff(read_all(*media, ino), acked) == -1);
  expect_consistent(*fs);
}

TEST_CASE("buffered: pages read from a hole reserve their blocks when written",
          "[fs][cache][enospc]") {
  auto fs = mount(formatted(16 * kMiB), cached(8192));
  uint64_t ino = make_file(*fs, kRoot, "f").ino;
  resize(*fs, ino, 16 * kMiB);
  CHECK(all_zero(read_all(*fs, ino)));  // every page now cached clean, without a block
  std::string acked;
  fill_until_full(*fs, ino, 256 * 1024, 16 * kMiB, acked);
  CHECK(acked.size() < 16 * kMiB);  // more than the device holds cannot be acknowledged
  require_ok(fs->fsync(ino, false), "fsync after ENOSPC");
  CHECK(first_diff(read_range(*media_of(*fs), ino, 0, acked.size()), acked) == -1);
  expect_consistent(*fs);
}

TEST_CASE("buffered: a write to a page being stored by writeback does not wait for it",
          "[fs][cache]") {
  auto gate = std::make_shared<Gate>();
  mm::Region r = formatted();
  r.set_persister(std::make_unique<GatePersister>(gate));
  auto fs = mount(std::move(r), cached());
  uint64_t ino = make_file(*fs, kRoot, "f").ino;
  write_str(*fs, ino, 0, pattern(kBlockSize, 10));

  gate->armed = true;
  auto syncer = std::async(std::launch::async, [&] { return fs->fsync(ino, false); });
  bool stuck = false;  // the fsync is inside writeback, its page frozen
  for (int k = 0; k < 5000 && !(stuck = gate->entered.try_wait()); k++)
    std::this_thread::sleep_for(1ms);
  std::string newer = pattern(kBlockSize, 11);
  std::future<Result<uint64_t>> writer;
  bool quick = false;
  if (stuck) {
    writer = std::async(std::launch::async,
                        [&] { return fs->write(ino, 0, newer.data(), newer.size()); });
    quick = writer.wait_for(1s) == std::future_status::ready;
  }
  gate->armed = false;
  gate->release.count_down();  // before any REQUIRE, so nothing is left waiting
  REQUIRE(stuck);
  CHECK(quick);
  require_ok(syncer.get(), "fsync");
  CHECK(take(writer.get()) == newer.size());
  CHECK(fs->cache()->stats().second_buffers == 1);
  CHECK(dirty_pages(*fs) == 1);  // the newer content is still to be written
  require_ok(fs->fsync(ino, false), "second fsync");
  CHECK(first_diff(read_all(*media_of(*fs), ino), newer) == -1);
}
