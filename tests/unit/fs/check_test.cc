// tests/unit/fs/check_test.cc: check_image on clean images, after filesystem activity,
// after a crash, and with one structure damaged at a time: each damage is reported
// naming the structure, and mounting or using the damaged object fails with kCorrupt.
#include "fs/check.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fs/verify.h"
#include "mm/crc32c.h"
#include "tests/unit/fs/helpers.h"

using namespace pmemfuse;
using namespace pmemfuse::fs;
using namespace pmemfuse::fs::testing;

namespace {

std::string all_problems(const CheckReport& rep) {
  std::string s;
  for (auto& p : rep.problems) s += p + "\n";
  return s;
}

bool mentions(const CheckReport& rep, std::initializer_list<const char*> words) {
  for (auto& p : rep.problems) {
    bool all = true;
    for (const char* w : words) all = all && p.find(w) != std::string::npos;
    if (all) return true;
  }
  return false;
}

CheckReport check(const mm::Region& r) {
  mm::Region copy = copy_region(r);
  return take(check_image(copy), "check_image");
}

uint64_t inode_off(const mm::Region& r, uint64_t ino) {
  DiskSuper sb = read_super(r);
  DiskItableIndex x;
  std::memcpy(&x, r.at(sb.itable_index * kBlockSize), sizeof x);
  uint64_t ci = (ino - 1) / kInodesPerChunk, slot = (ino - 1) % kInodesPerChunk;
  REQUIRE(ci < x.nchunks);
  return (x.chunks[ci] + 1) * kBlockSize + slot * kInodeSize;
}

DiskInode inode_at(const mm::Region& r, uint64_t ino) {
  DiskInode d;
  std::memcpy(&d, r.at(inode_off(r, ino)), sizeof d);
  return d;
}

void put_inode(mm::Region& r, uint64_t ino, DiskInode d) {
  seal_inode(d);
  std::memcpy(r.base() + inode_off(r, ino), &d, sizeof d);
}

// A cleanly unmounted image with one of each structure worth damaging.
struct Populated {
  mm::Region img;
  uint64_t dir = 0, file = 0, big = 0, xf = 0, link = 0, sub = 0;
};

Populated populate() {
  auto fs = mount_fresh();
  Populated p{mm::Region(formatted(kMinBlocks * kBlockSize)), 0, 0, 0, 0, 0, 0};
  p.dir = make_dir(*fs, kRoot, "dir").ino;
  for (int k = 0; k < 400; k++) make_file(*fs, p.dir, "entry-with-a-longish-name-" + std::to_string(k));
  p.sub = make_dir(*fs, p.dir, "sub").ino;
  p.file = make_file(*fs, kRoot, "file").ino;
  write_str(*fs, p.file, 0, pattern(10000, 1));
  p.big = make_file(*fs, kRoot, "big").ino;
  for (uint64_t k = 0; k < 20; k++) write_str(*fs, p.big, 2 * k * kBlockSize, pattern(100, k));
  p.xf = make_file(*fs, kRoot, "xf").ino;
  require_ok(fs->setxattr(p.xf, "user.big", std::string(3000, 'x'), {}));
  p.link = take(fs->symlink(kRoot, "link", std::string(2000, 'l'), kCaller)).ino;
  p.img = unmount_copy(*fs);
  return p;
}

template <class T>
void expect_corrupt(const Result<T>& r, const char* word) {
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::kCorrupt);
  INFO("message: " << r.error().msg);
  CHECK(r.error().msg.find(word) != std::string::npos);
}

}  // namespace

TEST_CASE("check: a fresh image has no problems", "[fs][check]") {
  mm::Region r = formatted();
  CheckReport rep = take(check_image(r));
  CHECK(rep.problem_count == 0);
  CHECK(rep.problems.empty());
  CHECK(rep.inodes == 1);
  CHECK(rep.directories == 1);
  CHECK(rep.replayed == 0);
  CHECK(rep.blocks_total == kDefaultImage / kBlockSize);
  CHECK(rep.blocks_used > kChunkBlocks);
  CHECK(rep.blocks_used < rep.blocks_total);
  CHECK_FALSE(rep.primary_super_bad);
}

