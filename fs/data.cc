// fs/data.cc: file data on the plain path: reads straight from the media mapping, writes
// in place or into newly allocated blocks (persisted before the transaction that maps
// them), truncate, fallocate and hole punching in bounded transactions, SEEK_DATA /
// SEEK_HOLE and relatime.
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
  std::shared_lock io(i->io_mu);
  if (i->dax) return read_dax(*i, off, size, sink);
  if (auto f = cache_of(*i)) return read_cached(*i, *f, off, size, sink);
  std::shared_lock lk(i->mu);
  return read_media(*i, off, size, sink);
}

// Caller holds i.mu.
Status Filesystem::read_media(Inode& i, uint64_t off, uint64_t size,
                              const std::function<void(const struct iovec*, int)>& sink) {
  if (S_ISDIR(i.d.mode)) return make_error(Errc::kIsDir, "read of a directory");
  std::vector<struct iovec> iov;
  media_iov(i, off, std::min(i.d.size, off + size), &iov);
  sink(iov.data(), int(iov.size()));
  return {};
}

// Appends the pieces of [off, end): pointers into the media, and zeros for holes and
// unwritten extents. Caller holds i.mu.
void Filesystem::media_iov(Inode& i, uint64_t off, uint64_t end, std::vector<struct iovec>* iov) {
  for (uint64_t pos = off; pos < end;) {
    uint64_t lb = pos / kBlockSize;
    const Extent* e = i.map.find(lb);
    if (!e || e->lblk > lb) {  // hole up to the next extent
      uint64_t stop = e ? std::min(end, e->lblk * kBlockSize) : end;
      add_zeros(iov, stop - pos);
      pos = stop;
      continue;
    }
    uint64_t stop = std::min(end, e->end() * kBlockSize);
    if (e->unwritten) add_zeros(iov, stop - pos);
    else iov->push_back({const_cast<uint8_t*>(region_.at(e->pblk * kBlockSize + (pos - e->lblk * kBlockSize))), stop - pos});
    pos = stop;
  }
}

// Splits [lo, hi) into segments on media, allocating blocks for holes in tx. Stops early
// once kWriteBatch segments need new metadata, so one transaction stays bounded; returns
// the segments and sets *end to the first block not covered.
Result<std::vector<Filesystem::Segment>> Filesystem::map_for_write(Tx& tx, Inode& i, uint64_t lo,
                                                                    uint64_t hi, uint64_t* end,
                                                                    bool from_reserve) {
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
    auto got = space_->alloc(tx, n, goal, from_reserve);
    if (!got && got.error().code == Errc::kNoSpace) {
      // Near a full device, write what fits: a short write, as POSIX and ext4 do.
      if (!segs.empty()) break;
      uint64_t left = from_reserve ? space_->free_blocks() : space_->available();
      if (left > 0 && left < n) got = space_->alloc(tx, left, goal, from_reserve);
    }
    if (!got) return std::move(got.error());
    auto& runs = *got;
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
  uint64_t end = off + size;
  if (end > kMaxFileBlocks * kBlockSize || end < off) return make_error(Errc::kFileTooBig, "write beyond 16 TiB");
  PF_TRY(i, get(ino));
  std::shared_lock io(i->io_mu);
  if (auto f = cache_of(*i)) return write_cached(*i, *f, off, data, size);
  return write_media(*i, off, static_cast<const uint8_t*>(data), size);
}

// Stores straight to pmem (the DAX path, and every file without a cache): durable when
// it returns. Overwrites of written blocks inside EOF share the inode lock, so writers to
// different ranges of one file do not wait for each other.
Result<uint64_t> Filesystem::write_media(Inode& i, uint64_t off, const uint8_t* src, uint64_t size) {
  if (overwrite_in_place(i, off, src, size)) return size;
  std::unique_lock lk(i.mu);
  if (!S_ISREG(i.d.mode)) return make_error(Errc::kInvalid, "write to a non-regular file");
  fold_times_locked(i);
  auto copy = [&](uint64_t dev, uint64_t at, uint64_t n) { region_.write(dev, src + (at - off), n); };
  return write_locked(i, off, size, copy, opts_.kernel_times ? i.d.mtime_ns : now(), false);
}

