// tests/unit/fs/dir_test.cc: Directory: add/find/remove/list with every name length,
// many entries over many blocks, stable positions (readdir cookies) across inserts and
// deletes, retarget, and reload from media.
#include "fs/dir.h"

#include <dirent.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "fs/verify.h"
#include "tests/unit/fs/helpers.h"

using namespace pmemfuse;
using namespace pmemfuse::fs;
using namespace pmemfuse::fs::testing;

namespace {

constexpr uint64_t kDirIno = 7;

struct Listed {
  std::string name;
  uint64_t ino;
  uint8_t type;
  uint64_t pos;
};

struct DirFixture {
  DirFixture() : st(make_stack()), dir(std::make_unique<Directory>()) {
    d.mode = S_IFDIR | 0755;
    d.nlink = 2;
    d.parent = 1;
  }

  Status add(const std::string& name, uint64_t ino, uint8_t type = DT_REG) {
    Tx tx(st->region);
    Status s = dir->add(tx, *st->space, kDirIno, d, map, name, ino, type);
    if (!s) return s;
    return st->commit(tx);
  }
  void must_add(const std::string& name, uint64_t ino, uint8_t type = DT_REG) {
    require_ok(add(name, ino, type), "add");
  }
  void remove(const std::string& name) {
    auto e = dir->find(st->region, map, name);
    REQUIRE(e);
    Tx tx(st->region);
    dir->remove(tx, map, *e, name);
    require_ok(st->commit(tx), "commit");
  }
  std::vector<Listed> list(uint64_t from = 0, size_t max = SIZE_MAX, uint64_t* next = nullptr) const {
    std::vector<Listed> out;
    if (next) *next = UINT64_MAX;
    dir->list(st->region, map, from, [&](std::string_view n, const DirEntry& e, uint64_t nx) {
      if (out.size() == max) return false;
      out.push_back({std::string(n), e.ino, e.type, e.pos});
      if (next) *next = nx;
      return true;
    });
    return out;
  }
  // A Directory loaded from media with a reloaded extent map.
  std::unique_ptr<Directory> reload(ExtentMap* map_out) const {
    REQUIRE(d.size % kBlockSize == 0);
    auto m = ExtentMap::load(st->region, kDirIno, d, st->sb.block_count);
    if (!m) FAIL("map reload: " << m.error().msg);
    *map_out = std::move(*m);
    auto r = Directory::load(st->region, kDirIno, *map_out, d.size / kBlockSize);
    if (!r) FAIL("dir reload: " << r.error().msg);
    return std::move(*r);
  }
  void verify_blocks() const {
    for (uint64_t lb = 0; lb < d.size / kBlockSize; lb++) {
      const Extent* e = map.find(lb);
      REQUIRE(e);
      REQUIRE(e->lblk <= lb);
      uint64_t pb = e->pblk + (lb - e->lblk);
      require_ok(verify_dir_block(st->region.at(pb * kBlockSize), pb, kDirIno, lb), "verify_dir_block");
    }
  }

  std::unique_ptr<Stack> st;
  DiskInode d{};
  ExtentMap map;
  std::unique_ptr<Directory> dir;
};

std::map<std::string, uint64_t> as_map(const std::vector<Listed>& v) {
  std::map<std::string, uint64_t> m;
  for (auto& e : v) m[e.name] = e.ino;
  return m;
}

}  // namespace

TEST_CASE("dir: add, find, list and remove names of every length 1..255", "[fs][dir]") {
  DirFixture f;
  std::map<std::string, uint64_t> want;
  for (uint32_t len = 1; len <= kMaxNameLen; len++) {
    std::string name(len, char('a' + len % 26));
    name[0] = char('A' + len % 26);
    name[len / 2] = char('0' + len % 10);
    f.must_add(name, 1000 + len, len % 2 ? DT_REG : DT_DIR);
    want[name] = 1000 + len;
  }
  f.verify_blocks();
  CHECK(f.d.size == f.dir->blocks() * kBlockSize);
  CHECK(f.d.size > kBlockSize);  // 255 names up to 255 bytes need many blocks
  for (auto& [name, ino] : want) {
    auto e = f.dir->find(f.st->region, f.map, name);
    INFO("name length " << name.size());
    REQUIRE(e);
    CHECK(e->ino == ino);
    CHECK(e->type == (name.size() % 2 ? DT_REG : DT_DIR));
  }
  CHECK_FALSE(f.dir->find(f.st->region, f.map, "missing"));
  CHECK_FALSE(f.dir->find(f.st->region, f.map, std::string(256 - 1, 'z')));
  auto all = f.list();
  CHECK(as_map(all) == want);
  for (size_t k = 1; k < all.size(); k++) CHECK(all[k - 1].pos < all[k].pos);

  // Remove every other length, then check finds, listing and a reload from media.
  for (uint32_t len = 1; len <= kMaxNameLen; len += 2) {
    std::string name;
    for (auto& [n, ino] : want)
      if (n.size() == len) name = n;
    f.remove(name);
    want.erase(name);
  }
  f.verify_blocks();
  for (auto& [name, ino] : want) CHECK(f.dir->find(f.st->region, f.map, name)->ino == ino);
  CHECK(as_map(f.list()) == want);
  ExtentMap m2;
  auto d2 = f.reload(&m2);
  for (auto& [name, ino] : want) {
    auto e = d2->find(f.st->region, m2, name);
    REQUIRE(e);
    CHECK(e->ino == ino);
  }
  std::vector<Listed> relisted;
  d2->list(f.st->region, m2, 0, [&](std::string_view n, const DirEntry& e, uint64_t) {
    relisted.push_back({std::string(n), e.ino, e.type, e.pos});
    return true;
  });
  CHECK(as_map(relisted) == want);
}

