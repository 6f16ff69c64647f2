// tests/unit/fs/repair_test.cc: repair_image on images damaged one way at a time: the
// check names the damage, the repair leaves an image the check finds clean (twice, as
// fsck -y and then fsck -n would), and the mounted filesystem still holds the data. Then
// preen's refusal, and crashes at every fence of a repair.
#include "fs/repair.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "mm/recording.h"
#include "tests/unit/fs/damage.h"

using namespace pmemfuse;
using namespace pmemfuse::fs;
using namespace pmemfuse::fs::testing;

namespace {

std::string all_actions(const RepairResult& res) {
  std::string s;
  for (auto& a : res.actions) s += a + "\n";
  return s;
}

// fsck -y: repairs img in place and requires the result, checked once more, clean.
RepairResult repair(mm::Region& img, bool preen = false) {
  RepairResult res = take(repair_image(img, {preen, {}}), "repair_image");
  INFO("repairs:\n" << all_actions(res) << "left:\n" << all_problems(res.last));
  REQUIRE_FALSE(res.refused);
  REQUIRE(res.last.problem_count == 0);
  CheckReport again = check(img);
  INFO("second check:\n" << all_problems(again));
  REQUIRE(again.problem_count == 0);
  REQUIRE(again.replayed == 0);
  return res;
}

uint64_t lookup(Filesystem& fs, uint64_t dir, const std::string& name) {
  return take(fs.lookup(dir, name), name.c_str()).ino;
}

std::vector<std::string> names(Filesystem& fs, uint64_t dir) {
  std::vector<std::string> out;
  require_ok(fs.readdir(dir, 0, false, [&](std::string_view n, const Attr&, uint64_t) {
    if (n != "." && n != "..") out.emplace_back(n);
    return true;
  }));
  return out;
}

bool same_bytes(const mm::Region& a, const mm::Region& b) {
  return a.size() == b.size() && std::memcmp(a.base(), b.base(), a.size()) == 0;
}

// The populated image with one more regular file of one block, "one".
struct WithOne {
  Populated p = populate();
  uint64_t one = 0;
  WithOne() {
    auto fs = mount(std::move(p.img));
    one = make_file(*fs, kRoot, "one").ino;
    write_str(*fs, one, 0, pattern(kBlockSize, 7));
    p.img = unmount_copy(*fs);
  }
};

}  // namespace

TEST_CASE("repair: a block in use but marked free is marked used again", "[fs][repair]") {
  Populated p = populate();
  DiskSuper sb = read_super(p.img);
  uint64_t b = inode_at(p.img, p.file).map.extents[0].pblk;
  apply_bits(p.img, sb.bitmap_start, b, 1, false);
  REQUIRE(check(p.img).unmarked == std::vector<mm::Run>{{b, 1}});
  RepairResult res = repair(p.img);
  CHECK(res.first.unmarked.size() == 1);
  CHECK(Space(p.img, sb).bit(b));
  auto fs = mount(copy_region(p.img));
  uint64_t g = make_file(*fs, kRoot, "g").ino;
  write_str(*fs, g, 0, pattern(64 * kBlockSize, 9));
  CHECK(read_all(*fs, p.file) == pattern(10000, 1));
}

TEST_CASE("repair: blocks marked used but owned by nothing are freed", "[fs][repair]") {
  Populated p = populate();
  uint64_t bfree = take(mount(copy_region(p.img))->statfs()).bfree;
  DiskSuper sb = read_super(p.img);
  SECTION("three bits set") {
    uint64_t b = sb.block_count - 100;
    apply_bits(p.img, sb.bitmap_start, b, 3, true);
    REQUIRE(check(p.img).leaked == std::vector<mm::Run>{{b, 3}});
  }
  SECTION("a bitmap block that fails its crc, with a bit flipped") {
    p.img.base()[sb.bitmap_start * kBlockSize + sizeof(DiskBitmapHeader) + 1000] ^= 0x01;
    CheckReport rep = check(p.img);
    REQUIRE(rep.bad_bitmap_blocks == std::vector<uint64_t>{0});
    REQUIRE(rep.leaked.size() + rep.unmarked.size() == 1);
  }
  repair(p.img);
  CHECK(take(mount(copy_region(p.img))->statfs()).bfree == bfree);
}