// The write changes no metadata but the time: every block of [off, off + size) is written
// and inside EOF. Stores under a shared lock; writers of overlapping bytes race, as on any
// filesystem. The time goes to dax_mtime until an exclusive holder folds it in.
bool Filesystem::overwrite_in_place(Inode& i, uint64_t off, const uint8_t* src, uint64_t size) {
  std::shared_lock lk(i.mu);
  uint64_t end = off + size;
  if (size == 0 || !S_ISREG(i.d.mode) || end > i.d.size) return false;
  for (uint64_t pos = off; pos < end;) {
    const Extent* e = i.map.find(pos / kBlockSize);
    if (!e || e->lblk > pos / kBlockSize || e->unwritten) return false;
    pos = e->end() * kBlockSize;
  }
  for (uint64_t pos = off; pos < end;) {
    const Extent* e = i.map.find(pos / kBlockSize);
    uint64_t stop = std::min(end, e->end() * kBlockSize);
    region_.write(e->pblk * kBlockSize + (pos - e->lblk * kBlockSize), src + (pos - off), stop - pos);
    pos = stop;
  }
  region_.fence();
  if (!opts_.kernel_times) i.dax_mtime.store(now(), std::memory_order_release);
  return true;
}

// Takes a time an in-place write left in dax_mtime into d. Caller holds i.mu exclusively.
void Filesystem::fold_times_locked(Inode& i) {
  int64_t t = i.dax_mtime.exchange(0, std::memory_order_acq_rel);
  if (t == 0 || t <= i.d.mtime_ns) return;  // 0: none (a real time of 0 is never "now")
  i.d.mtime_ns = t;
  i.d.ctime_ns = std::max(i.d.ctime_ns, t);
  i.times_dirty = true;
}

// Writes in transactions of bounded size; a later one failing gives a short write.
Result<uint64_t> Filesystem::write_locked(Inode& i, uint64_t off, uint64_t size, const Source& src,
                                          int64_t mtime, bool from_reserve) {
  uint64_t done = 0;
  while (done < size) {
    auto n = write_batch_locked(i, off + done, size - done, src, mtime, from_reserve);
    if (!n) {
      if (done > 0) return done;  // a short write: what was written stays
      return std::move(n.error());
    }
    done += *n;
  }
  return done;
}

// Writes a prefix of [off, off + size) whose new metadata fits one transaction.
Result<uint64_t> Filesystem::write_batch_locked(Inode& i, uint64_t off, uint64_t size, const Source& src,
                                                int64_t mtime, bool from_reserve) {
  Tx tx(region_);
  uint64_t lo = off / kBlockSize, covered;
  PF_TRY(segs, map_for_write(tx, i, lo, (off + size + kBlockSize - 1) / kBlockSize, &covered, from_reserve));
  uint64_t end = std::min(off + size, covered * kBlockSize);
  if (end > i.d.size) zero_past_eof(i);  // before the data, which may overlap it
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
    src(dev + (a - s_lo), a, b - a);
  }
  i.d.mtime_ns = mtime;
  i.d.ctime_ns = std::max(i.d.ctime_ns, mtime);  // writeback's time may predate a chmod
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
  drop_windows(i.ino, from * kBlockSize, UINT64_MAX);
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
  Tx tx(region_);
  if (size > old) {  // growing leaves a hole; preallocated blocks past EOF stay
    zero_past_eof(i);
    i.d.size = size;
    write_inode(tx, i);
    return commit(tx);
  }
  i.d.size = size;
  // An unlinked file stays in the orphan table until its last release.
  return trim_locked(i, (size + kBlockSize - 1) / kBlockSize, tx, i.d.nlink == 0);
}

Status Filesystem::fsync(uint64_t ino, bool datasync) {
  (void)datasync;  // the size goes with the data, and times cost nothing extra
  PF_TRY(i, get(ino));
  if (auto f = cache_ ? cache_->find(ino) : nullptr) PF_CHECK(flush_file(*f));
  std::unique_lock lk(i->mu);
  PF_CHECK(flush_times_locked(*i));
  region_.fence();
  return {};
}

