// tests/unit/fs/filesystem_test.cc: the Filesystem facade on in-memory and /dev/shm
// images: namespace operations and their error cases, link counts, symlinks, file data
// (holes, unaligned I/O, many extents, offsets past 4 GiB), truncate, xattrs, statfs,
// orphans, remount and crash persistence, ENOSPC and inode-table growth. Every test that
// changes an image ends by running the checker on it.
#include "fs/filesystem.h"

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

#include "fs/check.h"
#include "fs/verify.h"
#include "tests/unit/fs/helpers.h"

using namespace pmemfuse;
using namespace pmemfuse::fs;
using namespace pmemfuse::fs::testing;

namespace {

using RN = Filesystem;  // for the rename flags

Errc err(const Status& s) {
  REQUIRE_FALSE(s.ok());
  return s.error().code;
}
template <class T>
Errc err(const Result<T>& r) {
  REQUIRE_FALSE(r.ok());
  return r.error().code;
}

uint64_t ino_of(Filesystem& fs, uint64_t parent, std::string_view name) {
  return take(fs.lookup(parent, name), "lookup").ino;
}

Attr attr(Filesystem& fs, uint64_t ino) { return take(fs.getattr(ino), "getattr"); }

uint64_t bfree(Filesystem& fs) { return take(fs.statfs(), "statfs").bfree; }

std::vector<std::string> names_in(Filesystem& fs, uint64_t dir) {
  std::vector<std::string> out;
  require_ok(fs.readdir(dir, 0, false, [&](std::string_view n, const Attr&, uint64_t) {
    out.emplace_back(n);
    return true;
  }), "readdir");
  return out;
}

// Runs the checker on a copy of an unmounted filesystem's image and expects no problems.
void expect_clean(Filesystem& fs) {
  mm::Region copy = unmount_copy(fs);
  CheckReport rep = take(check_image(copy), "check_image");
  INFO("first problems: " << (rep.problems.empty() ? std::string("-") : rep.problems[0]) << " | "
                          << (rep.problems.size() > 1 ? rep.problems[1] : std::string("-")));
  CHECK(rep.problem_count == 0);
  CHECK_FALSE(rep.primary_super_bad);
}

CheckReport check_copy(const mm::Region& r) {
  mm::Region copy = copy_region(r);
  return take(check_image(copy), "check_image");
}

}  // namespace

TEST_CASE("fs: a fresh filesystem has an empty root directory", "[fs][facade]") {
  auto fs = mount_fresh();
  Attr root = attr(*fs, kRoot);
  CHECK(S_ISDIR(root.mode));
  CHECK(root.nlink == 2);
  CHECK(root.size == 0);
  CHECK(names_in(*fs, kRoot) == std::vector<std::string>{".", ".."});
  CHECK(ino_of(*fs, kRoot, "..") == kRoot);
  CHECK(ino_of(*fs, kRoot, ".") == kRoot);
  StatFs s = take(fs->statfs());
  CHECK(s.blocks == kDefaultImage / kBlockSize);
  CHECK(s.bfree > 0);
  CHECK(s.bfree < s.blocks);
  CHECK(s.files == s.ffree + 1);
  CHECK(fs->info().replayed == 0);
  CHECK_FALSE(fs->info().read_only);
  expect_clean(*fs);
}

TEST_CASE("fs: mount refuses images that are too small or not formatted", "[fs][facade]") {
  auto small = take(mm::Region::anonymous(8 * kMiB));
  auto r = Filesystem::mount(std::move(small), {});
  CHECK(err(r) == Errc::kInvalid);
  auto blank = take(mm::Region::anonymous(kDefaultImage));
  auto r2 = Filesystem::mount(std::move(blank), {});
  CHECK(err(r2) == Errc::kInvalid);
  auto tiny = take(mm::Region::anonymous(8 * kMiB));
  CHECK(err(mkfs(tiny, {})) == Errc::kInvalid);
}

TEST_CASE("fs: mknod, lookup and their error cases", "[fs][facade]") {
  auto fs = mount_fresh();
  Attr f = make_file(*fs, kRoot, "file");
  CHECK(S_ISREG(f.mode));
  CHECK((f.mode & 07777) == 0644);
  CHECK(f.nlink == 1);
  CHECK(f.uid == kCaller.uid);
  CHECK(f.gid == kCaller.gid);
  CHECK(f.size == 0);
  CHECK(f.ino != kRoot);
  CHECK(f.generation >= 1);
  CHECK(ino_of(*fs, kRoot, "file") == f.ino);
  CHECK(attr(*fs, kRoot).mtime_ns >= f.ctime_ns);

  CHECK(err(fs->mknod(kRoot, "file", S_IFREG | 0644, 0, kCaller)) == Errc::kExists);
  CHECK(err(fs->mknod(kRoot, std::string(256, 'n'), S_IFREG | 0644, 0, kCaller)) == Errc::kNameTooLong);
  CHECK(fs->mknod(kRoot, std::string(255, 'n'), S_IFREG | 0644, 0, kCaller).ok());
  CHECK(err(fs->mknod(kRoot, "", S_IFREG | 0644, 0, kCaller)) == Errc::kInvalid);
  CHECK(err(fs->mknod(kRoot, ".", S_IFREG | 0644, 0, kCaller)) == Errc::kInvalid);
  CHECK(err(fs->mknod(kRoot, "..", S_IFREG | 0644, 0, kCaller)) == Errc::kInvalid);
  CHECK(err(fs->mknod(kRoot, "a/b", S_IFREG | 0644, 0, kCaller)) == Errc::kInvalid);
  CHECK(err(fs->mknod(kRoot, std::string("a\0b", 3), S_IFREG | 0644, 0, kCaller)) == Errc::kInvalid);
  CHECK(err(fs->mknod(kRoot, "d", S_IFDIR | 0755, 0, kCaller)) == Errc::kInvalid);
  CHECK(err(fs->mknod(f.ino, "x", S_IFREG | 0644, 0, kCaller)) == Errc::kNotDir);
  CHECK(err(fs->lookup(kRoot, "nope")) == Errc::kNotFound);
  CHECK(err(fs->lookup(f.ino, "x")) == Errc::kNotDir);
  CHECK(err(fs->lookup(kRoot, std::string(256, 'n'))) == Errc::kNameTooLong);
  CHECK(err(fs->getattr(999999999)) == Errc::kNotFound);

  // Special files keep their type and rdev; a mode without a type is a regular file.
  Attr fifo = take(fs->mknod(kRoot, "fifo", S_IFIFO | 0600, 0, kCaller));
  CHECK(S_ISFIFO(fifo.mode));
  Attr chr = take(fs->mknod(kRoot, "chr", S_IFCHR | 0600, 0x0103, kCaller));
  CHECK(S_ISCHR(chr.mode));
  CHECK(chr.rdev == 0x0103);
  Attr plain = take(fs->mknod(kRoot, "plain", 0600, 0, kCaller));
  CHECK(S_ISREG(plain.mode));
  CHECK(err(fs->write(fifo.ino, 0, "x", 1)) == Errc::kInvalid);
  auto names = names_in(*fs, kRoot);
  std::set<std::string> got(names.begin(), names.end());
  CHECK(got == std::set<std::string>{".", "..", "file", std::string(255, 'n'), "fifo", "chr", "plain"});
  CHECK(attr(*fs, kRoot).nlink == 2);  // files do not count
  expect_clean(*fs);
}

