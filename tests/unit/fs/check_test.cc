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
#include "tests/unit/fs/damage.h"

using namespace pmemfuse;
using namespace pmemfuse::fs;
using namespace pmemfuse::fs::testing;

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

TEST_CASE("check: a primary superblock that the journal replay rewrites is no problem", "[fs][check]") {
  auto fs = mount_fresh();
  make_file(*fs, kRoot, "f");
  // The mount's transaction (state = mounted) still holds the whole superblock.
  mm::Region crash = copy_region(fs->region());
  crash.base()[offsetof(DiskSuper, label) + 3] ^= 0x01;
  CheckReport rep = check(crash);
  INFO(all_problems(rep));
  CHECK(rep.replayed > 0);
  CHECK_FALSE(rep.primary_super_bad);
  CHECK(rep.problem_count == 0);
}

TEST_CASE("check: an image that is not pmemfuse is refused", "[fs][check]") {
  mm::Region blank = take(mm::Region::anonymous(kDefaultImage));
  auto rep = check_image(blank);
  REQUIRE_FALSE(rep.ok());
  CHECK(rep.error().code == Errc::kInvalid);
}

TEST_CASE("check: unknown incompatible or read-only-compatible features are refused", "[fs][check]") {
  mm::Region r = formatted();
  DiskSuper sb = read_super(r);
  SECTION("incompat") { sb.incompat |= 1u << 31; }
  SECTION("ro_compat (a repair could not know what it must keep)") { sb.ro_compat |= 1u << 31; }
  sb.crc = super_crc(sb);
  std::memcpy(r.base(), &sb, sizeof sb);
  auto rep = check_image(r);
  REQUIRE_FALSE(rep.ok());
  CHECK(rep.error().code == Errc::kNotSupported);
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
    CHECK(rep.damaged_inodes == std::vector<uint64_t>{p.file});
    REQUIRE(rep.dangling.size() == 1);
    CHECK(rep.dangling[0].dir == kRoot);
    CHECK(rep.dangling[0].name == "file");
    CHECK(rep.dangling[0].ino == p.file);
    CHECK_FALSE(rep.leaked.empty());  // its blocks are not counted as owned
    auto fs = mount(std::move(img));
    expect_corrupt(fs->lookup(kRoot, "file"), "inode");
    expect_corrupt(fs->getattr(p.file), "inode");
    CHECK(fs->lookup(kRoot, "big").ok());  // the rest works
  }
  SECTION("(a') the root inode") {
    img.base()[inode_off(img, kRoot) + offsetof(DiskInode, mtime_ns)] ^= 0x01;
    CheckReport rep = check(img);
    CHECK(mentions(rep, {"inode 1", "crc"}));
    CHECK(rep.damaged_inodes == std::vector<uint64_t>{kRoot});
    CHECK(rep.unreachable.size() == 5);  // dir, file, big, xf, link
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
    CHECK(rep.damaged_dirs == std::vector<uint64_t>{p.dir});
    CHECK(rep.damaged_inodes.empty());
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
    CHECK(rep.damaged_inodes == std::vector<uint64_t>{p.big});
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
    CHECK(rep.bad_bitmap_blocks == std::vector<uint64_t>{0});
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
    CHECK(rep.damaged_xattrs == std::vector<uint64_t>{p.xf});
    CHECK(rep.damaged_inodes.empty());
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
  OrphanImage o = orphan_image();
  DiskSuper sb = read_super(o.img);
  {
    CheckReport rep = check(o.img);
    INFO(all_problems(rep));
    REQUIRE(rep.replayed == 0);
    CHECK(rep.problem_count == 0);
  }
  SECTION("the slot naming the orphan") {
    o.img.base()[sb.orphan_start * kBlockSize + o.slot * sizeof(DiskOrphanSlot) + 1] ^= 0x01;
    CheckReport rep = check(o.img);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"orphan table slot", "crc"}));
    CHECK(mentions(rep, {"orphan", "missing from the orphan table"}));
    CHECK(rep.bad_orphan_slots == std::vector<uint64_t>{o.slot});
    CHECK(rep.unregistered_orphans == std::vector<uint64_t>{o.ino});
  }
  SECTION("a free slot") {
    uint64_t k = o.slot + 5;
    o.img.base()[sb.orphan_start * kBlockSize + k * sizeof(DiskOrphanSlot) + 9] ^= 0x01;
    CheckReport rep = check(o.img);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"orphan table slot", "crc"}));
    CHECK(rep.bad_orphan_slots == std::vector<uint64_t>{k});
    CHECK(rep.unregistered_orphans.empty());
  }
  auto r = Filesystem::mount(std::move(o.img), {});
  expect_corrupt(r, "orphan table");
}

