// tests/unit/fs/verify_test.cc: every verifier accepts what the filesystem writes and
// rejects bad magic, a bad crc and each out-of-range field with kCorrupt and a message
// naming the structure and the field.
#include "fs/verify.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "fs/journal.h"
#include "mm/crc32c.h"
#include "tests/unit/fs/helpers.h"

using namespace pmemfuse;
using namespace pmemfuse::fs;
using namespace pmemfuse::fs::testing;

namespace {

constexpr uint64_t kBlocks = 16384;  // device size used for the checks below

// Requires kCorrupt with a message containing every word.
void rejects(const Status& s, std::initializer_list<const char*> words) {
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().code == Errc::kCorrupt);
  for (const char* w : words) {
    INFO("message: " << s.error().msg << " | expected word: " << w);
    CHECK(s.error().msg.find(w) != std::string::npos);
  }
}

DiskSuper good_super() {
  static mm::Region r = formatted(kBlocks * kBlockSize);
  return read_super(r);
}

DiskInode good_file() {
  DiskInode d{};
  d.mode = S_IFREG | 0644;
  d.nlink = 1;
  d.generation = 1;
  d.size = 3 * kBlockSize;
  d.blocks = 3;
  d.nextents = 2;
  d.map.extents[0] = {0, 1, 2000};
  d.map.extents[1] = {5, 2, 3000};
  seal_inode(d);
  return d;
}

struct Block {
  alignas(8) uint8_t b[kBlockSize] = {};
  uint8_t* data() { return b; }
};

Block good_leaf(uint64_t owner) {
  Block blk;
  DiskExtentLeaf l{};
  l.magic = kLeafMagic;
  l.owner = owner;
  l.next = 0;
  l.count = 3;
  l.extents[0] = {0, 4, 1000};
  l.extents[1] = {10, 1 | kExtentUnwritten, 1100};
  l.extents[2] = {20, 5, 1200};
  std::memcpy(blk.b, &l, sizeof l);
  seal_block(blk.b);
  return blk;
}

void put_dirent(uint8_t* blk, uint32_t off, uint64_t ino, uint16_t rec_len, const std::string& name, uint8_t type = 8) {
  DiskDirent e{ino, rec_len, uint8_t(name.size()), type};
  std::memcpy(blk + off, &e, sizeof e);
  std::memcpy(blk + off + sizeof e, name.data(), name.size());
}

Block good_dir_block(uint64_t owner, uint64_t lblk) {
  Block blk;
  DiskDirHeader h{kDirMagic, 0, owner, lblk, 0};
  std::memcpy(blk.b, &h, sizeof h);
  put_dirent(blk.b, 32, 10, 24, "alpha");
  put_dirent(blk.b, 56, 11, uint16_t(kBlockSize - 56), "beta");
  seal_block(blk.b);
  return blk;
}