// Bytes past EOF in the last block are not kept zero (a truncate that zeroed them before
// its commit would change data a crash could still show): whatever grows the file zeros
// them first, and the growing commit's first fence makes that durable.
void Filesystem::zero_past_eof(Inode& i) {
  zero_partial_blocks(i, i.d.size, (i.d.size + kBlockSize - 1) / kBlockSize * kBlockSize);
}

// Zeros the bytes of [off, end) that share a block with bytes outside it, where those
// blocks hold written data; whole blocks are left to the caller.
void Filesystem::zero_partial_blocks(Inode& i, uint64_t off, uint64_t end) {
  auto zero = [&](uint64_t a, uint64_t b) {
    if (a >= b) return;
    const Extent* e = i.map.find(a / kBlockSize);
    if (!e || e->lblk > a / kBlockSize || e->unwritten) return;
    region_.zero((e->pblk + (a / kBlockSize - e->lblk)) * kBlockSize + a % kBlockSize, b - a);
  };
  uint64_t head_end = std::min(end, (off + kBlockSize - 1) / kBlockSize * kBlockSize);
  zero(off, head_end);
  uint64_t tail_start = std::max(head_end, end / kBlockSize * kBlockSize);
  zero(tail_start, end);
}

// Gives every block of [lo, hi) storage as unwritten extents (reads as zeros). With
// zero, written blocks are turned unwritten too (ZERO_RANGE); otherwise they stay.
Status Filesystem::prealloc_locked(Inode& i, uint64_t lo, uint64_t hi, bool zero) {
  for (uint64_t lb = lo; lb < hi;) {
    Tx tx(region_);
    uint64_t covered;
    PF_TRY(segs, map_for_write(tx, i, lb, hi, &covered, false));
    DiskInode saved = i.d;
    for (const Segment& s : segs) {
      bool change = s.allocated || (zero && !s.fresh);
      if (!change) continue;
      if (s.allocated) i.d.blocks += s.len;
      auto removed = i.map.replace(tx, *space_, i.ino, i.d, s.lblk, s.lblk + s.len, {{s.lblk, s.len, s.pblk, true}});
      if (!removed) {
        PF_CHECK(rollback_locked(i, saved));
        return std::move(removed.error());
      }
    }
    write_inode(tx, i);
    PF_CHECK(commit(tx));
    lb = covered;
  }
  return {};
}

// Frees the blocks of [lo, hi), kTrimBatch extents per transaction.
Status Filesystem::punch_locked(Inode& i, uint64_t lo, uint64_t hi) {
  while (lo < hi) {
    const Extent* e = i.map.find(lo);
    if (!e || e->lblk >= hi) return {};
    uint64_t stop = hi;
    size_t n = 0;
    for (auto it = i.map.extents().lower_bound(e->lblk); it != i.map.extents().end() && it->first < hi; ++it) {
      if (++n > kTrimBatch) {
        stop = it->first;
        break;
      }
    }
    Tx tx(region_);
    PF_TRY(removed, i.map.replace(tx, *space_, i.ino, i.d, lo, stop, {}));
    for (const mm::Run& r : removed) {
      space_->free(tx, r);
      i.d.blocks -= r.len;
    }
    write_inode(tx, i);
    PF_CHECK(commit(tx));
    lo = stop;
  }
  return {};
}

