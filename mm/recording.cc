// mm/recording.cc: the recording persistence backend.
#include "mm/recording.h"

#include <cstdlib>
#include <cstring>

namespace pmemfuse::mm {

void PersistLog::add(PersistEvent e) {
  std::lock_guard lk(mu_);
  events_.push_back(std::move(e));
}

uint64_t PersistLog::size() const {
  std::lock_guard lk(mu_);
  return events_.size();
}

std::vector<PersistEvent> PersistLog::events() const {
  std::lock_guard lk(mu_);
  return events_;
}

RecordingPersister::RecordingPersister(uint8_t* base, uint64_t size, std::shared_ptr<PersistLog> log)
    : base_(base), size_(size), log_(std::move(log)) {}

// A store outside the region is a bug in the caller that no crash image could show.
uint64_t RecordingPersister::offset_of(const void* dst, size_t n) const {
  auto p = static_cast<const uint8_t*>(dst);
  if (p < base_ || p + n > base_ + size_) std::abort();
  return p - base_;
}

void RecordingPersister::store(void* dst, const void* src, size_t n) {
  uint64_t off = offset_of(dst, n);
  std::memcpy(dst, src, n);
  auto s = static_cast<const uint8_t*>(src);
  log_->add({PersistEvent::Kind::kStore, off, std::vector<uint8_t>(s, s + n)});
}

void RecordingPersister::fill(void* dst, int c, size_t n) {
  uint64_t off = offset_of(dst, n);
  std::memset(dst, c, n);
  log_->add({PersistEvent::Kind::kStore, off, std::vector<uint8_t>(n, static_cast<uint8_t>(c))});
}

void RecordingPersister::fence() { log_->add({PersistEvent::Kind::kFence, 0, {}}); }

}  // namespace pmemfuse::mm
