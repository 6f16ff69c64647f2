// mm/dax_window.cc: slot bookkeeping (free list, LRU of unreferenced slots, index by file
// and chunk) and the mmap calls that fill a slot and return it to PROT_NONE.
#include "mm/dax_window.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "mm/region.h"

namespace pmemfuse::mm {
namespace {

constexpr int kReserveFlags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;

uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

std::string where(uint64_t ino, uint64_t chunk) {
  return "dax window: ino " + std::to_string(ino) + " chunk " + std::to_string(chunk);
}

// The bytes runs cover from the chunk start: at least need, contiguous, inside the chunk.
Result<uint64_t> check_runs(const std::vector<DevRun>& runs, uint64_t ino, uint64_t chunk,
                            uint64_t need, uint64_t align) {
  const uint64_t base = chunk * DaxWindows::kSlotSize, end = base + DaxWindows::kSlotSize;
  uint64_t pos = base;
  for (const DevRun& r : runs) {
    if (r.file_off != pos || r.len == 0 || r.len > end - pos)
      return make_error(Errc::kInvalid,
                        where(ino, chunk) + ": run at file offset " + std::to_string(r.file_off) +
                            " (" + std::to_string(r.len) + " bytes) does not continue at " +
                            std::to_string(pos) + " within the chunk");
    // Device-dax maps nothing smaller than its alignment; a 4 KiB tail of the last run is
    // fine for image files, whose granularity is the page.
    if (r.file_off % align || r.dev_off % align || round_up(r.len, kPageSize) % align)
      return make_error(Errc::kNotSupported, where(ino, chunk) + ": run at device offset " +
                                                 std::to_string(r.dev_off) + " is not aligned to " +
                                                 std::to_string(align) + " bytes");
    pos += r.len;
  }
  if (pos - base < need)
    return make_error(Errc::kInvalid, where(ino, chunk) + ": runs cover " +
                                          std::to_string(pos - base) + " of " +
                                          std::to_string(need) + " bytes");
  return pos - base;
}

}  // namespace

Result<std::unique_ptr<DaxWindows>> DaxWindows::create(int fd, uint64_t size, uint64_t align,
                                                       bool writable) {
  if (size < kSlotSize)
    return make_error(Errc::kInvalid,
                      "dax window: " + std::to_string(size) + " bytes is less than one 2 MiB slot");
  if (align < kPageSize || align > kSlotSize || (align & (align - 1)))
    return make_error(Errc::kInvalid, "dax window: device alignment " + std::to_string(align) +
                                          " is not a power of two from 4 KiB to 2 MiB");
  const uint64_t span = size / kSlotSize * kSlotSize;
  // One slot extra, trimmed off again, so the range starts 2 MiB-aligned: device-dax then
  // maps huge pages into the slots.
  void* p = mmap(nullptr, span + kSlotSize, PROT_NONE, kReserveFlags, -1, 0);
  if (p == MAP_FAILED)
    return make_error(Errc::kNoSpace, "dax window: cannot reserve " + std::to_string(span >> 20) +
                                          " MiB of address space; lower dax_window");
  const auto raw = reinterpret_cast<uintptr_t>(p);
  const uintptr_t start = round_up(raw, kSlotSize);
  if (start > raw) munmap(p, start - raw);
  munmap(reinterpret_cast<void*>(start + span), raw + kSlotSize - start);
  return std::unique_ptr<DaxWindows>(
      new DaxWindows(fd, reinterpret_cast<uint8_t*>(start), span / kSlotSize, align, writable));
}

DaxWindows::DaxWindows(int fd, uint8_t* base, size_t slots, uint64_t align, bool writable)
    : fd_(fd), base_(base), align_(align), writable_(writable), slots_(slots) {
  free_.reserve(slots);
  for (size_t i = slots; i > 0; i--) free_.push_back(i - 1);  // slot 0 is taken first
}

DaxWindows::~DaxWindows() { munmap(base_, slots_.size() * kSlotSize); }

Result<DaxWindows::View> DaxWindows::get(uint64_t ino, uint64_t chunk, uint64_t need,
                                         const RunsFn& runs) {
  if (need == 0 || need > kSlotSize)
    return make_error(Errc::kInvalid, where(ino, chunk) + ": " + std::to_string(need) +
                                          " bytes asked for, not 1 to 2 MiB");
  const Key key{ino, chunk};
  {
    std::lock_guard lk(mu_);
    auto it = index_.find(key);
    if (it != index_.end() && slots_[it->second].len >= need) return hit_locked(it->second);
  }
  // Outside the lock: runs() walks the caller's block map and may take its locks.
  std::vector<DevRun> rv;
  const bool windowable = runs(chunk * kSlotSize, need, &rv);
  std::lock_guard lk(mu_);
  auto it = index_.find(key);
  if (it != index_.end() && slots_[it->second].len >= need) return hit_locked(it->second);
  n_.misses++;
  auto v = miss_locked(key, need, windowable, rv, it);
  if (!v && v.error().code == Errc::kNotSupported) n_.fallbacks++;
  return v;
}

Result<DaxWindows::View> DaxWindows::miss_locked(const Key& key, uint64_t need, bool windowable,
                                                 const std::vector<DevRun>& runs,
                                                 std::map<Key, size_t>::iterator old) {
  const auto [ino, chunk] = key;
  if (!windowable)
    return make_error(Errc::kNotSupported, where(ino, chunk) + ": a hole or unwritten extent");
  PF_TRY(len, check_runs(runs, ino, chunk, need, align_));
  if (old != index_.end()) retire_locked(old->second);  // mapped too short: superseded
  if (free_.empty() && !idle_.empty()) {
    retire_locked(idle_.front());
    n_.reclaims++;
  }
  if (free_.empty())
    return make_error(Errc::kNotSupported, where(ino, chunk) + ": every slot is referenced");
  const size_t i = free_.back();
  free_.pop_back();
  PF_CHECK(map_locked(i, runs, chunk * kSlotSize));
  slots_[i] = Slot{ino, chunk, len, 1, true, {}};
  index_[key] = i;
  return View(this, i, addr(i), len);
}

DaxWindows::View DaxWindows::hit_locked(size_t i) {
  n_.hits++;
  Slot& s = slots_[i];
  if (s.refs++ == 0) idle_.erase(s.idle);
  return View(this, i, addr(i), s.len);
}

Status DaxWindows::map_locked(size_t i, const std::vector<DevRun>& runs, uint64_t base) {
  const int prot = PROT_READ | (writable_ ? PROT_WRITE : 0);
  // MAP_POPULATE: one call sets up the slot's page tables, where the first read would
  // take a fault per 64 KiB (per 4 KiB on a file-backed image that drop_caches reached).
  for (const DevRun& r : runs) {
    void* p = mmap(addr(i) + (r.file_off - base), round_up(r.len, kPageSize), prot,
                   MAP_SHARED | MAP_FIXED | MAP_POPULATE, fd_, off_t(r.dev_off));
    if (p == MAP_FAILED) {
      const int e = errno;
      unmap_locked(i);
      return make_error(Errc::kIo, "dax window: mmap of " + std::to_string(r.len) +
                                       " bytes at device offset " + std::to_string(r.dev_off) +
                                       ": " + std::strerror(e));
    }
  }
  return {};
}

// Caller: the slot is indexed. Referenced, it lives on until its last View goes.
void DaxWindows::retire_locked(size_t i) {
  Slot& s = slots_[i];
  index_.erase({s.ino, s.chunk});
  s.indexed = false;
  if (s.refs > 0) return;
  idle_.erase(s.idle);
  unmap_locked(i);
}

void DaxWindows::unmap_locked(size_t i) {
  slots_[i].len = 0;
  // Fails only when the process is out of mappings; the slot then stays out of use.
  if (mmap(addr(i), kSlotSize, PROT_NONE, kReserveFlags | MAP_FIXED, -1, 0) != MAP_FAILED)
    free_.push_back(i);
}

void DaxWindows::put(size_t i) {
  std::lock_guard lk(mu_);
  Slot& s = slots_[i];
  if (--s.refs > 0) return;
  if (s.indexed)
    s.idle = idle_.insert(idle_.end(), i);
  else
    unmap_locked(i);
}

void DaxWindows::invalidate(uint64_t ino, uint64_t from, uint64_t to) {
  std::lock_guard lk(mu_);
  auto it = index_.lower_bound({ino, from / kSlotSize});
  while (it != index_.end() && it->first.first == ino) {
    const size_t i = (it++)->second;  // retire_locked erases the entry
    const uint64_t lo = slots_[i].chunk * kSlotSize;
    if (lo >= to) break;
    if (lo + round_up(slots_[i].len, kPageSize) <= from) continue;
    retire_locked(i);
    n_.teardowns++;
  }
}

WindowStats DaxWindows::stats() const {
  std::lock_guard lk(mu_);
  WindowStats s = n_;
  s.slots = slots_.size();
  s.mapped = slots_.size() - free_.size();
  return s;
}

DaxWindows::View::View(View&& o) noexcept
    : w_(std::exchange(o.w_, nullptr)), slot_(o.slot_), data_(o.data_), len_(o.len_) {}

DaxWindows::View& DaxWindows::View::operator=(View&& o) noexcept {
  if (this != &o) {
    reset();
    w_ = std::exchange(o.w_, nullptr);
    slot_ = o.slot_;
    data_ = o.data_;
    len_ = o.len_;
  }
  return *this;
}

DaxWindows::View::~View() { reset(); }

void DaxWindows::View::reset() {
  if (w_) w_->put(slot_);
  w_ = nullptr;
}

}  // namespace pmemfuse::mm
