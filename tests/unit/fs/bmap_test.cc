// tests/unit/fs/bmap_test.cc: ExtentMap::replace against a per-block model: inline
// storage, conversion to a leaf chain, thousands of extents inserted and punched in random
// order (every step compared with the model and with a reload from media), merging,
// splitting with the unwritten flag, and the runs replace() reports as removed.
#include "fs/bmap.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "fs/verify.h"
#include "tests/unit/fs/helpers.h"

using namespace pmemfuse;
using namespace pmemfuse::fs;
using namespace pmemfuse::fs::testing;

namespace Catch {
template <>
struct StringMaker<Extent> {
  static std::string convert(const Extent& e) {
    return "{lblk " + std::to_string(e.lblk) + ", len " + std::to_string(e.len) + ", pblk " +
           std::to_string(e.pblk) + (e.unwritten ? ", unwritten}" : "}");
  }
};
template <>
struct StringMaker<mm::Run> {
  static std::string convert(const mm::Run& r) {
    return "{" + std::to_string(r.start) + "+" + std::to_string(r.len) + "}";
  }
};
}  // namespace Catch

namespace {

constexpr uint64_t kIno = 42;

struct Mapped {
  uint64_t pblk;
  bool unwritten;
  bool operator==(const Mapped&) const = default;
};

// File block -> device block; the reference the extent map is compared with.
using Model = std::map<uint64_t, Mapped>;

// The canonical (maximally merged) extent list of a model.
std::vector<Extent> canonical(const Model& m) {
  std::vector<Extent> out;
  for (auto& [lb, v] : m) {
    if (!out.empty()) {
      Extent& b = out.back();
      if (b.end() == lb && b.pblk + b.len == v.pblk && b.unwritten == v.unwritten && b.len < kExtentMaxLen) {
        b.len++;
        continue;
      }
    }
    out.push_back({lb, 1, v.pblk, v.unwritten});
  }
  return out;
}

std::vector<Extent> listed(const ExtentMap& map) {
  std::vector<Extent> out;
  for (auto& [k, e] : map.extents()) {
    REQUIRE(k == e.lblk);
    out.push_back(e);
  }
  return out;
}

std::vector<uint64_t> expand(const std::vector<mm::Run>& runs) {
  std::vector<uint64_t> b;
  for (const mm::Run& r : runs)
    for (uint64_t k = 0; k < r.len; k++) b.push_back(r.start + k);
  std::sort(b.begin(), b.end());
  return b;
}

// One inode's map on a formatted image, with a model of what it should hold.
struct Fixture {
  Fixture() : st(make_stack()) {
    d.mode = S_IFREG | 0644;
    d.nlink = 1;
    free0 = st->space->free_blocks();
  }

  // replace() in its own committed transaction, mirrored in the model. Returns the
  // removed runs after checking them against the model.
  std::vector<mm::Run> replace(uint64_t lo, uint64_t hi, std::vector<Extent> add) {
    std::vector<uint64_t> want_removed;
    for (auto it = model.lower_bound(lo); it != model.end() && it->first < hi;) {
      want_removed.push_back(it->second.pblk);
      it = model.erase(it);
    }
    std::sort(want_removed.begin(), want_removed.end());
    for (const Extent& e : add)
      for (uint64_t k = 0; k < e.len; k++) model[e.lblk + k] = {e.pblk + k, e.unwritten};
    Tx tx(st->region);
    auto removed = map.replace(tx, *st->space, kIno, d, lo, hi, std::move(add));
    REQUIRE(removed.ok());
    require_ok(st->commit(tx), "commit");
    CHECK(expand(*removed) == want_removed);
    return std::move(*removed);
  }

