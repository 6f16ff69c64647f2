// mm/allocator.cc: free runs in an ordered map; first fit from a goal, 2 MiB alignment
// for large requests.
#include "mm/allocator.h"

#include <string>

namespace pmemfuse::mm {

void BlockAllocator::add_free(Run r) {
  std::lock_guard lk(mu_);
  add_locked(r);
}

void BlockAllocator::add_locked(Run r) {
  if (r.len == 0) return;
  free_ += r.len;
  auto next = runs_.lower_bound(r.start);
  if (next != runs_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == r.start) {
      r.start = prev->first;
      r.len += prev->second;
      runs_.erase(prev);
    }
  }
  if (next != runs_.end() && r.start + r.len == next->first) {
    r.len += next->second;
    runs_.erase(next);
  }
  runs_[r.start] = r.len;
}

void BlockAllocator::take_locked(uint64_t start, uint64_t len) {
  auto it = std::prev(runs_.upper_bound(start));
  uint64_t rs = it->first, rl = it->second;
  runs_.erase(it);
  if (start > rs) runs_[rs] = start - rs;
  if (start + len < rs + rl) runs_[start + len] = rs + rl - start - len;
  free_ -= len;
}

bool BlockAllocator::take_aligned_locked(uint64_t n, uint64_t align, Run* out) {
  for (auto& [s, l] : runs_) {
    uint64_t a = (s + align - 1) / align * align;
    if (a + n <= s + l) {
      *out = {a, n};
      take_locked(a, n);
      return true;
    }
  }
  return false;
}

Result<std::vector<Run>> BlockAllocator::alloc(uint64_t n, uint64_t goal) {
  if (n == 0) return make_error(Errc::kInvalid, "allocation of 0 blocks");
  std::lock_guard lk(mu_);
  if (n > free_) {
    return make_error(Errc::kNoSpace, "need " + std::to_string(n) + " blocks, " +
                                          std::to_string(free_) + " free");
  }
  std::vector<Run> out;
  if (n >= kHugeBlocks) {
    Run r;
    if (take_aligned_locked(n, kHugeBlocks, &r)) return std::vector<Run>{r};
  }
  uint64_t want = n, cursor = goal;
  while (want > 0) {
    auto it = runs_.upper_bound(cursor);
    if (it != runs_.begin() && std::prev(it)->first + std::prev(it)->second > cursor) --it;
    if (it == runs_.end()) {
      cursor = 0;  // wrap around: free_ >= n guarantees enough runs before the goal
      continue;
    }
    uint64_t start = std::max(it->first, cursor);
    uint64_t len = std::min(want, it->first + it->second - start);
    take_locked(start, len);
    out.push_back({start, len});
    want -= len;
    cursor = start + len;
  }
  return out;
}

Result<Run> BlockAllocator::alloc_contig(uint64_t n, uint64_t align) {
  if (n == 0) return make_error(Errc::kInvalid, "allocation of 0 blocks");
  std::lock_guard lk(mu_);
  Run r;
  if (!take_aligned_locked(n, align ? align : 1, &r)) {
    return make_error(Errc::kNoSpace, "no free run of " + std::to_string(n) + " blocks");
  }
  return r;
}

void BlockAllocator::free(const std::vector<Run>& runs) {
  std::lock_guard lk(mu_);
  for (const Run& r : runs) add_locked(r);
}

uint64_t BlockAllocator::free_blocks() const {
  std::lock_guard lk(mu_);
  return free_;
}

uint64_t BlockAllocator::count_fits(uint64_t n, uint64_t align) const {
  std::lock_guard lk(mu_);
  uint64_t fits = 0;
  for (auto& [s, l] : runs_) {
    uint64_t a = (s + align - 1) / align * align;
    if (a + n <= s + l) fits += (s + l - a) / n;
  }
  return fits;
}

bool BlockAllocator::is_free(uint64_t block) const {
  std::lock_guard lk(mu_);
  auto it = runs_.upper_bound(block);
  if (it == runs_.begin()) return false;
  --it;
  return block < it->first + it->second;
}

}  // namespace pmemfuse::mm
