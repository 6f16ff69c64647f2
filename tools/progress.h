// tools/progress.h: draws fs::Progress on stderr when stderr is a terminal, as one line
// rewritten in place; draws nothing otherwise, so logs, pipes and cron mail stay clean.
// Shared by mkfs.pmemfuse, fsck.pmemfuse and the daemon's mount.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>

#include "fs/progress.h"

namespace pmemfuse::tools {

class TerminalProgress {
 public:
  explicit TerminalProgress(std::string program) : program_(std::move(program)) {}
  // Empty (reports cost nothing) when stderr is not a terminal.
  fs::Progress callback() {
    if (!isatty(STDERR_FILENO)) return {};
    return [this](std::string_view phase, uint64_t done, uint64_t total) { draw(phase, done, total); };
  }

 private:
  void draw(std::string_view phase, uint64_t done, uint64_t total) {
    auto now = std::chrono::steady_clock::now();
    bool end = done >= total;
    if (!end && drawn_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    drawn_ = true;
    unsigned pct = total ? unsigned(done * 100 / total) : 100;
    std::fprintf(stderr, "\r%s: %.*s %3u%%\033[K", program_.c_str(), int(phase.size()), phase.data(), pct);
    if (end) std::fputs("\r\033[K", stderr);  // a finished phase leaves no line behind
    std::fflush(stderr);
  }

  std::string program_;
  std::chrono::steady_clock::time_point last_{};
  bool drawn_ = false;
};

}  // namespace pmemfuse::tools
