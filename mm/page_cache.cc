// mm/page_cache.cc: page states, the buffer pool with clean-page reclaim (a second-chance
// clock over the clean list) and the flush hand-off. Lock order in page_cache.h.
#include "mm/page_cache.h"

#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "mm/region.h"

namespace pmemfuse::mm {
namespace {

// Pages a write or read handles per hold of the file's lock: bounds the buffers it takes
// from the pool at once.
constexpr uint64_t kChunk = 32;
alignas(4096) const uint8_t kZeroPage[kPageSize] = {};

void store_max(std::atomic<uint64_t>& a, uint64_t v) {
  uint64_t cur = a.load(std::memory_order_relaxed);
  while (cur < v && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

}  // namespace

Result<std::unique_ptr<PageCache>> PageCache::create(uint64_t capacity_pages) {
  capacity_pages = std::max(capacity_pages, kMinPages);
  void* p = mmap(nullptr, capacity_pages * kPageSize, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    return make_error(Errc::kNoSpace, "page cache: cannot reserve " +
                                          std::to_string(capacity_pages * kPageSize >> 20) +
                                          " MiB of address space; lower cache_size");
  // Huge pages where the kernel has them: first use of the arena then takes one fault per
  // 2 MiB instead of per page (page faults were the largest cost of cold writes).
  (void)madvise(p, capacity_pages * kPageSize, MADV_HUGEPAGE);
  return std::unique_ptr<PageCache>(new PageCache(capacity_pages, static_cast<uint8_t*>(p)));
}

PageCache::PageCache(uint64_t capacity_pages, uint8_t* arena)
    : capacity_(capacity_pages), arena_(arena) {}

PageCache::~PageCache() { munmap(arena_, capacity_ * kPageSize); }

CachedFileRef PageCache::open(uint64_t owner, uint64_t size) {
  std::lock_guard lk(files_mu_);
  auto& f = files_[owner];
  if (!f) f = std::make_shared<CachedFile>(owner, size);
  return f;
}

CachedFileRef PageCache::find(uint64_t owner) {
  std::lock_guard lk(files_mu_);
  auto it = files_.find(owner);
  return it == files_.end() ? nullptr : it->second;
}

bool PageCache::forget(uint64_t owner) {
  std::lock_guard lk(files_mu_);
  auto it = files_.find(owner);
  if (it == files_.end()) return true;
  CachedFile& f = *it->second;
  std::unique_lock fl(f.mu_, std::try_to_lock);  // busy: in use, so not forgotten yet
  if (!fl || f.flush_active_ || f.dirty_ > 0) return false;
  drop_range_locked(f, 0, UINT64_MAX);
  f.dead_ = true;
  files_.erase(it);
  return true;
}

uint64_t PageCache::discard(uint64_t owner) {
  CachedFileRef f;
  {
    std::lock_guard lk(files_mu_);
    auto it = files_.find(owner);
    if (it == files_.end()) return 0;
    f = std::move(it->second);
    files_.erase(it);
  }
  return wait_and_discard(f);
}

uint64_t PageCache::wait_and_discard(const CachedFileRef& f) {
  auto lk = quiesce(*f);
  f->dead_ = true;
  return drop_range_locked(*f, 0, UINT64_MAX);
}

Result<uint64_t> PageCache::write(CachedFile& f, uint64_t off, const uint8_t* src, uint64_t len,
                                  int64_t now_ns, bool touch_mtime, const MissFn& miss) {
  uint64_t done = 0;
  bool waited = false;
  while (done < len) {
    uint64_t first = (off + done) / kPageSize, last = (off + len - 1) / kPageSize;
    auto spare = acquire(std::min(last - first + 1, kChunk), false);
    uint64_t before = done;
    Status st = write_some(f, off, src, len, now_ns, touch_mtime, miss, spare, &done);
    release(spare);
    if (!st) {
      if (done > 0) break;
      return std::move(st.error());
    }
    if (done > before) continue;
    // Every page left needs a buffer and none is free: memory pressure.
    if (!waited) n_.pressure_waits++;
    waited = true;
    auto one = acquire(1, true);
    if (one.empty()) {
      if (done > 0) break;
      return make_error(Errc::kIo, "page cache: writeback has stopped; the write was not cached");
    }
    release(one);
  }
  n_.app_bytes += done;
  if (dirty_pages_.load(std::memory_order_relaxed) > capacity_ / 2) pressure();
  return done;
}

// Copies pages of [off + *done, off + len) under the file's lock, at most kChunk, until a
// page needs a buffer (new, or being flushed) and spare has none.
Status PageCache::write_some(CachedFile& f, uint64_t off, const uint8_t* src, uint64_t len,
                             int64_t now_ns, bool touch_mtime, const MissFn& miss,
                             std::vector<uint8_t*>& spare, uint64_t* done) {
  std::lock_guard lk(f.mu_);
  if (f.dead_) return make_error(Errc::kIo, "page cache: write to a dropped file");
  uint64_t start = *done;
  Status st;
  for (uint64_t pages = 0; *done < len && pages < kChunk; pages++) {
    uint64_t pos = off + *done, idx = pos / kPageSize, at = pos % kPageSize;
    uint64_t n = std::min(kPageSize - at, len - *done);
    auto it = f.pages_.find(idx);
    bool needs_buf = it == f.pages_.end() || it->second.state == State::kFlushing;
    if (needs_buf && spare.empty()) break;
    if (it == f.pages_.end()) {
      auto reserved = miss(idx, at == 0 && n == kPageSize ? nullptr : spare.back());
      if (!reserved) {
        st = std::move(reserved.error());
        break;
      }
      it = f.pages_.emplace(idx, Page{}).first;
      it->second.buf = spare.back();
      spare.pop_back();
      it->second.reserved = *reserved;
      f.reserved_ += *reserved;
      count_dirty(f, idx, now_ns);
    } else if (it->second.state == State::kClean) {
      // A clean page may have been read from a hole: it needs a block as a new one does.
      auto reserved = miss(idx, nullptr);
      if (!reserved) {
        st = std::move(reserved.error());
        break;
      }
      it->second.reserved = *reserved;
      f.reserved_ += *reserved;
    }
    write_page(f, idx, it->second, at, src + *done, n, now_ns, spare);
    *done += n;
  }
  if (*done > start) {
    if (off + *done > f.size_) f.size_.store(off + *done, std::memory_order_release);
    if (touch_mtime) f.mtime_ns_.store(now_ns, std::memory_order_release);
  }
  return st;
}

void PageCache::write_page(CachedFile& f, uint64_t index, Page& p, uint64_t at,
                           const uint8_t* src, uint64_t n, int64_t now_ns,
                           std::vector<uint8_t*>& spare) {
  if (p.state == State::kFlushing) {
    // The flusher reads p.buf: write into a copy instead of waiting for it.
    uint8_t* b = spare.back();
    spare.pop_back();
    std::memcpy(b, p.buf, kPageSize);
    p.frozen = p.buf;
    p.buf = b;
    p.state = State::kRewritten;
    n_.second_buffers++;
  } else if (p.state == State::kClean) {
    to_dirty(f, index, p, now_ns);
  }
  std::memcpy(p.buf + at, src, n);
}

Status PageCache::read(CachedFile& f, uint64_t off, uint64_t len, const MediaFn& media,
                       const SinkFn& sink) {
  std::vector<struct iovec> iov;
  auto add = [&](const uint8_t* p, uint64_t n) {
    if (!iov.empty() && p != kZeroPage &&
        static_cast<const uint8_t*>(iov.back().iov_base) + iov.back().iov_len == p) {
      iov.back().iov_len += n;  // contiguous on media: one piece
    } else {
      iov.push_back({const_cast<uint8_t*>(p), n});
    }
  };
  std::lock_guard lk(f.mu_);
  uint64_t end = std::min(f.size(), off + len);
  for (uint64_t pos = off; pos < end;) {
    uint64_t idx = pos / kPageSize, at = pos % kPageSize, n = std::min(kPageSize - at, end - pos);
    auto it = f.pages_.find(idx);
    if (it != f.pages_.end()) {
      add(it->second.buf + at, n);
      it->second.referenced = true;
      n_.hits++;
    } else {
      const uint8_t* data = nullptr;
      PF_TRY(valid, media(idx, &data));
      uint64_t k = valid > at ? std::min(n, valid - at) : 0;
      if (k) add(data + at, k);
      if (n > k) add(kZeroPage + at + k, n - k);
      n_.misses++;
    }
    pos += n;
  }
  sink(iov.data(), int(iov.size()));
  return {};
}

FlushBatch PageCache::take_dirty(CachedFile& f) {
  std::unique_lock lk(f.mu_);
  f.idle_.wait(lk, [&] { return !f.flush_active_; });
  f.flush_active_ = true;
  FlushBatch b;
  b.size = f.size();
  b.mtime_ns = f.mtime_ns();
  for (uint64_t idx : f.dirty_idx_) {
    Page& p = f.pages_.at(idx);
    p.state = State::kFlushing;
    b.pages.push_back({idx, p.buf});
  }
  f.dirty_idx_.clear();
  return b;
}

uint64_t PageCache::finish_flush(CachedFile& f, const FlushBatch& b, bool ok, uint64_t ns) {
  uint64_t released = 0;
  {
    std::lock_guard lk(f.mu_);
    for (const FlushPage& fp : b.pages) {
      Page& p = f.pages_.at(fp.index);  // pages are dropped only when no flush is active
      if (p.state == State::kRewritten) {
        std::lock_guard pl(pool_mu_);
        free_.push_back(p.frozen);
        in_use_--;
        p.frozen = nullptr;
        p.state = State::kDirty;
        f.dirty_idx_.insert(fp.index);
      } else if (ok) {
        to_clean(f, fp.index, p);
        count_clean(f);
      } else {
        p.state = State::kDirty;
        f.dirty_idx_.insert(fp.index);
      }
      if (ok && p.reserved) {
        p.reserved = false;
        f.reserved_--;
        released++;
      }
    }
    // The flush stored the time on media.
    if (ok && !b.pages.empty() && f.mtime_ns_ == b.mtime_ns) f.mtime_ns_ = 0;
    f.flush_active_ = false;
  }
  f.idle_.notify_all();
  freed_.notify_all();
  if (ok && !b.pages.empty()) {
    n_.pmem_bytes += b.pages.size() * kPageSize;
    n_.flush_batches++;
    n_.flush_ns_total += ns;
    store_max(n_.flush_ns_max, ns);
  }
  return released;
}

std::unique_lock<std::mutex> PageCache::quiesce(CachedFile& f) {
  std::unique_lock lk(f.mu_);
  f.idle_.wait(lk, [&] { return !f.flush_active_; });
  return lk;
}

uint64_t PageCache::zero_locked(CachedFile& f, uint64_t lo, uint64_t hi) {
  if (lo >= hi) return 0;
  uint64_t first_whole = (lo + kPageSize - 1) / kPageSize;
  uint64_t last_whole = hi == UINT64_MAX ? UINT64_MAX : hi / kPageSize;  // exclusive
  auto zero_part = [&](uint64_t idx, uint64_t a, uint64_t b) {
    auto it = f.pages_.find(idx);
    if (it != f.pages_.end() && a < b) std::memset(it->second.buf + a, 0, b - a);
  };
  if (lo % kPageSize)
    zero_part(lo / kPageSize, lo % kPageSize,
              hi / kPageSize == lo / kPageSize ? hi % kPageSize : kPageSize);
  if (hi != UINT64_MAX && hi % kPageSize && hi / kPageSize >= first_whole)
    zero_part(hi / kPageSize, 0, hi % kPageSize);
  return first_whole < last_whole ? drop_range_locked(f, first_whole, last_whole) : 0;
}

void PageCache::set_size_locked(CachedFile& f, uint64_t size) {
  f.size_.store(size, std::memory_order_release);
}

void PageCache::set_mtime_locked(CachedFile& f, int64_t t) {
  f.mtime_ns_.store(f.dirty_ ? t : 0, std::memory_order_release);
}

std::vector<CachedFileRef> PageCache::dirty_files() {
  // Sorted on a snapshot of the ages: they change under writers, and std::sort needs a
  // consistent order.
  std::vector<std::pair<int64_t, CachedFileRef>> aged;
  {
    std::lock_guard lk(files_mu_);
    for (auto& [owner, f] : files_)
      if (f->has_dirty()) aged.emplace_back(f->first_dirty_ns(), f);
  }
  std::sort(aged.begin(), aged.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<CachedFileRef> out;
  for (auto& [age, f] : aged) out.push_back(std::move(f));
  return out;
}

void PageCache::stop_waiters() {
  {
    std::lock_guard lk(pool_mu_);
    stopped_ = true;
  }
  freed_.notify_all();
}

CacheStats PageCache::stats() const {
  CacheStats s;
  s.capacity_pages = capacity_;
  {
    std::lock_guard lk(pool_mu_);
    s.cached_pages = in_use_;
  }
  s.dirty_pages = dirty_pages_;
  s.hits = n_.hits;
  s.misses = n_.misses;
  s.app_bytes = n_.app_bytes;
  s.pmem_bytes = n_.pmem_bytes;
  s.flush_batches = n_.flush_batches;
  s.flush_ns_total = n_.flush_ns_total;
  s.flush_ns_max = n_.flush_ns_max;
  s.second_buffers = n_.second_buffers;
  s.evictions = n_.evictions;
  s.pressure_waits = n_.pressure_waits;
  return s;
}

// Takes up to n buffers: free ones, then never-used arena pages, then reclaimed clean
// pages. With wait, blocks (waking the flusher) until at least one is had.
std::vector<uint8_t*> PageCache::acquire(uint64_t n, bool wait) {
  std::vector<uint8_t*> out;
  std::unique_lock lk(pool_mu_);
  for (;;) {
    while (out.size() < n) {
      if (!free_.empty()) {
        out.push_back(free_.back());
        free_.pop_back();
      } else if (touched_ < capacity_) {
        out.push_back(arena_ + touched_++ * kPageSize);
      } else if (!reclaim_one_locked()) {
        break;
      }
    }
    if (!out.empty() || !wait || stopped_) break;
    lk.unlock();
    pressure();
    lk.lock();
    freed_.wait_for(lk, std::chrono::milliseconds(50));
  }
  in_use_ += out.size();
  return out;
}

void PageCache::release(std::vector<uint8_t*>& bufs) {
  if (bufs.empty()) return;
  {
    std::lock_guard lk(pool_mu_);
    free_.insert(free_.end(), bufs.begin(), bufs.end());
    in_use_ -= bufs.size();
  }
  bufs.clear();
  freed_.notify_all();
}

// Frees the oldest clean page not read since the last pass (second chance); skips files
// whose lock is busy. Two rounds: the first may only clear the marks. pool_mu_ held.
bool PageCache::reclaim_one_locked() {
  for (size_t tries = 2 * lru_.size(); tries > 0 && !lru_.empty(); tries--) {
    auto it = lru_.begin();
    auto [f, idx] = *it;
    std::unique_lock fl(f->mu_, std::try_to_lock);
    if (!fl) {
      lru_.splice(lru_.end(), lru_, it);
      continue;
    }
    auto pit = f->pages_.find(idx);
    if (pit->second.referenced) {
      pit->second.referenced = false;
      lru_.splice(lru_.end(), lru_, it);
      continue;
    }
    free_.push_back(pit->second.buf);
    in_use_--;
    lru_.erase(it);
    f->pages_.erase(pit);
    n_.evictions++;
    return true;
  }
  return false;
}

// f.mu_ held.
void PageCache::to_clean(CachedFile& f, uint64_t index, Page& p) {
  p.state = State::kClean;
  std::lock_guard lk(pool_mu_);
  p.lru = lru_.insert(lru_.end(), {&f, index});
}

void PageCache::count_clean(CachedFile& f) {
  dirty_pages_--;
  if (--f.dirty_ == 0) f.first_dirty_ns_ = 0;
}

// A clean page is written. f.mu_ held.
void PageCache::to_dirty(CachedFile& f, uint64_t index, Page& p, int64_t now_ns) {
  {
    std::lock_guard lk(pool_mu_);
    lru_.erase(p.lru);
  }
  p.state = State::kDirty;
  count_dirty(f, index, now_ns);
}

void PageCache::count_dirty(CachedFile& f, uint64_t index, int64_t now_ns) {
  f.dirty_idx_.insert(index);
  dirty_pages_++;
  if (f.dirty_++ == 0) f.first_dirty_ns_ = now_ns;
}

// f.mu_ held, no flush active.
uint64_t PageCache::drop_page(CachedFile& f, std::map<uint64_t, Page>::iterator it) {
  Page& p = it->second;
  uint64_t reserved = p.reserved;
  f.reserved_ -= reserved;
  std::lock_guard lk(pool_mu_);
  if (p.state == State::kClean) lru_.erase(p.lru);
  else count_clean(f);
  if (p.state == State::kDirty) f.dirty_idx_.erase(it->first);
  free_.push_back(p.buf);
  in_use_--;
  f.pages_.erase(it);
  return reserved;
}

// Drops pages in [first, last). f.mu_ held, no flush active.
uint64_t PageCache::drop_range_locked(CachedFile& f, uint64_t first, uint64_t last) {
  uint64_t released = 0;
  auto it = f.pages_.lower_bound(first);
  while (it != f.pages_.end() && it->first < last) released += drop_page(f, it++);
  freed_.notify_all();
  return released;
}

void PageCache::pressure() {
  if (pressure_hook_) pressure_hook_();
}

}  // namespace pmemfuse::mm
