// tests/fuzz/mount_fuzz.cc: libFuzzer target. Each input damages a small image; the run
// checks it with check_image, mounts it, walks the whole tree, changes it, unmounts, and
// checks the result. Any Result error is fine. Findings: crashes, hangs, sanitizer
// reports, leaks, a store outside the image or a read() handing out memory outside it,
// an image check_image passes that mount refuses, and one it passes that is no longer
// clean after our changes.
//
// The input is a patch list over one of a few base images built at start-up (mkfs, then
// a tree holding every metadata type), not a whole image. Inputs stay a few dozen bytes,
// so mutation spends its effort on the bytes that matter instead of megabytes of zeros;
// patches are aimed at the base's non-zero blocks, metadata first; and a run copies only
// those blocks into a fresh mapping, which keeps executions fast. After patching, every
// checksum is recomputed unless the input says not to: nearly every structure carries a
// crc32c, and without resealing almost every mutation would stop at a crc mismatch and
// never reach the field checks and the code behind them.
//
//   byte 0   bits 0-5: base image (modulo the number of bases); bit 6: mount with acl;
//            bit 7: keep stale crcs
//   then patches, each:
//     u16    block: bit 15 clear: the n-th non-zero block of the base (modulo their
//            count, metadata first); bit 15 set: block n modulo the block count
//     u16    byte offset in the block (modulo 4096)
//     u8     length - 1 (modulo 32)
//     bytes  the new content (fewer if the input ends)
//
// Run (tools/test.sh does, for PMEMFUSE_FUZZ_SECONDS, default 30):
//   build-asan/tests/fuzz/mount_fuzz -max_total_time=600 build-asan/fuzz-corpus tests/fuzz/corpus
// tests/fuzz/corpus holds the seeds (one per base and flag) and, as regress-*, every
// input that once found a bug.
//
// Single-threaded; the bases are built once and only read afterwards.
#include <sys/stat.h>
#include <sys/uio.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "fs/acl.h"
#include "fs/check.h"
#include "fs/filesystem.h"
#include "fs/format.h"
#include "fs/journal.h"
#include "fs/verify.h"
#include "mm/crc32c.h"
#include "mm/region.h"

namespace pmemfuse::fs {
namespace {

constexpr uint64_t kImageBytes = 16 << 20;        // the minimum filesystem: 4096 blocks
constexpr uint64_t kImageBlocks = kImageBytes / kBlockSize;
constexpr uint64_t kJournalBlocks = 128;          // small, so the log wraps while building
constexpr uint64_t kMaxPatchLen = 32;
constexpr size_t kMaxWalk = 3000;                 // entries visited per run
constexpr uint64_t kReadWindow = 64 << 10;        // bytes read at each end of a file
const Caller kCaller{0, 0, 022};

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "mount_fuzz: %s\n", what);
  __builtin_trap();
}

// Stores straight into the mapping (no cache flushes: nothing here survives a crash) and
// traps on any store outside the image, which the sanitizers cannot see in an mmap.
class CheckedPersister : public mm::Persister {
 public:
  CheckedPersister(uint8_t* base, uint64_t size) : base_(base), size_(size) {}
  void store(void* dst, const void* src, size_t n) override { std::memcpy(check(dst, n), src, n); }
  void fill(void* dst, int c, size_t n) override { std::memset(check(dst, n), c, n); }
  void fence() override {}

 private:
  void* check(void* dst, size_t n) const {
    auto p = static_cast<uint8_t*>(dst);
    if (p < base_ || n > size_ || uint64_t(p - base_) > size_ - n) finding("store outside the image");
    return dst;
  }
  uint8_t* base_;
  uint64_t size_;
};

mm::Region new_image() {
  auto r = mm::Region::anonymous(kImageBytes);
  if (!r) finding("cannot map an image");
  r->set_persister(std::make_unique<CheckedPersister>(r->base(), r->size()));
  return std::move(*r);
}

// ---- base images ----

struct Base {
  mm::Region image;
  std::vector<uint64_t> blocks;  // non-zero blocks, metadata first
};

template <class T>
T must(Result<T> r) {
  if (!r) finding(("building a base: " + r.error().msg).c_str());
  return std::move(*r);
}

void must(const Status& s) {
  if (!s) finding(("building a base: " + s.error().msg).c_str());
}