TEST_CASE("check: an image after filesystem operations and unmount has no problems", "[fs][check]") {
  Populated p = populate();
  CheckReport rep = check(p.img);
  INFO(all_problems(rep));
  CHECK(rep.problem_count == 0);
  CHECK(rep.inodes == 1 + 1 + 400 + 1 + 4);
  CHECK(rep.directories == 3);
  // The report's block count agrees with the mounted filesystem's view.
  auto fs = mount(copy_region(p.img));
  CHECK(rep.blocks_total - rep.blocks_used == take(fs->statfs()).bfree);
}

TEST_CASE("check: a crash image is replayed first and is consistent", "[fs][check]") {
  auto fs = mount_fresh();
  uint64_t d = make_dir(*fs, kRoot, "d").ino;
  uint64_t f = make_file(*fs, d, "f").ino;
  write_str(*fs, f, 0, pattern(30000, 2));
  require_ok(fs->setxattr(f, "user.k", "v", {}));
  mm::Region crash = copy_region(fs->region());
  CheckReport rep = take(check_image(crash));
  INFO(all_problems(rep));
  CHECK(rep.replayed > 0);
  CHECK(rep.problem_count == 0);
  CHECK(rep.inodes == 3);
}

TEST_CASE("check: an image that is not pmemfuse is refused", "[fs][check]") {
  mm::Region blank = take(mm::Region::anonymous(kDefaultImage));
  auto rep = check_image(blank);
  REQUIRE_FALSE(rep.ok());
  CHECK(rep.error().code == Errc::kInvalid);
}

TEST_CASE("check: damage to one structure is reported and refused by mount or access",
          "[fs][check][corrupt]") {
  Populated p = populate();
  mm::Region& img = p.img;
  DiskSuper sb = read_super(img);

  SECTION("(a) an inode") {
    img.base()[inode_off(img, p.file) + offsetof(DiskInode, size)] ^= 0x01;
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"inode " , "crc"}));
    CHECK(mentions(rep, {"points to inode", "free or damaged"}));
    auto fs = mount(std::move(img));
    expect_corrupt(fs->lookup(kRoot, "file"), "inode");
    expect_corrupt(fs->getattr(p.file), "inode");
    CHECK(fs->lookup(kRoot, "big").ok());  // the rest works
  }
  SECTION("(a') the root inode") {
    img.base()[inode_off(img, kRoot) + offsetof(DiskInode, mtime_ns)] ^= 0x01;
    CheckReport rep = check(img);
    CHECK(mentions(rep, {"inode 1", "crc"}));
    expect_corrupt(Filesystem::mount(std::move(img), {}), "inode 1");
  }
  SECTION("(b) a directory block") {
    DiskInode d = inode_at(img, p.dir);
    REQUIRE(d.nextents >= 1);
    uint64_t pb = d.map.extents[0].pblk;
    img.base()[pb * kBlockSize + sizeof(DiskDirHeader) + sizeof(DiskDirent) + 2] ^= 0x01;  // a name byte
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"dir block", "crc"}));
    auto fs = mount(std::move(img));
    expect_corrupt(fs->lookup(kRoot, "dir"), "dir block");
    CHECK(fs->lookup(kRoot, "file").ok());
  }
  SECTION("(c) an extent leaf") {
    DiskInode d = inode_at(img, p.big);
    REQUIRE(d.flags & kInodeChained);
    uint64_t leaf = d.map.chain.head;
    img.base()[leaf * kBlockSize + 100] ^= 0x01;
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"extent leaf", "crc"}));
    auto fs = mount(std::move(img));
    expect_corrupt(fs->lookup(kRoot, "big"), "extent leaf");
    auto r = fs->read(p.big, 0, 100, [](const struct iovec*, int) {});
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::kCorrupt);
  }
  SECTION("(d) a bitmap block") {
    img.base()[sb.bitmap_start * kBlockSize + sizeof(DiskBitmapHeader) + 1000] ^= 0x01;
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"bitmap", "crc"}));
    expect_corrupt(Filesystem::mount(std::move(img), {}), "bitmap");
  }
  SECTION("(d') an inode chunk bitmap") {
    DiskItableIndex x;
    std::memcpy(&x, img.at(sb.itable_index * kBlockSize), sizeof x);
    img.base()[x.chunks[0] * kBlockSize + sizeof(DiskBitmapHeader) + 500] ^= 0x01;
    auto rep = check_image(img);  // nothing can be walked without it
    expect_corrupt(rep, "inode chunk bitmap");
  }
  SECTION("(e) the inode table index") {
    img.base()[sb.itable_index * kBlockSize + 24] ^= 0x01;
    mm::Region c = copy_region(img);
    expect_corrupt(check_image(c), "inode table index");
    expect_corrupt(Filesystem::mount(std::move(img), {}), "inode table index");
  }
  SECTION("(f) the primary superblock: the backup is used") {
    img.base()[offsetof(DiskSuper, label) + 3] ^= 0x01;
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(rep.primary_super_bad);
    CHECK(mentions(rep, {"superblock", "crc"}));
    CHECK(rep.problem_count == 1);  // the rest checks out from the backup
    CHECK(rep.inodes == 1 + 1 + 400 + 1 + 4);
    expect_corrupt(Filesystem::mount(std::move(img), {}), "superblock");
  }
  SECTION("(f') both superblocks") {
    img.base()[offsetof(DiskSuper, label) + 3] ^= 0x01;
    img.base()[sb.backup_block * kBlockSize + offsetof(DiskSuper, label) + 3] ^= 0x01;
    mm::Region c = copy_region(img);
    expect_corrupt(check_image(c), "superblock");
  }
  SECTION("(g) an xattr block") {
    DiskInode d = inode_at(img, p.xf);
    REQUIRE(d.xattr_block != 0);
    img.base()[d.xattr_block * kBlockSize + 100] ^= 0x01;
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"xattr block", "crc"}));
    auto fs = mount(std::move(img));
    CHECK(fs->lookup(kRoot, "xf").ok());
    expect_corrupt(fs->getxattr(p.xf, "user.big"), "xattr block");
    expect_corrupt(fs->listxattr(p.xf, true), "xattr block");
    Status st = fs->setxattr(p.xf, "user.n", "v", {});
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().code == Errc::kCorrupt);
  }
  SECTION("(i) a symlink's target block is not verified, but its inode is") {
    img.base()[inode_off(img, p.link) + offsetof(DiskInode, size)] ^= 0x01;
    auto fs = mount(std::move(img));
    expect_corrupt(fs->readlink(p.link), "inode");
  }
}