TEST_CASE("repair: wrong link counts are set from the directory entries", "[fs][repair]") {
  Populated p = populate();
  uint64_t ino = 0, want = 0;
  SECTION("a file") { ino = p.file, want = 1; }
  SECTION("a directory with a subdirectory") { ino = p.dir, want = 3; }
  SECTION("the root") { ino = kRoot, want = 3; }
  DiskInode d = inode_at(p.img, ino);
  d.nlink = 9;
  put_inode(p.img, ino, d);
  REQUIRE(check(p.img).fields == std::vector<FieldFinding>{{ino, FieldFinding::Field::kNlink, want}});
  repair(p.img);
  auto fs = mount(copy_region(p.img));
  CHECK(take(fs->getattr(ino)).nlink == want);
}

TEST_CASE("repair: an inode no entry names is reconnected as /lost+found/#INO", "[fs][repair]") {
  Populated p = populate();
  SECTION("a file, /lost+found made") {
    remove_name(p.img, kRoot, "file");
    REQUIRE(check(p.img).unreachable == std::vector<uint64_t>{p.file});
    RepairResult res = repair(p.img);
    INFO(all_actions(res));
    auto fs = mount(copy_region(p.img));
    uint64_t lf = lookup(*fs, kRoot, "lost+found");
    Attr a = take(fs->getattr(lf));
    CHECK(S_ISDIR(a.mode));
    CHECK(a.nlink == 2);
    CHECK(take(fs->getattr(kRoot)).nlink == 4);  // dir and lost+found
    CHECK(lookup(*fs, lf, "#" + std::to_string(p.file)) == p.file);
    CHECK(take(fs->getattr(p.file)).nlink == 1);
    CHECK(read_all(*fs, p.file) == pattern(10000, 1));
    CHECK(fs->lookup(kRoot, "file").error().code == Errc::kNotFound);
  }
  SECTION("a directory with its subtree") {
    remove_name(p.img, kRoot, "dir");
    repair(p.img);
    auto fs = mount(copy_region(p.img));
    uint64_t lf = lookup(*fs, kRoot, "lost+found");
    CHECK(lookup(*fs, lf, "#" + std::to_string(p.dir)) == p.dir);
    CHECK(lookup(*fs, p.dir, "..") == lf);
    CHECK(names(*fs, p.dir).size() == 401);
    CHECK(take(fs->getattr(lf)).nlink == 3);
    CHECK(take(fs->getattr(kRoot)).nlink == 3);  // lost+found only
  }
  SECTION("an existing /lost+found is used") {
    uint64_t lf = 0;
    {
      auto fs = mount(std::move(p.img));
      lf = make_dir(*fs, kRoot, "lost+found").ino;
      p.img = unmount_copy(*fs);
    }
    remove_name(p.img, kRoot, "file");
    repair(p.img);
    auto fs = mount(copy_region(p.img));
    CHECK(lookup(*fs, kRoot, "lost+found") == lf);
    CHECK(names(*fs, lf) == std::vector<std::string>{"#" + std::to_string(p.file)});
  }
  SECTION("a file named lost+found is itself reconnected under a new /lost+found") {
    uint64_t imposter = 0;
    {
      auto fs = mount(std::move(p.img));
      imposter = make_file(*fs, kRoot, "lost+found").ino;
      p.img = unmount_copy(*fs);
    }
    remove_name(p.img, kRoot, "file");
    repair(p.img);
    auto fs = mount(copy_region(p.img));
    uint64_t lf = lookup(*fs, kRoot, "lost+found");
    CHECK(S_ISDIR(take(fs->getattr(lf)).mode));
    CHECK(lookup(*fs, lf, "#" + std::to_string(imposter)) == imposter);
    CHECK(lookup(*fs, lf, "#" + std::to_string(p.file)) == p.file);
  }
  SECTION("a cycle of directories cut off from the root") {
    remove_name(p.img, kRoot, "dir");
    add_name(p.img, p.sub, "loop", p.dir, S_IFDIR);
    repair(p.img);
    auto fs = mount(copy_region(p.img));
    uint64_t lf = lookup(*fs, kRoot, "lost+found");
    std::vector<std::string> lost = names(*fs, lf);
    REQUIRE(lost.size() == 1);
    // Whichever of the two got the new name, the other hangs below it, and the 400
    // files are still in dir.
    uint64_t top = lookup(*fs, lf, lost[0]);
    CHECK((top == p.dir || top == p.sub));
    CHECK(names(*fs, p.dir).size() >= 400);
  }
}