uint64_t mkfile(Filesystem& fs, uint64_t dir, const std::string& name, const std::string& data) {
  uint64_t ino = must(fs.mknod(dir, name, S_IFREG | 0644, 0, kCaller)).ino;
  if (!data.empty()) must(fs.write(ino, 0, data.data(), data.size()));
  return ino;
}

// One of each structure: a directory over several blocks, inline and chained extent
// maps (two leaves), holes, unwritten extents, inline and out-of-line xattrs, short and
// long symlinks, special files, hard links, nested directories, POSIX ACLs.
void populate(Filesystem& fs) {
  const uint64_t root = 1;
  uint64_t d = must(fs.mkdir(root, "dir", 0755, kCaller)).ino;
  const std::string padding(32, 'p');  // long names: three blocks with few entries
  for (int k = 0; k < 160; k++) mkfile(fs, d, padding + std::to_string(k), k % 40 ? "" : "data");
  uint64_t sub = must(fs.mkdir(d, "sub", 0755, kCaller)).ino;
  mkfile(fs, sub, "deep", std::string(5000, 'd'));
  uint64_t small = mkfile(fs, root, "small", "hello, world\n");
  must(fs.link(small, sub, "hardlink"));
  uint64_t frag = mkfile(fs, root, "frag", "");
  for (uint64_t k = 0; k < 10; k++) must(fs.write(frag, 2 * k * kBlockSize, "x", 1));
  uint64_t chain = mkfile(fs, root, "chain", "");
  for (uint64_t k = 0; k < 300; k++) must(fs.write(chain, 2 * k * kBlockSize + 7, "y", 1));
  uint64_t sparse = mkfile(fs, root, "sparse", "");
  must(fs.write(sparse, 1 << 20, "end", 3));
  must(fs.fallocate(sparse, Filesystem::kFallocKeepSize, 0, 8 * kBlockSize));
  must(fs.setxattr(small, "user.a", "1", {}));
  must(fs.setxattr(small, "user.big", std::string(1500, 'v'), {}));
  must(fs.setxattr(sub, "trusted.t", "tv", {}));
  Acl acl{{kAclUserObj, 7, 0}, {kAclUser, 6, 4242}, {kAclGroupObj, 5, 0}, {kAclMask, 7, 0}, {kAclOther, 4, 0}};
  must(fs.setxattr(d, kAclDefault, encode_acl(acl), {}));
  must(fs.setxattr(small, kAclAccess, encode_acl(acl), {}));
  must(fs.symlink(root, "short-link", "small", kCaller));
  must(fs.symlink(root, "long-link", std::string(300, 'L'), kCaller));
  must(fs.mknod(root, "fifo", S_IFIFO | 0600, 0, kCaller));
  must(fs.mknod(root, "chr", S_IFCHR | 0600, 0x0501, kCaller));
}

// Changes after which the image is left as a crash would leave it: committed
// transactions still in the log, an unlinked open file in the orphan table.
void crash_changes(Filesystem& fs) {
  const uint64_t root = 1;
  uint64_t o = mkfile(fs, root, "orphan", std::string(3 * kBlockSize, 'o'));
  must(fs.open(o));
  must(fs.unlink(root, "orphan"));
  mkfile(fs, root, "late", "written after the last checkpoint");
  must(fs.rename(root, "small", root, "renamed", 0));
  must(fs.setxattr(root, "user.r", "root", {}));
}

bool zero_block(const uint8_t* p) {
  static const uint8_t zeros[kBlockSize] = {};
  return std::memcmp(p, zeros, kBlockSize) == 0;
}

bool has_metadata_magic(const uint8_t* p) {
  uint32_t m;
  std::memcpy(&m, p, sizeof m);
  return m == kBitmapMagic || m == kItableMagic || m == kLeafMagic || m == kDirMagic || m == kXattrMagic;
}

// The first chunk holds every inode of the bases.
bool is_metadata(const mm::Region& r, uint64_t b) {
  DiskSuper sb;
  std::memcpy(&sb, r.at(0), sizeof sb);
  DiskItableIndex x;
  std::memcpy(&x, r.at(sb.itable_index * kBlockSize), sizeof x);
  return b < sb.bitmap_start + sb.bitmap_blocks || b == sb.backup_block ||
         (b >= x.chunks[0] && b < x.chunks[0] + kChunkBlocks) || has_metadata_magic(r.at(b * kBlockSize));
}

