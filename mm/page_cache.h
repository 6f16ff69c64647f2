// mm/page_cache.h: the bounded DRAM write-back cache. 4 KiB pages per file (a CachedFile,
// keyed by an owner number), with dirty tracking, a logical size and clean-page reclaim.
// It knows bytes and pages only: the filesystem fills pages on a miss and persists the
// dirty pages it is handed.
//
// Double buffering: take_dirty() hands a flusher the file's dirty pages and freezes their
// buffers. A write that touches a frozen page copies it into a second buffer and goes on,
// so writers never wait for pmem; finish_flush() frees the superseded buffers and marks
// the rest clean.
//
// Memory: every buffer, second buffers included, comes from one arena of capacity pages,
// reserved at construction and touched on first use. Resident memory stays within the
// capacity plus the index (about 100 bytes per cached page).
//
// Threading: thread-safe. Lock order: CachedFile::mu_ -> pool_mu_; files_mu_ is a leaf
// (forget() only try-locks a file under it), so callers may look files up while holding
// their own locks. Buffers are acquired before a file is locked; reclaim takes a file's
// mu_ with try_lock while holding pool_mu_, so it never waits against the order.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <unordered_map>
#include <vector>

#include "mm/result.h"

namespace pmemfuse::mm {

struct CacheStats {
  uint64_t capacity_pages = 0;
  uint64_t cached_pages = 0;
  uint64_t dirty_pages = 0;       // including pages being flushed
  uint64_t hits = 0;              // pages read from DRAM
  uint64_t misses = 0;            // pages read straight from pmem
  uint64_t app_bytes = 0;         // bytes applications wrote into the cache
  uint64_t pmem_bytes = 0;        // bytes written back to pmem
  uint64_t flush_batches = 0;     // take_dirty snapshots written back
  uint64_t flush_ns_total = 0;
  uint64_t flush_ns_max = 0;
  uint64_t second_buffers = 0;    // writes that met a page being flushed
  uint64_t evictions = 0;         // clean pages reclaimed for new ones
  uint64_t pressure_waits = 0;    // writers that waited for the flusher to free pages
};

class PageCache;

// One file's pages. Obtained from PageCache::open; all access goes through PageCache.
class CachedFile {
 public:
  CachedFile(uint64_t owner, uint64_t size) : owner_(owner), size_(size) {}
  uint64_t owner() const { return owner_; }
  // Logical size: the media size plus what buffered writes and truncates changed.
  uint64_t size() const { return size_.load(std::memory_order_acquire); }
  // Time of the last write not yet flushed; 0 when none.
  int64_t mtime_ns() const { return mtime_ns_.load(std::memory_order_acquire); }
  bool has_dirty() const { return dirty_.load(std::memory_order_acquire) > 0; }
  // Pages whose blocks the filesystem reserved: not on media yet.
  uint64_t reserved_pages() const { return reserved_.load(std::memory_order_acquire); }
  int64_t first_dirty_ns() const { return first_dirty_ns_.load(std::memory_order_acquire); }

 private:
  friend class PageCache;
  // kClean pages sit in the reclaim list. kFlushing: handed to the flusher, buf frozen.
  // kRewritten: written while flushing; frozen holds what the flusher has.
  enum class State : uint8_t { kClean, kDirty, kFlushing, kRewritten };
  struct Page {
    uint8_t* buf = nullptr;     // current contents
    uint8_t* frozen = nullptr;  // kRewritten only
    State state = State::kDirty;
    bool reserved = false;      // the filesystem holds a block reservation for it
    bool referenced = false;    // read since reclaim last passed it
    std::list<std::pair<CachedFile*, uint64_t>>::iterator lru;  // kClean only
  };

  const uint64_t owner_;
  std::mutex mu_;                    // before PageCache::pool_mu_
  std::condition_variable idle_;     // flush_active_ cleared
  std::map<uint64_t, Page> pages_;   // guarded by mu_
  std::set<uint64_t> dirty_idx_;     // the kDirty pages, so a flush need not walk them all; mu_
  bool flush_active_ = false;        // guarded by mu_
  bool dead_ = false;                // forgotten or discarded: takes no pages; guarded by mu_
  std::atomic<uint64_t> size_;       // written under mu_
  std::atomic<int64_t> mtime_ns_{0};  // written under mu_
  std::atomic<uint64_t> dirty_{0};    // written under mu_
  std::atomic<uint64_t> reserved_{0};  // written under mu_
  std::atomic<int64_t> first_dirty_ns_{0};  // written under mu_
};
using CachedFileRef = std::shared_ptr<CachedFile>;

// Supplies a page a write finds uncached: fills buf (null when the write covers the whole
// page) and returns whether it reserved a block for the page. Writes also call it,
// with null, for a clean page they dirty (it may have been read from a hole).
using MissFn = std::function<Result<bool>(uint64_t index, uint8_t* buf)>;
// Where a page the cache does not hold lies on media, for a read: sets *data and returns
// how many bytes of it are valid (the rest reads as zeros; 0: all of it).
using MediaFn = std::function<Result<uint64_t>(uint64_t index, const uint8_t** data)>;
using SinkFn = std::function<void(const struct iovec*, int)>;

struct FlushPage {
  uint64_t index;
  const uint8_t* data;  // frozen until finish_flush
};
struct FlushBatch {
  std::vector<FlushPage> pages;  // in index order
  uint64_t size = 0;             // the file's logical size when taken
  int64_t mtime_ns = 0;          // its last write time when taken; 0: none
};

class PageCache {
 public:
  // Reserves (without touching) capacity_pages of address space; at least kMinPages.
  static Result<std::unique_ptr<PageCache>> create(uint64_t capacity_pages);
  static constexpr uint64_t kMinPages = 64;
  ~PageCache();
  PageCache(const PageCache&) = delete;
  PageCache& operator=(const PageCache&) = delete;

