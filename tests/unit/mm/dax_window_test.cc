// tests/unit/mm/dax_window_test.cc: DAX windows (mm/dax_window.h) over a memfd "device"
// whose every byte is known: contiguous views of scattered runs, hits and misses, remapping
// for a larger need, LRU reclaim, referenced slots, fallbacks (device-dax alignment, holes,
// every slot referenced), teardown by range and by file, teardown racing with readers, and
// stores through a writable view reaching the device.
#include "mm/dax_window.h"

#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "mm/region.h"

using namespace pmemfuse;
using namespace pmemfuse::mm;

namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kSlot = DaxWindows::kSlotSize;
constexpr uint64_t kDevSize = 32 * kMiB;

uint8_t dev_byte(uint64_t d) { return uint8_t((d / kPageSize) ^ (d % 251)); }

// A memfd of kDevSize bytes holding dev_byte(d) at every offset d.
struct Device {
  int fd = memfd_create("dax_window_test", 0);
  Device() {
    REQUIRE(fd >= 0);
    std::vector<uint8_t> buf(kMiB);
    for (uint64_t off = 0; off < kDevSize; off += kMiB) {
      for (uint64_t i = 0; i < kMiB; i++) buf[i] = dev_byte(off + i);
      REQUIRE(pwrite(fd, buf.data(), kMiB, off_t(off)) == ssize_t(kMiB));
    }
  }
  ~Device() { close(fd); }

  // What a file laid out as `layout` holds, from file offset 0.
  std::vector<uint8_t> contents(const std::vector<DevRun>& layout) const {
    std::vector<uint8_t> out;
    for (const DevRun& r : layout) {
      out.resize(r.file_off + r.len);
      REQUIRE(pread(fd, out.data() + r.file_off, r.len, off_t(r.dev_off)) == ssize_t(r.len));
    }
    return out;
  }
};

// A file of `bytes` in pieces of 1 to 5 pages scattered over the device: no two
// neighbours in the file are neighbours on the device.
std::vector<DevRun> scattered(uint64_t bytes) {
  constexpr uint64_t kPiece = 5 * kPageSize, kPieces = kDevSize / kPiece;
  std::vector<DevRun> out;
  for (uint64_t off = 0, k = 0; off < bytes; k++) {
    uint64_t len = std::min(bytes - off, (k % 5 + 1) * kPageSize);
    out.push_back({off, (k * 37 % kPieces) * kPiece, len});
    off += len;
  }
  return out;
}

// A RunsFn over layout: its runs clipped to the range asked for. Counts its calls.
DaxWindows::RunsFn runs_of(const std::vector<DevRun>& layout, int* calls = nullptr) {
  return [&layout, calls](uint64_t off, uint64_t len, std::vector<DevRun>* out) {
    if (calls) ++*calls;
    for (const DevRun& r : layout) {
      uint64_t lo = std::max(off, r.file_off), hi = std::min(off + len, r.file_off + r.len);
      if (lo < hi) out->push_back({lo, r.dev_off + (lo - r.file_off), hi - lo});
    }
    return true;
  };
}

std::unique_ptr<DaxWindows> windows(const Device& d, uint64_t slots, uint64_t align = kPageSize,
                                    bool writable = false) {
  auto w = DaxWindows::create(d.fd, slots * kSlot, align, writable);
  REQUIRE(w);
  return std::move(*w);
}

// The view holds exactly the file's bytes of its chunk.
bool holds(const DaxWindows::View& v, const std::vector<uint8_t>& file, uint64_t chunk) {
  return std::memcmp(v.data(), file.data() + chunk * kSlot, v.len()) == 0;
}

// Permissions /proc/self/maps shows for the mapping holding addr ("r--s"); "" for none.
std::string prot_at(const void* addr) {
  std::ifstream maps("/proc/self/maps");
  auto a = reinterpret_cast<uintptr_t>(addr);
  for (std::string line; std::getline(maps, line);) {
    uintptr_t lo, hi;
    char perms[5];
    if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR " %4s", &lo, &hi, perms) == 3 &&
        a >= lo && a < hi)
      return perms;
  }
  return "";
}

}  // namespace

TEST_CASE("dax window: create rejects a window under one slot and bad alignments", "[dax]") {
  Device d;
  auto small = DaxWindows::create(d.fd, kSlot - 1, kPageSize, false);
  REQUIRE(!small);
  CHECK(small.error().code == Errc::kInvalid);
  CHECK(small.error().msg.find("slot") != std::string::npos);
  for (uint64_t align : {uint64_t(0), uint64_t(512), 3 * kPageSize, 2 * kSlot}) {
    auto w = DaxWindows::create(d.fd, kSlot, align, false);
    REQUIRE(!w);
    CHECK(w.error().code == Errc::kInvalid);
  }
  auto w = DaxWindows::create(d.fd, 5 * kSlot + kMiB, kPageSize, false);  // rounded down
  REQUIRE(w);
  CHECK((*w)->stats().slots == 5);
}