std::vector<uint8_t> xattr_entries(const std::vector<std::pair<std::string, std::string>>& xs) {
  std::vector<uint8_t> out;
  for (auto& [n, v] : xs) {
    DiskXattrEntry e{uint8_t(n.size()), 0, uint16_t(v.size())};
    auto p = reinterpret_cast<const uint8_t*>(&e);
    out.insert(out.end(), p, p + sizeof e);
    out.insert(out.end(), n.begin(), n.end());
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

Block good_xattr_block(uint64_t owner) {
  Block blk;
  auto body = xattr_entries({{"user.one", "1"}, {"user.two", std::string(300, 'v')}});
  DiskXattrHeader h{kXattrMagic, 0, owner, uint32_t(body.size()), 2, 0};
  std::memcpy(blk.b, &h, sizeof h);
  std::memcpy(blk.b + sizeof h, body.data(), body.size());
  seal_block(blk.b);
  return blk;
}

}  // namespace

TEST_CASE("verify: superblock fields", "[fs][verify]") {
  const DiskSuper good = good_super();
  require_ok(verify_super(good, kBlocks, "primary superblock"));
  CHECK(super_crc(good) == good.crc);
  // Each case changes one field and reseals the crc, so only the field is wrong.
  auto bad = [&](const char* word, const std::function<void(DiskSuper&)>& f) {
    DiskSuper sb = good;
    f(sb);
    sb.crc = super_crc(sb);
    INFO("case: " << word);
    rejects(verify_super(sb, kBlocks, "primary superblock"), {"primary superblock", word});
  };
  {
    DiskSuper sb = good;
    sb.magic ^= 1;
    rejects(verify_super(sb, kBlocks, "backup superblock"), {"backup superblock", "magic"});
  }
  {
    DiskSuper sb = good;
    sb.label[3] ^= 1;  // crc not resealed
    rejects(verify_super(sb, kBlocks, "primary superblock"), {"crc"});
  }
  bad("version", [](DiskSuper& s) { s.version = 2; });
  bad("block_size", [](DiskSuper& s) { s.block_size = 8192; });
  bad("block_count", [](DiskSuper& s) { s.block_count = kBlocks + 1; });
  bad("block_count", [](DiskSuper& s) { s.block_count = kMinBlocks - 1; });
  bad("journal", [](DiskSuper& s) { s.journal_start = 0; });
  bad("journal", [](DiskSuper& s) { s.journal_blocks = 8; });
  bad("journal", [](DiskSuper& s) { s.journal_start = kBlocks - 10; });
  bad("journal", [](DiskSuper& s) { s.journal_blocks = UINT64_MAX - 5; });
  bad("bitmap", [](DiskSuper& s) { s.bitmap_blocks = 0; });
  bad("bitmap", [](DiskSuper& s) { s.bitmap_start = kBlocks; });
  bad("itable_index", [](DiskSuper& s) { s.itable_index = kBlocks; });
  bad("itable_index", [](DiskSuper& s) { s.itable_index = 0; });
  bad("orphan", [](DiskSuper& s) { s.orphan_start = kBlocks; });
  bad("orphan", [](DiskSuper& s) { s.orphan_start = kBlocks - 1; });
  bad("orphan", [](DiskSuper& s) { s.orphan_blocks = UINT64_MAX / 2; });
  bad("devdax_align", [](DiskSuper& s) { s.devdax_align = 3 * 4096; });
  bad("devdax_align", [](DiskSuper& s) { s.devdax_align = 0; });
  bad("backup_block", [](DiskSuper& s) { s.backup_block = 5; });
  bad("chunk", [](DiskSuper& s) { s.chunk_blocks = 256; });
  bad("chunk", [](DiskSuper& s) { s.inodes_per_chunk = 1; });
  bad("root_ino", [](DiskSuper& s) { s.root_ino = 2; });
  bad("state", [](DiskSuper& s) { s.state = 7; });
  // A filesystem smaller than the device is fine (backup in its own last block).
  DiskSuper smaller = good;
  require_ok(verify_super(smaller, kBlocks + 100, "primary superblock"));
}

TEST_CASE("verify: bitmap blocks", "[fs][verify]") {
  Block b;
  DiskBitmapHeader h{kBitmapMagic, 0, 3, {}};
  std::memcpy(b.b, &h, sizeof h);
  b.b[200] = 0xf0;
  seal_block(b.b);
  require_ok(verify_bitmap_block(b.b, 77, 3, "block bitmap"));
  rejects(verify_bitmap_block(b.b, 77, 4, "block bitmap"), {"block bitmap", "77", "index"});
  Block c = b;
  c.b[1000] ^= 1;
  rejects(verify_bitmap_block(c.b, 77, 3, "inode chunk bitmap"), {"inode chunk bitmap", "crc"});
  Block m = b;
  m.b[0] ^= 1;
  seal_block(m.b);
  rejects(verify_bitmap_block(m.b, 77, 3, "block bitmap"), {"block bitmap", "magic"});
}

TEST_CASE("verify: inode table index", "[fs][verify]") {
  DiskSuper sb = good_super();
  Block b;
  DiskItableIndex x{};
  x.magic = kItableMagic;
  x.nchunks = 2;
  x.chunks[0] = 512;
  x.chunks[1] = 1024;
  std::memcpy(b.b, &x, sizeof x);
  seal_block(b.b);
  require_ok(verify_itable_index(b.b, 1, sb));
  auto bad = [&](const char* word, const std::function<void(DiskItableIndex&)>& f) {
    DiskItableIndex y = x;
    f(y);
    Block c;
    std::memcpy(c.b, &y, sizeof y);
    seal_block(c.b);
    INFO("case: " << word);
    rejects(verify_itable_index(c.b, 1, sb), {"inode table index", word});
  };
  bad("magic", [](DiskItableIndex& y) { y.magic = 0; });
  bad("nchunks", [](DiskItableIndex& y) { y.nchunks = 0; });
  bad("nchunks", [](DiskItableIndex& y) { y.nchunks = kMaxChunks + 1; });
  bad("chunk 1", [](DiskItableIndex& y) { y.chunks[1] = 0; });
  bad("chunk 1", [&](DiskItableIndex& y) { y.chunks[1] = sb.block_count - kChunkBlocks + 1; });
  Block c = b;
  c.b[100] ^= 1;
  rejects(verify_itable_index(c.b, 1, sb), {"inode table index", "crc"});
}

TEST_CASE("verify: inodes", "[fs][verify]") {
  DiskInode good = good_file();
  require_ok(verify_inode(good, 12, kBlocks));
  auto bad = [&](const char* word, const std::function<void(DiskInode&)>& f) {
    DiskInode d = good;
    f(d);
    seal_inode(d);
    INFO("case: " << word);
    rejects(verify_inode(d, 12, kBlocks), {"inode 12", word});
  };
  {
    DiskInode d = good;
    d.size++;
    rejects(verify_inode(d, 12, kBlocks), {"inode 12", "crc"});
  }
  bad("mode", [](DiskInode& d) { d.mode = 0; });
  bad("mode", [](DiskInode& d) { d.mode = 0170000 | 0644; });
  bad("flags", [](DiskInode& d) { d.flags = 1u << 10; });
  bad("xattr_inline_len", [](DiskInode& d) { d.xattr_inline_len = kInlineXattrBytes + 1; });
  bad("xattr_block", [](DiskInode& d) { d.xattr_block = kBlocks; });
  bad("chained and inline", [](DiskInode& d) { d.flags = kInodeChained | kInodeInlineData; });
  bad("inline data", [](DiskInode& d) { d.flags = kInodeInlineData; });  // on a regular file
  bad("inline data", [](DiskInode& d) {
    d.mode = S_IFLNK | 0777;
    d.flags = kInodeInlineData;
    d.size = kInlineBytes + 1;
  });
  bad("chain head", [](DiskInode& d) {
    d.flags = kInodeChained;
    std::memset(&d.map, 0, sizeof d.map);
    d.map.chain.head = 0;
    d.map.chain.nleaves = 1;
  });
  bad("chain head", [](DiskInode& d) {
    d.flags = kInodeChained;
    std::memset(&d.map, 0, sizeof d.map);
    d.map.chain.head = kBlocks;
    d.map.chain.nleaves = 1;
  });
  bad("chain head", [](DiskInode& d) {
    d.flags = kInodeChained;
    std::memset(&d.map, 0, sizeof d.map);
    d.map.chain.head = 100;
    d.map.chain.nleaves = 0;
  });
  bad("nextents", [](DiskInode& d) { d.nextents = kInlineExtents + 1; });
  bad("extent", [](DiskInode& d) { d.map.extents[1].pblk = kBlocks - 1; });  // 2 blocks past the end
  bad("extent", [](DiskInode& d) { d.map.extents[1].len_flags = 0; });
  bad("extent", [](DiskInode& d) { d.map.extents[0].pblk = 0; });
  bad("overlap", [](DiskInode& d) { d.map.extents[1].lblk = 0; });
  bad("overlap", [](DiskInode& d) {
    d.map.extents[0] = {5, 2, 3000};
    d.map.extents[1] = {0, 1, 2000};
  });
  // Valid variants.
  DiskInode lnk{};
  lnk.mode = S_IFLNK | 0777;
  lnk.nlink = 1;
  lnk.flags = kInodeInlineData;
  lnk.size = kInlineBytes;
  std::memset(lnk.map.data, 'x', kInlineBytes);
  seal_inode(lnk);
  require_ok(verify_inode(lnk, 3, kBlocks));
  DiskInode chained = good;
  chained.flags = kInodeChained;
  std::memset(&chained.map, 0, sizeof chained.map);
  chained.map.chain.head = 5000;
  chained.map.chain.nleaves = 2;
  chained.nextents = 0;
  seal_inode(chained);
  require_ok(verify_inode(chained, 3, kBlocks));
}

TEST_CASE("verify: extents", "[fs][verify]") {
  require_ok(verify_extent({0, 1, 1}, 5, kBlocks, "inline"));
  require_ok(verify_extent({0, 10, kBlocks - 10}, 5, kBlocks, "inline"));
  require_ok(verify_extent({uint32_t(kMaxFileBlocks - 1), 1, 100}, 5, kBlocks, "inline"));
  require_ok(verify_extent({0, 3 | kExtentUnwritten, 100}, 5, kBlocks, "inline"));
  rejects(verify_extent({0, 0, 100}, 5, kBlocks, "leaf 9"), {"inode 5", "leaf 9", "out of range"});
  rejects(verify_extent({0, kExtentUnwritten, 100}, 5, kBlocks, "inline"), {"inode 5", "len 0"});
  rejects(verify_extent({0, 1, 0}, 5, kBlocks, "inline"), {"inode 5", "pblk 0"});
  rejects(verify_extent({0, 11, kBlocks - 10}, 5, kBlocks, "inline"), {"inode 5", "out of range"});
  rejects(verify_extent({uint32_t(kMaxFileBlocks - 1), 2, 100}, 5, kBlocks, "inline"), {"inode 5", "out of range"});
  rejects(verify_extent({0, kExtentMaxLen, 100}, 5, kBlocks, "inline"), {"inode 5", "out of range"});
}

TEST_CASE("verify: an extent whose device range wraps past 2^64 is out of range", "[fs][verify]") {
  // pblk + len overflows to a small number; such an extent points far outside the device.
  rejects(verify_extent({0, 1, UINT64_MAX}, 5, kBlocks, "inline"), {"inode 5", "out of range"});
  rejects(verify_extent({0, 16, UINT64_MAX - 7}, 5, kBlocks, "inline"), {"inode 5", "out of range"});
}

TEST_CASE("verify: extent leaves", "[fs][verify]") {
  Block good = good_leaf(9);
  require_ok(verify_leaf(good.b, 500, 9, kBlocks));
  rejects(verify_leaf(good.b, 500, 10, kBlocks), {"extent leaf", "500", "owner"});
  auto bad = [&](const char* word, const std::function<void(DiskExtentLeaf&)>& f) {
    DiskExtentLeaf l;
    std::memcpy(&l, good.b, sizeof l);
    f(l);
    Block c;
    std::memcpy(c.b, &l, sizeof l);
    seal_block(c.b);
    INFO("case: " << word);
    rejects(verify_leaf(c.b, 500, 9, kBlocks), {"500", word});
  };
  bad("magic", [](DiskExtentLeaf& l) { l.magic = kDirMagic; });
  bad("count", [](DiskExtentLeaf& l) { l.count = 0; });
  bad("count", [](DiskExtentLeaf& l) { l.count = kLeafExtents + 1; });
  bad("next", [](DiskExtentLeaf& l) { l.next = kBlocks; });
  bad("out of range", [](DiskExtentLeaf& l) { l.extents[1].pblk = kBlocks; });
  bad("overlap", [](DiskExtentLeaf& l) { l.extents[2].lblk = 12; l.extents[1].len_flags = 5; });
  bad("unsorted", [](DiskExtentLeaf& l) { l.extents[2].lblk = 2; });
  Block c = good;
  c.b[200] ^= 1;
  rejects(verify_leaf(c.b, 500, 9, kBlocks), {"extent leaf", "crc"});
}

TEST_CASE("verify: directory blocks", "[fs][verify]") {
  Block good = good_dir_block(4, 2);
  require_ok(verify_dir_block(good.b, 600, 4, 2));
  rejects(verify_dir_block(good.b, 600, 5, 2), {"dir block", "600", "owner"});
  rejects(verify_dir_block(good.b, 600, 4, 3), {"dir block", "lblk"});
  auto bad = [&](const char* word, const std::function<void(uint8_t*)>& f) {
    Block c = good;
    f(c.b);
    seal_block(c.b);
    INFO("case: " << word);
    rejects(verify_dir_block(c.b, 600, 4, 2), {"dir block", word});
  };
  bad("magic", [](uint8_t* b) { b[0] ^= 1; });
  bad("rec_len", [](uint8_t* b) { put_dirent(b, 32, 10, 8, "alpha"); });      // shorter than a record
  bad("rec_len", [](uint8_t* b) { put_dirent(b, 32, 10, 26, "alpha"); });     // not a multiple of 8
  bad("rec_len", [](uint8_t* b) { put_dirent(b, 56, 11, uint16_t(kBlockSize - 48), "beta"); });  // past the end
  bad("rec_len", [](uint8_t* b) { put_dirent(b, 56, 11, 0, "beta"); });
  bad("name_len", [](uint8_t* b) { put_dirent(b, 32, 10, 24, ""); });
  bad("name_len", [](uint8_t* b) {
    DiskDirent e{10, 24, 13, 8};  // needs 32 bytes
    std::memcpy(b + 32, &e, sizeof e);
  });
  bad("'/'", [](uint8_t* b) { put_dirent(b, 32, 10, 24, "al/ha"); });
  bad("NUL", [](uint8_t* b) { put_dirent(b, 32, 10, 24, std::string("al\0ha", 5)); });
  // A free record (ino 0) may have any name_len.
  Block freerec = good;
  put_dirent(freerec.b, 32, 0, 24, "");
  seal_block(freerec.b);
  require_ok(verify_dir_block(freerec.b, 600, 4, 2));
  Block c = good;
  c.b[40] ^= 1;
  rejects(verify_dir_block(c.b, 600, 4, 2), {"dir block", "crc"});
}

TEST_CASE("verify: xattr entries and blocks", "[fs][verify]") {
  auto e = xattr_entries({{"user.a", "1"}, {"user.bb", "22"}});
  require_ok(verify_xattr_entries(e.data(), uint32_t(e.size()), 8, "inline"));
  require_ok(verify_xattr_entries(e.data(), 0, 8, "inline"));
  rejects(verify_xattr_entries(e.data(), uint32_t(e.size() - 1), 8, "inline"), {"inode 8", "inline", "exceed"});
  rejects(verify_xattr_entries(e.data(), 2, 8, "inline"), {"inode 8", "truncated"});
  auto zero_name = e;
  zero_name[0] = 0;
  rejects(verify_xattr_entries(zero_name.data(), uint32_t(zero_name.size()), 8, "inline"), {"inode 8", "name_len"});
  auto long_value = e;
  long_value[2] = 0xff;
  rejects(verify_xattr_entries(long_value.data(), uint32_t(long_value.size()), 8, "inline"), {"value_len"});

  Block good = good_xattr_block(8);
  require_ok(verify_xattr_block(good.b, 700, 8));
  rejects(verify_xattr_block(good.b, 700, 9), {"xattr block", "700", "owner"});
  auto bad = [&](const char* word, const std::function<void(DiskXattrHeader&)>& f) {
    Block c = good;
    DiskXattrHeader h;
    std::memcpy(&h, c.b, sizeof h);
    f(h);
    std::memcpy(c.b, &h, sizeof h);
    seal_block(c.b);
    INFO("case: " << word);
    rejects(verify_xattr_block(c.b, 700, 8), {"xattr block", word});
  };
  bad("magic", [](DiskXattrHeader& h) { h.magic = kLeafMagic; });
  bad("used", [](DiskXattrHeader& h) { h.used = kXattrBlockBytes + 1; });
  bad("exceed", [](DiskXattrHeader& h) { h.used -= 3; });  // cuts the last entry
  Block c = good;
  c.b[50] ^= 1;
  rejects(verify_xattr_block(c.b, 700, 8), {"xattr block", "crc"});
}

TEST_CASE("verify: what mkfs and the filesystem write passes every verifier", "[fs][verify]") {
  auto fs = mount_fresh();
  uint64_t f = make_file(*fs, kRoot, "f").ino;
  for (uint64_t k = 0; k < 10; k++) write_str(*fs, f, 2 * k * kBlockSize, "x");
  require_ok(fs->setxattr(f, "user.big", std::string(2000, 'b'), {}));
  mm::Region img = unmount_copy(*fs);
  DiskSuper sb = read_super(img);
  uint64_t dev = img.size() / kBlockSize;
  require_ok(verify_super(sb, dev, "primary superblock"));
  DiskSuper backup;
  std::memcpy(&backup, img.at(sb.backup_block * kBlockSize), sizeof backup);
  require_ok(verify_super(backup, dev, "backup superblock"));
  CHECK(backup.state == kStateClean);
  require_ok(verify_itable_index(img.at(sb.itable_index * kBlockSize), sb.itable_index, sb));
  for (uint64_t i = 0; i < sb.bitmap_blocks; i++)
    require_ok(verify_bitmap_block(img.at((sb.bitmap_start + i) * kBlockSize), sb.bitmap_start + i, i, "block bitmap"));
  DiskItableIndex x;
  std::memcpy(&x, img.at(sb.itable_index * kBlockSize), sizeof x);
  require_ok(verify_bitmap_block(img.at(x.chunks[0] * kBlockSize), x.chunks[0], 0, "inode chunk bitmap"));
  DiskInode d;
  std::memcpy(&d, img.at((x.chunks[0] + 1) * kBlockSize + (f - 1) * kInodeSize), sizeof d);
  require_ok(verify_inode(d, f, sb.block_count));
  REQUIRE(d.flags & kInodeChained);
  require_ok(verify_leaf(img.at(d.map.chain.head * kBlockSize), d.map.chain.head, f, sb.block_count));
  REQUIRE(d.xattr_block != 0);
  require_ok(verify_xattr_block(img.at(d.xattr_block * kBlockSize), d.xattr_block, f));
  DiskInode root;
  std::memcpy(&root, img.at((x.chunks[0] + 1) * kBlockSize), sizeof root);
  require_ok(verify_inode(root, 1, sb.block_count));
  REQUIRE(root.nextents == 1);
  uint64_t pb = root.map.extents[0].pblk;
  require_ok(verify_dir_block(img.at(pb * kBlockSize), pb, 1, 0));
}

// ---- Regressions found by tests/fuzz/mount_fuzz.cc and tests/integration/test_corruption.py.
// Replay trusts a transaction whose crc matches, so its records are checked against the
// device first; the media under a valid crc may still be damaged.

namespace {

constexpr uint64_t kScratchBlock = 9000;  // free space in the default 64 MiB image

uint64_t log_start(const DiskSuper& sb) { return (sb.journal_start + 1) * kBlockSize; }

// Edits the first record of the transaction at the start of the log (header, payload)
// and recomputes the transaction's crc, so only the record checks can catch the edit.
void edit_first_record(mm::Region& r, const DiskSuper& sb,
                       const std::function<void(DiskTxHeader&, DiskTxRecord&, uint8_t*)>& edit) {
  uint8_t* tx = r.base() + log_start(sb);
  DiskTxHeader th;
  DiskTxRecord rec;
  std::memcpy(&th, tx, sizeof th);
  std::memcpy(&rec, tx + sizeof th, sizeof rec);
  edit(th, rec, tx + sizeof th + sizeof rec);
  th.crc = 0;
  std::memcpy(tx, &th, sizeof th);
  std::memcpy(tx + sizeof th, &rec, sizeof rec);
  uint32_t crc = mm::crc32c(0, tx, sizeof th + th.body_bytes);
  std::memcpy(tx + 4, &crc, sizeof crc);
}

Status open_journal(mm::Region& r, const DiskSuper& sb) {
  auto j = Journal::open(r, sb.journal_start, sb.journal_blocks, true);
  if (!j) return std::move(j.error());
  return {};
}

// A crash image: the log holds one committed transaction per entry of fill, each
// applied in place, none checkpointed.
mm::Region logged(Stack& st, const std::vector<std::function<void(Tx&)>>& fill) {
  for (auto& f : fill) {
    Tx tx(st.region);
    f(tx);
    require_ok(st.commit(tx));
  }
  return copy_region(st.region);
}

void write_scratch(Tx& tx) { tx.write(kScratchBlock * kBlockSize, "abcdefgh", 8); }

// Counts stores, so a test can tell that a refused mount wrote nothing.
class CountingPersister : public mm::Persister {
 public:
  explicit CountingPersister(uint64_t* stores) : stores_(stores) {}
  void store(void* dst, const void* src, size_t n) override { ++*stores_, std::memcpy(dst, src, n); }
  void fill(void* dst, int c, size_t n) override { ++*stores_, std::memset(dst, c, n); }
  void fence() override {}

 private:
  uint64_t* stores_;
};

}  // namespace

TEST_CASE("journal replay: a record whose byte range wraps past 2^64 is refused", "[fs][verify][journal]") {
  auto st = make_stack();
  mm::Region img = logged(*st, {write_scratch});
  edit_first_record(img, st->sb, [](DiskTxHeader&, DiskTxRecord& r, uint8_t*) { r.dest = UINT64_MAX - 3; });
  rejects(open_journal(img, st->sb), {"journal", "transaction 1", "record 0", "out of range"});
}

TEST_CASE("journal replay: a bit record reaching past the device is refused", "[fs][verify][journal]") {
  auto st = make_stack();
  uint64_t bitmap = st->sb.bitmap_start;
  mm::Region img = logged(*st, {[&](Tx& tx) { tx.set_bits(bitmap, kScratchBlock, 1); }});
  SECTION("first bit far past the device") {
    edit_first_record(img, st->sb, [](DiskTxHeader&, DiskTxRecord&, uint8_t* p) {
      uint64_t first = 1ull << 40;
      std::memcpy(p, &first, sizeof first);
    });
  }
  SECTION("first + count wraps") {
    edit_first_record(img, st->sb, [](DiskTxHeader&, DiskTxRecord&, uint8_t* p) {
      uint64_t count = UINT64_MAX;
      std::memcpy(p + 8, &count, sizeof count);
    });
  }
  rejects(open_journal(img, st->sb), {"journal", "record 0", "out of range"});
}

TEST_CASE("journal replay: a transaction with fewer records than nrecords is refused", "[fs][verify][journal]") {
  auto st = make_stack();
  mm::Region img = logged(*st, {write_scratch});
  edit_first_record(img, st->sb, [](DiskTxHeader& th, DiskTxRecord&, uint8_t*) { th.nrecords = 3; });
  rejects(open_journal(img, st->sb), {"journal", "record 1", "out of range"});
}

TEST_CASE("journal replay: a damaged transaction followed by an intact one is refused", "[fs][verify][journal]") {
  // A torn commit is always the last transaction; stopping at an earlier one would roll
  // back the blocks it shares with older transactions.
  auto st = make_stack();
  mm::Region img = logged(*st, {write_scratch, write_scratch});
  img.base()[log_start(st->sb) + sizeof(DiskTxHeader) + sizeof(DiskTxRecord) + 2] ^= 0x01;
  rejects(open_journal(img, st->sb), {"journal", "transaction 1", "crc", "transaction 2 follows"});
  SECTION("the same damage in the last transaction ends the log, as a torn commit") {
    mm::Region last = logged(*st, {});
    uint64_t second = log_start(st->sb) + 64;  // one 8-byte record: the first takes 64
    last.base()[second + sizeof(DiskTxHeader) + sizeof(DiskTxRecord) + 2] ^= 0x01;
    auto j = Journal::open(last, st->sb.journal_start, st->sb.journal_blocks, true);
    REQUIRE(j.ok());
    CHECK((*j)->pending_at_open() == 1);
  }
}

TEST_CASE("mount: a refused mount writes nothing to the image", "[fs][verify]") {
  auto fs = mount_fresh();
  make_file(*fs, kRoot, "f");
  mm::Region img = unmount_copy(*fs);
  DiskSuper sb = read_super(img);
  img.base()[sb.bitmap_start * kBlockSize + sizeof(DiskBitmapHeader)] ^= 0x01;  // refused at Space::load
  uint64_t stores = 0;
  img.set_persister(std::make_unique<CountingPersister>(&stores));
  auto r = Filesystem::mount(std::move(img), {});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::kCorrupt);
  CHECK(stores == 0);
}