std::vector<uint64_t> nonzero_blocks(const mm::Region& r) {
  std::vector<uint64_t> meta, data;
  for (uint64_t b = 0; b < kImageBlocks; b++) {
    if (zero_block(r.at(b * kBlockSize))) continue;
    (is_metadata(r, b) ? meta : data).push_back(b);
  }
  meta.insert(meta.end(), data.begin(), data.end());
  return meta;
}

Base make_base(bool crashed) {
  mm::Region r = new_image();
  MkfsOptions mo;
  mo.journal_blocks = kJournalBlocks;
  must(mkfs(r, mo));
  MountOptions acl;
  acl.acl = true;
  auto fs = must(Filesystem::mount(std::move(r), acl));
  populate(*fs);
  Base b{new_image(), {}};
  if (crashed) crash_changes(*fs);
  else must(fs->unmount());
  std::memcpy(b.image.base(), fs->region().base(), kImageBytes);
  b.blocks = nonzero_blocks(b.image);
  return b;
}

std::vector<Base>& bases() {
  static std::vector<Base> all = [] {
    std::vector<Base> v;
    v.push_back(make_base(false));
    v.push_back(make_base(true));
    return v;
  }();
  return all;
}

// ---- the input ----

struct Patch {
  uint64_t block, offset;
  std::vector<uint8_t> bytes;
};

struct Input {
  const Base* base = nullptr;
  bool acl = false;
  bool reseal = true;
  std::vector<Patch> patches;
};

Input parse(const uint8_t* p, size_t n) {
  Input in;
  auto& all = bases();
  uint8_t head = n ? p[0] : 0;
  in.base = &all[(head & 0x3f) % all.size()];
  in.acl = head & 0x40;
  in.reseal = !(head & 0x80);
  for (size_t i = 1; i + 5 <= n;) {
    uint16_t sel = uint16_t(p[i] | p[i + 1] << 8);
    uint16_t off = uint16_t(p[i + 2] | p[i + 3] << 8);
    size_t len = p[i + 4] % kMaxPatchLen + 1;
    i += 5;
    len = std::min(len, n - i);
    if (len == 0) break;
    uint64_t block = sel & 0x8000 ? (sel & 0x7fff) % kImageBlocks : in.base->blocks[sel % in.base->blocks.size()];
    uint64_t offset = std::min<uint64_t>(off % kBlockSize, kBlockSize - len);
    in.patches.push_back({block, offset, std::vector<uint8_t>(p + i, p + i + len)});
    i += len;
  }
  return in;
}

// ---- resealing ----

template <class T>
T load(const mm::Region& r, uint64_t off) {
  T v;
  std::memcpy(&v, r.at(off), sizeof v);
  return v;
}

template <class T>
void store(mm::Region& r, uint64_t off, const T& v) {
  std::memcpy(r.base() + off, &v, sizeof v);
}

void reseal_super(mm::Region& r, uint64_t off) {
  auto sb = load<DiskSuper>(r, off);
  if (sb.magic != kSuperMagic) return;
  sb.crc = super_crc(sb);
  store(r, off, sb);
}

uint32_t journal_header_crc(DiskJournalHeader h) {
  h.crc = 0;
  return mm::crc32c(0, &h, sizeof h);
}

// Both header slots; returns the one replay will choose, or nullopt.
std::optional<DiskJournalHeader> reseal_journal_header(mm::Region& r, const DiskSuper& sb) {
  std::optional<DiskJournalHeader> best;
  for (uint64_t slot = 0; slot < 2; slot++) {
    uint64_t off = sb.journal_start * kBlockSize + slot * sizeof(DiskJournalHeader);
    auto h = load<DiskJournalHeader>(r, off);
    if (h.magic != kJournalMagic) continue;
    h.crc = journal_header_crc(h);
    store(r, off, h);
    if (h.log_bytes == (sb.journal_blocks - 1) * kBlockSize && (!best || h.checkpoints > best->checkpoints)) best = h;
  }
  return best;
}

// The log as replay reads it: a ring of log_bytes bytes addressed by lsn.
struct Log {
  mm::Region& r;
  uint64_t off, bytes;
  void copy_out(uint64_t lsn, uint8_t* dst, uint64_t n) const {
    while (n > 0) {
      uint64_t pos = lsn % bytes, k = std::min(n, bytes - pos);
      std::memcpy(dst, r.at(off + pos), k);
      dst += k, lsn += k, n -= k;
    }
  }
};