TEST_CASE("check: a damaged orphan slot is reported and refused by mount", "[fs][check][corrupt]") {
  auto fs = mount_fresh();
  uint64_t f = make_file(*fs, kRoot, "f").ino;
  write_str(*fs, f, 0, pattern(20000, 3));
  require_ok(fs->open(f));
  require_ok(fs->unlink(kRoot, "f"));
  // A freeing transaction afterwards moves the log head past the orphan's transaction,
  // so replay does not rewrite the slot we damage.
  uint64_t g = make_file(*fs, kRoot, "g").ino;
  write_str(*fs, g, 0, "x");
  SetAttr s;
  s.size = 0;
  take(fs->setattr(g, s));
  mm::Region crash = copy_region(fs->region());
  DiskSuper sb = read_super(crash);
  const DiskOrphanSlot* slots = reinterpret_cast<const DiskOrphanSlot*>(crash.at(sb.orphan_start * kBlockSize));
  uint64_t used = UINT64_MAX;
  for (uint64_t k = 0; k < sb.orphan_blocks * kOrphanSlotsPerBlock; k++)
    if (slots[k].ino == f) used = k;
  REQUIRE(used != UINT64_MAX);
  {
    CheckReport rep = check(crash);
    INFO(all_problems(rep));
    REQUIRE(rep.replayed == 0);
    CHECK(rep.problem_count == 0);
  }
  SECTION("the slot naming the orphan") {
    crash.base()[sb.orphan_start * kBlockSize + used * sizeof(DiskOrphanSlot) + 1] ^= 0x01;
    CheckReport rep = check(crash);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"orphan table slot", "crc"}));
    CHECK(mentions(rep, {"orphan", "missing from the orphan table"}));
  }
  SECTION("a free slot") {
    uint64_t k = used + 5;
    crash.base()[sb.orphan_start * kBlockSize + k * sizeof(DiskOrphanSlot) + 9] ^= 0x01;
    CheckReport rep = check(crash);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"orphan table slot", "crc"}));
  }
  auto r = Filesystem::mount(std::move(crash), {});
  expect_corrupt(r, "orphan table");
}