TEST_CASE("fs: mkdir, rmdir and directory link counts", "[fs][facade]") {
  auto fs = mount_fresh();
  Attr a = make_dir(*fs, kRoot, "a");
  CHECK(S_ISDIR(a.mode));
  CHECK(a.nlink == 2);
  CHECK(attr(*fs, kRoot).nlink == 3);
  Attr b = make_dir(*fs, a.ino, "b");
  CHECK(attr(*fs, a.ino).nlink == 3);
  CHECK(ino_of(*fs, b.ino, "..") == a.ino);
  CHECK(ino_of(*fs, a.ino, "..") == kRoot);
  make_file(*fs, b.ino, "f");

  CHECK(err(fs->rmdir(a.ino, "b")) == Errc::kNotEmpty);
  CHECK(err(fs->rmdir(kRoot, "a")) == Errc::kNotEmpty);
  CHECK(err(fs->rmdir(b.ino, "f")) == Errc::kNotDir);
  CHECK(err(fs->unlink(a.ino, "b")) == Errc::kIsDir);
  CHECK(err(fs->rmdir(kRoot, "missing")) == Errc::kNotFound);
  CHECK(err(fs->unlink(kRoot, "missing")) == Errc::kNotFound);
  CHECK(err(fs->rmdir(kRoot, std::string(300, 'x'))) == Errc::kNameTooLong);
  require_ok(fs->unlink(b.ino, "f"));
  require_ok(fs->rmdir(a.ino, "b"));
  CHECK(attr(*fs, a.ino).nlink == 2);
  CHECK(err(fs->lookup(a.ino, "b")) == Errc::kNotFound);
  // The removed directory is still referenced by the kernel: creating in it fails.
  CHECK(attr(*fs, b.ino).nlink == 0);
  CHECK(err(fs->mknod(b.ino, "late", S_IFREG | 0644, 0, kCaller)) == Errc::kNotFound);
  fs->forget(b.ino, 2);
  require_ok(fs->rmdir(kRoot, "a"));
  CHECK(attr(*fs, kRoot).nlink == 2);
  CHECK(names_in(*fs, kRoot) == std::vector<std::string>{".", ".."});
  expect_clean(*fs);
}

TEST_CASE("fs: hard links share data and count links", "[fs][facade]") {
  auto fs = mount_fresh();
  Attr f = make_file(*fs, kRoot, "f");
  Attr d = make_dir(*fs, kRoot, "d");
  write_str(*fs, f.ino, 0, "shared");
  Attr l = take(fs->link(f.ino, d.ino, "l"));
  CHECK(l.ino == f.ino);
  CHECK(l.nlink == 2);
  CHECK(attr(*fs, f.ino).nlink == 2);
  CHECK(read_all(*fs, ino_of(*fs, d.ino, "l")) == "shared");
  CHECK(err(fs->link(f.ino, d.ino, "l")) == Errc::kExists);
  CHECK(err(fs->link(d.ino, kRoot, "dl")) == Errc::kPerm);
  CHECK(err(fs->link(f.ino, f.ino, "x")) == Errc::kNotDir);
  CHECK(err(fs->link(f.ino, kRoot, "")) == Errc::kInvalid);
  require_ok(fs->unlink(kRoot, "f"));
  CHECK(attr(*fs, f.ino).nlink == 1);
  CHECK(read_all(*fs, ino_of(*fs, d.ino, "l")) == "shared");
  expect_clean(*fs);
}

TEST_CASE("fs: rename in all its forms", "[fs][facade][rename]") {
  auto fs = mount_fresh();
  uint64_t a = make_dir(*fs, kRoot, "a").ino;
  uint64_t b = make_dir(*fs, kRoot, "b").ino;
  uint64_t f1 = make_file(*fs, a, "f1").ino;
  uint64_t sub = make_dir(*fs, a, "sub").ino;
  uint64_t deep = make_dir(*fs, sub, "deep").ino;
  uint64_t f2 = make_file(*fs, b, "f2").ino;
  uint64_t e = make_dir(*fs, b, "e").ino;
  uint64_t x = make_file(*fs, kRoot, "x").ino;
  write_str(*fs, f2, 0, "f2 data");
  REQUIRE(attr(*fs, a).nlink == 3);
  REQUIRE(attr(*fs, b).nlink == 3);

  // A file within a directory and across directories.
  require_ok(fs->rename(kRoot, "x", kRoot, "x1", 0));
  CHECK(ino_of(*fs, kRoot, "x1") == x);
  CHECK(err(fs->lookup(kRoot, "x")) == Errc::kNotFound);
  require_ok(fs->rename(kRoot, "x1", a, "x2", 0));
  CHECK(ino_of(*fs, a, "x2") == x);
  CHECK(err(fs->lookup(kRoot, "x1")) == Errc::kNotFound);
  CHECK(attr(*fs, x).nlink == 1);

  // A directory across directories moves its link from one parent to the other.
  require_ok(fs->rename(a, "sub", b, "sub", 0));
  CHECK(attr(*fs, a).nlink == 2);
  CHECK(attr(*fs, b).nlink == 4);
  CHECK(ino_of(*fs, sub, "..") == b);
  CHECK(ino_of(*fs, b, "sub") == sub);

  // Into its own subtree, or into itself.
  CHECK(err(fs->rename(b, "sub", deep, "loop", 0)) == Errc::kInvalid);
  CHECK(err(fs->rename(b, "sub", sub, "self", 0)) == Errc::kInvalid);
  CHECK(err(fs->rename(kRoot, "b", deep, "up", 0)) == Errc::kInvalid);

  // Type mismatches and non-empty targets.
  CHECK(err(fs->rename(b, "f2", b, "e", 0)) == Errc::kIsDir);
  CHECK(err(fs->rename(b, "e", b, "f2", 0)) == Errc::kNotDir);
  CHECK(err(fs->rename(b, "e", b, "sub", 0)) == Errc::kNotEmpty);
  CHECK(err(fs->rename(b, "missing", b, "z", 0)) == Errc::kNotFound);
  CHECK(err(fs->rename(b, "f2", f2, "z", 0)) == Errc::kNotDir);
  CHECK(err(fs->rename(b, "", b, "z", 0)) == Errc::kInvalid);
  CHECK(err(fs->rename(b, "f2", b, "a/b", 0)) == Errc::kInvalid);

  // A directory over an empty directory in another parent.
  uint64_t empty2 = make_dir(*fs, a, "empty2").ino;
  REQUIRE(attr(*fs, a).nlink == 3);
  require_ok(fs->rename(b, "e", a, "empty2", 0));
  CHECK(ino_of(*fs, a, "empty2") == e);
  CHECK(ino_of(*fs, e, "..") == a);
  CHECK(attr(*fs, a).nlink == 3);
  CHECK(attr(*fs, b).nlink == 3);
  CHECK(attr(*fs, empty2).nlink == 0);
  CHECK(err(fs->lookup(b, "e")) == Errc::kNotFound);

  // A file over a file: the old target loses its link.
  require_ok(fs->rename(b, "f2", a, "f1", 0));
  CHECK(ino_of(*fs, a, "f1") == f2);
  CHECK(read_all(*fs, f2) == "f2 data");
  CHECK(attr(*fs, f1).nlink == 0);
  CHECK(err(fs->lookup(b, "f2")) == Errc::kNotFound);

  // RENAME_NOREPLACE.
  uint64_t n1 = make_file(*fs, b, "n1").ino;
  uint64_t n2 = make_file(*fs, a, "n2").ino;
  CHECK(err(fs->rename(b, "n1", a, "n2", RN::kRenameNoReplace)) == Errc::kExists);
  CHECK(ino_of(*fs, a, "n2") == n2);
  require_ok(fs->rename(b, "n1", a, "n3", RN::kRenameNoReplace));
  CHECK(ino_of(*fs, a, "n3") == n1);

  // RENAME_EXCHANGE of a file in a with a directory in b.
  CHECK(err(fs->rename(a, "n3", b, "nothing", RN::kRenameExchange)) == Errc::kNotFound);
  uint64_t a_links = attr(*fs, a).nlink, b_links = attr(*fs, b).nlink;
  require_ok(fs->rename(a, "n3", b, "sub", RN::kRenameExchange));
  CHECK(ino_of(*fs, a, "n3") == sub);
  CHECK(ino_of(*fs, b, "sub") == n1);
  CHECK(ino_of(*fs, sub, "..") == a);
  CHECK(attr(*fs, a).nlink == a_links + 1);
  CHECK(attr(*fs, b).nlink == b_links - 1);
  CHECK(attr(*fs, n1).nlink == 1);
  // Exchanging a directory with something inside it.
  CHECK(err(fs->rename(a, "n3", sub, "deep", RN::kRenameExchange)) == Errc::kInvalid);
  CHECK(err(fs->rename(sub, "deep", a, "n3", RN::kRenameExchange)) == Errc::kInvalid);
  // Exchanging two directories in the same parent keeps the counts.
  uint64_t d1 = make_dir(*fs, kRoot, "d1").ino, d2 = make_dir(*fs, kRoot, "d2").ino;
  uint64_t root_links = attr(*fs, kRoot).nlink;
  require_ok(fs->rename(kRoot, "d1", kRoot, "d2", RN::kRenameExchange));
  CHECK(ino_of(*fs, kRoot, "d1") == d2);
  CHECK(ino_of(*fs, kRoot, "d2") == d1);
  CHECK(attr(*fs, kRoot).nlink == root_links);

  // Renaming onto another link of the same inode does nothing.
  take(fs->link(x, a, "x_link"), "link");
  require_ok(fs->rename(a, "x2", a, "x_link", 0));
  CHECK(ino_of(*fs, a, "x2") == x);
  CHECK(ino_of(*fs, a, "x_link") == x);
  CHECK(attr(*fs, x).nlink == 2);
  // Renaming a name onto itself does nothing.
  require_ok(fs->rename(a, "x2", a, "x2", 0));
  CHECK(ino_of(*fs, a, "x2") == x);

  auto copy = unmount_copy(*fs);
  CheckReport rep = take(check_image(copy));
  INFO((rep.problems.empty() ? std::string() : rep.problems[0]));
  CHECK(rep.problem_count == 0);
  // The two replaced targets were still referenced by the kernel; the unmount freed them.
  CHECK(rep.inodes == 1 + 2 + 3 + 4 + 2);  // root; a, b; sub, deep, e; x, f2, n1, n2; d1, d2
  auto fs2 = mount(copy_region(copy));
  CHECK(fs2->info().orphans_reclaimed == 0);
  CHECK(err(fs2->getattr(f1)) == Errc::kNotFound);
  CHECK(err(fs2->getattr(empty2)) == Errc::kNotFound);
  CHECK(ino_of(*fs2, a, "f1") == f2);
  expect_clean(*fs2);
}