  // The owner's file, created with the given logical size when absent.
  CachedFileRef open(uint64_t owner, uint64_t size);
  CachedFileRef find(uint64_t owner);
  // Drops a file that has nothing dirty (its inode leaves memory). False if it is dirty
  // or busy; it then stays.
  bool forget(uint64_t owner);
  // Drops a file and all its pages, dirty ones too (its inode was freed). Returns the
  // number of pages that held block reservations.
  uint64_t discard(uint64_t owner);

  // Copies src into [off, off + len), waiting for free pages when every page is dirty.
  // now_ns ages the dirty pages; with touch_mtime it is also the file's new mtime.
  // Returns the bytes copied: short when miss fails after the first page.
  Result<uint64_t> write(CachedFile& f, uint64_t off, const uint8_t* src, uint64_t len,
                         int64_t now_ns, bool touch_mtime, const MissFn& miss);
  // Hands [off, off + len), clipped at the logical size, to sink (under the file's lock,
  // which keeps truncate and hole punching away from the media it points into). Pages not
  // cached are read straight from media and not kept: the kernel's page cache keeps read
  // data already, so only written pages are worth DRAM here.
  Status read(CachedFile& f, uint64_t off, uint64_t len, const MediaFn& media, const SinkFn& sink);

  // Waits for a running flush of f, then freezes its dirty pages. Exactly one
  // finish_flush must follow, also for an empty batch.
  FlushBatch take_dirty(CachedFile& f);
  // ok: the batch reached pmem and its pages are clean unless written meanwhile; else they
  // stay dirty. Returns the number of pages whose block reservations are released.
  uint64_t finish_flush(CachedFile& f, const FlushBatch& b, bool ok, uint64_t ns);

  // Locks f against writes and flushes (waiting for a running flush to end) while the
  // filesystem changes the file's range behind the cache.
  std::unique_lock<std::mutex> quiesce(CachedFile& f);
  // Under quiesce: makes [lo, hi) read as zeros (dropping whole pages) and sets the
  // logical size. Returns the reservations released.
  uint64_t zero_locked(CachedFile& f, uint64_t lo, uint64_t hi);
  void set_size_locked(CachedFile& f, uint64_t size);
  // Under quiesce: the filesystem stored mtime t on media. Cached writes still to come
  // carry it; with none left, the cache has no time of its own any more.
  void set_mtime_locked(CachedFile& f, int64_t t);

  // Owners with dirty pages, oldest first dirtied first.
  std::vector<CachedFileRef> dirty_files();
  uint64_t dirty_pages() const { return dirty_pages_.load(std::memory_order_relaxed); }
  uint64_t capacity() const { return capacity_; }
  // Called (without locks held) when writers wait for pages or dirty pages pass half the
  // capacity: the flusher's wake-up. Set before use.
  void set_pressure_hook(std::function<void()> fn) { pressure_hook_ = std::move(fn); }
  // Writers waiting for pages give up (kIo): writeback has stopped for good.
  void stop_waiters();
  CacheStats stats() const;

 private:
  using Page = CachedFile::Page;
  using State = CachedFile::State;
  using Lru = std::list<std::pair<CachedFile*, uint64_t>>;
  PageCache(uint64_t capacity_pages, uint8_t* arena);
  std::vector<uint8_t*> acquire(uint64_t n, bool wait);
  void release(std::vector<uint8_t*>& bufs);
  bool reclaim_one_locked();
  void to_clean(CachedFile& f, uint64_t index, Page& p);
  void to_dirty(CachedFile& f, uint64_t index, Page& p, int64_t now_ns);
  void count_dirty(CachedFile& f, uint64_t index, int64_t now_ns);
  void count_clean(CachedFile& f);
  uint64_t drop_page(CachedFile& f, std::map<uint64_t, Page>::iterator it);
  uint64_t drop_range_locked(CachedFile& f, uint64_t first, uint64_t last);
  Status write_some(CachedFile& f, uint64_t off, const uint8_t* src, uint64_t len, int64_t now_ns,
                    bool touch_mtime, const MissFn& miss, std::vector<uint8_t*>& spare,
                    uint64_t* done);
  void write_page(CachedFile& f, uint64_t index, Page& p, uint64_t at, const uint8_t* src, uint64_t n,
                  int64_t now_ns, std::vector<uint8_t*>& spare);
  uint64_t wait_and_discard(const CachedFileRef& f);
  void pressure();

  const uint64_t capacity_;
  uint8_t* const arena_;

  std::mutex files_mu_;  // a leaf
  std::unordered_map<uint64_t, CachedFileRef> files_;  // guarded by files_mu_

  mutable std::mutex pool_mu_;  // a leaf
  std::condition_variable freed_;  // pages returned to the pool
  std::vector<uint8_t*> free_;     // guarded by pool_mu_
  uint64_t touched_ = 0;           // arena pages ever handed out; guarded by pool_mu_
  uint64_t in_use_ = 0;            // buffers outside the pool; guarded by pool_mu_
  Lru lru_;                        // clean pages, oldest first; guarded by pool_mu_
  bool stopped_ = false;           // guarded by pool_mu_
  std::function<void()> pressure_hook_;

  std::atomic<uint64_t> dirty_pages_{0};
  struct Counters {
    std::atomic<uint64_t> hits{0}, misses{0}, app_bytes{0}, pmem_bytes{0}, flush_batches{0},
        flush_ns_total{0}, flush_ns_max{0}, second_buffers{0}, evictions{0}, pressure_waits{0};
  } n_;
};

}  // namespace pmemfuse::mm
