// daemon/options.h: command line and -o mount options (mount(8) style). Every option
// has the same name on the command line (--name=value) and in -o lists (name=value).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fs/filesystem.h"
#include "mm/result.h"

namespace pmemfuse::daemon {

inline constexpr uint64_t kAutoCacheSize = UINT64_MAX;

struct Options {
  std::string device;
  std::string mountpoint;
  bool foreground = false;
  bool debug = false;
  bool single_thread = false;
  bool read_only = false;
  bool allow_other = false;
  bool clone_fd = false;
  bool acl = false;    // POSIX ACLs stored and enforced
  fs::AtimeMode atime = fs::AtimeMode::kRelative;
  bool dir_atime = true;  // nodiratime: directories keep their atime
  unsigned max_threads = 10;
  // Seconds the kernel may cache attributes and names. Nothing changes the filesystem
  // behind the kernel (the daemon owns the device), and what the daemon changes on its
  // own (atime, the DAX flag) it invalidates: long timeouts are safe.
  double attr_timeout = 60.0;
  double entry_timeout = 60.0;
  std::string log_level = "info";
  std::vector<std::string> kernel_flags;  // mount(8) flags for the kernel: suid, dev, ...
  bool nosymfollow = false;  // the mount does not follow symlinks (set after mounting)
  uint64_t emulate_devdax = 0;  // bytes; 0: off
  // DRAM write-back cache in bytes; 0: off; kAutoCacheSize: 1/8 of RAM, at most 1 GiB.
  uint64_t cache_size = kAutoCacheSize;
  double flush_interval = 5.0;  // seconds a dirty page may wait; 0: no timer
  bool writeback_cache = false;  // the kernel's write-back caching (FUSE_CAP_WRITEBACK_CACHE)
  bool flush_on_close = false;   // write back a file's dirty pages at its last close
  std::string dax = "inode";     // always, never or inode (the files with the DAX flag)
  uint64_t dax_window = 4ull << 30;  // bytes of DAX window address space; 0: none
  bool show_help = false;
  bool show_version = false;
};

// Parses argv. Errors are one line, suitable for "pmemfuse: <msg>".
Result<Options> parse_options(int argc, char** argv);
std::string help_text();
// cache_size in pages, with the automatic default resolved against this machine's RAM.
uint64_t cache_pages(const Options& o);

}  // namespace pmemfuse::daemon
