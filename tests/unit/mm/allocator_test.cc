// tests/unit/mm/allocator_test.cc: the DRAM free-run index (mm/allocator.h).
#include "mm/allocator.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

using pmemfuse::Errc;
using pmemfuse::mm::BlockAllocator;
using pmemfuse::mm::Run;

namespace {

uint64_t total_len(const std::vector<Run>& runs) {
  uint64_t t = 0;
  for (const Run& r : runs) t += r.len;
  return t;
}

// Snapshot of is_free() over [0, n).
std::vector<bool> free_map(const BlockAllocator& a, uint64_t n) {
  std::vector<bool> m(n);
  for (uint64_t b = 0; b < n; b++) m[b] = a.is_free(b);
  return m;
}

}  // namespace

// Lets Catch print runs in failure messages.
namespace Catch {
template <>
struct StringMaker<Run> {
  static std::string convert(const Run& r) {
    return "{" + std::to_string(r.start) + "+" + std::to_string(r.len) + "}";
  }
};
}  // namespace Catch

TEST_CASE("allocator: an empty index has no free blocks and refuses allocation",
          "[mm][allocator]") {
  BlockAllocator a;
  CHECK(a.free_blocks() == 0);
  CHECK_FALSE(a.is_free(0));
  auto r = a.alloc(1, 0);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::kNoSpace);
  auto c = a.alloc_contig(1, 1);
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().code == Errc::kNoSpace);
}

TEST_CASE("allocator: add_free counts blocks and is_free reports exactly the run",
          "[mm][allocator]") {
  BlockAllocator a;
  a.add_free({10, 5});
  a.add_free({100, 1});
  a.add_free({50, 0});  // empty run is ignored
  CHECK(a.free_blocks() == 6);
  CHECK_FALSE(a.is_free(9));
  CHECK(a.is_free(10));
  CHECK(a.is_free(14));
  CHECK_FALSE(a.is_free(15));
  CHECK_FALSE(a.is_free(50));
  CHECK_FALSE(a.is_free(99));
  CHECK(a.is_free(100));
  CHECK_FALSE(a.is_free(101));
}

TEST_CASE("allocator: freed runs merge with neighbours", "[mm][allocator]") {
  BlockAllocator a;
  SECTION("middle run bridges left and right") {
    a.add_free({10, 5});
    a.add_free({20, 5});
    a.add_free({15, 5});
  }
  SECTION("runs added right to left") {
    a.add_free({20, 5});
    a.add_free({15, 5});
    a.add_free({10, 5});
  }
  SECTION("runs returned with free() after allocation") {
    a.add_free({10, 15});
    auto r = a.alloc(15, 10);
    REQUIRE(r.ok());
    REQUIRE(a.free_blocks() == 0);
    a.free({{20, 5}, {10, 5}});
    a.free({{15, 5}});
  }
  CHECK(a.free_blocks() == 15);
  // Only one merged run of 15 can satisfy a single-run request of 15 blocks.
  auto c = a.alloc_contig(15, 1);
  REQUIRE(c.ok());
  CHECK(*c == Run{10, 15});
  CHECK(a.free_blocks() == 0);
}

TEST_CASE("allocator: runs with a gap between them do not merge", "[mm][allocator]") {
  BlockAllocator a;
  a.add_free({10, 5});
  a.add_free({16, 5});
  CHECK(a.free_blocks() == 10);
  CHECK_FALSE(a.is_free(15));
  auto c = a.alloc_contig(10, 1);
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().code == Errc::kNoSpace);
  CHECK(a.free_blocks() == 10);
}

TEST_CASE("allocator: alloc with a free goal returns the run starting at the goal",
          "[mm][allocator]") {
  BlockAllocator a;
  a.add_free({0, 1000});
  auto r = a.alloc(10, 300);
  REQUIRE(r.ok());
  REQUIRE(r->size() == 1);
  CHECK((*r)[0] == Run{300, 10});
  CHECK(a.free_blocks() == 990);
  CHECK(a.is_free(299));
  CHECK_FALSE(a.is_free(300));
  CHECK_FALSE(a.is_free(309));
  CHECK(a.is_free(310));
  // The next allocation with the follow-on goal keeps the file contiguous.
  auto r2 = a.alloc(5, 310);
  REQUIRE(r2.ok());
  REQUIRE(r2->size() == 1);
  CHECK((*r2)[0] == Run{310, 5});
}