TEST_CASE("fs: symlinks short (inline) and long (in a block)", "[fs][facade]") {
  auto fs = mount_fresh();
  make_file(*fs, kRoot, "warmup");  // gives the root its first directory block
  uint64_t free0 = bfree(*fs);
  std::string short_t = "target/of/a/short/link";
  std::string inline_max(kInlineBytes, 's');
  std::string long_t(3000, 'l');
  std::string max_t(kMaxSymlinkLen, 'm');
  Attr s = take(fs->symlink(kRoot, "s", short_t, kCaller));
  CHECK(S_ISLNK(s.mode));
  CHECK(s.size == short_t.size());
  CHECK(s.blocks == 0);
  Attr im = take(fs->symlink(kRoot, "im", inline_max, kCaller));
  CHECK(im.blocks == 0);
  Attr l = take(fs->symlink(kRoot, "l", long_t, kCaller));
  CHECK(l.blocks == 1);
  Attr m = take(fs->symlink(kRoot, "m", max_t, kCaller));
  CHECK(bfree(*fs) == free0 - 2);
  CHECK(take(fs->readlink(s.ino)) == short_t);
  CHECK(take(fs->readlink(im.ino)) == inline_max);
  CHECK(take(fs->readlink(l.ino)) == long_t);
  CHECK(take(fs->readlink(m.ino)) == max_t);
  CHECK(err(fs->symlink(kRoot, "too", std::string(kMaxSymlinkLen + 1, 't'), kCaller)) == Errc::kNameTooLong);
  CHECK(err(fs->symlink(kRoot, "empty", "", kCaller)) == Errc::kNotFound);
  CHECK(err(fs->symlink(kRoot, "s", "again", kCaller)) == Errc::kExists);
  CHECK(err(fs->readlink(kRoot)) == Errc::kInvalid);
  SetAttr trunc;
  trunc.size = 0;
  CHECK(err(fs->setattr(l.ino, trunc)) == Errc::kInvalid);
  CHECK(err(fs->write(l.ino, 0, "x", 1)) == Errc::kInvalid);
  // Unlinking the long one (after the kernel forgets it) frees its block.
  require_ok(fs->unlink(kRoot, "l"));
  fs->forget(l.ino, 1);
  CHECK(bfree(*fs) == free0 - 1);
  auto copy = unmount_copy(*fs);
  CHECK(check_copy(copy).problem_count == 0);
  auto fs2 = mount(std::move(copy));
  CHECK(take(fs2->readlink(ino_of(*fs2, kRoot, "s"))) == short_t);
  CHECK(take(fs2->readlink(ino_of(*fs2, kRoot, "m"))) == max_t);
  CHECK(take(fs2->readlink(ino_of(*fs2, kRoot, "im"))) == inline_max);
}

TEST_CASE("fs: write and read round trip with holes and unaligned ranges", "[fs][facade][data]") {
  auto fs = mount_fresh();
  uint64_t f = make_file(*fs, kRoot, "f").ino;
  std::string model;
  auto do_write = [&](uint64_t off, const std::string& data) {
    write_str(*fs, f, off, data);
    if (model.size() < off + data.size()) model.resize(off + data.size(), '\0');
    model.replace(off, data.size(), data);
  };
  do_write(0, "hello");
  CHECK(read_all(*fs, f) == "hello");
  CHECK(attr(*fs, f).size == 5);
  CHECK(attr(*fs, f).blocks == 1);
  do_write(10000, pattern(5000, 1));
  CHECK(attr(*fs, f).size == 15000);
  CHECK(read_range(*fs, f, 5, 9995) == std::string(9995, '\0'));  // block 0's tail and the hole
  CHECK(read_range(*fs, f, 10000, 5000) == pattern(5000, 1));
  CHECK(read_range(*fs, f, 14990, 100) == pattern(5000, 1).substr(4990));  // clipped at EOF
  CHECK(read_range(*fs, f, 15000, 100).empty());
  CHECK(read_range(*fs, f, 1 << 20, 100).empty());
  CHECK(attr(*fs, f).blocks == 3);  // blocks 0, 2 and 3; block 1 is a hole
  do_write(4090, pattern(20, 2));  // fills part of the hole, crossing a block boundary
  CHECK(read_all(*fs, f) == model);
  CHECK(fs->write(f, 100, "", 0).ok());
  CHECK(take(fs->write(f, 100, "", 0)) == 0);

  std::mt19937_64 rng(5);
  for (int k = 0; k < 300; k++) {
    uint64_t off = rng() % (3 * kMiB), len = 1 + rng() % 30000;
    do_write(off, pattern(len, 100 + k, off));
    if (k % 25 == 0) {
      uint64_t ro = rng() % model.size(), rl = rng() % 50000;
      std::string want = ro < model.size() ? model.substr(ro, rl) : std::string();
      REQUIRE(read_range(*fs, f, ro, rl) == want);
    }
  }
  REQUIRE(read_all(*fs, f) == model);
  CHECK(err(fs->read(kRoot, 0, 10, [](const struct iovec*, int) {})) == Errc::kIsDir);
  auto copy = unmount_copy(*fs);
  CHECK(check_copy(copy).problem_count == 0);
  auto fs2 = mount(std::move(copy));
  CHECK(read_all(*fs2, f) == model);
}

