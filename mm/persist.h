// mm/persist.h: the persistence primitives. Every store that must survive a crash goes
// through a Persister; this is the one seam where a test swaps in a recording backend
// that logs stores, flushes and fences for crash simulation. Implementations are
// thread-safe: calls from many threads may interleave.
#pragma once

#include <cstddef>
#include <memory>

namespace pmemfuse::mm {

class Persister {
 public:
  virtual ~Persister() = default;
  // Copies n bytes to media at dst and starts their write-back; not durable until fence().
  virtual void store(void* dst, const void* src, size_t n) = 0;
  // Sets n bytes at dst to c; same durability rule as store().
  virtual void fill(void* dst, int c, size_t n) = 0;
  // Orders and completes every store issued by this thread before it.
  virtual void fence() = 0;
};

enum class FlushMode {
  kCpu,    // cache-line flush instructions (real pmem, or memory with no backing store)
  kMsync,  // msync(2): the mapping is page cache over a block device or file
};

// libpmem-backed primitives.
std::unique_ptr<Persister> make_pmem_persister(FlushMode mode);

}  // namespace pmemfuse::mm
