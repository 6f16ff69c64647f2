// fs/space.cc: bitmap scan at mount and transactional allocate/free.
#include "fs/space.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "fs/verify.h"

namespace pmemfuse::fs {

Space::Space(mm::Region& region, const DiskSuper& sb)
    : region_(region),
      bitmap_start_(sb.bitmap_start),
      bitmap_blocks_(sb.bitmap_blocks),
      block_count_(sb.block_count),
      slack_(std::min<uint64_t>(sb.block_count / 64, 1024)) {}

bool Space::reserve(uint64_t n) {
  uint64_t cur = reserved_.load();
  do {
    uint64_t free = alloc_.free_blocks();
    if (free < cur + n + slack_) return false;
  } while (!reserved_.compare_exchange_weak(cur, cur + n));
  return true;
}

void Space::unreserve(uint64_t n) { reserved_ -= n; }

uint64_t Space::reservable() const {
  uint64_t a = available();
  return a > slack_ ? a - slack_ : 0;
}

uint64_t Space::available() const {
  uint64_t free = alloc_.free_blocks(), r = reserved_.load();
  return free > r ? free - r : 0;
}

bool Space::bit(uint64_t b) const {
  const uint8_t* bits = region_.at((bitmap_start_ + b / kBitsPerBitmapBlock) * kBlockSize) +
                        sizeof(DiskBitmapHeader);
  uint64_t i = b % kBitsPerBitmapBlock;
  return bits[i / 8] & (1u << (i % 8));
}

Status Space::load(const Progress& progress) {
  for (uint64_t i = 0; i < bitmap_blocks_; i++) {
    PF_CHECK(verify_bitmap_block(region_.at((bitmap_start_ + i) * kBlockSize),
                                 bitmap_start_ + i, i, "block bitmap"));
  }
  ProgressPhase ph(progress, "scanning free space", block_count_);
  uint64_t run_start = 0;
  bool in_run = false;
  for (uint64_t b = 0; b < block_count_;) {
    // A 64-bit word that only continues the current state (all free inside a free run,
    // all used outside one) is skipped whole: a mostly empty 1 TiB device scans in
    // milliseconds instead of a second.
    uint64_t i = b % kBitsPerBitmapBlock;
    if (i == 0) ph.set(b);
    if (i % 64 == 0 && b + 64 <= block_count_) {
      uint64_t word;
      std::memcpy(&word, region_.at((bitmap_start_ + b / kBitsPerBitmapBlock) * kBlockSize) +
                             sizeof(DiskBitmapHeader) + i / 8, sizeof word);
      if (word == (in_run ? 0 : ~0ull)) {
        b += 64;
        continue;
      }
    }
    bool used = bit(b);
    if (!used && !in_run) {
      run_start = b;
      in_run = true;
    } else if (used && in_run) {
      alloc_.add_free({run_start, b - run_start});
      in_run = false;
    }
    b++;
  }
  if (in_run) alloc_.add_free({run_start, block_count_ - run_start});
  return {};
}

Result<std::vector<mm::Run>> Space::alloc(Tx& tx, uint64_t n, uint64_t goal, bool from_reserve) {
  if (!from_reserve && available() < n) return make_error(Errc::kNoSpace, "no free blocks");
  PF_TRY(runs, alloc_.alloc(n, goal));
  for (const mm::Run& r : runs) tx.set_bits(bitmap_start_, r.start, r.len);
  tx.on_abort([this, runs] { alloc_.free(runs); });
  return runs;
}

Result<mm::Run> Space::alloc_contig(Tx& tx, uint64_t n, uint64_t align) {
  PF_TRY(r, alloc_.alloc_contig(n, align));
  tx.set_bits(bitmap_start_, r.start, r.len);
  tx.on_abort([this, r] { alloc_.free({r}); });
  return r;
}

void Space::free(Tx& tx, mm::Run r) {
  if (r.len == 0) return;
  tx.clear_bits(bitmap_start_, r.start, r.len);
  tx.mark_frees_blocks();
  tx.on_commit([this, r] { alloc_.free({r}); });
}

}  // namespace pmemfuse::fs