TEST_CASE("fs: a file with many extents (a leaf chain) reads back and frees all blocks",
          "[fs][facade][data]") {
  auto fs = mount_fresh();
  make_file(*fs, kRoot, "warmup");
  uint64_t free0 = bfree(*fs);
  uint64_t f = make_file(*fs, kRoot, "sparse").ino;
  // One block every other block: no two extents are adjacent in the file.
  const uint64_t n = 600;
  for (uint64_t k = 0; k < n; k++) write_str(*fs, f, 2 * k * kBlockSize + 7, pattern(100, k));
  Attr a = attr(*fs, f);
  CHECK(a.size == 2 * (n - 1) * kBlockSize + 107);
  CHECK(a.blocks > n);  // data plus extent leaves
  CHECK(bfree(*fs) == free0 - a.blocks);
  for (uint64_t k = 0; k < n; k += 37) {
    CHECK(read_range(*fs, f, 2 * k * kBlockSize, 107) == std::string(7, '\0') + pattern(100, k));
    if (k + 1 < n) CHECK(all_zero(read_range(*fs, f, (2 * k + 1) * kBlockSize, kBlockSize)));
  }
  // Filling every hole leaves a fully written file.
  for (uint64_t k = 0; k + 1 < n; k++) write_str(*fs, f, (2 * k + 1) * kBlockSize, pattern(kBlockSize, 10000 + k));
  CHECK(read_range(*fs, f, 3 * kBlockSize, kBlockSize) == pattern(kBlockSize, 10001));
  {
    auto copy = copy_region(fs->region());  // not unmounted: a crash image
    CheckReport rep = take(check_image(copy));
    CHECK(rep.problem_count == 0);
  }
  // Truncating to zero takes several bounded transactions and frees everything.
  SetAttr s;
  s.size = 0;
  Attr t = take(fs->setattr(f, s));
  CHECK(t.size == 0);
  CHECK(t.blocks == 0);
  CHECK(bfree(*fs) == free0);
  expect_clean(*fs);
}

TEST_CASE("fs: sparse files crossing 4 GiB and the 16 TiB limit", "[fs][facade][data]") {
  auto fs = mount_fresh();
  uint64_t f = make_file(*fs, kRoot, "big").ino;
  const uint64_t g4 = 4ull << 30;
  std::string p1 = pattern(300, 1), p2 = pattern(5000, 2), p3 = pattern(10, 3);
  write_str(*fs, f, g4 - 100, p1);
  write_str(*fs, f, 5 * g4 + 7, p2);
  CHECK(attr(*fs, f).size == 5 * g4 + 7 + 5000);
  CHECK(attr(*fs, f).blocks <= 5);
  CHECK(read_range(*fs, f, g4 - 100, 300) == p1);
  CHECK(read_range(*fs, f, 5 * g4 + 7, 5000) == p2);
  CHECK(all_zero(read_range(*fs, f, g4 - 8192, 8092)));
  CHECK(all_zero(read_range(*fs, f, g4 + 200, 10000)));
  CHECK(all_zero(read_range(*fs, f, 3 * g4, 4096)));
  // A read spanning a hole and data.
  std::string span = read_range(*fs, f, g4 - 1000, 2000);
  CHECK(span == std::string(900, '\0') + p1 + std::string(800, '\0'));
  const uint64_t max = kMaxFileBlocks * kBlockSize;
  write_str(*fs, f, max - 10, p3);
  CHECK(attr(*fs, f).size == max);
  CHECK(read_range(*fs, f, max - 10, 100) == p3);
  CHECK(err(fs->write(f, max - 10, "12345678901", 11)) == Errc::kFileTooBig);
  CHECK(err(fs->write(f, max, "1", 1)) == Errc::kFileTooBig);
  SetAttr s;
  s.size = max + 1;
  CHECK(err(fs->setattr(f, s)) == Errc::kFileTooBig);
  // Truncate back below 4 GiB: the far blocks go, the near data stays.
  s.size = g4 + 100;
  take(fs->setattr(f, s), "setattr");
  CHECK(read_range(*fs, f, g4 - 100, 200) == p1.substr(0, 200));
  CHECK(attr(*fs, f).blocks == 2);
  auto copy = unmount_copy(*fs);
  CHECK(check_copy(copy).problem_count == 0);
  auto fs2 = mount(std::move(copy));
  CHECK(read_range(*fs2, f, g4 - 100, 200) == p1.substr(0, 200));
  CHECK(attr(*fs2, f).size == g4 + 100);
}

TEST_CASE("fs: truncate down then up reads zeros past the old end", "[fs][facade][data]") {
  auto fs = mount_fresh();
  make_file(*fs, kRoot, "warmup");
  uint64_t free0 = bfree(*fs);
  uint64_t f = make_file(*fs, kRoot, "t").ino;
  std::string data = pattern(20000, 9);
  write_str(*fs, f, 0, data);
  CHECK(attr(*fs, f).blocks == 5);
  SetAttr s;
  s.size = 5000;
  Attr a = take(fs->setattr(f, s));
  CHECK(a.size == 5000);
  CHECK(a.blocks == 2);
  CHECK(bfree(*fs) == free0 - 2);
  CHECK(read_all(*fs, f) == data.substr(0, 5000));
  s.size = 20000;
  a = take(fs->setattr(f, s));
  CHECK(a.size == 20000);
  CHECK(a.blocks == 2);
  std::string back = read_all(*fs, f);
  REQUIRE(back.size() == 20000);
  CHECK(back.substr(0, 5000) == data.substr(0, 5000));
  CHECK(all_zero(back.substr(5000)));
  // Shrinking inside a block then writing past the end: the gap reads as zeros.
  s.size = 4100;
  take(fs->setattr(f, s), "setattr");
  write_str(*fs, f, 6000, "tail");
  back = read_all(*fs, f);
  REQUIRE(back.size() == 6004);
  CHECK(back.substr(0, 4100) == data.substr(0, 4100));
  CHECK(all_zero(back.substr(4100, 1900)));
  CHECK(back.substr(6000) == "tail");
  // To zero and beyond.
  s.size = 0;
  a = take(fs->setattr(f, s));
  CHECK(a.blocks == 0);
  CHECK(bfree(*fs) == free0);
  s.size = 1 << 20;
  a = take(fs->setattr(f, s));
  CHECK(all_zero(read_all(*fs, f)));
  CHECK(a.blocks == 0);
  SetAttr bad;
  bad.size = 0;
  CHECK(err(fs->setattr(kRoot, bad)) == Errc::kIsDir);
  expect_clean(*fs);
}

