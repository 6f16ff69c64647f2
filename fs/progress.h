// fs/progress.h: progress of long operations (mkfs, fsck's inode pass, mount's free-space
// scan), handed to the caller, which decides whether and how to show it (tools/progress.h
// draws it on a terminal and nowhere else).
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>

namespace pmemfuse::fs {

// Called with the phase, the units done and the phase's total; done == total ends it.
using Progress = std::function<void(std::string_view phase, uint64_t done, uint64_t total)>;

// One phase's counter; reports every step (the renderer limits how often it draws) and
// its end.
class ProgressPhase {
 public:
  ProgressPhase(const Progress& p, std::string_view phase, uint64_t total)
      : p_(p), phase_(phase), total_(total) {}
  ProgressPhase(const ProgressPhase&) = delete;
  ProgressPhase& operator=(const ProgressPhase&) = delete;
  ~ProgressPhase() { set(total_); }
  void set(uint64_t done) {
    if (p_ && done <= total_ && !ended_) p_(phase_, done, total_);
    ended_ = ended_ || done >= total_;
  }

 private:
  const Progress& p_;
  std::string_view phase_;
  uint64_t total_;
  bool ended_ = false;
};

}  // namespace pmemfuse::fs