TEST_CASE("dir: a removed name can be added again and the freed space is reused", "[fs][dir]") {
  DirFixture f;
  for (int k = 0; k < 100; k++) f.must_add("file" + std::to_string(k), 100 + k);
  uint64_t size = f.d.size;
  for (int round = 0; round < 20; round++) {
    for (int k = 0; k < 100; k += 3) f.remove("file" + std::to_string(k));
    for (int k = 0; k < 100; k += 3) CHECK_FALSE(f.dir->find(f.st->region, f.map, "file" + std::to_string(k)));
    for (int k = 0; k < 100; k += 3) f.must_add("file" + std::to_string(k), 5000 + k);
  }
  CHECK(f.d.size == size);  // no growth from churn
  for (int k = 0; k < 100; k++) {
    auto e = f.dir->find(f.st->region, f.map, "file" + std::to_string(k));
    REQUIRE(e);
    CHECK(e->ino == uint64_t(k % 3 == 0 ? 5000 + k : 100 + k));
  }
  CHECK(f.list().size() == 100);
  f.verify_blocks();
}

TEST_CASE("dir: the first record of a block can be removed and reused", "[fs][dir]") {
  DirFixture f;
  f.must_add("alpha", 10);
  f.must_add("beta", 11);
  auto first = f.list();
  REQUIRE(first.size() == 2);
  CHECK(first[0].pos == sizeof(DiskDirHeader));
  f.remove("alpha");
  auto rest = f.list();
  REQUIRE(rest.size() == 1);
  CHECK(rest[0].name == "beta");
  CHECK(rest[0].pos == first[1].pos);
  f.verify_blocks();
  f.must_add("gamma", 12);
  CHECK(f.dir->find(f.st->region, f.map, "gamma")->ino == 12);
  CHECK(f.dir->find(f.st->region, f.map, "beta")->pos == first[1].pos);
  f.verify_blocks();
  ExtentMap m2;
  auto d2 = f.reload(&m2);
  CHECK(d2->find(f.st->region, m2, "gamma")->ino == 12);
  CHECK_FALSE(d2->find(f.st->region, m2, "alpha"));
}

TEST_CASE("dir: twenty thousand entries over many blocks", "[fs][dir]") {
  DirFixture f;
  const int n = 20000;
  for (int k = 0; k < n; k++) f.must_add("entry-" + std::to_string(k), 10 + k, uint8_t(k % 3 ? DT_REG : DT_DIR));
  CHECK(f.dir->blocks() > 100);
  CHECK(f.d.size == f.dir->blocks() * kBlockSize);
  f.verify_blocks();
  for (int k = 0; k < n; k += 7) {
    auto e = f.dir->find(f.st->region, f.map, "entry-" + std::to_string(k));
    REQUIRE(e);
    CHECK(e->ino == uint64_t(10 + k));
  }
  auto all = f.list();
  REQUIRE(all.size() == size_t(n));
  std::set<uint64_t> inos;
  for (auto& e : all) inos.insert(e.ino);
  CHECK(inos.size() == size_t(n));
  ExtentMap m2;
  auto d2 = f.reload(&m2);
  CHECK(d2->blocks() == f.dir->blocks());
  for (int k = 0; k < n; k += 13) CHECK(d2->find(f.st->region, m2, "entry-" + std::to_string(k))->ino == uint64_t(10 + k));
}

