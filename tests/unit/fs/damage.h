// tests/unit/fs/damage.h: helpers for the check and repair tests: find and overwrite
// on-media structures of an unmounted image directly (no journal, as damage would), and
// read the checker's report.
#pragma once

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>

#include "fs/bmap.h"
#include "fs/check.h"
#include "fs/dir.h"
#include "fs/journal.h"
#include "fs/verify.h"
#include "tests/unit/fs/helpers.h"

namespace pmemfuse::fs::testing {

inline std::string all_problems(const CheckReport& rep) {
  std::string s;
  for (auto& p : rep.problems) s += p + "\n";
  return s;
}

// True when one problem line contains every word.
inline bool mentions(const CheckReport& rep, std::initializer_list<const char*> words) {
  for (auto& p : rep.problems) {
    bool all = true;
    for (const char* w : words) all = all && p.find(w) != std::string::npos;
    if (all) return true;
  }
  return false;
}

// Checks a copy, so the image itself is not replayed or changed.
inline CheckReport check(const mm::Region& r) {
  mm::Region copy = copy_region(r);
  return take(check_image(copy), "check_image");
}

inline uint64_t chunk_block(const mm::Region& r, uint64_t ino) {
  DiskSuper sb = read_super(r);
  DiskItableIndex x;
  std::memcpy(&x, r.at(sb.itable_index * kBlockSize), sizeof x);
  uint64_t ci = (ino - 1) / kInodesPerChunk;
  REQUIRE(ci < x.nchunks);
  return x.chunks[ci];
}

inline uint64_t inode_off(const mm::Region& r, uint64_t ino) {
  return (chunk_block(r, ino) + 1) * kBlockSize + ((ino - 1) % kInodesPerChunk) * kInodeSize;
}

inline DiskInode inode_at(const mm::Region& r, uint64_t ino) {
  DiskInode d;
  std::memcpy(&d, r.at(inode_off(r, ino)), sizeof d);
  return d;
}

// Writes d, sealed, in place of inode ino.
inline void put_inode(mm::Region& r, uint64_t ino, DiskInode d) {
  seal_inode(d);
  std::memcpy(r.base() + inode_off(r, ino), &d, sizeof d);
}

// Marks inode ino's slot used or free in its chunk's slot bitmap (crc kept valid).
inline void set_slot(mm::Region& r, uint64_t ino, bool used) {
  apply_bits(r, chunk_block(r, ino), (ino - 1) % kInodesPerChunk, 1, used);
}

// Changes directory dir of an unmounted image through the directory code and the
// journal, touching nothing else (link counts and the named inodes stay as they were),
// as a bug in the filesystem could.
using DirEdit = std::function<void(Tx&, Space&, DiskInode&, ExtentMap&, Directory&)>;
inline void edit_dir(mm::Region& r, uint64_t dir, const DirEdit& fn) {
  DiskSuper sb = read_super(r);
  auto journal = take(Journal::open(r, sb.journal_start, sb.journal_blocks, true), "journal open");
  Space space(r, sb);
  require_ok(space.load(), "space load");
  InodeTable itable(r, space, *journal, sb);
  require_ok(itable.load(), "itable load");
  DiskInode d = take(itable.read(dir), "read dir");
  ExtentMap map = take(ExtentMap::load(r, dir, d, sb.block_count), "load map");
  auto entries = take(Directory::load(r, dir, map, d.size / kBlockSize), "load dir");
  Tx tx(r);
  fn(tx, space, d, map, *entries);
  itable.write(tx, dir, d);
  require_ok(journal->commit(tx), "commit");
  journal->checkpoint();
}

inline void remove_name(mm::Region& r, uint64_t dir, std::string_view name) {
  edit_dir(r, dir, [&](Tx& tx, Space&, DiskInode& d, ExtentMap& map, Directory& entries) {
    auto e = entries.find(r, map, name);
    REQUIRE(e);
    entries.remove(tx, map, *e, name);
    d.entries--;
  });
}

inline void add_name(mm::Region& r, uint64_t dir, std::string_view name, uint64_t ino, uint32_t mode) {
  edit_dir(r, dir, [&](Tx& tx, Space& space, DiskInode& d, ExtentMap& map, Directory& entries) {
    require_ok(entries.add(tx, space, dir, d, map, name, ino, uint8_t((mode & S_IFMT) >> 12)), "add");
    d.entries++;
  });
}

// A cleanly unmounted image with one of each structure worth damaging.
struct Populated {
  mm::Region img;
  uint64_t dir = 0, file = 0, big = 0, xf = 0, link = 0, sub = 0;
};

inline Populated populate() {
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

// A crash image (the daemon still running) holding one orphan: a file unlinked while
// open, in orphan table slot `slot`.
struct OrphanImage {
  mm::Region img;
  uint64_t ino = 0, slot = 0;
};

inline OrphanImage orphan_image() {
  auto fs = mount_fresh();
  uint64_t f = make_file(*fs, kRoot, "f").ino;
  write_str(*fs, f, 0, pattern(20000, 3));
  require_ok(fs->open(f));
  require_ok(fs->unlink(kRoot, "f"));
  // A freeing transaction afterwards moves the log head past the orphan's transaction,
  // so a replay does not rewrite the slot a test damages.
  uint64_t g = make_file(*fs, kRoot, "g").ino;
  write_str(*fs, g, 0, "x");
  SetAttr s;
  s.size = 0;
  take(fs->setattr(g, s));
  OrphanImage o{copy_region(fs->region()), f, 0};
  o.slot = inode_at(o.img, f).orphan_slot - 1;
  REQUIRE(inode_at(o.img, f).flags & kInodeOrphan);
  return o;
}

template <class T>
void expect_corrupt(const Result<T>& r, const char* word) {
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::kCorrupt);
  INFO("message: " << r.error().msg);
  CHECK(r.error().msg.find(word) != std::string::npos);
}

}  // namespace pmemfuse::fs::testing