// Seals each transaction replay would reach from the head: correct magic, lsn and seq,
// whatever the body says.
void reseal_log(mm::Region& r, const DiskSuper& sb, const DiskJournalHeader& h) {
  Log log{r, (sb.journal_start + 1) * kBlockSize, h.log_bytes};
  uint64_t lsn = h.head_lsn, seq = h.head_seq;
  std::vector<uint8_t> tx;
  for (int n = 0; n < 1000; n++) {
    DiskTxHeader th;
    log.copy_out(lsn, reinterpret_cast<uint8_t*>(&th), sizeof th);
    if (th.magic != kTxMagic || th.lsn != lsn || th.seq != seq || th.body_bytes > log.bytes - sizeof th) return;
    tx.resize(sizeof th + th.body_bytes);
    log.copy_out(lsn, tx.data(), tx.size());
    std::memset(tx.data() + 4, 0, 4);
    uint32_t crc = mm::crc32c(0, tx.data(), tx.size());
    std::memcpy(r.base() + log.off + (lsn + 4) % log.bytes, &crc, sizeof crc);  // 64-aligned: never wraps
    lsn += (sizeof th + th.body_bytes + 63) / 64 * 64;
    seq++;
  }
}

void reseal_orphans(mm::Region& r, const DiskSuper& sb, uint64_t b) {
  for (uint64_t k = 0; k < kOrphanSlotsPerBlock; k++) {
    uint64_t off = b * kBlockSize + k * sizeof(DiskOrphanSlot);
    auto slot = load<DiskOrphanSlot>(r, off);
    if (slot.ino == 0) continue;
    uint64_t v[2] = {slot.ino, (b - sb.orphan_start) * kOrphanSlotsPerBlock + k};
    slot.crc = mm::crc32c(0, v, sizeof v);
    store(r, off, slot);
  }
}

void reseal_inodes(mm::Region& r, uint64_t b) {
  static const DiskInode unused{};
  for (uint64_t k = 0; k < kInodesPerBlock; k++) {
    uint64_t off = b * kBlockSize + k * kInodeSize;
    auto d = load<DiskInode>(r, off);
    if (std::memcmp(&d, &unused, sizeof d) == 0) continue;  // never used: stays all zeros
    seal_inode(d);
    store(r, off, d);
  }
}

bool in_range(uint64_t b, uint64_t start, uint64_t n) { return b >= start && b - start < n; }

// Chunks the (patched) index names, sanity-limited to the image.
std::vector<uint64_t> chunks(const mm::Region& r, const DiskSuper& sb) {
  std::vector<uint64_t> out;
  if (sb.itable_index >= kImageBlocks) return out;
  auto x = load<DiskItableIndex>(r, sb.itable_index * kBlockSize);
  for (uint32_t i = 0; i < std::min(x.nchunks, kMaxChunks); i++)
    if (x.chunks[i] < kImageBlocks) out.push_back(x.chunks[i]);
  return out;
}

void reseal_block(mm::Region& r, const DiskSuper& sb, const std::vector<uint64_t>& chunk_starts, uint64_t b) {
  if (has_metadata_magic(r.at(b * kBlockSize))) seal_block(r.base() + b * kBlockSize);
  if (in_range(b, sb.orphan_start, sb.orphan_blocks)) reseal_orphans(r, sb, b);
  auto in_chunk = [b](uint64_t c) { return in_range(b, c + 1, kChunkBlocks - 1); };
  if (std::any_of(chunk_starts.begin(), chunk_starts.end(), in_chunk)) reseal_inodes(r, b);
}

// Recomputes every checksum over the blocks the base uses and the patched ones, so
// that patches are judged by their content, not by a stale crc.
void reseal(mm::Region& r, const std::set<uint64_t>& blocks) {
  reseal_super(r, 0);
  reseal_super(r, (kImageBlocks - 1) * kBlockSize);
  auto sb = load<DiskSuper>(r, 0);
  std::vector<uint64_t> chunk_starts = chunks(r, sb);
  for (uint64_t b : blocks) reseal_block(r, sb, chunk_starts, b);
  if (sb.journal_blocks < 2 || sb.journal_blocks >= kImageBlocks ||
      !in_range(sb.journal_start, 1, kImageBlocks - sb.journal_blocks)) {
    return;
  }
  if (auto h = reseal_journal_header(r, sb)) reseal_log(r, sb, *h);
}