TEST_CASE("dax window: scattered runs read as one contiguous view", "[dax]") {
  Device d;
  auto layout = scattered(2 * kSlot + 300 * 1024);
  auto file = d.contents(layout);
  auto w = windows(d, 4);
  for (uint64_t chunk = 0; chunk < 3; chunk++) {
    uint64_t need = std::min(kSlot, file.size() - chunk * kSlot);
    auto v = w->get(7, chunk, need, runs_of(layout));
    REQUIRE(v);
    CHECK(v->len() == need);
    CHECK(reinterpret_cast<uintptr_t>(v->data()) % kSlot == 0);
    CHECK(holds(*v, file, chunk));
  }
}

TEST_CASE("dax window: only the asked bytes are mapped and freed slots stay reserved", "[dax]") {
  Device d;
  auto layout = scattered(kSlot);
  auto w = windows(d, 1);
  const uint8_t* at;
  {
    auto v = w->get(1, 0, 5000, runs_of(layout));
    REQUIRE(v);
    at = v->data();
    CHECK(v->len() == 5000);
    CHECK(prot_at(at) == "r--s");
    CHECK(prot_at(at + 4096) == "r--s");  // the 4 KiB tail of the last run
    CHECK(prot_at(at + 8192) == "---p");
    w->invalidate(1);
    CHECK(prot_at(at) == "r--s");  // still referenced
  }
  CHECK(prot_at(at) == "---p");
  CHECK(w->stats().mapped == 0);
  w.reset();
  CHECK(prot_at(at).empty());
}

TEST_CASE("dax window: hits and misses are counted", "[dax]") {
  Device d;
  auto layout = scattered(kSlot);
  auto file = d.contents(layout);
  auto w = windows(d, 2);
  int calls = 0;
  for (int i = 0; i < 3; i++) {
    auto v = w->get(1, 0, kSlot, runs_of(layout, &calls));
    REQUIRE(v);
    CHECK(holds(*v, file, 0));
  }
  auto v = w->get(1, 0, kPageSize, runs_of(layout, &calls));  // a smaller need hits too
  REQUIRE(v);
  WindowStats s = w->stats();
  CHECK(calls == 1);
  CHECK(s.misses == 1);
  CHECK(s.hits == 3);
  CHECK(s.mapped == 1);
  CHECK(s.slots == 2);
}

TEST_CASE("dax window: a larger need remaps the chunk", "[dax]") {
  Device d;
  auto layout = scattered(kSlot);
  auto file = d.contents(layout);
  auto w = windows(d, 2);
  int calls = 0;
  auto small = w->get(1, 0, 64 * 1024, runs_of(layout, &calls));
  REQUIRE(small);
  CHECK(small->len() == 64 * 1024);
  auto big = w->get(1, 0, kMiB, runs_of(layout, &calls));
  REQUIRE(big);
  CHECK(big->len() == kMiB);
  CHECK(calls == 2);
  CHECK(holds(*small, file, 0));  // the superseded slot lives while referenced
  CHECK(holds(*big, file, 0));
  CHECK(w->stats().mapped == 2);
  small = std::move(big);  // drops the superseded slot
  CHECK(w->stats().mapped == 1);
  auto again = w->get(1, 0, 4096, runs_of(layout, &calls));
  REQUIRE(again);
  CHECK(again->data() == small->data());
  CHECK(calls == 2);
}

TEST_CASE("dax window: the least recently used slot is reclaimed", "[dax]") {
  Device d;
  auto layout = scattered(4 * kSlot);
  auto file = d.contents(layout);
  auto w = windows(d, 2);
  auto get = [&](uint64_t chunk) {
    auto v = w->get(1, chunk, kSlot, runs_of(layout));
    REQUIRE(v);
    CHECK(holds(*v, file, chunk));
  };
  get(0);
  get(1);
  get(0);  // chunk 1 is now the least recently used
  get(2);
  CHECK(w->stats().reclaims == 1);
  get(0);
  CHECK(w->stats().hits == 2);
  get(1);
  WindowStats s = w->stats();
  CHECK(s.hits == 2);
  CHECK(s.misses == 4);
  CHECK(s.reclaims == 2);
  CHECK(s.mapped == 2);
}