TEST_CASE("repair: an entry naming a free inode is removed", "[fs][repair]") {
  Populated p = populate();
  uint64_t bfree = take(mount(copy_region(p.img))->statfs()).bfree;
  set_slot(p.img, p.file, false);
  CheckReport rep = check(p.img);
  REQUIRE(rep.dangling.size() == 1);
  REQUIRE_FALSE(rep.leaked.empty());
  repair(p.img);
  auto fs = mount(copy_region(p.img));
  CHECK(fs->lookup(kRoot, "file").error().code == Errc::kNotFound);
  CHECK(take(fs->statfs()).bfree == bfree + 3);  // the file's blocks are free again
  CHECK(read_range(*fs, p.big, 0, 100) == pattern(100, 0));
}

TEST_CASE("repair: a damaged inode is cleared and the entry naming it removed", "[fs][repair]") {
  Populated p = populate();
  uint64_t victim = 0;
  std::string name;
  SECTION("a bad inode crc") {
    victim = p.file, name = "file";
    p.img.base()[inode_off(p.img, p.file) + offsetof(DiskInode, size)] ^= 0x01;
  }
  SECTION("a bad extent leaf") {
    victim = p.big, name = "big";
    DiskInode d = inode_at(p.img, p.big);
    REQUIRE(d.flags & kInodeChained);
    p.img.base()[d.map.chain.head * kBlockSize + 100] ^= 0x01;
  }
  SECTION("a symlink whose target block is gone") {
    victim = p.link, name = "link";
    DiskInode d = inode_at(p.img, p.link);
    d.map.extents[0].lblk = 1;
    put_inode(p.img, p.link, d);
  }
  REQUIRE(check(p.img).damaged_inodes == std::vector<uint64_t>{victim});
  mm::Region before = copy_region(p.img);
  RepairResult preened = take(repair_image(p.img, {true, {}}));
  CHECK(preened.refused);
  CHECK(same_bytes(p.img, before));  // preen changed nothing
  repair(p.img);
  auto fs = mount(copy_region(p.img));
  CHECK(fs->lookup(kRoot, name).error().code == Errc::kNotFound);
  CHECK(fs->getattr(victim).error().code == Errc::kNotFound);
  if (victim != p.file) CHECK(read_all(*fs, p.file) == pattern(10000, 1));
  // The slot is usable again.
  make_file(*fs, kRoot, "new");
}

TEST_CASE("repair: a damaged root is made again and what it held reconnected", "[fs][repair]") {
  Populated p = populate();
  p.img.base()[inode_off(p.img, kRoot) + offsetof(DiskInode, mtime_ns)] ^= 0x01;
  repair(p.img);
  auto fs = mount(copy_region(p.img));
  uint64_t lf = lookup(*fs, kRoot, "lost+found");
  CHECK(names(*fs, kRoot) == std::vector<std::string>{"lost+found"});
  CHECK(names(*fs, lf).size() == 5);  // dir, file, big, xf, link
  CHECK(read_all(*fs, lookup(*fs, lf, "#" + std::to_string(p.file))) == pattern(10000, 1));
  CHECK(names(*fs, lookup(*fs, lf, "#" + std::to_string(p.dir))).size() == 401);
  CHECK(take(fs->readlink(p.link)) == std::string(2000, 'l'));
}

TEST_CASE("repair: a damaged directory block is replaced; the inodes it named are reconnected",
          "[fs][repair]") {
  Populated p = populate();
  DiskInode d = inode_at(p.img, p.dir);
  uint64_t pb = d.map.extents[0].pblk;
  p.img.base()[pb * kBlockSize + sizeof(DiskDirHeader) + sizeof(DiskDirent) + 2] ^= 0x01;
  REQUIRE(check(p.img).damaged_dirs == std::vector<uint64_t>{p.dir});
  mm::Region before = copy_region(p.img);
  CHECK(take(repair_image(p.img, {true, {}})).refused);
  CHECK(same_bytes(p.img, before));
  repair(p.img);
  auto fs = mount(copy_region(p.img));
  uint64_t lf = lookup(*fs, kRoot, "lost+found");
  size_t kept = names(*fs, p.dir).size(), lost = names(*fs, lf).size();
  CHECK(kept > 0);
  CHECK(lost > 0);
  CHECK(kept + lost == 401);
  CHECK(take(fs->getattr(p.dir)).size == d.size);
}

