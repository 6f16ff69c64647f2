// mm/dax_window.h: DAX windows. A reserved address range split into 2 MiB slots; a slot
// holds one view of a 2 MiB-aligned chunk of a file, its extents mapped (MAP_FIXED |
// MAP_SHARED) from the device one after another, so a fragmented range reads as one
// contiguous buffer. Mirrors virtiofs's FUSE_SETUPMAPPING / FUSE_REMOVEMAPPING.
//
// Slots are reference-counted by Views and reclaimed least recently used. A slot that is
// not mapped is anonymous PROT_NONE memory, never a hole another mmap could take.
//
// Threading: thread-safe; one mutex, a leaf (runs() is called without it). Contract with
// the filesystem: it keeps a file's block map stable from get() until the View is dropped
// (by holding the inode's lock) and calls invalidate() before blocks under a view are
// freed or moved. Every View must be gone before the DaxWindows is destroyed.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "mm/result.h"

namespace pmemfuse::mm {

// A run of file bytes stored contiguously on the device.
struct DevRun {
  uint64_t file_off;  // bytes, from the start of the file
  uint64_t dev_off;   // bytes, from the start of the device
  uint64_t len;       // bytes
};

struct WindowStats {
  uint64_t slots = 0;      // capacity
  uint64_t mapped = 0;     // slots mapped now, referenced or not
  uint64_t hits = 0;       // gets served by a mapped slot
  uint64_t misses = 0;     // all other gets, fallbacks included
  uint64_t reclaims = 0;   // unreferenced slots taken for another chunk
  uint64_t fallbacks = 0;  // gets answered kNotSupported: the caller uses its plain path
  uint64_t teardowns = 0;  // slots removed by invalidate()
};

class DaxWindows {
 public:
  static constexpr uint64_t kSlotSize = 2ull << 20;

  // Reserves size bytes of address space, rounded down to whole slots, for views of the
  // device behind fd (not owned; it must outlive this). align is the device's mapping
  // granularity: 4096 for image files, the device-dax alignment for /dev/daxX.Y. A chunk
  // is windowed only when every run's file_off and dev_off, and its len rounded up to
  // 4 KiB, are multiples of align. writable: views may be stored to (fd open for writing).
  static Result<std::unique_ptr<DaxWindows>> create(int fd, uint64_t size, uint64_t align,
                                                    bool writable);
  ~DaxWindows();  // unmaps the whole range
  size_t slot_count() const { return slots_.size(); }
  DaxWindows(const DaxWindows&) = delete;
  DaxWindows& operator=(const DaxWindows&) = delete;

  // A reference to a slot; the slot stays mapped while any View of it lives.
  class View {
   public:
    View(View&& o) noexcept;
    View& operator=(View&& o) noexcept;
    View(const View&) = delete;
    View& operator=(const View&) = delete;
    ~View();
    uint8_t* data() const { return data_; }  // the chunk's first byte; store only if writable
    uint64_t len() const { return len_; }    // bytes of the chunk mapped from data()

   private:
    friend class DaxWindows;
    View(DaxWindows* w, size_t slot, uint8_t* data, uint64_t len)
        : w_(w), slot_(slot), data_(data), len_(len) {}
    void reset();

    DaxWindows* w_ = nullptr;  // null once moved from
    size_t slot_ = 0;
    uint8_t* data_ = nullptr;
    uint64_t len_ = 0;
  };

  // Called on a miss: appends the runs covering [file_off, file_off + len), contiguous
  // and in file order, to *out. Returns false when the range cannot be windowed (a hole,
  // an unwritten extent); what it appended is then ignored. A run ending inside a page
  // maps the rest of that page too.
  using RunsFn = std::function<bool(uint64_t file_off, uint64_t len, std::vector<DevRun>* out)>;

  // The view of chunk `chunk` (file offset chunk * kSlotSize) of file ino, covering at
  // least need bytes (1..kSlotSize) from the chunk start. A miss asks runs() for need
  // bytes and maps them into a free slot, or into the least recently used slot nobody
  // references. Errors: kNotSupported (a fallback) when runs() says no, the runs break the
  // alignment rule or every slot is referenced; kInvalid for a bad need or runs that do
  // not cover the range contiguously within the chunk; kIo when mmap fails.
  Result<View> get(uint64_t ino, uint64_t chunk, uint64_t need, const RunsFn& runs);

  // Teardown (truncate, hole punch, unlink, DAX toggle): removes ino's slots whose mapped
  // bytes overlap [from, to), or all of ino's slots. Later gets miss; a slot still
  // referenced is unmapped when its last View goes.
  void invalidate(uint64_t ino, uint64_t from, uint64_t to);
  void invalidate(uint64_t ino) { invalidate(ino, 0, UINT64_MAX); }

  WindowStats stats() const;

 private:
  // Exactly one of: free (len 0, in free_), idle (indexed, refs 0, in idle_), or busy
  // (refs > 0; no longer indexed once invalidated or superseded).
  struct Slot {
    uint64_t ino = 0;
    uint64_t chunk = 0;
    uint64_t len = 0;                  // bytes of the chunk mapped; 0: free
    uint64_t refs = 0;                 // live Views
    bool indexed = false;              // in index_: get() finds it
    std::list<size_t>::iterator idle;  // valid while idle
  };
  using Key = std::pair<uint64_t, uint64_t>;  // (ino, chunk)

  DaxWindows(int fd, uint8_t* base, size_t slots, uint64_t align, bool writable);
  uint8_t* addr(size_t slot) const { return base_ + slot * kSlotSize; }
  View hit_locked(size_t slot);
  Result<View> miss_locked(const Key& key, uint64_t need, bool windowable,
                           const std::vector<DevRun>& runs, std::map<Key, size_t>::iterator old);
  Status map_locked(size_t slot, const std::vector<DevRun>& runs, uint64_t base);
  void retire_locked(size_t slot);  // drops it from the index; unmaps it unless referenced
  void unmap_locked(size_t slot);   // back to PROT_NONE and onto free_
  void put(size_t slot);            // a View goes

  const int fd_;
  uint8_t* const base_;
  const uint64_t align_;
  const bool writable_;

  mutable std::mutex mu_;  // a leaf; guards everything below
  std::vector<Slot> slots_;
  std::vector<size_t> free_;  // unmapped slots
  std::list<size_t> idle_;    // mapped and unreferenced, least recently used first
  std::map<Key, size_t> index_;
  WindowStats n_;
};

}  // namespace pmemfuse::mm