TEST_CASE("fs: setattr changes mode, owner and times", "[fs][facade]") {
  auto fs = mount_fresh();
  uint64_t f = make_file(*fs, kRoot, "f").ino;
  SetAttr s;
  s.mode = 04711;
  s.uid = 7;
  s.gid = 8;
  s.atime = SetAttr::Time::kSet;
  s.atime_ns = 123456789;
  s.mtime = SetAttr::Time::kSet;
  s.mtime_ns = 987654321;
  Attr a = take(fs->setattr(f, s));
  CHECK(a.mode == (S_IFREG | 04711));
  CHECK(a.uid == 7);
  CHECK(a.gid == 8);
  CHECK(a.atime_ns == 123456789);
  CHECK(a.mtime_ns == 987654321);
  auto copy = unmount_copy(*fs);
  auto fs2 = mount(std::move(copy));
  Attr b = attr(*fs2, f);
  CHECK(b.mode == (S_IFREG | 04711));
  CHECK(b.uid == 7);
  CHECK(b.mtime_ns == 987654321);
}

TEST_CASE("fs: xattrs inline and in a block, flags, limits and removal", "[fs][facade][xattr]") {
  auto fs = mount_fresh();
  uint64_t f = make_file(*fs, kRoot, "f").ino;
  uint64_t free0 = bfree(*fs);
  CHECK(take(fs->listxattr(f, true)).empty());
  CHECK(err(fs->getxattr(f, "user.none")) == Errc::kNoData);
  // Small: inline, no block.
  require_ok(fs->setxattr(f, "user.a", "1", {}));
  CHECK(take(fs->getxattr(f, "user.a")) == "1");
  CHECK(bfree(*fs) == free0);
  CHECK(attr(*fs, f).blocks == 0);
  // Large: needs the xattr block.
  std::string big = pattern(3000, 4);
  require_ok(fs->setxattr(f, "user.big", big, {}));
  CHECK(take(fs->getxattr(f, "user.big")) == big);
  CHECK(bfree(*fs) == free0 - 1);
  CHECK(attr(*fs, f).blocks == 1);
  auto names = take(fs->listxattr(f, true));
  CHECK(std::set<std::string>(names.begin(), names.end()) == std::set<std::string>{"user.a", "user.big"});
  // Flags.
  XattrFlags create{true, false}, replace{false, true};
  CHECK(err(fs->setxattr(f, "user.a", "2", create)) == Errc::kExists);
  CHECK(err(fs->setxattr(f, "user.new", "2", replace)) == Errc::kNoData);
  require_ok(fs->setxattr(f, "user.a", "22", replace));
  require_ok(fs->setxattr(f, "user.new", "3", create));
  CHECK(take(fs->getxattr(f, "user.a")) == "22");
  CHECK(take(fs->getxattr(f, "user.new")) == "3");
  // Limits: one value larger than the block, or a set that no longer fits.
  CHECK(err(fs->setxattr(f, "user.huge", std::string(kXattrBlockBytes + 1, 'h'), {})) == Errc::kNoSpace);
  CHECK(err(fs->setxattr(f, "user.more", std::string(2000, 'm'), {})) == Errc::kNoSpace);
  CHECK(err(fs->setxattr(f, std::string(256, 'n'), "v", {})) == Errc::kRange);
  CHECK(err(fs->setxattr(f, "", "v", {})) == Errc::kRange);
  // The failed calls changed nothing.
  CHECK(take(fs->getxattr(f, "user.big")) == big);
  CHECK(err(fs->getxattr(f, "user.more")) == Errc::kNoData);
  CHECK(bfree(*fs) == free0 - 1);
  // An empty value is a value.
  require_ok(fs->setxattr(f, "user.empty", "", {}));
  CHECK(take(fs->getxattr(f, "user.empty")).empty());
  // Removing.
  require_ok(fs->removexattr(f, "user.big"));
  CHECK(err(fs->removexattr(f, "user.big")) == Errc::kNoData);
  CHECK(err(fs->getxattr(f, "user.big")) == Errc::kNoData);
  CHECK(bfree(*fs) == free0);  // the block went back
  CHECK(attr(*fs, f).blocks == 0);
  CHECK(take(fs->getxattr(f, "user.a")) == "22");
  // Xattrs on directories and symlinks too; persist across remount.
  require_ok(fs->setxattr(kRoot, "trusted.root", "r", {}));
  uint64_t s = take(fs->symlink(kRoot, "s", "t", kCaller)).ino;
  require_ok(fs->setxattr(s, "user.link", std::string(1000, 'L'), {}));
  auto copy = unmount_copy(*fs);
  CHECK(check_copy(copy).problem_count == 0);
  auto fs2 = mount(std::move(copy));
  CHECK(take(fs2->getxattr(f, "user.a")) == "22");
  CHECK(take(fs2->getxattr(f, "user.new")) == "3");
  CHECK(take(fs2->getxattr(kRoot, "trusted.root")) == "r");
  CHECK(take(fs2->getxattr(s, "user.link")) == std::string(1000, 'L'));
}

TEST_CASE("fs: statfs follows allocations and frees", "[fs][facade]") {
  auto fs = mount_fresh();
  StatFs s0 = take(fs->statfs());
  uint64_t f = make_file(*fs, kRoot, "f").ino;
  StatFs s1 = take(fs->statfs());
  CHECK(s1.ffree == s0.ffree - 1);
  CHECK(s1.files == s0.files);
  CHECK(s1.bfree == s0.bfree - 1);  // the root's first directory block
  write_str(*fs, f, 0, pattern(10 * kBlockSize, 1));
  CHECK(bfree(*fs) == s1.bfree - 10);
  require_ok(fs->unlink(kRoot, "f"));
  CHECK(bfree(*fs) == s1.bfree - 10);  // still referenced by the kernel
  fs->forget(f, 1);
  StatFs s2 = take(fs->statfs());
  CHECK(s2.bfree == s1.bfree);
  CHECK(s2.ffree == s0.ffree);
}

TEST_CASE("fs: a file unlinked while open stays readable and is freed at its last release",
          "[fs][facade][orphan]") {
  auto fs = mount_fresh();
  make_file(*fs, kRoot, "warmup");
  StatFs s0 = take(fs->statfs());
  uint64_t f = make_file(*fs, kRoot, "f").ino;
  std::string data = pattern(25 * kBlockSize + 3, 6);
  write_str(*fs, f, 0, data);
  require_ok(fs->setxattr(f, "user.big", std::string(2000, 'x'), {}));
  require_ok(fs->open(f));
  require_ok(fs->unlink(kRoot, "f"));
  CHECK(err(fs->lookup(kRoot, "f")) == Errc::kNotFound);
  CHECK(attr(*fs, f).nlink == 0);
  CHECK(read_all(*fs, f) == data);
  write_str(*fs, f, 0, "still writable");
  CHECK(bfree(*fs) == s0.bfree - 27);
  fs->forget(f, 1);  // the kernel forgets the name; the open keeps it
  CHECK(read_range(*fs, f, 0, 14) == "still writable");
  CHECK(bfree(*fs) == s0.bfree - 27);
  fs->release(f);
  StatFs s1 = take(fs->statfs());
  CHECK(s1.bfree == s0.bfree);
  CHECK(s1.ffree == s0.ffree);
  CHECK(err(fs->getattr(f)) == Errc::kNotFound);
  expect_clean(*fs);
}

