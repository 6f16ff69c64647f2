// fs/buffered.cc: the buffered data path. Regular files are read and written through the
// DRAM page cache (mm::PageCache); dirty pages go back to pmem in bounded transactions,
// data persisted before the metadata that exposes it, by fsync, sync, the flusher thread
// (age and memory pressure) and unmount. Lock order in filesystem.h.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "fs/filesystem.h"

namespace pmemfuse::fs {
namespace {

constexpr size_t kWritebackRun = 256;  // pages per inode lock hold: 1 MiB

uint64_t mono_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

mm::CachedFileRef Filesystem::cache_of(Inode& i) {
  if (!cache_ || i.dax) return nullptr;
  // Only regular files are cached. Found without i.mu, which writeback holds while it
  // stores a run: a writer must not wait for that.
  if (auto f = cache_->find(i.ino)) return f;
  std::shared_lock lk(i.mu);
  if (!S_ISREG(i.d.mode)) return nullptr;
  return cache_->open(i.ino, i.d.size);
}

// Where file block `index` lies on media and how many of its bytes hold data: 0 for a
// hole, an unwritten extent or a block past EOF. i.mu held.
uint64_t Filesystem::page_on_media(Inode& i, uint64_t index, const uint8_t** data) {
  const Extent* e = i.map.find(index);
  uint64_t pos = index * kBlockSize;
  if (!e || e->lblk > index || e->unwritten || i.d.size <= pos) return 0;
  *data = region_.at((e->pblk + index - e->lblk) * kBlockSize);
  return std::min(i.d.size - pos, kBlockSize);
}

// A page a write finds uncached: filled from media (when buf is given), and a block
// reserved if it has none, so writeback cannot fail for lack of space. Returns whether it
// reserved.
Result<bool> Filesystem::fill_page(Inode& i, uint64_t index, uint8_t* buf) {
  std::shared_lock lk(i.mu);
  if (buf) {
    const uint8_t* data = nullptr;
    uint64_t valid = page_on_media(i, index, &data);
    if (valid) std::memcpy(buf, data, valid);
    std::memset(buf + valid, 0, kBlockSize - valid);
  }
  const Extent* e = i.map.find(index);
  if (e && e->lblk <= index) return false;
  if (!space_->reserve(1)) return make_error(Errc::kNoSpace, "no free blocks for buffered data");
  return true;
}

Status Filesystem::read_cached(Inode& i, mm::CachedFile& f, uint64_t off, uint64_t size,
                               const std::function<void(const struct iovec*, int)>& sink) {
  auto media = [&](uint64_t index, const uint8_t** data) -> Result<uint64_t> {
    std::shared_lock lk(i.mu);
    return page_on_media(i, index, data);
  };
  return cache_->read(f, off, size, media, sink);
}

Result<uint64_t> Filesystem::write_cached(Inode& i, mm::CachedFile& f, uint64_t off,
                                          const void* data, uint64_t size) {
  auto miss = [&](uint64_t index, uint8_t* buf) { return fill_page(i, index, buf); };
  return cache_->write(f, off, static_cast<const uint8_t*>(data), size, now(), !opts_.kernel_times, miss);
}

Status Filesystem::flush_file(mm::CachedFile& f) {
  mm::FlushBatch b = cache_->take_dirty(f);
  uint64_t t0 = mono_ns();
  InodeRef i;
  Status st;
  if (!b.pages.empty()) {
    auto got = get(f.owner());  // an inode whose pages outlived its last reference is read again
    if (got) i = *got;
    st = got ? write_back(*i, b) : Status(std::move(got.error()));
  }
  space_->unreserve(cache_->finish_flush(f, b, st.ok(), mono_ns() - t0));
  if (i) maybe_drop(i);
  return st;
}

// Writes a batch of frozen pages, one run of consecutive pages at a time (the inode is
// locked per run, so a long writeback does not hold up its readers), up to the size the
// file had when the batch was taken.
Status Filesystem::write_back(Inode& i, const mm::FlushBatch& b) {
  PF_CHECK(writable());
  for (size_t k = 0; k < b.pages.size();) {
    size_t run = 1;
    while (k + run < b.pages.size() && run < kWritebackRun &&
           b.pages[k + run].index == b.pages[k].index + run)
      run++;
    uint64_t lo = b.pages[k].index * kBlockSize;
    uint64_t hi = std::min((b.pages[k].index + run) * kBlockSize, b.size);
    auto copy = [&](uint64_t dev, uint64_t at, uint64_t n) {
      while (n > 0) {  // one piece per cached page
        const mm::FlushPage& p = b.pages[k + (at - lo) / kBlockSize];
        uint64_t in = at % kBlockSize, m = std::min(n, kBlockSize - in);
        region_.write(dev, p.data + in, m);
        dev += m, at += m, n -= m;
      }
    };
    if (hi > lo) {
      std::unique_lock lk(i.mu);
      int64_t mtime = b.mtime_ns ? b.mtime_ns : i.d.mtime_ns;  // none: the kernel keeps it
      PF_TRY(n, write_locked(i, lo, hi - lo, copy, mtime, true));
      if (n < hi - lo)
        return make_error(Errc::kNoSpace, "inode " + std::to_string(i.ino) + ": writeback ran out of space");
    }
    k += run;
  }
  return {};
}

Status Filesystem::sync() {
  if (!cache_) return {};
  Status first;
  for (auto& f : cache_->dirty_files()) {
    Status st = flush_file(*f);
    if (!st && first) first = std::move(st);
  }
  return first;
}

// Before an inode leaves memory: a freed file's pages are dropped, a linked file's kept
// only while dirty (writeback reads the inode again).
void Filesystem::drop_cached(const InodeRef& i) {
  if (!cache_) return;
  bool unlinked;
  {
    std::shared_lock lk(i->mu);
    unlinked = i->d.nlink == 0;
  }
  if (unlinked) space_->unreserve(cache_->discard(i->ino));
  else cache_->forget(i->ino);
}

// Failed writeback is retried; once the filesystem has shut down it cannot succeed, so
// writers waiting for pages are let go.
void Filesystem::writeback_failed() {
  info_.writeback_errors++;
  if (failed_ || read_only_) cache_->stop_waiters();
}

void Filesystem::start_writeback() {
  if (cache_ && !read_only_ && !flusher_.joinable()) flusher_ = std::thread([this] { flusher_loop(); });
}

void Filesystem::stop_flusher() {
  if (!flusher_.joinable()) return;
  {
    std::lock_guard lk(wb_mu_);
    wb_stop_ = true;
  }
  wb_cv_.notify_all();
  flusher_.join();
}

void Filesystem::kick_flusher() {
  if (!flusher_.joinable()) {
    if (!sync()) writeback_failed();
    return;
  }
  {
    std::lock_guard lk(wb_mu_);
    wb_kick_ = true;
  }
  wb_cv_.notify_all();
}

// Wakes on a kick (memory pressure) or a tick; writes back files whose oldest dirty page
// has passed flush_interval, or under pressure, oldest first until half the dirty pages
// are gone.
void Filesystem::flusher_loop() {
  const auto tick = std::chrono::milliseconds(
      opts_.flush_interval_ms ? std::clamp<uint64_t>(opts_.flush_interval_ms / 4, 10, 1000) : 1000);
  std::unique_lock lk(wb_mu_);
  while (!wb_stop_) {
    wb_cv_.wait_for(lk, tick, [&] { return wb_stop_ || wb_kick_; });
    if (wb_stop_) break;
    bool pressed = wb_kick_;
    wb_kick_ = false;
    lk.unlock();
    int64_t due = now() - int64_t(opts_.flush_interval_ms) * 1000000;
    uint64_t target = pressed ? cache_->dirty_pages() / 2 : 0;
    for (auto& f : cache_->dirty_files()) {
      bool old = opts_.flush_interval_ms && f->first_dirty_ns() <= due;
      if (!old && !(pressed && cache_->dirty_pages() > target)) break;
      if (!flush_file(*f)) writeback_failed();
    }
    lk.lock();
  }
}

}  // namespace pmemfuse::fs
