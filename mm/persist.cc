// mm/persist.cc: libpmem-backed persistence. In kCpu mode stores use libpmem's
// non-temporal copy and flush instructions; in kMsync mode each store is followed by
// pmem_msync of the touched pages, so fence() has nothing left to do.
#include "mm/persist.h"

#include <libpmem.h>

#include <cstring>

namespace pmemfuse::mm {
namespace {

class CpuPersister final : public Persister {
 public:
  void store(void* dst, const void* src, size_t n) override {
    pmem_memcpy(dst, src, n, PMEM_F_MEM_NODRAIN);
  }
  void fill(void* dst, int c, size_t n) override { pmem_memset(dst, c, n, PMEM_F_MEM_NODRAIN); }
  void fence() override { pmem_drain(); }
};

class MsyncPersister final : public Persister {
 public:
  void store(void* dst, const void* src, size_t n) override {
    std::memcpy(dst, src, n);
    pmem_msync(dst, n);
  }
  void fill(void* dst, int c, size_t n) override {
    std::memset(dst, c, n);
    pmem_msync(dst, n);
  }
  void fence() override {}
};

}  // namespace

std::unique_ptr<Persister> make_pmem_persister(FlushMode mode) {
  if (mode == FlushMode::kMsync) return std::make_unique<MsyncPersister>();
  return std::make_unique<CpuPersister>();
}

}  // namespace pmemfuse::mm
