// tests/crash/workloads.cc: the workloads the crash explorer runs. Each recorded step is
// one facade call that the filesystem makes durable before it returns, so a crash shows
// the state before or after it, never between. Writes stay below the journal's write
// batch (64 blocks) so that a single write is also all-or-nothing.
#include <string>

#include "tests/crash/explorer.h"

namespace pmemfuse::crash {
namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint32_t kKeep = fs::Filesystem::kFallocKeepSize;
constexpr uint32_t kPunch = fs::Filesystem::kFallocPunchHole;
constexpr uint32_t kZero = fs::Filesystem::kFallocZeroRange;

// Deterministic non-zero bytes, different for every seed.
std::string data(uint64_t n, uint64_t seed) {
  std::string s(n, '\0');
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (char& c : s) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    c = char((x & 0xff) | 1);
  }
  return s;
}

std::string long_name(int k) { return std::string(200, 'n') + std::to_string(k); }

void mkfs_body(Script& s) {
  s.mkdir("/d");
  s.create("/d/f");
  s.write("/d/f", 0, data(10 * kKiB, 1));
}

void namespace_body(Script& s) {
  s.mkdir("/a");
  s.mkdir("/a/b");
  s.create("/a/b/f");
  s.symlink("/a/b/f", "/a/short");
  s.symlink(std::string(300, 'x'), "/a/long");  // too long to store in the inode
  s.create("/a/g");
  s.unlink("/a/g");
  s.unlink("/a/b/f");
  s.rmdir("/a/b");
  s.mkdir("/c");
  s.chmod("/c", 0700);
  s.rmdir("/c");
  s.unlink("/a/short");
}

void rename_setup(Script& s) {
  for (const char* d : {"/x", "/y", "/y/sub", "/z"}) s.mkdir(d);
  for (const char* f : {"/x/f1", "/x/f2", "/y/g1", "/y/g2"}) s.create(f);
  s.write("/x/f1", 0, data(5000, 2));
  s.write("/y/g2", 0, data(7000, 3));
}

void rename_body(Script& s) {
  constexpr uint32_t kNoReplace = fs::Filesystem::kRenameNoReplace;
  constexpr uint32_t kExchange = fs::Filesystem::kRenameExchange;
  s.rename("/x/f1", "/x/f1b");                // same directory
  s.rename("/x/f1b", "/y/f1c");               // across directories
  s.rename("/y/f1c", "/y/g1");                // over an existing file (g1 is freed)
  s.rename("/x/f2", "/x/f2n", kNoReplace);    // no replace, target absent
  s.rename("/y/g1", "/y/g2", kExchange);      // exchange two files
  s.rename("/x/f2n", "/y/sub", kExchange);    // exchange a file with a directory, across
  s.mkdir("/z/empty");
  s.rename("/x/f2n", "/z/empty");             // the directory now named f2n over an empty one
  s.rename("/z/empty", "/moved");             // a directory to another parent (.. changes)
}

void link_body(Script& s) {
  s.mkdir("/l");
  s.create("/l/f");
  s.write("/l/f", 0, data(3000, 4));
  s.link("/l/f", "/l/f2");
  s.mkdir("/m");
  s.link("/l/f", "/m/f3");
  s.unlink("/l/f");
  s.unlink("/l/f2");
  s.unlink("/m/f3");
}

void truncate_body(Script& s) {
  s.create("/t");
  s.write("/t", 0, data(100 * kKiB, 5));
  s.truncate("/t", 5000);
  s.truncate("/t", 1 << 20);
  s.write("/t", 600 * kKiB, data(8 * kKiB, 6));
  s.truncate("/t", 0);
  // A file of more than 256 blocks: cutting it off takes several transactions.
  s.create("/big");
  for (uint64_t k = 0; k < 6; k++) s.write("/big", k * 200 * kKiB, data(200 * kKiB, 7 + k));
  s.truncate("/big", 4096);
}

void fallocate_body(Script& s) {
  s.create("/p");
  s.fallocate("/p", 0, 0, 64 * kKiB);
  s.fallocate("/p", kKeep, 64 * kKiB, 64 * kKiB);
  s.write("/p", 4 * kKiB, data(10 * kKiB, 20));  // into unwritten extents
  s.write("/p", 0, data(128 * kKiB, 21));
  s.fallocate("/p", kPunch | kKeep, 8 * kKiB, 20 * kKiB);
  s.fallocate("/p", kZero, 40 * kKiB, 9000);
  s.fallocate("/p", kZero | kKeep, 120 * kKiB, 64 * kKiB);
  s.fallocate("/p", kPunch | kKeep, 0, 256 * kKiB);
}