TEST_CASE("dax window: a referenced slot is never reclaimed; all referenced falls back", "[dax]") {
  Device d;
  auto layout = scattered(4 * kSlot);
  auto file = d.contents(layout);
  auto w = windows(d, 2);
  auto held = w->get(1, 0, kSlot, runs_of(layout));
  REQUIRE(held);
  for (uint64_t chunk : {1, 2, 3, 1, 2, 3}) {
    auto v = w->get(1, chunk, kSlot, runs_of(layout));
    REQUIRE(v);
    CHECK(holds(*v, file, chunk));
  }
  CHECK(holds(*held, file, 0));
  auto held2 = w->get(1, 3, kSlot, runs_of(layout));
  REQUIRE(held2);
  CHECK(w->stats().hits == 1);
  auto none = w->get(1, 2, kSlot, runs_of(layout));
  REQUIRE(!none);
  CHECK(none.error().code == Errc::kNotSupported);
  CHECK(w->stats().fallbacks == 1);
  held2 = std::move(held);
  auto v = w->get(1, 2, kSlot, runs_of(layout));
  REQUIRE(v);
  CHECK(holds(*v, file, 2));
}

TEST_CASE("dax window: device-dax alignment maps aligned runs only", "[dax]") {
  Device d;
  auto w = windows(d, 2, kSlot);
  std::vector<DevRun> aligned{{0, 6 * kMiB, kSlot}, {kSlot, 2 * kMiB, kSlot}};
  auto file = d.contents(aligned);
  for (uint64_t chunk : {0, 1}) {
    auto v = w->get(1, chunk, kSlot, runs_of(aligned));
    REQUIRE(v);
    CHECK(holds(*v, file, chunk));
  }
  std::vector<DevRun> split{{0, 4 * kMiB, kMiB}, {kMiB, 8 * kMiB, kMiB}};
  std::vector<DevRun> unaligned_dev{{0, 5 * kMiB, kSlot}};
  for (const auto* layout : {&split, &unaligned_dev}) {
    auto v = w->get(2, 0, kSlot, runs_of(*layout));
    REQUIRE(!v);
    CHECK(v.error().code == Errc::kNotSupported);
  }
  auto part = w->get(1, 0, kMiB, runs_of(aligned));  // a hit: the slot maps more
  CHECK(part);
  auto short_tail = w->get(3, 0, kMiB, runs_of(aligned));  // would map 1 MiB of 2
  REQUIRE(!short_tail);
  CHECK(short_tail.error().code == Errc::kNotSupported);
  WindowStats s = w->stats();
  CHECK(s.fallbacks == 3);
  CHECK(s.mapped == 2);
}

TEST_CASE("dax window: runs() refusing the range falls back", "[dax]") {
  Device d;
  auto w = windows(d, 2);
  auto hole = [](uint64_t off, uint64_t, std::vector<DevRun>* out) {
    out->push_back({off, 0, kPageSize});  // what it found before the hole: ignored
    return false;
  };
  auto v = w->get(1, 0, kSlot, hole);
  REQUIRE(!v);
  CHECK(v.error().code == Errc::kNotSupported);
  WindowStats s = w->stats();
  CHECK(s.fallbacks == 1);
  CHECK(s.misses == 1);
  CHECK(s.mapped == 0);
}

TEST_CASE("dax window: runs with a gap or too short are refused as invalid", "[dax]") {
  Device d;
  auto w = windows(d, 2);
  std::vector<DevRun> gap{{0, 0, kPageSize}, {2 * kPageSize, kPageSize, kPageSize}};
  std::vector<DevRun> past_chunk{{0, 0, kSlot + kPageSize}};
  std::vector<DevRun> wrong_chunk{{kSlot, 0, kSlot}};
  for (const auto* layout : {&gap, &past_chunk, &wrong_chunk}) {
    auto v = w->get(1, 0, 3 * kPageSize, [layout](uint64_t, uint64_t, std::vector<DevRun>* out) {
      *out = *layout;
      return true;
    });
    REQUIRE(!v);
    CHECK(v.error().code == Errc::kInvalid);
  }
  std::vector<DevRun> one_page{{0, 0, kPageSize}};
  auto too_short = w->get(1, 0, 2 * kPageSize, runs_of(one_page));
  REQUIRE(!too_short);
  CHECK(too_short.error().code == Errc::kInvalid);
  CHECK(!w->get(1, 0, 0, runs_of(one_page)));
  CHECK(!w->get(1, 0, kSlot + 1, runs_of(one_page)));
  CHECK(w->stats().mapped == 0);
}