Status Filesystem::fallocate(uint64_t ino, uint32_t mode, uint64_t off, uint64_t len) {
  PF_CHECK(writable());
  bool keep = mode & kFallocKeepSize, punch = mode & kFallocPunchHole, zero = mode & kFallocZeroRange;
  if ((punch && (!keep || zero)) || (mode & ~(kFallocKeepSize | kFallocPunchHole | kFallocZeroRange))) {
    return make_error(Errc::kNotSupported, "fallocate mode " + std::to_string(mode));
  }
  uint64_t end = off + len;
  if (len == 0) return make_error(Errc::kInvalid, "fallocate of 0 bytes");
  if (end > kMaxFileBlocks * kBlockSize || end < off) return make_error(Errc::kFileTooBig, "fallocate beyond 16 TiB");
  PF_TRY(i, get(ino));
  std::shared_lock io(i->io_mu);
  auto f = cache_of(*i);
  std::unique_lock<std::mutex> quiet;
  if (f) quiet = cache_->quiesce(*f);
  std::unique_lock lk(i->mu);
  if (S_ISDIR(i->d.mode)) return make_error(Errc::kIsDir, "fallocate of a directory");
  if (!S_ISREG(i->d.mode)) return make_error(Errc::kNotSupported, "fallocate of a special file");
  uint64_t size = f ? f->size() : i->d.size;
  if (punch) zero_partial_blocks(*i, off, std::min(end, size));  // nothing to keep past EOF
  if (zero) zero_partial_blocks(*i, off, end);
  if (f && (punch || zero)) space_->unreserve(cache_->zero_locked(*f, off, end));
  if (punch || zero) drop_windows(i->ino, off, end);
  uint64_t lo = (off + kBlockSize - 1) / kBlockSize, hi = end / kBlockSize;
  if (punch) PF_CHECK(punch_locked(*i, lo, hi));
  else PF_CHECK(prealloc_locked(*i, zero ? lo : off / kBlockSize, zero ? hi : (end + kBlockSize - 1) / kBlockSize, zero));
  if (!keep && end > size) {
    zero_past_eof(*i);
    i->d.size = end;
    if (f) cache_->set_size_locked(*f, end);
  } else if (size > i->d.size) {
    // The cached writes that carried the size may just have been punched or zeroed:
    // the size goes to media now.
    zero_past_eof(*i);
    i->d.size = size;
  }
  i->d.mtime_ns = i->d.ctime_ns = now();  // every mode, as ext4
  if (f) cache_->set_mtime_locked(*f, i->d.mtime_ns);
  Tx tx(region_);
  write_inode(tx, *i);
  return commit(tx);
}

Result<uint64_t> Filesystem::seek_data(uint64_t ino, uint64_t off, bool hole) {
  PF_TRY(i, get(ino));
  std::shared_lock io(i->io_mu);
  if (auto f = cache_of(*i)) PF_CHECK(flush_file(*f));  // holes are known once on media
  std::shared_lock lk(i->mu);
  uint64_t size = i->d.size;
  if (off >= size) return make_error(Errc::kNoOffset, "offset at or past EOF");
  uint64_t pos = off;
  for (;;) {
    const Extent* e = i->map.find(pos / kBlockSize);
    bool data_here = e && e->lblk <= pos / kBlockSize && !e->unwritten;
    if (data_here != hole) return std::min(pos, size);  // found what was asked for
    if (!e && !hole) return make_error(Errc::kNoOffset, "no data after the offset");
    uint64_t next = data_here || e->lblk <= pos / kBlockSize ? e->end() * kBlockSize : e->lblk * kBlockSize;
    if (!e || next >= size) {
      if (hole) return size;  // the implicit hole at EOF
      return make_error(Errc::kNoOffset, "no data after the offset");
    }
    pos = next;
  }
}

bool Filesystem::touch_atime(uint64_t ino) {
  if (opts_.atime == AtimeMode::kNever || read_only_ || failed_) return false;
  auto r = get(ino);
  if (!r) return false;
  Inode& i = **r;
  if (!opts_.dir_atime && S_ISDIR(i.d.mode)) return false;
  constexpr int64_t kDay = 86400ll * 1000000000;
  int64_t t = now();
  auto stale = [&] {
    if (opts_.atime == AtimeMode::kStrict) return true;
    int64_t pending = i.dax_mtime.load(std::memory_order_acquire);
    int64_t m = pending ? std::max(i.d.mtime_ns, pending) : i.d.mtime_ns;
    return i.d.atime_ns <= m || i.d.atime_ns <= i.d.ctime_ns || t - i.d.atime_ns >= kDay;
  };
  {
    std::shared_lock lk(i.mu);
    if (!stale()) return false;
  }
  std::unique_lock lk(i.mu);
  if (!stale()) return false;
  i.d.atime_ns = t;
  i.times_dirty = true;
  return true;
}

}  // namespace pmemfuse::fs