TEST_CASE("allocator: alloc with a used goal takes the next free run after it",
          "[mm][allocator]") {
  BlockAllocator a;
  a.add_free({0, 10});
  a.add_free({50, 10});
  a.add_free({80, 10});
  auto r = a.alloc(4, 20);  // 20 is not free; 50 is the next run
  REQUIRE(r.ok());
  REQUIRE(r->size() == 1);
  CHECK((*r)[0] == Run{50, 4});
  CHECK(a.free_blocks() == 26);
}

TEST_CASE("allocator: alloc spanning multiple runs returns all of them in order",
          "[mm][allocator]") {
  BlockAllocator a;
  a.add_free({10, 5});
  a.add_free({20, 5});
  a.add_free({30, 5});
  a.add_free({40, 5});
  auto r = a.alloc(12, 10);
  REQUIRE(r.ok());
  CHECK(total_len(*r) == 12);
  CHECK(*r == std::vector<Run>{{10, 5}, {20, 5}, {30, 2}});
  CHECK(a.free_blocks() == 8);
  CHECK_FALSE(a.is_free(31));
  CHECK(a.is_free(32));
  CHECK(a.is_free(40));
}

TEST_CASE("allocator: alloc wraps around to the start when the goal is near the end",
          "[mm][allocator]") {
  BlockAllocator a;
  a.add_free({0, 10});
  a.add_free({100, 10});
  SECTION("goal inside the last run") {
    auto r = a.alloc(8, 105);
    REQUIRE(r.ok());
    CHECK(*r == std::vector<Run>{{105, 5}, {0, 3}});
    CHECK(a.free_blocks() == 12);
    CHECK(a.is_free(100));
    CHECK(a.is_free(104));
    CHECK_FALSE(a.is_free(105));
    CHECK_FALSE(a.is_free(2));
    CHECK(a.is_free(3));
  }
  SECTION("goal past every free run, free space only at the start") {
    BlockAllocator b;
    b.add_free({0, 16});
    auto r = b.alloc(4, 1000000);
    REQUIRE(r.ok());
    CHECK(*r == std::vector<Run>{{0, 4}});
    CHECK(b.free_blocks() == 12);
  }
  SECTION("takes every free block when n equals free_blocks") {
    auto r = a.alloc(20, 105);
    REQUIRE(r.ok());
    CHECK(*r == std::vector<Run>{{105, 5}, {0, 10}, {100, 5}});
    CHECK(a.free_blocks() == 0);
    CHECK(free_map(a, 200) == std::vector<bool>(200, false));
  }
}

TEST_CASE("allocator: alloc of more than is free fails with kNoSpace and changes nothing",
          "[mm][allocator]") {
  BlockAllocator a;
  a.add_free({3, 7});
  a.add_free({20, 1});
  a.add_free({600, 520});
  a.add_free({2000, 100});
  const uint64_t before = a.free_blocks();
  REQUIRE(before == 628);
  const auto map_before = free_map(a, 2200);

  for (uint64_t n : {before + 1, before + 1000, uint64_t{1} << 40}) {
    for (uint64_t goal : {uint64_t{0}, uint64_t{605}, uint64_t{5000}}) {
      auto r = a.alloc(n, goal);
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code == Errc::kNoSpace);
      CHECK_FALSE(r.error().msg.empty());
      REQUIRE(a.free_blocks() == before);
      REQUIRE(free_map(a, 2200) == map_before);
    }
  }
  // The index still works afterwards: everything can be taken.
  auto r = a.alloc(before, 0);
  REQUIRE(r.ok());
  CHECK(total_len(*r) == before);
  CHECK(a.free_blocks() == 0);
  CHECK(free_map(a, 2200) == std::vector<bool>(2200, false));
  a.free(*r);
  CHECK(a.free_blocks() == before);
  CHECK(free_map(a, 2200) == map_before);
}

