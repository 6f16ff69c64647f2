// fs/data.cc: file data on the plain path: reads straight from the media mapping, writes
// in place or into newly allocated blocks (persisted before the transaction that maps
// them), truncate in bounded transactions.
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "fs/filesystem.h"
#include "fs/verify.h"

namespace pmemfuse::fs {
namespace {

constexpr size_t kTrimBatch = 256;  // extents freed per transaction by a truncate
// Extents a write may create or convert per transaction. Each may rewrite up to three
// extent leaves (12 KiB of log) and add a 32-byte bit record: 64 of them stay under the
// 1 MiB transaction limit of the smallest journal (4 MiB log, limit = log / 4).
constexpr uint64_t kWriteBatch = 64;
alignas(4096) const uint8_t kZeros[256 * 1024] = {};

void add_zeros(std::vector<struct iovec>* iov, uint64_t n) {
  while (n > 0) {
    uint64_t k = std::min<uint64_t>(n, sizeof kZeros);
    iov->push_back({const_cast<uint8_t*>(kZeros), k});
    n -= k;
  }
}

}  // namespace

Status Filesystem::read(uint64_t ino, uint64_t off, uint64_t size,
                        const std::function<void(const struct iovec*, int)>& sink) {
  PF_TRY(i, get(ino));
  std::shared_lock lk(i->mu);
  if (S_ISDIR(i->d.mode)) return make_error(Errc::kIsDir, "read of a directory");
  uint64_t end = std::min(i->d.size, off + size);
  std::vector<struct iovec> iov;
  for (uint64_t pos = off; pos < end;) {
    uint64_t lb = pos / kBlockSize;
    const Extent* e = i->map.find(lb);
    if (!e || e->lblk > lb) {  // hole up to the next extent
      uint64_t stop = e ? std::min(end, e->lblk * kBlockSize) : end;
      add_zeros(&iov, stop - pos);
      pos = stop;
      continue;
    }
    uint64_t stop = std::min(end, e->end() * kBlockSize);
    if (e->unwritten) add_zeros(&iov, stop - pos);
    else iov.push_back({const_cast<uint8_t*>(region_.at(e->pblk * kBlockSize + (pos - e->lblk * kBlockSize))), stop - pos});
    pos = stop;
  }
  sink(iov.data(), int(iov.size()));
  return {};
}

// Splits [lo, hi) into segments on media, allocating blocks for holes in tx. Stops early
// once kWriteBatch segments need new metadata, so one transaction stays bounded; returns
// the segments and sets *end to the first block not covered.
Result<std::vector<Filesystem::Segment>> Filesystem::map_for_write(Tx& tx, Inode& i, uint64_t lo,
                                                                    uint64_t hi, uint64_t* end) {
  std::vector<Segment> segs;
  uint64_t goal = i.map.goal(lo), fresh = 0;
  uint64_t lb = lo;
  while (lb < hi && fresh < kWriteBatch) {
    const Extent* e = i.map.find(lb);
    if (e && e->lblk <= lb) {
      uint64_t n = std::min(hi, e->end()) - lb;
      segs.push_back({lb, n, e->pblk + (lb - e->lblk), e->unwritten, false});
      fresh += e->unwritten;
      goal = e->pblk + (lb - e->lblk) + n;
      lb += n;
      continue;
    }
    uint64_t n = (e ? std::min(hi, e->lblk) : hi) - lb;
    PF_TRY(runs, space_->alloc(tx, n, goal));
    for (const mm::Run& r : runs) {
      segs.push_back({lb, r.len, r.start, true, true});
      lb += r.len;
      goal = r.start + r.len;
      fresh++;
    }
  }
  *end = lb;
  return segs;
}

Result<uint64_t> Filesystem::write(uint64_t ino, uint64_t off, const void* data, uint64_t size) {
  PF_CHECK(writable());
  PF_TRY(i, get(ino));
  std::unique_lock lk(i->mu);
  if (!S_ISREG(i->d.mode)) return make_error(Errc::kInvalid, "write to a non-regular file");
  uint64_t end = off + size;
  if (end > kMaxFileBlocks * kBlockSize || end < off) return make_error(Errc::kFileTooBig, "write beyond 16 TiB");
  auto src = static_cast<const uint8_t*>(data);
  uint64_t done = 0;
  while (done < size) {
    auto n = write_batch_locked(*i, off + done, src + done, size - done);
    if (!n) {
      if (done > 0) return done;  // a short write: what was written stays
      return std::move(n.error());
    }
    done += *n;
  }
  return done;
}

// Writes a prefix of [off, off + size) whose new metadata fits one transaction.
Result<uint64_t> Filesystem::write_batch_locked(Inode& i, uint64_t off, const uint8_t* src, uint64_t size) {
  Tx tx(region_);
  uint64_t lo = off / kBlockSize, covered;
  PF_TRY(segs, map_for_write(tx, i, lo, (off + size + kBlockSize - 1) / kBlockSize, &covered));
  uint64_t end = std::min(off + size, covered * kBlockSize);
  std::vector<Extent> fresh;
  for (const Segment& s : segs) {
    uint64_t s_lo = s.lblk * kBlockSize, s_hi = (s.lblk + s.len) * kBlockSize;
    uint64_t a = std::max(s_lo, off), b = std::min(s_hi, end);
    uint64_t dev = s.pblk * kBlockSize;
    if (s.fresh) {
      // Bytes of a new block outside the write must read as zeros.
      if (a > s_lo) region_.zero(dev, a - s_lo);
      if (b < s_hi) region_.zero(dev + (b - s_lo), s_hi - b);
      fresh.push_back({s.lblk, s.len, s.pblk, false});
    }
    region_.write(dev + (a - s_lo), src + (a - off), b - a);
  }
  int64_t t = now();
  i.d.mtime_ns = i.d.ctime_ns = t;
  bool grows = end > i.d.size;
  if (fresh.empty() && !grows) {
    region_.fence();
    i.times_dirty = true;
    return end - off;
  }
  DiskInode saved = i.d;
  for (const Segment& s : segs) i.d.blocks += s.allocated ? s.len : 0;
  for (const Extent& e : fresh) {
    // Converting an unwritten extent returns its own blocks as "removed": they stay mapped.
    auto removed = i.map.replace(tx, *space_, i.ino, i.d, e.lblk, e.end(), {e});
    if (!removed) {
      PF_CHECK(rollback_locked(i, saved));
      return std::move(removed.error());
    }
  }
  if (grows) i.d.size = end;
  write_inode(tx, i);
  PF_CHECK(commit(tx));
  return end - off;
}

// Puts the in-memory inode back to its state on media after a failed change.
Status Filesystem::rollback_locked(Inode& i, const DiskInode& saved) {
  i.d = saved;
  auto map = ExtentMap::load(region_, i.ino, saved, sb_.block_count);
  if (!map) {
    failed_ = true;
    return std::move(map.error());
  }
  i.map = std::move(*map);
  return {};
}

Status Filesystem::trim_locked(Inode& i, uint64_t from, Tx& first, bool keep_orphan) {
  Tx* tx = &first;
  std::unique_ptr<Tx> next;
  for (;;) {
    // The last kTrimBatch extents reaching past `from` go in this transaction.
    const auto& ext = i.map.extents();
    uint64_t lo = UINT64_MAX;
    size_t n = 0;
    for (auto it = ext.rbegin(); it != ext.rend() && it->second.end() > from; ++it) {
      if (n++ == kTrimBatch) break;
      lo = it->first;
    }
    bool more = n > kTrimBatch;
    // Taken before anything changes, so a full orphan table fails cleanly.
    if (more) PF_CHECK(orphan_add(*tx, i));
    if (n > 0) {
      PF_TRY(removed, i.map.replace(*tx, *space_, i.ino, i.d, std::max(lo, from), kMaxFileBlocks, {}));
      for (const mm::Run& r : removed) {
        space_->free(*tx, r);
        i.d.blocks -= r.len;
      }
    }
    if (!more && !keep_orphan) orphan_remove(*tx, i);
    write_inode(*tx, i);
    PF_CHECK(commit(*tx));
    if (!more) return {};
    next = std::make_unique<Tx>(region_);
    tx = next.get();
  }
}

Status Filesystem::truncate_locked(Inode& i, uint64_t size, int64_t t) {
  uint64_t old = i.d.size;
  i.d.mtime_ns = i.d.ctime_ns = t;
  if (size < old && size % kBlockSize) {
    // Bytes past the new EOF in its last block must read as zeros if the file grows again.
    const Extent* e = i.map.find(size / kBlockSize);
    if (e && e->lblk <= size / kBlockSize && !e->unwritten) {
      uint64_t lb = size / kBlockSize;
      region_.zero((e->pblk + (lb - e->lblk)) * kBlockSize + size % kBlockSize, kBlockSize - size % kBlockSize);
    }
  }
  i.d.size = size;
  Tx tx(region_);
  if (size > old) {  // growing leaves a hole; preallocated blocks past EOF stay
    write_inode(tx, i);
    return commit(tx);
  }
  // An unlinked file stays in the orphan table until its last release.
  return trim_locked(i, (size + kBlockSize - 1) / kBlockSize, tx, i.d.nlink == 0);
}

Status Filesystem::fsync(uint64_t ino, bool datasync) {
  (void)datasync;  // data and size are durable at write time on this path
  PF_TRY(i, get(ino));
  std::unique_lock lk(i->mu);
  if (!read_only_ && !failed_) PF_CHECK(flush_times_locked(*i));
  region_.fence();
  return {};
}

}  // namespace pmemfuse::fs