  // The in-memory map, the inode's storage fields and a reload from media all agree
  // with the model.
  void verify(bool reload = true) {
    auto want = canonical(model);
    REQUIRE(listed(map) == want);
    bool chained = d.flags & kInodeChained;
    CHECK(chained == (want.size() > kInlineExtents));
    CHECK(d.blocks == map.leaves().size());
    CHECK(st->space->free_blocks() + map.leaves().size() == free0);
    if (chained) {
      REQUIRE_FALSE(map.leaves().empty());
      CHECK(d.map.chain.head == map.leaves().front());
      CHECK(d.map.chain.nleaves == map.leaves().size());
      CHECK(d.nextents == 0);
    } else {
      CHECK(map.leaves().empty());
      CHECK(d.nextents == want.size());
    }
    seal_inode(d);
    require_ok(verify_inode(d, kIno, st->sb.block_count), "verify_inode");
    if (!reload) return;
    auto loaded = ExtentMap::load(st->region, kIno, d, st->sb.block_count);
    if (!loaded) FAIL("reload: " << loaded.error().msg);
    REQUIRE(listed(*loaded) == want);
    CHECK(loaded->leaves() == map.leaves());
    for (uint64_t b : map.leaves()) CHECK(st->space->bit(b));
  }

  std::unique_ptr<Stack> st;
  DiskInode d{};
  ExtentMap map;
  Model model;
  uint64_t free0 = 0;
};

}  // namespace

TEST_CASE("bmap: up to six extents stay inline and the seventh converts to a leaf chain",
          "[fs][bmap]") {
  Fixture f;
  for (uint64_t k = 0; k < kInlineExtents; k++) {
    f.replace(10 * k, 10 * k + 2, {{10 * k, 2, 2000 + 100 * k, false}});
    f.verify();
    CHECK_FALSE(f.d.flags & kInodeChained);
  }
  CHECK(f.d.nextents == 6);
  CHECK(f.d.blocks == 0);
  f.replace(100, 101, {{100, 1, 5000, false}});
  f.verify();
  CHECK(f.d.flags & kInodeChained);
  REQUIRE(f.map.leaves().size() == 1);
  CHECK(f.d.blocks == 1);
  // The leaf on media is a valid leaf of this inode.
  uint64_t leaf = f.map.leaves()[0];
  require_ok(verify_leaf(f.st->region.at(leaf * kBlockSize), leaf, kIno, f.st->sb.block_count));
  DiskExtentLeaf l;
  std::memcpy(&l, f.st->region.at(leaf * kBlockSize), sizeof l);
  CHECK(l.count == 7);
  CHECK(l.next == 0);
  CHECK(l.owner == kIno);
  // Back to six: inline again, and the leaf block is freed once the transaction commits.
  f.replace(0, 2, {});
  f.verify();
  CHECK_FALSE(f.d.flags & kInodeChained);
  CHECK(f.d.blocks == 0);
  CHECK_FALSE(f.st->space->bit(leaf));
}

TEST_CASE("bmap: adjacent extents merge, also across the replaced range's edges", "[fs][bmap]") {
  Fixture f;
  f.replace(0, 1, {{0, 1, 100, false}});
  f.replace(1, 2, {{1, 1, 101, false}});
  f.verify();
  REQUIRE(f.map.extents().size() == 1);
  CHECK(f.map.extents().begin()->second == Extent{0, 2, 100, false});
  // Not contiguous on the device: no merge.
  f.replace(3, 4, {{3, 1, 200, false}});
  CHECK(f.map.extents().size() == 2);
  // Filling the hole so both neighbours line up merges all three.
  f.replace(3, 4, {{3, 1, 103, false}});
  CHECK(f.map.extents().size() == 2);
  f.replace(2, 3, {{2, 1, 102, false}});
  f.verify();
  REQUIRE(f.map.extents().size() == 1);
  CHECK(f.map.extents().begin()->second == Extent{0, 4, 100, false});
  // Unwritten and written never merge.
  f.replace(4, 6, {{4, 2, 104, true}});
  f.verify();
  CHECK(f.map.extents().size() == 2);
  // Merging also works inside a chain.
  for (uint64_t k = 0; k < 10; k++) f.replace(100 + 3 * k, 101 + 3 * k, {{100 + 3 * k, 1, 3000 + 7 * k, false}});
  f.verify();
  REQUIRE(f.d.flags & kInodeChained);
  size_t before = f.map.extents().size();
  f.replace(101, 102, {{101, 1, 3001, false}});  // extends {100, 1, 3000}
  f.verify();
  CHECK(f.map.extents().size() == before);
  CHECK(f.map.find(101)->lblk == 100);
  CHECK(f.map.find(101)->len == 2);
}