TEST_CASE("allocator: large requests start on a 512-block boundary when space allows",
          "[mm][allocator]") {
  constexpr uint64_t H = BlockAllocator::kHugeBlocks;
  STATIC_REQUIRE(H == 512);
  BlockAllocator a;
  a.add_free({1, 4000});  // unaligned start
  auto r = a.alloc(H, 1);
  REQUIRE(r.ok());
  REQUIRE(r->size() == 1);
  CHECK((*r)[0].start % H == 0);
  CHECK((*r)[0] == Run{512, 512});
  CHECK(a.free_blocks() == 4000 - H);

  // A larger, non-multiple request is aligned too, regardless of goal.
  auto r2 = a.alloc(700, 3);
  REQUIRE(r2.ok());
  REQUIRE(r2->size() == 1);
  CHECK((*r2)[0].start % H == 0);
  CHECK((*r2)[0].len == 700);

  // Below the threshold, the goal wins over alignment.
  auto r3 = a.alloc(H - 1, 1);
  REQUIRE(r3.ok());
  REQUIRE(r3->size() == 1);
  CHECK((*r3)[0] == Run{1, H - 1});
}

TEST_CASE("allocator: large requests fall back to unaligned runs when no aligned run fits",
          "[mm][allocator]") {
  constexpr uint64_t H = BlockAllocator::kHugeBlocks;
  BlockAllocator a;
  a.add_free({1, 600});       // no aligned window of 512 inside [1, 601)
  a.add_free({1030, 500});    // [1030, 1530): aligned start 1536 is outside
  REQUIRE(a.free_blocks() == 1100);
  auto r = a.alloc(H, 0);
  REQUIRE(r.ok());
  CHECK(total_len(*r) == H);
  CHECK(a.free_blocks() == 1100 - H);
  for (const Run& run : *r) {
    for (uint64_t b = run.start; b < run.start + run.len; b++) REQUIRE_FALSE(a.is_free(b));
  }
  // A request needing both runs is split across them.
  auto r2 = a.alloc(1100 - H, 0);
  REQUIRE(r2.ok());
  CHECK(total_len(*r2) == 1100 - H);
  CHECK(a.free_blocks() == 0);
}

TEST_CASE("allocator: alloc_contig returns one aligned run or fails without side effects",
          "[mm][allocator]") {
  BlockAllocator a;
  a.add_free({3, 600});  // [3, 603)
  SECTION("aligned start inside the run") {
    auto r = a.alloc_contig(91, 512);
    REQUIRE(r.ok());
    CHECK(*r == Run{512, 91});
    CHECK(a.free_blocks() == 509);
    CHECK(a.is_free(511));
    CHECK_FALSE(a.is_free(512));
    CHECK_FALSE(a.is_free(602));
  }
  SECTION("aligned run does not fit") {
    auto r = a.alloc_contig(92, 512);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::kNoSpace);
    CHECK(a.free_blocks() == 600);
    CHECK(a.is_free(3));
    CHECK(a.is_free(602));
  }
  SECTION("align 0 and 1 mean no alignment") {
    auto r = a.alloc_contig(10, 0);
    REQUIRE(r.ok());
    CHECK(*r == Run{3, 10});
    auto r1 = a.alloc_contig(10, 1);
    REQUIRE(r1.ok());
    CHECK(*r1 == Run{13, 10});
  }
  SECTION("alignment of 8 rounds the start up") {
    auto r = a.alloc_contig(8, 8);
    REQUIRE(r.ok());
    CHECK(*r == Run{8, 8});
    CHECK(a.is_free(3));
    CHECK(a.is_free(7));
    CHECK(a.is_free(16));
    CHECK(a.free_blocks() == 592);
  }
  SECTION("later runs are searched when the first cannot hold the request") {
    a.add_free({1024, 64});
    auto r = a.alloc_contig(64, 64);
    REQUIRE(r.ok());
    CHECK(*r == Run{64, 64});
    auto r2 = a.alloc_contig(600, 1);
    REQUIRE_FALSE(r2.ok());
    auto r3 = a.alloc_contig(64, 1024);
    REQUIRE(r3.ok());
    CHECK(*r3 == Run{1024, 64});
  }
  SECTION("request larger than total free space") {
    auto r = a.alloc_contig(601, 1);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::kNoSpace);
    CHECK(a.free_blocks() == 600);
  }
}