TEST_CASE("fs: orphans left by a crash or an unmount are finished at the next mount",
          "[fs][facade][orphan]") {
  auto fs = mount_fresh();
  make_file(*fs, kRoot, "warmup");
  StatFs s0 = take(fs->statfs());
  uint64_t f = make_file(*fs, kRoot, "f").ino;
  write_str(*fs, f, 0, pattern(40 * kBlockSize, 8));
  require_ok(fs->open(f));
  require_ok(fs->unlink(kRoot, "f"));
  SECTION("crash while open") {
    auto crash = copy_region(fs->region());
    CheckReport rep = check_copy(crash);
    CHECK(rep.problem_count == 0);  // an orphan is a consistent state
    auto fs2 = mount(std::move(crash));
    CHECK(fs2->info().replayed > 0);
    CHECK(fs2->info().orphans_reclaimed == 1);
    CHECK(take(fs2->statfs()).bfree == s0.bfree);
    CHECK(take(fs2->statfs()).ffree == s0.ffree);
    CHECK(err(fs2->getattr(f)) == Errc::kNotFound);
    expect_clean(*fs2);
  }
  SECTION("a clean unmount frees it (the kernel's references die with the mount)") {
    auto img = unmount_copy(*fs);
    CHECK(check_copy(img).inodes == 2);
    auto fs2 = mount(std::move(img));
    CHECK(fs2->info().replayed == 0);
    CHECK(fs2->info().orphans_reclaimed == 0);
    CHECK(take(fs2->statfs()).bfree == s0.bfree);
    expect_clean(*fs2);
  }
}

TEST_CASE("fs: everything persists across unmount and mount of an image file",
          "[fs][facade][persist]") {
  TempImage img;
  img.format();
  uint64_t d, f, big, s, ls, h, sub;
  std::string data = pattern(123457, 11), bigdata = pattern(300000, 12);
  {
    auto fs = img.mount();
    d = make_dir(*fs, kRoot, "dir").ino;
    sub = make_dir(*fs, d, "sub").ino;
    f = make_file(*fs, d, "file").ino;
    write_str(*fs, f, 0, data);
    big = make_file(*fs, sub, "big").ino;
    for (uint64_t k = 0; k < 20; k++) write_str(*fs, big, k * 2 * 15000, bigdata.substr(k * 15000, 15000));
    s = take(fs->symlink(d, "short", "file", kCaller)).ino;
    ls = take(fs->symlink(kRoot, "long", std::string(500, 'q'), kCaller)).ino;
    h = take(fs->link(f, kRoot, "hard")).ino;
    require_ok(fs->setxattr(f, "user.k", "v", {}));
    require_ok(fs->setxattr(d, "user.blob", std::string(3000, 'b'), {}));
    uint64_t many7 = 0;
    for (int k = 0; k < 300; k++) {
      Attr m = make_file(*fs, sub, "many" + std::to_string(k));
      if (k == 7) many7 = m.ino;
    }
    require_ok(fs->unlink(sub, "many7"));
    fs->forget(many7, 1);  // freed now, not left as an orphan
    require_ok(fs->rename(sub, "many8", d, "moved", 0));
    require_ok(fs->unmount());
  }
  {
    mm::Region r = img.open();
    CheckReport rep = take(check_image(r));
    CHECK(rep.problem_count == 0);
    CHECK(rep.inodes == 1 + 2 + 2 + 2 + 300 - 1);
    CHECK(rep.directories == 3);
  }
  for (int round = 0; round < 2; round++) {
    auto fs = img.mount();
    CHECK(fs->info().replayed == 0);
    CHECK(ino_of(*fs, kRoot, "dir") == d);
    CHECK(ino_of(*fs, d, "sub") == sub);
    CHECK(ino_of(*fs, d, "file") == f);
    CHECK(ino_of(*fs, kRoot, "hard") == f);
    CHECK(h == f);
    CHECK(attr(*fs, f).nlink == 2);
    CHECK(attr(*fs, d).nlink == 3);
    CHECK(attr(*fs, kRoot).nlink == 3);
    CHECK(read_all(*fs, f) == data);
    for (uint64_t k = 0; k < 20; k += 3) CHECK(read_range(*fs, big, k * 2 * 15000, 15000) == bigdata.substr(k * 15000, 15000));
    CHECK(take(fs->readlink(s)) == "file");
    CHECK(take(fs->readlink(ls)) == std::string(500, 'q'));
    CHECK(take(fs->getxattr(f, "user.k")) == "v");
    CHECK(take(fs->getxattr(d, "user.blob")) == std::string(3000, 'b'));
    CHECK(names_in(*fs, sub).size() == 2 + 1 + 300 - 2);
    CHECK(err(fs->lookup(sub, "many7")) == Errc::kNotFound);
    CHECK(fs->lookup(d, "moved").ok());
    CHECK(fs->lookup(sub, "many299").ok());
    make_file(*fs, kRoot, "round" + std::to_string(round));
  }
  {
    auto fs = img.mount();
    CHECK(fs->lookup(kRoot, "round0").ok());
    CHECK(fs->lookup(kRoot, "round1").ok());
  }
}

TEST_CASE("fs: committed changes survive a crash (journal replay at mount)", "[fs][facade][persist]") {
  auto fs = mount_fresh();
  uint64_t d = make_dir(*fs, kRoot, "d").ino;
  uint64_t f = make_file(*fs, d, "f").ino;
  std::string data = pattern(50000, 3);
  write_str(*fs, f, 0, data);
  require_ok(fs->setxattr(f, "user.x", "y", {}));
  require_ok(fs->rename(d, "f", kRoot, "g", 0));
  auto crash = copy_region(fs->region());
  auto fs2 = mount(std::move(crash));
  CHECK(fs2->info().replayed > 0);
  CHECK(ino_of(*fs2, kRoot, "g") == f);
  CHECK(err(fs2->lookup(d, "f")) == Errc::kNotFound);
  CHECK(read_all(*fs2, f) == data);
  CHECK(take(fs2->getxattr(f, "user.x")) == "y");
  expect_clean(*fs2);
}

// Found by the crash explorer: a crash while a checkpoint rewrote the primary superblock
// left it torn, and mount refused the image although the journal held the whole copy.
TEST_CASE("fs: a primary superblock torn by a crash is rebuilt by replay", "[fs][facade][persist]") {
  auto fs = mount_fresh();  // mount commits a superblock change that stays in the journal
  make_file(*fs, kRoot, "f");
  auto crash = copy_region(fs->region());
  crash.base()[offsetof(DiskSuper, mount_count)] ^= 0x40;  // a torn cache line
  auto fs2 = mount(std::move(crash));
  CHECK(fs2->info().replayed > 0);
  CHECK(verify_super(read_super(fs2->region()), fs2->region().size() / kBlockSize, "primary").ok());
  CHECK(ino_of(*fs2, kRoot, "f") > 0);
  expect_clean(*fs2);

  // With nothing in the journal to rebuild it, mount refuses and names the repair.
  auto img = unmount_copy(*fs2);
  img.base()[offsetof(DiskSuper, mount_count)] ^= 0x40;
  auto r = Filesystem::mount(std::move(img), {});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::kCorrupt);
  CHECK_THAT(r.error().msg, Catch::Contains("fsck.pmemfuse -y"));
}

TEST_CASE("fs: crash replay does not overwrite file data in a block that held metadata",
          "[fs][facade][persist]") {
  // An xattr block is written through the journal, freed, and reused for file data (which
  // is written in place, not journaled). After a crash, replaying the old transaction
  // must not put the stale xattr block over the file's data.
  auto fs = mount_fresh();
  uint64_t a = make_file(*fs, kRoot, "a").ino;
  uint64_t free_before = bfree(*fs);
  require_ok(fs->setxattr(a, "user.big", std::string(3000, 'X'), {}));
  REQUIRE(bfree(*fs) == free_before - 1);
  require_ok(fs->removexattr(a, "user.big"));
  REQUIRE(bfree(*fs) == free_before);
  // Use up all free space so the freed block is certainly reused for file data.
  uint64_t b = make_file(*fs, kRoot, "b").ino;
  uint64_t n = bfree(*fs) - 8;  // leave a little for metadata
  std::string data(n * kBlockSize, 'D');
  write_str(*fs, b, 0, data);
  require_ok(fs->fsync(b, false));
  auto crash = copy_region(fs->region());
  auto fs2 = mount(std::move(crash));
  REQUIRE(fs2->info().replayed > 0);
  std::string back = read_all(*fs2, b);
  REQUIRE(back.size() == data.size());
  uint64_t bad_blocks = 0, first_bad = UINT64_MAX;
  for (uint64_t k = 0; k < n; k++) {
    if (back.compare(k * kBlockSize, kBlockSize, data, k * kBlockSize, kBlockSize) != 0) {
      bad_blocks++;
      first_bad = std::min(first_bad, k);
    }
  }
  INFO("file block " << first_bad << " differs after replay");
  CHECK(bad_blocks == 0);
}