void data_body(Script& s) {
  s.create("/log");
  for (int k = 0; k < 8; k++) {
    s.write("/log", uint64_t(k) * 3000, data(3000, 30 + k));  // appends, not block-aligned
    s.fsync("/log");
  }
  s.write("/log", 100, data(50, 40));           // overwrite inside a block
  s.write("/log", 4000, data(9000, 41));        // across blocks
  s.fsync("/log");
  s.create("/sparse");
  // More than six extents: the map moves from the inode into a leaf block.
  for (int k = 0; k < 9; k++) s.write("/sparse", uint64_t(k) * 64 * kKiB, data(4096, 50 + k));
  s.write("/sparse", 10, data(200 * kKiB, 60));  // fills holes, merging extents
  s.create("/held");
  s.write("/held", 0, data(50 * kKiB, 61));
  s.open("/held");
  s.unlink("/held");  // now an orphan until release
  s.write("/sparse", 0, data(100, 62));
  s.release("/held");
}

void xattr_body(Script& s) {
  s.create("/x");
  s.setxattr("/x", "user.a", "1");                          // inline
  s.setxattr("/x", "user.b", std::string(100, 'b'));        // spills to a block
  s.setxattr("/x", "user.a", "22", {.replace = true});
  s.setxattr("/x", "user.c", std::string(3000, 'c'), {.create = true});
  s.removexattr("/x", "user.b");
  s.setxattr("/x", "trusted.t", "t");
  s.removexattr("/x", "user.c");
  s.removexattr("/x", "user.a");
  s.mkdir("/d");
  s.setxattr("/d", "user.dir", std::string(500, 'd'));
  s.rmdir("/d");
}

void bigdir_body(Script& s) {
  s.mkdir("/big");
  // About 18 entries fit in a directory block with these names: grow to three blocks.
  for (int k = 0; k < 45; k++) s.create("/big/" + long_name(k));
  for (int k = 0; k < 45; k += 4) s.unlink("/big/" + long_name(k));
  s.rename("/big/" + long_name(1), "/big/" + long_name(100));
  s.create("/big/last");
}

// Enough inodes to fill the first inode chunk; the recorded creates grow the table.
// Spread over directories: a facade caller that holds no reference on a directory (as
// this script) makes each access load it again.
constexpr int kChunkFill = static_cast<int>(fs::kInodesPerChunk) - 8;
constexpr int kBulkDirs = 100;

void itable_setup(Script& s) {
  for (int d = 0; d < kBulkDirs; d++) s.mkdir("/bulk" + std::to_string(d));
  for (int k = kBulkDirs; k < kChunkFill; k++) s.create("/bulk" + std::to_string(k % kBulkDirs) + "/" + std::to_string(k));
}

void itable_body(Script& s) {
  for (int k = 0; k < 12; k++) s.create("/bulk0/new" + std::to_string(k));
  s.create("/after");
  s.write("/after", 0, data(6000, 70));
  s.setxattr("/after", "user.x", "y");
  for (int k = 0; k < 4; k++) s.unlink("/bulk0/new" + std::to_string(k));
}

// Small transactions, many more blocks than the smallest journal holds.
void wrap_body(Script& s) {
  s.mkdir("/w");
  for (int k = 0; k < 220; k++) {
    std::string f = "/w/" + std::to_string(k % 7);
    if (k % 7 == 0 && k) s.unlink(f);
    if (k % 7 == 0 || k < 7) s.create(f);
    s.write(f, uint64_t(k) * 100, data(100, k));
    s.setxattr(f, "user.k", std::to_string(k));
  }
}

// A cached mount: writes coalesce in DRAM and only the group's fsync writes them back.
// Each group changes at most one transaction's worth of visible state, or stores in place
// (then each byte may be old or new), so a crash shows it before or after.
void cached_setup(Script& s) {
  s.create("/old");
  s.write("/old", 0, data(40 * kKiB, 60));
  s.create("/c");
  s.create("/gone");
}

void cached_body(Script& s) {
  s.group("append twice, overwrite the first write, fsync", [&] {
    s.write("/c", 0, data(20 * kKiB, 61));
    s.write("/c", 20 * kKiB, data(10 * kKiB, 62));
    s.write("/c", 4 * kKiB, data(100, 63));
    s.fsync("/c");
  });
  s.group("overwrite one page five times, fsync", [&] {
    for (uint64_t k = 0; k < 5; k++) s.write("/old", 8 * kKiB + 10 * k, data(3000, 64 + k));
    s.fsync("/old");
  }, "/old");
  s.group("overwrite pages 1, 3 and 5 in place (three writeback runs), fsync", [&] {
    for (uint64_t k = 1; k < 6; k += 2) s.write("/old", k * 4 * kKiB + 7, data(4000, 70 + k));
    s.fsync("/old");
  }, "/old");
  s.group("write past EOF, truncate back to the size on media, fsync", [&] {
    s.write("/c", 200 * kKiB, data(8 * kKiB, 80));
    s.truncate("/c", 30 * kKiB);
    s.fsync("/c");
  });
  s.group("write, punch a hole through the cached pages, fsync", [&] {
    s.write("/old", 16 * kKiB, data(12 * kKiB, 82));
    s.fallocate("/old", kPunch | kKeep, 17 * kKiB, 8 * kKiB);
    s.fsync("/old");
  }, "/old");
  s.group("write without fsync, unlink", [&] {
    s.write("/gone", 0, data(16 * kKiB, 83));
    s.unlink("/gone");
  });
}