TEST_CASE("check: a used block marked free in the bitmap is reported", "[fs][check]") {
  Populated p = populate();
  DiskSuper sb = read_super(p.img);
  DiskInode d = inode_at(p.img, p.file);
  REQUIRE(d.nextents >= 1);
  uint64_t b = d.map.extents[0].pblk;
  apply_bits(p.img, sb.bitmap_start, b, 1, false);
  require_ok(verify_bitmap_block(p.img.at(sb.bitmap_start * kBlockSize), sb.bitmap_start, 0, "block bitmap"));
  CheckReport rep = check(p.img);
  INFO(all_problems(rep));
  CHECK(rep.problem_count == 1);
  CHECK(mentions(rep, {("block " + std::to_string(b)).c_str(), "in use but marked free"}));
}

TEST_CASE("check: a free block marked used (a leak) is reported", "[fs][check]") {
  Populated p = populate();
  DiskSuper sb = read_super(p.img);
  uint64_t b = sb.block_count - 100;
  apply_bits(p.img, sb.bitmap_start, b, 3, true);
  CheckReport rep = check(p.img);
  INFO(all_problems(rep));
  CHECK(rep.problem_count == 3);
  CHECK(mentions(rep, {("block " + std::to_string(b)).c_str(), "owned by nothing"}));
}

TEST_CASE("check: cross-checks of link counts, entries, sizes and ownership", "[fs][check]") {
  Populated p = populate();
  mm::Region& img = p.img;
  SECTION("a file's nlink") {
    DiskInode d = inode_at(img, p.file);
    d.nlink = 3;
    put_inode(img, p.file, d);
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(rep.problem_count == 1);
    CHECK(mentions(rep, {("inode " + std::to_string(p.file)).c_str(), "nlink 3"}));
  }
  SECTION("a directory's nlink") {
    DiskInode d = inode_at(img, p.dir);
    d.nlink = 2;  // it has a subdirectory: 3
    put_inode(img, p.dir, d);
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(rep.problem_count == 1);
    CHECK(mentions(rep, {"nlink 2", "expected 3"}));
  }
  SECTION("the root's nlink") {
    DiskInode d = inode_at(img, kRoot);
    d.nlink = 9;
    put_inode(img, kRoot, d);
    CheckReport rep = check(img);
    CHECK(mentions(rep, {"root directory", "nlink 9"}));
  }
  SECTION("a directory's entries count") {
    DiskInode d = inode_at(img, p.dir);
    d.entries -= 1;
    put_inode(img, p.dir, d);
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"entries field"}));
  }
  SECTION("a blocks field") {
    DiskInode d = inode_at(img, p.file);
    d.blocks += 1;
    put_inode(img, p.file, d);
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"blocks field"}));
  }
  SECTION("written data past EOF") {
    DiskInode d = inode_at(img, p.file);
    d.size = 10;
    put_inode(img, p.file, d);
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"past EOF"}));
  }
  SECTION("two inodes owning the same block") {
    DiskInode f = inode_at(img, p.file);
    DiskInode x = inode_at(img, p.xf);
    x.xattr_block = f.map.extents[0].pblk;
    put_inode(img, p.xf, x);
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"owned twice"}));
  }
  SECTION("a directory entry naming a free inode") {
    DiskSuper sb = read_super(img);
    DiskItableIndex x;
    std::memcpy(&x, img.at(sb.itable_index * kBlockSize), sizeof x);
    apply_bits(img, x.chunks[0], p.file - 1, 1, false);
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"'file'", "free or damaged"}));
    CHECK(mentions(rep, {"owned by nothing"}));  // its blocks leak
  }
  SECTION("an inode in use but in no directory") {
    DiskSuper sb = read_super(img);
    DiskItableIndex x;
    std::memcpy(&x, img.at(sb.itable_index * kBlockSize), sizeof x);
    uint64_t lost = 5000;
    apply_bits(img, x.chunks[0], lost - 1, 1, true);
    DiskInode d{};
    d.mode = S_IFREG | 0600;
    d.nlink = 1;
    d.generation = 1;
    put_inode(img, lost, d);
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"inode 5000", "lost"}));
  }
  SECTION("a subdirectory whose parent field is wrong") {
    DiskInode d = inode_at(img, p.sub);
    d.parent = kRoot;
    put_inode(img, p.sub, d);
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"'sub'", "parent field"}));
  }
}