TEST_CASE("fs: running out of space fails cleanly and the space comes back",
          "[fs][facade][enospc]") {
  auto fs = mount(formatted(16 * kMiB));
  make_file(*fs, kRoot, "warmup");
  StatFs s0 = take(fs->statfs());
  std::vector<uint64_t> files;
  std::map<uint64_t, std::string> contents;
  bool full = false;
  for (int k = 0; k < 1000 && !full; k++) {
    uint64_t f = make_file(*fs, kRoot, "fill" + std::to_string(k)).ino;
    files.push_back(f);
    for (uint64_t chunk : {256 * 1024ull, 16 * 1024ull, 4096ull, 1ull}) {
      for (;;) {
        std::string p = pattern(chunk, k, contents[f].size());
        auto w = fs->write(f, contents[f].size(), p.data(), p.size());
        if (!w.ok()) {
          CHECK(w.error().code == Errc::kNoSpace);
          break;
        }
        contents[f] += p.substr(0, *w);  // near full, a write may be short (as on ext4)
        if (*w < p.size()) break;
        if (contents[f].size() >= 2 * kMiB) break;  // next file
      }
      if (contents[f].size() >= 2 * kMiB) break;
      if (chunk == 1) full = true;
    }
  }
  REQUIRE(full);
  CHECK(bfree(*fs) < 4);
  // Other allocations fail too, and leave no trace.
  if (bfree(*fs) == 0) {
    uint64_t any = files.front();
    CHECK(err(fs->setxattr(any, "user.big", std::string(3000, 'x'), {})) == Errc::kNoSpace);
    CHECK(err(fs->symlink(kRoot, "longlink", std::string(1000, 'l'), kCaller)) == Errc::kNoSpace);
    CHECK(err(fs->lookup(kRoot, "longlink")) == Errc::kNotFound);
  }
  for (auto& [f, c] : contents) {
    REQUIRE(attr(*fs, f).size == c.size());
  }
  CHECK(read_all(*fs, files.back()) == contents[files.back()]);
  {
    auto crash = copy_region(fs->region());
    CheckReport rep = take(check_image(crash));
    INFO((rep.problems.empty() ? std::string() : rep.problems[0]));
    CHECK(rep.problem_count == 0);
  }
  // Delete everything: all the space returns.
  for (size_t k = 0; k < files.size(); k++) {
    require_ok(fs->unlink(kRoot, "fill" + std::to_string(k)));
    fs->forget(files[k], 1);
  }
  StatFs s1 = take(fs->statfs());
  CHECK(s1.bfree == s0.bfree);
  CHECK(s1.ffree == s0.ffree);
  // And can be used again.
  uint64_t again = make_file(*fs, kRoot, "again").ino;
  write_str(*fs, again, 0, pattern(2 * kMiB, 5));
  expect_clean(*fs);
}

TEST_CASE("fs: the inode table grows past one chunk and survives a remount", "[fs][facade][itable]") {
  auto fs = mount_fresh();
  const int n = 9000;
  REQUIRE(n > int(kInodesPerChunk));
  uint64_t d = make_dir(*fs, kRoot, "d").ino;
  uint64_t max_ino = 0;
  for (int k = 0; k < n; k++) {
    Attr a = make_file(*fs, d, "f" + std::to_string(k));
    max_ino = std::max(max_ino, a.ino);
    fs->forget(a.ino, 1);
  }
  CHECK(max_ino > kInodesPerChunk);
  StatFs s1 = take(fs->statfs());
  CHECK(s1.files - s1.ffree == uint64_t(n) + 2);  // in use: root, d and the files
  CHECK(s1.ffree > 0);
  auto copy = unmount_copy(*fs);
  {
    CheckReport rep = check_copy(copy);
    CHECK(rep.problem_count == 0);
    CHECK(rep.inodes == uint64_t(n) + 2);
  }
  auto fs2 = mount(std::move(copy));
  CHECK(ino_of(*fs2, d, "f0") < kInodesPerChunk);
  CHECK(ino_of(*fs2, d, "f" + std::to_string(n - 1)) == max_ino);
  CHECK(names_in(*fs2, d).size() == size_t(n) + 2);
  CHECK(take(fs2->statfs()).ffree == s1.ffree);
  // Free slots in both chunks are reused.
  for (int k = 0; k < n; k += 2) require_ok(fs2->unlink(d, "f" + std::to_string(k)));
  for (int k = 0; k < 100; k++) CHECK(make_file(*fs2, d, "g" + std::to_string(k)).ino <= max_ino);
  expect_clean(*fs2);
}

TEST_CASE("fs: readdir pages with cookies and plus adds references", "[fs][facade]") {
  auto fs = mount_fresh();
  uint64_t d = make_dir(*fs, kRoot, "d").ino;
  std::set<std::string> want;
  for (int k = 0; k < 400; k++) {
    std::string n = "entry" + std::to_string(k);
    make_file(*fs, d, n);
    want.insert(n);
  }
  std::vector<std::string> got;
  uint64_t cookie = 0;
  for (int page = 0; page < 1000; page++) {
    int taken = 0;
    uint64_t next = cookie;
    require_ok(fs->readdir(d, cookie, page % 2 == 1, [&](std::string_view n, const Attr& a, uint64_t c) {
      if (taken == 17) return false;
      if (n != "." && n != "..") {
        CHECK(a.ino != 0);
        if (page % 2 == 1) CHECK(S_ISREG(a.mode));
      }
      got.emplace_back(n);
      next = c;
      taken++;
      return true;
    }));
    if (taken == 0) break;
    cookie = next;
  }
  REQUIRE(got.size() == 402);
  CHECK(got[0] == ".");
  CHECK(got[1] == "..");
  CHECK(std::set<std::string>(got.begin() + 2, got.end()) == want);
  CHECK(err(fs->readdir(make_file(*fs, kRoot, "plain").ino, 0, false,
                        [](std::string_view, const Attr&, uint64_t) { return true; })) == Errc::kNotDir);
}

TEST_CASE("fs: a read-only mount refuses changes but reads", "[fs][facade]") {
  auto fs = mount_fresh();
  uint64_t f = make_file(*fs, kRoot, "f").ino;
  write_str(*fs, f, 0, "ro data");
  auto img = unmount_copy(*fs);
  MountOptions ro;
  ro.read_only = true;
  auto fs2 = mount(std::move(img), ro);
  CHECK(fs2->info().read_only);
  CHECK(read_all(*fs2, f) == "ro data");
  CHECK(err(fs2->mknod(kRoot, "g", S_IFREG | 0644, 0, kCaller)) == Errc::kReadOnly);
  CHECK(err(fs2->write(f, 0, "x", 1)) == Errc::kReadOnly);
  CHECK(err(fs2->unlink(kRoot, "f")) == Errc::kReadOnly);
  CHECK(err(fs2->setxattr(f, "user.a", "b", {})) == Errc::kReadOnly);
  CHECK(err(fs2->rename(kRoot, "f", kRoot, "g", 0)) == Errc::kReadOnly);
}