// ---- one run ----

mm::Region build(const Input& in) {
  mm::Region r = new_image();
  for (uint64_t b : in.base->blocks) std::memcpy(r.base() + b * kBlockSize, in.base->image.at(b * kBlockSize), kBlockSize);
  std::set<uint64_t> touched(in.base->blocks.begin(), in.base->blocks.end());
  for (const Patch& p : in.patches) {
    std::memcpy(r.base() + p.block * kBlockSize + p.offset, p.bytes.data(), p.bytes.size());
    touched.insert(p.block);
  }
  if (in.reseal) reseal(r, touched);
  return r;
}

// Every piece read() hands out is inside the image or reads as zeros (a hole).
void check_pieces(const mm::Region& r, const struct iovec* iov, int n) {
  for (int k = 0; k < n; k++) {
    auto p = static_cast<const uint8_t*>(iov[k].iov_base);
    if (p >= r.base() && p < r.base() + r.size()) {
      if (iov[k].iov_len > uint64_t(r.base() + r.size() - p)) finding("read past the end of the image");
      continue;
    }
    static const uint8_t zeros[kBlockSize] = {};
    for (size_t i = 0; i < iov[k].iov_len; i += kBlockSize) {
      if (std::memcmp(p + i, zeros, std::min<size_t>(kBlockSize, iov[k].iov_len - i)) != 0) {
        finding("read() returned memory outside the image that is not zeros");
      }
    }
  }
}

struct Walked {
  std::vector<std::pair<uint64_t, std::string>> files, dirs;  // {parent, name}
  std::vector<uint64_t> file_inos;
};

void visit(Filesystem& fs, uint64_t ino, const Attr& a) {
  if (S_ISREG(a.mode)) {
    auto sink = [&](const struct iovec* iov, int n) { check_pieces(fs.region(), iov, n); };
    (void)fs.read(ino, 0, kReadWindow, sink);
    if (a.size > kReadWindow) (void)fs.read(ino, a.size - kReadWindow, kReadWindow, sink);
    (void)fs.seek_data(ino, 0, true);
  }
  if (S_ISLNK(a.mode)) (void)fs.readlink(ino);
  if (auto names = fs.listxattr(ino, true))
    for (const std::string& x : *names) (void)fs.getxattr(ino, x);
}

// Breadth first from the root, each directory once (a damaged tree may have cycles).
Walked walk(Filesystem& fs) {
  Walked w;
  std::deque<uint64_t> todo{1};
  std::set<uint64_t> seen{1};
  size_t visited = 0;
  while (!todo.empty() && visited < kMaxWalk) {
    uint64_t dir = todo.front();
    todo.pop_front();
    std::vector<std::string> names;
    (void)fs.readdir(dir, 0, visited % 2, [&](std::string_view name, const Attr& a, uint64_t) {
      if (name != "." && name != "..") {
        names.emplace_back(name);
        if (visited % 2) fs.forget(a.ino, 1);  // readdirplus took a reference
      }
      return names.size() < kMaxWalk;
    });
    for (const std::string& name : names) {
      auto a = fs.lookup(dir, name);
      if (!a) continue;
      visited++;
      (void)fs.getattr(a->ino);
      visit(fs, a->ino, *a);
      if (S_ISDIR(a->mode) && seen.insert(a->ino).second) todo.push_back(a->ino), w.dirs.push_back({dir, name});
      if (S_ISREG(a->mode)) w.files.push_back({dir, name}), w.file_inos.push_back(a->ino);
      fs.forget(a->ino, 1);
    }
  }
  return w;
}

void change_new_file(Filesystem& fs, uint64_t parent) {
  auto a = fs.mknod(parent, "fz.new", S_IFREG | 0644, 0, kCaller);
  if (!a) return;
  std::string data(5000, 'n');
  (void)fs.write(a->ino, 0, data.data(), data.size());
  for (uint64_t k = 2; k < 10; k++) (void)fs.write(a->ino, 2 * k * kBlockSize, "n", 1);  // a leaf chain
  (void)fs.setxattr(a->ino, "user.fz", "value", {});
  (void)fs.setxattr(a->ino, "user.fz.big", std::string(2000, 'b'), {});
  (void)fs.open(a->ino);
  (void)fs.unlink(parent, "fz.new");  // an orphan until release
  fs.release(a->ino);
  fs.forget(a->ino, 1);
}