// Mount refuses this image too (finish_orphans finds no inode), so fsck must see it.
TEST_CASE("check: an orphan slot naming a free inode is reported", "[fs][check][corrupt]") {
  OrphanImage o = orphan_image();
  DiskSuper sb = read_super(o.img);
  uint64_t k = o.slot + 7, ino = 7777;
  DiskOrphanSlot slot{ino, orphan_slot_crc(ino, k), 0};
  std::memcpy(o.img.base() + sb.orphan_start * kBlockSize + k * sizeof slot, &slot, sizeof slot);
  CheckReport rep = check(o.img);
  INFO(all_problems(rep));
  CHECK(mentions(rep, {"orphan table slot", "names inode 7777", "free or damaged"}));
  CHECK(rep.bad_orphan_slots == std::vector<uint64_t>{k});
  CHECK_FALSE(Filesystem::mount(std::move(o.img), {}).ok());
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
  CHECK(rep.unmarked == std::vector<mm::Run>{{b, 1}});
  CHECK(rep.leaked.empty());
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
  CHECK(rep.leaked == std::vector<mm::Run>{{b, 3}});
  CHECK(rep.unmarked.empty());
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
    CHECK(rep.fields == std::vector<FieldFinding>{{p.file, FieldFinding::Field::kNlink, 1}});
  }
  SECTION("a directory's nlink") {
    DiskInode d = inode_at(img, p.dir);
    d.nlink = 2;  // it has a subdirectory: 3
    put_inode(img, p.dir, d);
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(rep.problem_count == 1);
    CHECK(mentions(rep, {"nlink 2", "expected 3"}));
    CHECK(rep.fields == std::vector<FieldFinding>{{p.dir, FieldFinding::Field::kNlink, 3}});
  }
  SECTION("the root's nlink") {
    DiskInode d = inode_at(img, kRoot);
    d.nlink = 9;
    put_inode(img, kRoot, d);
    CheckReport rep = check(img);
    CHECK(mentions(rep, {"root directory", "nlink 9"}));
    CHECK(rep.fields == std::vector<FieldFinding>{{kRoot, FieldFinding::Field::kNlink, 3}});
  }
  SECTION("a directory's entries count") {
    DiskInode d = inode_at(img, p.dir);
    d.entries -= 1;
    put_inode(img, p.dir, d);
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"entries field"}));
    CHECK(rep.fields == std::vector<FieldFinding>{{p.dir, FieldFinding::Field::kEntries, d.entries + 1}});
  }
  SECTION("a blocks field") {
    DiskInode d = inode_at(img, p.file);
    d.blocks += 1;
    put_inode(img, p.file, d);
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"blocks field"}));
    CHECK(rep.fields == std::vector<FieldFinding>{{p.file, FieldFinding::Field::kBlocks, d.blocks - 1}});
  }
  SECTION("written data past EOF") {
    DiskInode d = inode_at(img, p.file);
    d.size = 10;
    put_inode(img, p.file, d);
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"past EOF"}));
    CHECK(rep.fields == std::vector<FieldFinding>{{p.file, FieldFinding::Field::kSize, 3 * kBlockSize}});
  }
  SECTION("two inodes owning the same block") {
    DiskInode f = inode_at(img, p.file);
    DiskInode x = inode_at(img, p.xf);
    x.xattr_block = f.map.extents[0].pblk;
    put_inode(img, p.xf, x);
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"owned twice"}));
    REQUIRE(rep.shared.size() == 1);
    CHECK(rep.shared[0].block == f.map.extents[0].pblk);
    CHECK(rep.shared[0].owners == std::vector<BlockOwner>{{BlockOwner::Kind::kData, p.file, 0},
                                                          {BlockOwner::Kind::kXattr, p.xf, 0}});
    CHECK(rep.damaged_xattrs == std::vector<uint64_t>{p.xf});  // what it points at is no xattr block
  }
  SECTION("a directory entry naming a free inode") {
    set_slot(img, p.file, false);
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"'file'", "free or damaged"}));
    CHECK(mentions(rep, {"owned by nothing"}));  // its blocks leak
    REQUIRE(rep.dangling.size() == 1);
    CHECK(rep.dangling[0].name == "file");
  }
  SECTION("an inode in use but in no directory") {
    uint64_t lost = 5000;
    set_slot(img, lost, true);
    DiskInode d{};
    d.mode = S_IFREG | 0600;
    d.nlink = 1;
    d.generation = 1;
    put_inode(img, lost, d);
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"inode 5000", "lost"}));
    CHECK(rep.unreachable == std::vector<uint64_t>{lost});
  }
  SECTION("a subdirectory whose parent field is wrong") {
    DiskInode d = inode_at(img, p.sub);
    d.parent = kRoot;
    put_inode(img, p.sub, d);
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(mentions(rep, {"'sub'", "parent field"}));
    CHECK(rep.fields == std::vector<FieldFinding>{{p.sub, FieldFinding::Field::kParent, p.dir}});
  }
  SECTION("a directory with an entry gone, whose subtree is still whole") {
    remove_name(img, kRoot, "dir");
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    // Only the top of the detached subtree needs a name; what is under it is reached from it.
    CHECK(rep.unreachable == std::vector<uint64_t>{p.dir});
    CHECK(rep.fields == std::vector<FieldFinding>{{kRoot, FieldFinding::Field::kNlink, 2}});
  }
  SECTION("a cycle of directories cut off from the root is reported once") {
    remove_name(img, kRoot, "dir");
    add_name(img, p.sub, "loop", p.dir, S_IFDIR);
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    CHECK(rep.unreachable.size() == 1);
    CHECK(mentions(rep, {"not reachable from the root", "lost"}));
  }
  SECTION("a second entry naming a directory") {
    add_name(img, kRoot, "alias", p.dir, S_IFDIR);
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    REQUIRE(rep.extra_dir_links.size() == 1);
    CHECK(rep.extra_dir_links[0].dir == kRoot);
    CHECK(rep.extra_dir_links[0].name == "alias");
    CHECK(rep.unreachable.empty());
  }
  SECTION("an entry naming the root") {
    add_name(img, p.dir, "up", kRoot, S_IFDIR);
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    REQUIRE(rep.extra_dir_links.size() == 1);
    CHECK(rep.extra_dir_links[0].name == "up");
    CHECK(mentions(rep, {"'up'", "names the root directory"}));
  }
  SECTION("an entry whose type disagrees with its inode") {
    edit_dir(img, kRoot, [&](Tx& tx, Space&, DiskInode&, ExtentMap& map, Directory& entries) {
      auto e = entries.find(img, map, "file");
      REQUIRE(e);
      entries.retarget(tx, map, *e, p.file, S_IFLNK >> 12);
    });
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    REQUIRE(rep.bad_types.size() == 1);
    CHECK(rep.bad_types[0].want_type == S_IFREG >> 12);
  }
  SECTION("two files whose extents share a block list both owners in claim order") {
    DiskInode f = inode_at(img, p.file);
    DiskInode x = inode_at(img, p.xf);
    REQUIRE(x.nextents == 0);
    x.nextents = 1;
    x.map.extents[0] = {0, 1, f.map.extents[0].pblk + 1};
    x.size = kBlockSize;
    x.blocks += 1;
    put_inode(img, p.xf, x);
    CheckReport rep = check(img);
    INFO(all_problems(rep));
    REQUIRE(rep.shared.size() == 1);
    CHECK(rep.shared[0].block == f.map.extents[0].pblk + 1);
    CHECK(rep.shared[0].owners == std::vector<BlockOwner>{{BlockOwner::Kind::kData, p.file, 1},
                                                          {BlockOwner::Kind::kData, p.xf, 0}});
    CHECK(rep.problem_count == 1);
  }
}