TEST_CASE("fs: truncating a file unlinked while open keeps it in the orphan table",
          "[fs][facade][orphan]") {
  // ftruncate() on an unlinked, still-open file (a typical temporary file) must not drop
  // it from the orphan table: a crash before the last release would leak the inode.
  auto fs = mount_fresh();
  make_file(*fs, kRoot, "warmup");
  StatFs s0 = take(fs->statfs());
  uint64_t f = make_file(*fs, kRoot, "tmp").ino;
  write_str(*fs, f, 0, pattern(10 * kBlockSize, 4));
  require_ok(fs->open(f));
  require_ok(fs->unlink(kRoot, "tmp"));
  SetAttr s;
  s.size = 100;
  Attr a = take(fs->setattr(f, s));
  CHECK(a.size == 100);
  CHECK(a.blocks == 1);
  auto crash = copy_region(fs->region());
  {
    CheckReport rep = check_copy(crash);
    INFO((rep.problems.empty() ? std::string() : rep.problems[0]));
    CHECK(rep.problem_count == 0);
  }
  auto fs2 = mount(std::move(crash));
  CHECK(fs2->info().orphans_reclaimed == 1);
  CHECK(take(fs2->statfs()).bfree == s0.bfree);
  CHECK(take(fs2->statfs()).ffree == s0.ffree);
}

TEST_CASE("fs: a write that needs an extent leaf when no block is left fails cleanly",
          "[fs][facade][enospc]") {
  auto fs = mount(formatted(16 * kMiB));
  uint64_t f = make_file(*fs, kRoot, "six").ino;
  for (uint64_t k = 0; k < kInlineExtents; k++) write_str(*fs, f, 2 * k * kBlockSize, pattern(kBlockSize, k));
  Attr before = attr(*fs, f);
  REQUIRE(before.blocks == kInlineExtents);  // inline: no leaf yet
  std::string content = read_all(*fs, f);
  // Use up the space one block at a time until exactly one block is free.
  uint64_t filler = make_file(*fs, kRoot, "filler").ino;
  uint64_t off = 0;
  while (bfree(*fs) > 1) {
    uint64_t n = bfree(*fs) > 64 ? (bfree(*fs) - 32) : 1;
    auto w = fs->write(filler, off, std::string(n * kBlockSize, 'F').data(), n * kBlockSize);
    if (!w.ok()) break;
    off += n * kBlockSize;
  }
  REQUIRE(bfree(*fs) == 1);
  // A seventh extent needs the last block for data and another for the first leaf.
  auto w = fs->write(f, 20 * kBlockSize, "x", 1);
  REQUIRE_FALSE(w.ok());
  CHECK(w.error().code == Errc::kNoSpace);
  Attr after = attr(*fs, f);
  CHECK(after.size == before.size);
  CHECK(after.blocks == before.blocks);
  CHECK(read_all(*fs, f) == content);
  CHECK(bfree(*fs) == 1);
  // Still fully usable: an in-place overwrite and a write into the last free block of an
  // existing extent's neighbourhood.
  write_str(*fs, f, 5, "in place");
  content.replace(5, 8, "in place");
  CHECK(read_all(*fs, f) == content);
  expect_clean(*fs);
}

TEST_CASE("fs: creating names in a full directory on a full filesystem fails cleanly",
          "[fs][facade][enospc]") {
  auto fs = mount(formatted(16 * kMiB));
  uint64_t d = make_dir(*fs, kRoot, "d").ino;
  make_file(*fs, d, "first");
  uint64_t filler = make_file(*fs, kRoot, "filler").ino;
  uint64_t off = 0;
  for (uint64_t n : {1024ull, 64ull, 1ull}) {
    std::string buf(n * kBlockSize, 'F');
    while (fs->write(filler, off, buf.data(), buf.size()).ok()) off += buf.size();
  }
  REQUIRE(bfree(*fs) == 0);
  StatFs s0 = take(fs->statfs());
  // The directory's one block fills up; then a name needs a new block.
  int made = 0;
  Status last;
  for (int k = 0; k < 1000; k++) {
    auto r = fs->mknod(d, "name-" + std::to_string(k) + std::string(40, 'n'), S_IFREG | 0644, 0, kCaller);
    if (!r.ok()) {
      last = make_error(r.error().code, r.error().msg);
      break;
    }
    made++;
  }
  REQUIRE_FALSE(last.ok());
  CHECK(last.error().code == Errc::kNoSpace);
  CHECK(made > 10);
  CHECK(take(fs->statfs()).ffree == s0.ffree - made);
  CHECK(names_in(*fs, d).size() == size_t(made) + 3);
  // Renaming into the full directory fails the same way and leaves both names alone.
  make_file(*fs, kRoot, "mover");
  Status rn = fs->rename(kRoot, "mover", d, "moved-" + std::string(40, 'm'), 0);
  REQUIRE_FALSE(rn.ok());
  CHECK(rn.error().code == Errc::kNoSpace);
  CHECK(fs->lookup(kRoot, "mover").ok());
  // Freeing space makes it work again.
  SetAttr s;
  s.size = 0;
  take(fs->setattr(filler, s));
  require_ok(fs->rename(kRoot, "mover", d, "moved-" + std::string(40, 'm'), 0));
  make_file(*fs, d, "after");
  expect_clean(*fs);
}

TEST_CASE("fs: one write filling thousands of holes does not shut the filesystem down",
          "[fs][facade][data]") {
  // Each hole becomes its own allocation and extent; the whole write must either go
  // through (split into transactions the journal accepts) or fail with nothing changed.
  // Either way the filesystem must keep working.
  auto fs = mount_fresh();
  uint64_t f = make_file(*fs, kRoot, "holes").ino;
  const uint64_t n = 6000;
  for (uint64_t k = 0; k < n; k++) write_str(*fs, f, 2 * k * kBlockSize, std::string(kBlockSize, 'A'));
  std::string all(2 * n * kBlockSize, 'B');
  auto w = fs->write(f, 0, all.data(), all.size());
  INFO("write: " << (w.ok() ? std::string("ok") : w.error().msg));
  if (w.ok()) {
    CHECK(*w == all.size());
    bool written = read_range(*fs, f, 0, 3 * kBlockSize) == std::string(3 * kBlockSize, 'B');
    CHECK(written);
  } else {
    bool unchanged = read_range(*fs, f, 0, 2 * kBlockSize) == std::string(kBlockSize, 'A') + std::string(kBlockSize, '\0');
    CHECK(unchanged);
  }
  auto later = fs->mknod(kRoot, "later", S_IFREG | 0644, 0, kCaller);
  INFO("mknod after: " << (later.ok() ? std::string("ok") : later.error().msg));
  CHECK(later.ok());
  expect_clean(*fs);
}

TEST_CASE("fs: mkfs options set the label and the root's owner", "[fs][facade]") {
  MkfsOptions o;
  o.label = "my-label";
  o.root_uid = 123;
  o.root_gid = 456;
  mm::Region r = formatted(kDefaultImage, o);
  DiskSuper sb = read_super(r);
  CHECK(std::string(sb.label) == "my-label");
  CHECK(sb.state == kStateClean);
  auto fs = mount(std::move(r));
  Attr root = attr(*fs, kRoot);
  CHECK(root.uid == 123);
  CHECK(root.gid == 456);
  // Mounted: the superblock says so, and the mount count went up.
  DiskSuper m = read_super(fs->region());
  CHECK(m.state == kStateMounted);
  CHECK(m.mount_count == 1);
  require_ok(fs->unmount());
  CHECK(read_super(fs->region()).state == kStateClean);
}