TEST_CASE("bmap: splitting keeps the unwritten flag and reports exactly the removed blocks",
          "[fs][bmap]") {
  Fixture f;
  f.replace(0, 10, {{0, 10, 500, true}});
  auto removed = f.replace(3, 5, {{3, 2, 900, false}});
  f.verify();
  CHECK(removed == std::vector<mm::Run>{{503, 2}});
  std::vector<Extent> want{{0, 3, 500, true}, {3, 2, 900, false}, {5, 5, 505, true}};
  CHECK(listed(f.map) == want);
  // Converting part of an unwritten extent to written in place (same device blocks).
  removed = f.replace(7, 8, {{7, 1, 507, false}});
  CHECK(removed == std::vector<mm::Run>{{507, 1}});
  want = {{0, 3, 500, true}, {3, 2, 900, false}, {5, 2, 505, true}, {7, 1, 507, false}, {8, 2, 508, true}};
  CHECK(listed(f.map) == want);
  f.verify();
  // Punching the middle of a written extent.
  Fixture g;
  g.replace(0, 10, {{0, 10, 600, false}});
  removed = g.replace(4, 6, {});
  CHECK(removed == std::vector<mm::Run>{{604, 2}});
  want = {{0, 4, 600, false}, {6, 4, 606, false}};
  CHECK(listed(g.map) == want);
  g.verify();
  // A range over several extents and holes returns one run per extent piece.
  removed = g.replace(2, 8, {});
  CHECK(expand(removed) == std::vector<uint64_t>{602, 603, 606, 607});
  g.verify();
}

TEST_CASE("bmap: find and goal", "[fs][bmap]") {
  Fixture f;
  CHECK(f.map.find(0) == nullptr);
  CHECK(f.map.goal(5) == 0);
  f.replace(10, 20, {{10, 10, 700, false}});
  f.replace(40, 42, {{40, 2, 900, false}});
  REQUIRE(f.map.find(0) != nullptr);
  CHECK(f.map.find(0)->lblk == 10);  // the first extent after
  CHECK(f.map.find(15)->lblk == 10);  // the containing one
  CHECK(f.map.find(20)->lblk == 40);
  CHECK(f.map.find(42) == nullptr);
  CHECK(f.map.goal(5) == 0);
  CHECK(f.map.goal(25) == 710);
  CHECK(f.map.goal(45) == 902);
}

TEST_CASE("bmap: extents at the top of the 16 TiB file range round-trip through media",
          "[fs][bmap]") {
  Fixture f;
  const uint64_t top = kMaxFileBlocks - 1;
  f.replace(top, top + 1, {{top, 1, 3333, false}});
  f.replace(1ull << 20, (1ull << 20) + 2, {{1ull << 20, 2, 4444, false}});  // 4 GiB offset
  f.verify();
  for (uint64_t k = 0; k < 8; k++) f.replace(top - 100 + 2 * k, top - 99 + 2 * k, {{top - 100 + 2 * k, 1, 5000 + 2 * k, false}});
  f.verify();
  REQUIRE(f.d.flags & kInodeChained);
  CHECK(f.map.find(top)->pblk == 3333);
}

TEST_CASE("bmap: thousands of random single-block extents inserted then punched in random order",
          "[fs][bmap]") {
  Fixture f;
  const uint64_t n = 2000;
  std::mt19937_64 rng(1234);
  std::vector<uint64_t> slots(n);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  // lblk 2s (never adjacent, so nothing merges), pblk a permutation of a device range.
  std::vector<uint64_t> pblks(n);
  std::iota(pblks.begin(), pblks.end(), 3000);
  std::shuffle(pblks.begin(), pblks.end(), rng);
  for (uint64_t k = 0; k < n; k++) {
    uint64_t lb = 2 * slots[k];
    f.replace(lb, lb + 1, {{lb, 1, pblks[k], false}});
    f.verify(true);
  }
  CHECK(f.map.extents().size() == n);
  CHECK(f.map.leaves().size() >= n / kLeafExtents);
  std::shuffle(slots.begin(), slots.end(), rng);
  for (uint64_t k = 0; k < n; k++) {
    uint64_t lb = 2 * slots[k];
    auto removed = f.replace(lb, lb + 1, {});
    CHECK(removed.size() == 1);
    f.verify(true);
  }
  CHECK(f.map.extents().empty());
  CHECK(f.map.leaves().empty());
  CHECK(f.d.blocks == 0);
  CHECK(f.st->space->free_blocks() == f.free0);
}