TEST_CASE("allocator: random allocs and frees match a bitmap model", "[mm][allocator]") {
  constexpr uint64_t N = 4096;
  constexpr uint64_t H = BlockAllocator::kHugeBlocks;
  std::mt19937_64 rng(GENERATE(11u, 22u, 33u));
  BlockAllocator a;
  std::vector<bool> model(N, false);  // true = free
  uint64_t model_free = 0;

  // Seed the index with random free extents (some adjacent, so they merge).
  for (uint64_t b = 0; b < N;) {
    uint64_t len = 1 + rng() % 200;
    len = std::min(len, N - b);
    if (rng() % 3 != 0) {
      a.add_free({b, len});
      for (uint64_t i = b; i < b + len; i++) model[i] = true;
      model_free += len;
    }
    b += len;
  }
  REQUIRE(a.free_blocks() == model_free);

  std::vector<Run> held;  // allocated runs, in pieces we may free separately
  auto check_all = [&] {
    REQUIRE(a.free_blocks() == model_free);
    for (uint64_t b = 0; b < N; b++) {
      if (a.is_free(b) != model[b]) FAIL("block " << b << " is_free disagrees with model");
    }
    CHECK_FALSE(a.is_free(N));
  };

  for (int step = 0; step < 20000; step++) {
    int op = static_cast<int>(rng() % 10);
    if (op < 5) {
      // alloc with a goal; occasionally a huge one.
      uint64_t n = (rng() % 8 == 0) ? H + rng() % 700 : 1 + rng() % 64;
      uint64_t goal = rng() % (N + 100);
      auto r = a.alloc(n, goal);
      if (n > model_free) {
        REQUIRE_FALSE(r.ok());
        REQUIRE(r.error().code == Errc::kNoSpace);
        continue;
      }
      REQUIRE(r.ok());
      REQUIRE(total_len(*r) == n);

      // Expected placement. Huge: a single run at the lowest aligned window that is
      // wholly free, when one exists. Otherwise the first n free blocks from the goal on,
      // wrapping to block 0.
      std::optional<uint64_t> aligned;
      if (n >= H) {
        for (uint64_t s = 0; s + n <= N && !aligned; s += H) {
          bool all = true;
          for (uint64_t i = s; i < s + n && all; i++) all = model[i];
          if (all) aligned = s;
        }
      }
      std::vector<uint64_t> got;
      for (const Run& run : *r) {
        REQUIRE(run.len > 0);
        REQUIRE(run.start + run.len <= N);
        for (uint64_t i = run.start; i < run.start + run.len; i++) {
          if (!model[i]) FAIL("block " << i << " handed out while not free");
          model[i] = false;
          got.push_back(i);
        }
        held.push_back(run);
      }
      model_free -= n;
      if (aligned) {
        REQUIRE(r->size() == 1);
        CHECK((*r)[0] == Run{*aligned, n});
      } else {
        // Blocks in the order handed out: the first n free blocks at or after the goal,
        // wrapping around to block 0.
        std::vector<uint64_t> expect;
        std::vector<bool> before = model;
        for (uint64_t i : got) before[i] = true;
        const uint64_t from = goal < N ? goal : 0;
        for (uint64_t k = 0; k < N && expect.size() < n; k++) {
          uint64_t b = (from + k) % N;
          if (before[b]) expect.push_back(b);
        }
        CHECK(got == expect);
      }
    } else if (op < 6) {
      uint64_t n = 1 + rng() % 40;
      uint64_t align = uint64_t{1} << (rng() % 7);
      auto r = a.alloc_contig(n, align);
      // Model: lowest aligned start with n free blocks inside one free extent.
      std::optional<uint64_t> expect;
      for (uint64_t s = 0; s + n <= N && !expect; s += align) {
        bool all = true;
        for (uint64_t i = s; i < s + n && all; i++) all = model[i];
        if (all) expect = s;
      }
      if (!expect) {
        REQUIRE_FALSE(r.ok());
        REQUIRE(r.error().code == Errc::kNoSpace);
        continue;
      }
      REQUIRE(r.ok());
      REQUIRE(*r == Run{*expect, n});
      for (uint64_t i = r->start; i < r->start + n; i++) model[i] = false;
      model_free -= n;
      held.push_back(*r);
    } else if (!held.empty()) {
      // Free a random held run, sometimes only a piece of it (splitting the rest).
      size_t idx = rng() % held.size();
      Run run = held[idx];
      held.erase(held.begin() + static_cast<std::ptrdiff_t>(idx));
      if (run.len > 2 && rng() % 2) {
        uint64_t cut = 1 + rng() % (run.len - 1);
        held.push_back({run.start + cut, run.len - cut});
        run.len = cut;
      }
      a.free({run});
      for (uint64_t i = run.start; i < run.start + run.len; i++) {
        REQUIRE_FALSE(model[i]);
        model[i] = true;
      }
      model_free += run.len;
    }
    if (step % 100 == 0) check_all();
  }
  check_all();
  a.free(held);
  for (const Run& run : held) {
    for (uint64_t i = run.start; i < run.start + run.len; i++) model[i] = true;
    model_free += run.len;
  }
  check_all();
}

