// mm/recording.h: a Persister that logs every store and fence made to the media, for
// crash simulation. Stores still reach the mapping at once (the code above reads its own
// writes); the log says which of them a power failure could have lost: everything since
// the last fence.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "mm/persist.h"

namespace pmemfuse::mm {

struct PersistEvent {
  enum class Kind : uint8_t { kStore, kFence };
  Kind kind = Kind::kStore;
  uint64_t off = 0;           // byte offset in the region (stores only)
  std::vector<uint8_t> data;  // the bytes stored
};

// Shared between the persister (owned by the Region) and the test that reads it.
class PersistLog {
 public:
  void add(PersistEvent e);
  uint64_t size() const;
  // Copies out the events recorded so far.
  std::vector<PersistEvent> events() const;

 private:
  mutable std::mutex mu_;
  std::vector<PersistEvent> events_;
};

// Fences are recorded as global ordering points: the simulation is of one writer thread,
// or of code that fences on behalf of every thread whose stores it publishes.
class RecordingPersister final : public Persister {
 public:
  RecordingPersister(uint8_t* base, uint64_t size, std::shared_ptr<PersistLog> log);
  void store(void* dst, const void* src, size_t n) override;
  void fill(void* dst, int c, size_t n) override;
  void fence() override;

 private:
  uint64_t offset_of(const void* dst, size_t n) const;

  uint8_t* base_;
  uint64_t size_;
  std::shared_ptr<PersistLog> log_;
};

}  // namespace pmemfuse::mm