void change_existing_file(Filesystem& fs, uint64_t ino) {
  auto a = fs.getattr(ino);
  if (!a) return;
  std::string data(kBlockSize, 'w');
  (void)fs.write(ino, a->size / 2, data.data(), data.size());
  (void)fs.fallocate(ino, Filesystem::kFallocPunchHole | Filesystem::kFallocKeepSize, kBlockSize, 3 * kBlockSize);
  (void)fs.fallocate(ino, Filesystem::kFallocKeepSize, a->size, 4 * kBlockSize);
  (void)fs.fallocate(ino, Filesystem::kFallocZeroRange, 0, kBlockSize + 100);
  (void)fs.fsync(ino, false);
  (void)fs.touch_atime(ino);
  SetAttr s;
  s.size = a->size / 3;
  (void)fs.setattr(ino, s);
  SetAttr m;
  m.mode = 0600;
  m.mtime = SetAttr::Time::kNow;
  (void)fs.setattr(ino, m);
  (void)fs.removexattr(ino, "user.a");
}

void change_tree(Filesystem& fs, const Walked& w) {
  const uint64_t root = 1;
  uint64_t dir = root;
  if (!w.dirs.empty()) {
    if (auto a = fs.lookup(w.dirs[0].first, w.dirs[0].second)) dir = a->ino, fs.forget(a->ino, 1);
  }
  change_new_file(fs, dir);
  if (!w.file_inos.empty()) {
    change_existing_file(fs, w.file_inos[0]);
    if (fs.link(w.file_inos[0], root, "fz.hard")) fs.forget(w.file_inos[0], 1);
  }
  if (w.files.size() > 1) (void)fs.rename(w.files[1].first, w.files[1].second, root, "fz.moved", 0);
  if (w.files.size() > 2) (void)fs.unlink(w.files[2].first, w.files[2].second);
  if (auto d = fs.mkdir(dir, "fz.dir", 0755, kCaller)) fs.forget(d->ino, 1);
  (void)fs.rename(dir, "fz.dir", root, "fz.dir2", 0);
  (void)fs.rmdir(root, "fz.dir2");
  if (auto s = fs.symlink(root, "fz.link", std::string(200, 's'), kCaller)) fs.forget(s->ino, 1);
  (void)fs.rename(root, "fz.link", root, "fz.moved", 0);  // over an existing name
  (void)fs.statfs();
  if (!w.dirs.empty()) (void)fs.rename(w.dirs[0].first, w.dirs[0].second, root, "fz.dirmoved", Filesystem::kRenameNoReplace);
}

mm::Region copy_of(const mm::Region& r) {
  mm::Region c = new_image();
  for (uint64_t b = 0; b < kImageBlocks; b++)
    if (!zero_block(r.at(b * kBlockSize))) std::memcpy(c.base() + b * kBlockSize, r.at(b * kBlockSize), kBlockSize);
  return c;
}

// What check_image says of an image: nothing wrong, and whether it replayed the journal
// first.
struct Verdict {
  bool clean = false;
  bool replayed = false;
};

Verdict check(mm::Region r) {
  auto rep = check_image(r);
  if (!rep) return {};
  return {rep->problem_count == 0, rep->replayed > 0};
}

void run(const Input& in) {
  Verdict before = check(build(in));
  MountOptions mo;
  mo.acl = in.acl;
  auto fs = Filesystem::mount(build(in), mo);
  if (!fs) {
    // Mount and fsck share the verifiers, so an image fsck passes as it is must mount.
    // Not so after a replay: mount checks the primary superblock before replaying.
    if (before.clean && !before.replayed) {
      finding(("mount refuses an image check_image finds clean: " + fs.error().msg).c_str());
    }
    return;
  }
  Walked w = walk(**fs);
  if (!(*fs)->info().read_only) change_tree(**fs, w);
  bool unmounted = (*fs)->unmount().ok();
  if (before.clean && unmounted && !check(copy_of((*fs)->region())).clean) {
    finding("a clean image is not clean after changes");
  }
}

}  // namespace
}  // namespace pmemfuse::fs

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  pmemfuse::fs::bases();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pmemfuse::fs::run(pmemfuse::fs::parse(data, size));
  return 0;
}