TEST_CASE("repair: damaged xattrs are dropped; the file stays", "[fs][repair]") {
  Populated p = populate();
  DiskInode d = inode_at(p.img, p.xf);
  REQUIRE(d.xattr_block != 0);
  p.img.base()[d.xattr_block * kBlockSize + 100] ^= 0x01;
  REQUIRE(check(p.img).damaged_xattrs == std::vector<uint64_t>{p.xf});
  repair(p.img);
  auto fs = mount(copy_region(p.img));
  CHECK(lookup(*fs, kRoot, "xf") == p.xf);
  CHECK(fs->getxattr(p.xf, "user.big").error().code == Errc::kNoData);
  CHECK(take(fs->getattr(p.xf)).blocks == 0);
  require_ok(fs->setxattr(p.xf, "user.new", std::string(2000, 'n'), {}));
}

TEST_CASE("repair: a block claimed twice: the second claim gets its own copy", "[fs][repair]") {
  WithOne w;
  mm::Region& img = w.p.img;
  DiskInode one = inode_at(img, w.one);
  uint64_t target = 0;
  std::string content;
  SECTION("two files") {
    target = inode_at(img, w.p.file).map.extents[0].pblk;
    content = pattern(10000, 1).substr(0, kBlockSize);
  }
  SECTION("a file and a directory block: the directory keeps it") {
    target = inode_at(img, w.p.dir).map.extents[0].pblk;
    content.assign(reinterpret_cast<const char*>(img.at(target * kBlockSize)), kBlockSize);
  }
  SECTION("a file and the inode table: the table keeps it") {
    target = chunk_block(img, kRoot) + kChunkBlocks - 1;  // slots no inode uses yet: zeros
    content.assign(kBlockSize, '\0');
  }
  one.map.extents[0].pblk = target;
  put_inode(img, w.one, one);
  CheckReport rep = check(img);
  INFO(all_problems(rep));
  REQUIRE(rep.shared.size() == 1);
  CHECK(rep.shared[0].owners.back() == BlockOwner{BlockOwner::Kind::kData, w.one, 0});
  repair(img);
  uint64_t now = inode_at(img, w.one).map.extents[0].pblk;
  CHECK(now != target);
  auto fs = mount(copy_region(img));
  CHECK(read_all(*fs, w.one) == content);
  CHECK(read_all(*fs, w.p.file) == pattern(10000, 1));
  CHECK(names(*fs, w.p.dir).size() == 401);
  write_str(*fs, w.one, 0, std::string(kBlockSize, 'z'));
  CHECK(read_all(*fs, w.p.file) == pattern(10000, 1));
}

TEST_CASE("repair: without space for a copy, the second claim is dropped and reads as a hole",
          "[fs][repair]") {
  auto fs = mount(formatted(kMinBlocks * kBlockSize));
  uint64_t a = make_file(*fs, kRoot, "a").ino;
  write_str(*fs, a, 0, pattern(4 * kBlockSize, 1));
  uint64_t b = make_file(*fs, kRoot, "b").ino;
  write_str(*fs, b, 0, pattern(kBlockSize, 2));
  uint64_t filler = make_file(*fs, kRoot, "filler").ino;
  for (uint64_t off = 0;;) {
    auto n = fs->write(filler, off, pattern(kBlockSize, 3).data(), kBlockSize);
    if (!n || *n < kBlockSize) break;
    off += *n;
  }
  REQUIRE(take(fs->statfs()).bfree == 0);
  mm::Region img = unmount_copy(*fs);
  fs.reset();
  // b maps two more blocks, which are a's: b's own blocks stay, nothing leaks.
  DiskInode d = inode_at(img, b);
  d.map.extents[1] = {1, 2, inode_at(img, a).map.extents[0].pblk + 1};
  d.nextents = 2;
  d.size = 3 * kBlockSize;
  d.blocks = 3;
  put_inode(img, b, d);
  REQUIRE(check(img).shared.size() == 2);

  SECTION("preen leaves it") {
    RepairResult res = take(repair_image(img, {true, {}}));
    CHECK_FALSE(res.refused);
    CHECK(res.last.shared.size() == 2);
  }
  SECTION("-y drops it") {
    repair(img);
    auto again = mount(copy_region(img));
    CHECK(read_all(*again, a) == pattern(4 * kBlockSize, 1));
    std::string got = read_all(*again, b);
    CHECK(got.substr(0, kBlockSize) == pattern(kBlockSize, 2));
    CHECK(all_zero(got.substr(kBlockSize)));
  }
}