// DAX files on a cached mount: each write is durable when it returns, with no fsync; the
// flag is inherited and toggled.
void dax_setup(Script& s) {
  s.mkdir("/d");
  s.set_dax("/d", true);
  s.create("/d/f");  // inherits the flag
  s.create("/b");
  s.write("/b", 0, data(24 * kKiB, 90));
  s.fsync("/b");
}

void dax_body(Script& s) {
  s.write("/d/f", 0, data(20 * kKiB, 91));
  s.write("/d/f", 4 * kKiB + 7, data(3000, 92));
  s.write("/d/f", 20 * kKiB, data(10 * kKiB, 93));
  s.fallocate("/d/f", kPunch | kKeep, 8 * kKiB, 8 * kKiB);
  s.truncate("/d/f", 6 * kKiB);
  // The switch writes cached pages back before the flag commits, so a crash between the
  // two shows the writes without the flag: not a state of a group. The tests of fs/dax.cc
  // check that write-back; here the switch follows an fsync.
  s.group("write cached pages, fsync", [&] {
    s.write("/b", 4 * kKiB, data(12 * kKiB, 94));
    s.write("/b", 30 * kKiB, data(5 * kKiB, 95));
    s.fsync("/b");
  }, "/b");
  s.set_dax("/b", true);
  s.write("/b", 0, data(6 * kKiB, 96));
  s.set_dax("/b", false);
  s.create("/d/g");
  s.write("/d/g", 0, data(9 * kKiB, 97));
}

std::vector<Workload> make_workloads() {
  std::vector<Workload> w;
  w.push_back({"mkfs", "crash during mkfs and the first mount", 16ull << 20, 0, true, 1, nullptr, mkfs_body});
  w.push_back({"namespace", "create, unlink, mkdir, rmdir, symlinks (inline and block), chmod",
               16ull << 20, 0, false, 1, nullptr, namespace_body});
  w.push_back({"rename", "rename in and across directories, over files and empty directories, NOREPLACE, EXCHANGE",
               16ull << 20, 0, false, 1, rename_setup, rename_body});
  w.push_back({"link", "hard links across directories, unlink of each name", 16ull << 20, 0, false, 1, nullptr, link_body});
  w.push_back({"truncate", "truncate up and down, a multi-transaction truncate of a large file",
               16ull << 20, 0, false, 1, nullptr, truncate_body});
  w.push_back({"fallocate", "preallocate, KEEP_SIZE, writes into unwritten extents, PUNCH_HOLE, ZERO_RANGE",
               16ull << 20, 0, false, 1, nullptr, fallocate_body});
  w.push_back({"data", "appends and overwrites with fsync, extent map moving to a leaf block, orphan of an open file",
               16ull << 20, 0, false, 1, nullptr, data_body});
  w.push_back({"xattr", "set (inline and block), replace, create, remove, trusted, on a directory",
               16ull << 20, 0, false, 1, nullptr, xattr_body});
  w.push_back({"bigdir", "a directory growing past its first block, unlinks and rename in it",
               16ull << 20, 0, false, 1, nullptr, bigdir_body});
  // Each state mounts, walks and checks 8,000 inodes: several times the cost of the others.
  w.push_back({"itable", "the inode table growing by a chunk", 24ull << 20, 0, false, 2, itable_setup, itable_body});
  Workload cached{"cached", "the DRAM cache: coalesced writes, writeback runs, truncate and punch over dirty pages, unlink of unsynced data",
                  16ull << 20, 0, false, 1, cached_setup, cached_body};
  cached.cache_pages = 64;
  w.push_back(cached);
  Workload dax{"dax", "DAX files on a cached mount: writes durable without fsync, punch, truncate, the flag inherited and toggled",
               16ull << 20, 0, false, 1, dax_setup, dax_body};
  dax.cache_pages = 64;
  w.push_back(dax);
  w.push_back({"wrap", "journal wrap-around in the smallest journal", 16ull << 20, 1025, false, 1, nullptr, wrap_body});
  return w;
}

}  // namespace

const std::vector<Workload>& workloads() {
  static const std::vector<Workload> all = make_workloads();
  return all;
}

}  // namespace pmemfuse::crash