TEST_CASE("dir: positions stay stable across inserts and deletes, so paging never skips or repeats",
          "[fs][dir]") {
  DirFixture f;
  std::mt19937_64 rng(7);
  std::map<std::string, uint64_t> live;  // name -> ino
  uint64_t next_ino = 100;
  auto add_new = [&] {
    std::string name = "n" + std::to_string(next_ino) + std::string(rng() % 40, 'x');
    f.must_add(name, next_ino);
    live[name] = next_ino++;
  };
  for (int k = 0; k < 3000; k++) add_new();
  std::map<std::string, uint64_t> pos_of;
  for (auto& e : f.list()) pos_of[e.name] = e.pos;

  // Page through in chunks of 37, mutating between pages.
  std::set<std::string> present_throughout;  // never removed during the walk
  for (auto& [n, i] : live) present_throughout.insert(n);
  std::map<std::string, int> seen;
  uint64_t cookie = 0;
  for (int page = 0; page < 10000; page++) {
    uint64_t next;
    auto got = f.list(cookie, 37, &next);
    for (auto& e : got) {
      seen[e.name]++;
      CHECK(e.pos >= cookie);
    }
    if (got.empty()) break;
    cookie = next;
    // Delete a few random live entries and add a few new ones.
    for (int k = 0; k < 5 && !live.empty(); k++) {
      auto it = live.begin();
      std::advance(it, rng() % live.size());
      present_throughout.erase(it->first);
      f.remove(it->first);
      live.erase(it);
    }
    for (int k = 0; k < 4; k++) add_new();
  }
  CHECK(live.size() > 1000);
  for (auto& n : present_throughout) {
    INFO(n);
    CHECK(seen[n] == 1);
    CHECK(f.dir->find(f.st->region, f.map, n)->pos == pos_of[n]);  // never moved
  }
  for (auto& [n, c] : seen) {
    INFO(n);
    CHECK(c == 1);  // nothing listed twice, survivors or not
  }
  f.verify_blocks();
}

TEST_CASE("dir: listing from a cookie continues after the entry that produced it", "[fs][dir]") {
  DirFixture f;
  for (int k = 0; k < 500; k++) f.must_add("e" + std::to_string(k), 10 + k);
  auto all = f.list();
  REQUIRE(all.size() == 500);
  for (size_t k : {size_t(0), size_t(1), size_t(170), size_t(171), size_t(498)}) {
    uint64_t next;
    auto head = f.list(0, k + 1, &next);
    REQUIRE(head.size() == k + 1);
    auto tail = f.list(next);
    REQUIRE(tail.size() == all.size() - k - 1);
    CHECK(tail.front().pos == all[k + 1].pos);
  }
  // Deleting the entry a cookie came from does not disturb the continuation.
  uint64_t next;
  auto head = f.list(0, 200, &next);
  f.remove(head.back().name);
  f.remove(all[200].name);
  auto tail = f.list(next);
  REQUIRE(tail.size() == 299);
  CHECK(tail.front().name == all[201].name);
  // A cookie past the end lists nothing.
  CHECK(f.list(f.d.size + 10).empty());
}

TEST_CASE("dir: retarget points an entry at another inode in place", "[fs][dir]") {
  DirFixture f;
  for (int k = 0; k < 300; k++) f.must_add("r" + std::to_string(k), 10 + k);
  auto e = f.dir->find(f.st->region, f.map, "r150");
  REQUIRE(e);
  {
    Tx tx(f.st->region);
    f.dir->retarget(tx, f.map, *e, 99999, DT_DIR);
    require_ok(f.st->commit(tx));
  }
  auto e2 = f.dir->find(f.st->region, f.map, "r150");
  REQUIRE(e2);
  CHECK(e2->ino == 99999);
  CHECK(e2->type == DT_DIR);
  CHECK(e2->pos == e->pos);
  CHECK(f.dir->find(f.st->region, f.map, "r149")->ino == 159);
  CHECK(f.dir->find(f.st->region, f.map, "r151")->ino == 161);
  f.verify_blocks();
  ExtentMap m2;
  auto d2 = f.reload(&m2);
  CHECK(d2->find(f.st->region, m2, "r150")->ino == 99999);
}

TEST_CASE("dir: load rejects a damaged or unmapped block with kCorrupt", "[fs][dir]") {
  DirFixture f;
  for (int k = 0; k < 400; k++) f.must_add("c" + std::to_string(k), 10 + k);
  REQUIRE(f.d.size >= 2 * kBlockSize);
  const Extent* e = f.map.find(1);
  uint64_t pb = e->pblk + (1 - e->lblk);
  SECTION("flipped byte in a record") {
    f.st->region.base()[pb * kBlockSize + 100] ^= 0x40;
    auto r = Directory::load(f.st->region, kDirIno, f.map, f.d.size / kBlockSize);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::kCorrupt);
    CHECK(r.error().msg.find("dir block") != std::string::npos);
  }
  SECTION("more blocks than are mapped") {
    auto r = Directory::load(f.st->region, kDirIno, f.map, f.d.size / kBlockSize + 1);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::kCorrupt);
    CHECK(r.error().msg.find("not mapped") != std::string::npos);
  }
  SECTION("block of another directory") {
    auto r = Directory::load(f.st->region, kDirIno + 1, f.map, f.d.size / kBlockSize);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::kCorrupt);
  }
}