TEST_CASE("dax window: invalidate removes the overlapping slots of one file", "[dax]") {
  Device d;
  auto layout = scattered(4 * kSlot);
  auto w = windows(d, 8);
  int calls = 0;
  auto get = [&](uint64_t ino, uint64_t chunk, uint64_t need = kSlot) {
    REQUIRE(w->get(ino, chunk, need, runs_of(layout, &calls)));
  };
  for (uint64_t chunk : {0, 1, 2}) get(1, chunk);
  get(1, 3, 64 * 1024);
  get(2, 1);
  w->invalidate(1, kSlot + 100, kSlot + 200);
  CHECK(w->stats().teardowns == 1);
  w->invalidate(1, 3 * kSlot + kMiB, UINT64_MAX);  // past what chunk 3 maps
  w->invalidate(1, 0, 1);
  CHECK(w->stats().teardowns == 2);
  calls = 0;
  get(1, 0);
  get(1, 1);
  get(1, 2);
  get(1, 3, 64 * 1024);
  get(2, 1);
  CHECK(calls == 2);  // chunks 0 and 1 of ino 1 were torn down
  w->invalidate(1);
  CHECK(w->stats().teardowns == 6);
  CHECK(w->stats().mapped == 1);
  calls = 0;
  get(2, 1);
  CHECK(calls == 0);
}

TEST_CASE("dax window: a torn-down slot stays readable until its last view goes", "[dax]") {
  Device d;
  auto layout = scattered(kSlot);
  auto file = d.contents(layout);
  auto w = windows(d, 2);
  auto v = w->get(1, 0, kSlot, runs_of(layout));
  REQUIRE(v);
  auto v2 = w->get(1, 0, kSlot, runs_of(layout));
  REQUIRE(v2);
  w->invalidate(1);
  CHECK(holds(*v, file, 0));
  auto fresh = w->get(1, 0, kSlot, runs_of(layout));
  REQUIRE(fresh);
  CHECK(fresh->data() != v->data());
  CHECK(w->stats().mapped == 2);
  { auto gone = std::move(*v); }
  CHECK(holds(*v2, file, 0));
  CHECK(w->stats().mapped == 2);
  { auto gone = std::move(*v2); }
  CHECK(w->stats().mapped == 1);
}

TEST_CASE("dax window: teardown racing with readers reads no wrong bytes", "[dax]") {
  Device d;
  auto layout = scattered(4 * kSlot);
  auto file = d.contents(layout);
  auto w = windows(d, 2);  // fewer slots than readers: reclaims and fallbacks too
  constexpr int kReaders = 3, kRounds = 150;
  std::atomic<int> running{kReaders};
  std::atomic<uint64_t> wrong{0}, windowed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kReaders; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRounds; i++) {
        uint64_t ino = 1 + (i + t) % 2, chunk = (i * 7 + t) % 4;
        uint64_t need = (i % 3 == 0) ? kSlot : kPageSize * (1 + i % 64);
        auto v = w->get(ino, chunk, need, runs_of(layout));
        if (!v) continue;
        windowed++;
        if (v->len() < need || !holds(*v, file, chunk)) wrong++;
      }
      running--;
    });
  }
  threads.emplace_back([&] {
    for (uint64_t i = 0; running > 0; i++) {
      if (i % 2)
        w->invalidate(1 + i % 3);
      else
        w->invalidate(1 + i % 3, (i % 8) * kMiB, (i % 8) * kMiB + kPageSize);
      std::this_thread::yield();
    }
  });
  for (auto& t : threads) t.join();
  CHECK(wrong == 0);
  CHECK(windowed > 0);
  WindowStats s = w->stats();
  CHECK(s.hits + s.misses == kReaders * kRounds);
  CHECK(s.mapped <= 2);
  w->invalidate(1);
  w->invalidate(2);
  CHECK(w->stats().mapped == 0);
}

TEST_CASE("dax window: stores through a writable view reach the device", "[dax]") {
  Device d;
  auto layout = scattered(kSlot);
  auto w = windows(d, 1, kPageSize, true);
  auto v = w->get(1, 0, kSlot, runs_of(layout));
  REQUIRE(v);
  // Spans a run boundary: the first run is one page long.
  const uint64_t at = kPageSize - 100;
  std::memset(v->data() + at, 0xA5, 200);
  for (uint64_t off : {at, kPageSize + 99}) {
    const DevRun& r = *std::find_if(layout.begin(), layout.end(), [&](const DevRun& x) {
      return off >= x.file_off && off < x.file_off + x.len;
    });
    uint8_t b = 0;
    REQUIRE(pread(d.fd, &b, 1, off_t(r.dev_off + off - r.file_off)) == 1);
    CHECK(b == 0xA5);
  }
  auto ro = DaxWindows::create(d.fd, kSlot, kPageSize, false);
  REQUIRE(ro);
  auto rv = (*ro)->get(1, 0, kSlot, runs_of(layout));
  REQUIRE(rv);
  CHECK(rv->data()[kPageSize] == 0xA5);
  CHECK(rv->data()[at - 1] == dev_byte(layout[0].dev_off + at - 1));
}