TEST_CASE("bmap: random range replacements with multi-block and unwritten extents match the model",
          "[fs][bmap]") {
  Fixture f;
  std::mt19937_64 rng(99);
  const uint64_t span = 6000;  // file blocks in play
  uint64_t next_pblk = 1;      // fresh device blocks for each mapping, never reused
  auto fresh_pblk = [&](uint64_t len) {
    // Device numbers only need to be in range; keep them below the image size.
    uint64_t p = 2048 + (next_pblk % 12000);
    if (p + len > 16000) p = 2048;
    next_pblk += len + rng() % 3;
    return p;
  };
  for (int step = 0; step < 1500; step++) {
    uint64_t lo = rng() % span, len = 1 + rng() % 40, hi = std::min(span, lo + len);
    int op = int(rng() % 10);
    std::vector<Extent> add;
    if (op < 6) {
      // Map the range with 1..3 pieces, maybe with holes and unwritten parts.
      uint64_t at = lo;
      while (at < hi) {
        uint64_t l = 1 + rng() % (hi - at);
        if (rng() % 4 != 0) add.push_back({at, l, fresh_pblk(l), rng() % 5 == 0});
        at += l;
        if (at < hi && rng() % 3 == 0) at++;  // leave a hole
      }
    }
    f.replace(lo, hi, std::move(add));
    f.verify(step % 5 == 0);
  }
  f.verify(true);
  INFO("extents " << f.map.extents().size());
  CHECK(f.map.extents().size() > kInlineExtents);
  // Punch everything: back to an empty inline map, all leaves freed.
  f.replace(0, kMaxFileBlocks, {});
  f.verify(true);
  CHECK(f.map.extents().empty());
  CHECK(f.st->space->free_blocks() == f.free0);
}

TEST_CASE("bmap: load rejects a damaged leaf chain with kCorrupt", "[fs][bmap]") {
  Fixture f;
  for (uint64_t k = 0; k < 600; k++) f.replace(2 * k, 2 * k + 1, {{2 * k, 1, 3000 + k, false}});
  f.verify();
  REQUIRE(f.map.leaves().size() >= 3);
  mm::Region& r = f.st->region;
  uint64_t mid = f.map.leaves()[1];
  SECTION("a flipped byte in a leaf") {
    r.base()[mid * kBlockSize + 300] ^= 0x10;
    auto m = ExtentMap::load(r, kIno, f.d, f.st->sb.block_count);
    REQUIRE_FALSE(m.ok());
    CHECK(m.error().code == Errc::kCorrupt);
    CHECK(m.error().msg.find("extent leaf") != std::string::npos);
  }
  SECTION("nleaves disagrees with the chain") {
    DiskInode d = f.d;
    d.map.chain.nleaves -= 1;
    auto m = ExtentMap::load(r, kIno, d, f.st->sb.block_count);
    REQUIRE_FALSE(m.ok());
    CHECK(m.error().code == Errc::kCorrupt);
    CHECK(m.error().msg.find("nleaves") != std::string::npos);
    d.map.chain.nleaves += 2;
    m = ExtentMap::load(r, kIno, d, f.st->sb.block_count);
    REQUIRE_FALSE(m.ok());
    CHECK(m.error().code == Errc::kCorrupt);
  }
  SECTION("a leaf owned by another inode") {
    auto m = ExtentMap::load(r, kIno + 1, f.d, f.st->sb.block_count);
    REQUIRE_FALSE(m.ok());
    CHECK(m.error().code == Errc::kCorrupt);
    CHECK(m.error().msg.find("owner") != std::string::npos);
  }
}