TEST_CASE("allocator: concurrent allocs and frees never hand out a block twice",
          "[mm][allocator][threads]") {
  constexpr uint64_t N = 8192;
  constexpr int kThreads = 4;
  BlockAllocator a;
  a.add_free({0, N});
  std::vector<std::atomic<int>> owner(N);
  for (auto& o : owner) o.store(0);
  std::atomic<int> errors{0};

  auto worker = [&](int id) {
    std::mt19937_64 rng(static_cast<uint64_t>(id) * 7919 + 1);
    std::vector<std::vector<Run>> mine;
    for (int i = 0; i < 20000; i++) {
      if (mine.size() < 20 && rng() % 3 != 0) {
        uint64_t n = (rng() % 50 == 0) ? 512 : 1 + rng() % 32;
        auto r = a.alloc(n, rng() % N);
        if (!r.ok()) {
          if (r.error().code != Errc::kNoSpace) errors++;
          continue;
        }
        if (total_len(*r) != n) errors++;
        for (const Run& run : *r) {
          for (uint64_t b = run.start; b < run.start + run.len; b++) {
            if (b >= N || owner[b].exchange(id + 1) != 0) errors++;
          }
        }
        mine.push_back(std::move(*r));
      } else if (!mine.empty()) {
        size_t idx = rng() % mine.size();
        for (const Run& run : mine[idx]) {
          for (uint64_t b = run.start; b < run.start + run.len; b++) {
            if (b >= N || owner[b].exchange(0) != id + 1) errors++;
          }
        }
        a.free(mine[idx]);
        mine.erase(mine.begin() + static_cast<std::ptrdiff_t>(idx));
      }
    }
    for (auto& runs : mine) {
      for (const Run& run : runs) {
        for (uint64_t b = run.start; b < run.start + run.len && b < N; b++) owner[b].store(0);
      }
      a.free(runs);
    }
  };

  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; t++) ts.emplace_back(worker, t);
  for (auto& t : ts) t.join();

  CHECK(errors.load() == 0);
  CHECK(a.free_blocks() == N);
  // Everything merged back into one run.
  auto all = a.alloc_contig(N, 1);
  REQUIRE(all.ok());
  CHECK(*all == Run{0, N});
}

TEST_CASE("allocator: zero-block requests are refused and leave runs merged", "[mm][allocator]") {
  BlockAllocator a;
  a.add_free({3, 100});
  auto z = a.alloc_contig(0, 8);
  REQUIRE_FALSE(z.ok());
  CHECK(z.error().code == Errc::kInvalid);
  CHECK_FALSE(a.alloc(0, 0).ok());
  auto r = a.alloc_contig(100, 1);
  REQUIRE(r.ok());
  CHECK(*r == Run{3, 100});
}

TEST_CASE("allocator: count_fits counts only contiguous aligned pieces", "[mm][allocator]") {
  BlockAllocator a;
  a.add_free({0, 1000});    // one aligned piece of 512 (0..511), the rest too short
  a.add_free({1030, 300});  // too short
  a.add_free({2048, 1024}); // two pieces
  CHECK(a.count_fits(512, 512) == 3);
  CHECK(a.count_fits(512, 1) == 3);
  CHECK(a.count_fits(300, 1) == 3 + 1 + 3);
  CHECK(a.count_fits(2000, 1) == 0);
}
