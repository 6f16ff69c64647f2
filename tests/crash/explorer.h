// tests/crash/explorer.h: power-loss simulation. A workload runs once on a region whose
// Persister records every store and fence; the explorer then rebuilds the media as a
// power failure could have left it at each fence (everything before the previous fence
// durable; the stores since then all dropped, all kept, or random cache-line subsets),
// mounts each image (which recovers it), and checks that the tree seen through the
// facade is the state after some step that may have completed at that moment, and that
// fsck finds the recovered image clean.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fs/filesystem.h"
#include "mm/recording.h"

namespace pmemfuse::crash {

// The tree as the facade shows it, timestamps aside: path -> type, mode, owner, link
// count, inode number, size, content hash, symlink target and xattrs. Directories whose
// name starts with "bulk" are summarised by the number and names of their entries, so a
// workload can hold thousands of files without each state walking them all.
using Snapshot = std::map<std::string, std::string>;
// The state in which mount must fail: no filesystem yet (a crash during mkfs).
Snapshot no_filesystem();
Result<Snapshot> snapshot(fs::Filesystem& fs);
// The first size bytes of a file (clipped at EOF; holes as zeros).
Result<std::string> file_data(fs::Filesystem& fs, uint64_t ino, uint64_t size);

// Path-based operations for workloads. Each call is one step: while recording, the
// explorer notes the events it made and the state after it. A step that fails is a bug
// in the workload and stops it.
class Script {
 public:
  explicit Script(fs::Filesystem* fs) : fs_(fs) {}
  void mkdir(const std::string& path);
  void create(const std::string& path);
  void symlink(const std::string& target, const std::string& path);
  void link(const std::string& from, const std::string& to);
  void unlink(const std::string& path);
  void rmdir(const std::string& path);
  void rename(const std::string& from, const std::string& to, uint32_t flags = 0);
  void write(const std::string& path, uint64_t off, const std::string& data);
  void truncate(const std::string& path, uint64_t size);
  void fallocate(const std::string& path, uint32_t mode, uint64_t off, uint64_t len);
  void setxattr(const std::string& path, const std::string& name, const std::string& value,
                fs::XattrFlags f = {});
  void removexattr(const std::string& path, const std::string& name);
  void chmod(const std::string& path, uint32_t mode);
  void fsync(const std::string& path);
  void set_dax(const std::string& path, bool on);
  // open/release model a file held open by a process, so unlink leaves an orphan.
  void open(const std::string& path);
  void release(const std::string& path);

  // Runs fn as one named step. data_path names the file whose data the step stores in
  // place, if any: a crash during it may leave those bytes torn (see explore()).
  void step(const std::string& name, const std::function<Status()>& fn, const std::string& data_path = "");
  // Runs fn, which calls the methods above, as one step. On a cached mount a group ends
  // with fsync, so it is durable as a whole when it returns.
  void group(const std::string& name, const std::function<void()>& fn, const std::string& data_path = "");
  // Recording hooks: called around every step.
  std::function<void(const std::string& data_path)> before_step;
  std::function<void(const std::string& name, const std::string& data_path)> after_step;
  // The whole content of a regular file, or empty if it does not exist.
  std::string content(const std::string& path);
  // The first failure; later steps are skipped.
  const Status& status() const { return failed_; }

 private:
  Result<uint64_t> resolve(const std::string& path);
  Result<std::pair<uint64_t, std::string>> parent_of(const std::string& path);

  fs::Filesystem* fs_;
  Status failed_;
  std::map<std::string, uint64_t> open_;  // path -> ino of files held open
  bool grouping_ = false;  // inside group(): calls are not steps of their own
};

struct Workload {
  std::string name;
  std::string covers;  // what the workload exercises, for the report
  uint64_t image_size = 16ull << 20;
  uint64_t journal_blocks = 0;  // 0: mkfs default
  bool record_mkfs = false;     // the recorded phase starts from blank media
  double cost = 1;              // relative cost of one crash state: the budget is divided by it
  std::function<void(Script&)> setup;  // not recorded
  std::function<void(Script&)> body;   // recorded
  uint64_t cache_pages = 0;  // the recorded mount's DRAM cache; 0: none
};
const std::vector<Workload>& workloads();

struct ExploreOptions {
  uint64_t max_states = 400;     // per workload; fences are sampled evenly beyond it
  uint32_t random_subsets = 3;   // per fence, besides all-dropped and all-kept
  uint64_t seed = 1;
  uint32_t jobs = 2;
  // Fault injection to show the explorer finds ordering bugs: every Nth fence is
  // treated as absent, so its stores may persist out of order with the next epoch's.
  uint32_t ignore_fence_every = 0;
  uint32_t max_reports = 5;
};

struct ExploreResult {
  uint64_t steps = 0;
  uint64_t events = 0;
  uint64_t fences = 0;
  uint64_t fences_explored = 0;
  uint64_t states = 0;
  uint64_t violations = 0;
  std::vector<std::string> reports;  // the first few violations, in full
  double seconds = 0;
};

Result<ExploreResult> explore(const Workload& w, const ExploreOptions& o);

}  // namespace pmemfuse::crash
