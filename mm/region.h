// mm/region.h: the media, mapped. A Region owns the mapping and its descriptor (RAII) and
// is the only way to store to media: write()/zero() go through the Persister, fence()
// makes them durable. Reads use plain pointers. Thread-safe for disjoint ranges; callers
// order overlapping stores themselves.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "mm/persist.h"
#include "mm/result.h"

namespace pmemfuse::mm {

inline constexpr uint64_t kPageSize = 4096;
inline constexpr uint64_t kDevDaxDefaultAlign = 2ull << 20;

struct RegionOptions {
  bool read_only = false;
  // Map copy-on-write: stores stay in this process and never reach the device (fsck -n
  // replays the journal this way without changing the image).
  bool private_copy = false;
  // Non-zero: apply device-dax rules to a regular file (mapping length and address aligned
  // to this, no resizing), so the device-dax code paths run on machines without one.
  uint64_t emulate_devdax_align = 0;
};

class Region {
 public:
  // Maps an image file or a /dev/daxX.Y device. The usable size is the file size, or for
  // device-dax the sysfs size, rounded down to the alignment.
  static Result<Region> open(const std::string& path, const RegionOptions& opts);
  // Creates or extends a regular image file to size bytes (mkfs --size).
  static Status create_file(const std::string& path, uint64_t size);
  // Unit tests and crash simulation: an anonymous mapping with the given persistence.
  static Result<Region> anonymous(uint64_t size, std::unique_ptr<Persister> p = nullptr);
  // An anonymous region holding a copy of size bytes at src (a crash image, a snapshot).
  static Result<Region> anonymous_copy(const uint8_t* src, uint64_t size);

  Region(Region&& o) noexcept;
  Region& operator=(Region&& o) noexcept;
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  ~Region();  // unmaps; the descriptor closes with it

  uint8_t* base() const { return base_; }
  uint64_t size() const { return size_; }
  uint64_t align() const { return align_; }  // mapping granularity; device-dax alignment
  bool is_devdax() const { return devdax_; }
  bool read_only() const { return read_only_; }
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  FlushMode flush_mode() const { return flush_mode_; }

  const uint8_t* at(uint64_t off) const { return base_ + off; }
  void write(uint64_t off, const void* src, size_t n) {
    stored_->fetch_add(n, std::memory_order_relaxed);
    persister_->store(base_ + off, src, n);
  }
  void zero(uint64_t off, size_t n) {
    stored_->fetch_add(n, std::memory_order_relaxed);
    persister_->fill(base_ + off, 0, n);
  }
  // Bytes stored to media through this region since it was opened: data, metadata and
  // journal together (the device's side of write amplification).
  uint64_t bytes_stored() const { return stored_->load(std::memory_order_relaxed); }
  void fence() { persister_->fence(); }
  Persister& persister() { return *persister_; }
  // Crash simulation swaps the backend before the filesystem is opened on the region.
  void set_persister(std::unique_ptr<Persister> p) { persister_ = std::move(p); }

 private:
  Region() = default;
  void reset();

  uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint64_t map_len_ = 0;  // length passed to munmap (includes alignment slack)
  uint8_t* map_base_ = nullptr;
  uint64_t align_ = kPageSize;
  int fd_ = -1;
  bool devdax_ = false;
  bool read_only_ = false;
  FlushMode flush_mode_ = FlushMode::kCpu;
  std::string path_;
  std::unique_ptr<Persister> persister_;
  std::unique_ptr<std::atomic<uint64_t>> stored_ = std::make_unique<std::atomic<uint64_t>>(0);
};

// Parses "2G", "512M", "4096", "64k" into bytes.
Result<uint64_t> parse_size(const std::string& s);
// A device-dax mapping alignment: a size that is a power of two of at least 4 KiB;
// empty means kDevDaxDefaultAlign.
Result<uint64_t> parse_alignment(const std::string& s);

}  // namespace pmemfuse::mm