TEST_CASE("directory load: a size far beyond the device fails without a huge allocation", "[fs][verify][dir]") {
  auto fs = mount_fresh();
  make_file(*fs, kRoot, "f");
  mm::Region img = unmount_copy(*fs);
  DiskSuper sb = read_super(img);
  DiskItableIndex x;
  std::memcpy(&x, img.at(sb.itable_index * kBlockSize), sizeof x);
  DiskInode root;
  std::memcpy(&root, img.at((x.chunks[0] + 1) * kBlockSize), sizeof root);
  ExtentMap map = take(ExtentMap::load(img, kRoot, root, sb.block_count));
  auto d = Directory::load(img, kRoot, map, 1ull << 40);  // the size field of 4 PiB
  REQUIRE_FALSE(d.ok());
  rejects(Status(d.error()), {"directory inode 1", "block 1", "not mapped"});
}

TEST_CASE("mount: an unknown ro_compat feature mounts read-only and writes nothing", "[fs][verify]") {
  auto fs = mount_fresh();
  make_file(*fs, kRoot, "f");
  bool replay = GENERATE(false, true);
  // Without unmounting, the transactions stay in the log: a crash image needs replay.
  mm::Region img = replay ? copy_region(fs->region()) : unmount_copy(*fs);
  DiskSuper sb = read_super(img);
  sb.ro_compat |= 1u << 31;
  sb.crc = super_crc(sb);
  std::memcpy(img.base(), &sb, sizeof sb);
  uint64_t stores = 0;
  img.set_persister(std::make_unique<CountingPersister>(&stores));
  auto r = Filesystem::mount(std::move(img), {});
  if (replay) {
    REQUIRE_FALSE(r.ok());  // replay would write
    CHECK(r.error().msg.find("read-only-compatible") != std::string::npos);
  } else {
    REQUIRE(r.ok());
    CHECK((*r)->info().read_only);
    CHECK(take((*r)->lookup(kRoot, "f")).ino != 0);
    CHECK((*r)->mkdir(kRoot, "d", 0755, kCaller).error().code == Errc::kReadOnly);
    require_ok((*r)->unmount());
  }
  CHECK(stores == 0);
}