TEST_CASE("repair: a damaged orphan slot is cleared and the orphan put back for mount",
          "[fs][repair]") {
  OrphanImage o = orphan_image();
  mm::Region& crash = o.img;
  uint64_t f = o.ino, slot = o.slot;
  DiskSuper sb = read_super(crash);
  crash.base()[sb.orphan_start * kBlockSize + slot * sizeof(DiskOrphanSlot) + 1] ^= 0x01;
  CheckReport rep = check(crash);
  REQUIRE(rep.bad_orphan_slots == std::vector<uint64_t>{slot});
  REQUIRE(rep.unregistered_orphans == std::vector<uint64_t>{f});
  repair(crash, true);  // preen: nothing is lost
  auto again = mount(copy_region(crash));
  CHECK(again->info().orphans_reclaimed == 1);
  CHECK(again->getattr(f).error().code == Errc::kNotFound);
}

TEST_CASE("repair: the primary superblock is restored from the backup", "[fs][repair]") {
  Populated p = populate();
  p.img.base()[offsetof(DiskSuper, label) + 3] ^= 0x01;
  RepairResult res = repair(p.img, true);
  CHECK(res.first.primary_super_bad);
  REQUIRE_FALSE(res.actions.empty());
  CHECK(res.actions[0].find("primary superblock restored") != std::string::npos);
  auto fs = mount(copy_region(p.img));
  CHECK(read_all(*fs, p.file) == pattern(10000, 1));
}

TEST_CASE("repair: preen repairs everything that loses nothing", "[fs][repair]") {
  Populated p = populate();
  DiskSuper sb = read_super(p.img);
  apply_bits(p.img, sb.bitmap_start, sb.block_count - 50, 2, true);
  DiskInode d = inode_at(p.img, p.file);
  d.nlink = 5;
  put_inode(p.img, p.file, d);
  remove_name(p.img, p.dir, "sub");
  RepairResult res = repair(p.img, true);
  CHECK(res.actions.size() >= 3);
  auto fs = mount(copy_region(p.img));
  CHECK(lookup(*fs, lookup(*fs, kRoot, "lost+found"), "#" + std::to_string(p.sub)) == p.sub);
}

// Power loss at each fence of a repair: everything before the fence durable, everything
// after lost. The next repair must finish the job, and the data must be there.
TEST_CASE("repair: a crash at any fence of a repair is finished by the next repair",
          "[fs][repair][crash]") {
  auto fs = mount(formatted(kMinBlocks * kBlockSize));
  uint64_t a = make_file(*fs, kRoot, "a").ino;
  write_str(*fs, a, 0, pattern(3 * kBlockSize, 1));
  uint64_t b = make_file(*fs, kRoot, "b").ino;
  write_str(*fs, b, 0, pattern(kBlockSize, 2));
  uint64_t c = make_file(*fs, kRoot, "c").ino;
  write_str(*fs, c, 0, pattern(kBlockSize, 3));
  mm::Region base = unmount_copy(*fs);
  fs.reset();
  DiskSuper sb = read_super(base);
  DiskInode bd = inode_at(base, b);
  bd.map.extents[0].pblk = inode_at(base, a).map.extents[0].pblk + 1;  // shared with a
  bd.nlink = 4;
  put_inode(base, b, bd);
  remove_name(base, kRoot, "c");  // c is lost
  apply_bits(base, sb.bitmap_start, sb.block_count - 20, 5, true);  // leaked

  mm::Region img = copy_region(base);
  auto log = std::make_shared<mm::PersistLog>();
  img.set_persister(std::make_unique<mm::RecordingPersister>(img.base(), img.size(), log));
  repair(img);
  std::vector<mm::PersistEvent> events = log->events();
  size_t fences = 0;
  for (size_t k = 0; k < events.size(); k++) {
    if (events[k].kind != mm::PersistEvent::Kind::kFence) continue;
    fences++;
    mm::Region crash = copy_region(base);
    for (size_t i = 0; i < k; i++) {
      const mm::PersistEvent& e = events[i];
      if (e.kind == mm::PersistEvent::Kind::kStore) std::memcpy(crash.base() + e.off, e.data.data(), e.data.size());
    }
    INFO("crash at fence " << fences);
    repair(crash);
    auto after = mount(std::move(crash));
    CHECK(read_all(*after, a) == pattern(3 * kBlockSize, 1));
    CHECK(read_all(*after, b) == pattern(3 * kBlockSize, 1).substr(kBlockSize, kBlockSize));
    CHECK(read_all(*after, c) == pattern(kBlockSize, 3));
  }
  CHECK(fences > 10);
}
