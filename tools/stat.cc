// tools/stat.cc: pmemfuse-stat MOUNTPOINT: the counters of a mounted pmemfuse filesystem
// (the virtual xattr user.pmemfuse.stats on the mount root, daemon/control.h) as aligned
// lines for people, or with --json as the daemon gave them. Reads the attribute with
// getxattr(2), so it needs no libfuse. Exit codes: 0 ok, 1 runtime error, 2 usage error.

#include <sys/stat.h>
#include <sys/xattr.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "tools/cli.h"
#include "tools/json.h"

namespace {

using namespace pmemfuse;
using tools::FlatJson;

constexpr int kRuntime = 1, kUsage = 2;
constexpr const char* kStatsName = "user.pmemfuse.stats";

int fail(const std::string& msg) {
  std::fprintf(stderr, "pmemfuse-stat: %s\n", msg.c_str());
  return kRuntime;
}

// mountinfo escapes space, tab, newline and backslash as \ooo (proc(5)).
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      out += char(std::strtol(s.substr(i + 1, 3).c_str(), nullptr, 8));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

struct MountEntry {
  std::string point;
  std::string fstype;  // "fuse.pmemfuse" for ours
};

// The innermost mount holding the resolved path real, from /proc/self/mountinfo.
std::optional<MountEntry> mount_containing(const std::string& real) {
  std::ifstream in("/proc/self/mountinfo");
  std::optional<MountEntry> best;
  for (std::string line; std::getline(in, line);) {
    // id parent major:minor root mount-point options [optional fields...] - fstype ...
    std::istringstream f(line);
    std::string skip, point, word;
    f >> skip >> skip >> skip >> skip >> point;
    while (f >> word && word != "-") {
    }
    MountEntry e{unescape(point), ""};
    f >> e.fstype;
    bool inside = real == e.point || e.point == "/" || real.starts_with(e.point + "/");
    if (inside && (!best || e.point.size() >= best->point.size()))
      best = e;  // later mounts cover earlier
  }
  return best;
}

Error not_a_mount(const std::string& path) {
  std::string msg = path + " is not a pmemfuse mount point";
  if (char* real = realpath(path.c_str(), nullptr)) {
    auto m = mount_containing(real);
    if (m && m->fstype == "fuse.pmemfuse" && m->point != real) {
      msg = path + " is not the root of a pmemfuse mount (try its mount point, " + m->point + ")";
    }
    std::free(real);
  }
  return make_error(Errc::kNotFound, msg);
}

Error sys_error(const std::string& path, int e) {
  if (e == ENOTCONN) {
    return make_error(Errc::kIo,
                      path +
                          ": the pmemfuse daemon is gone (transport endpoint not connected); "
                          "unmount it with fusermount3 -u " +
                          path);
  }
  if (e == EACCES || e == EPERM) {
    return make_error(
        Errc::kAccess,
        path + ": permission denied; run pmemfuse-stat as a user who can read the mount root");
  }
  return make_error(Errc::kIo, path + ": " + std::strerror(e));
}

// The raw JSON from the daemon.
Result<std::string> read_stats(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return sys_error(path, errno);
  if (!S_ISDIR(st.st_mode))
    return make_error(Errc::kNotDir,
                      path + " is not a directory; give the mount point of a pmemfuse filesystem");
  std::string buf(64 * 1024, '\0');  // the object is about 1 KiB
  ssize_t n = getxattr(path.c_str(), kStatsName, buf.data(), buf.size());
  if (n < 0 && (errno == ENODATA || errno == ENOTSUP)) return not_a_mount(path);
  if (n < 0) return sys_error(path, errno);
  buf.resize(size_t(n));
  return buf;
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string human_size(uint64_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + " B";
  static const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = double(bytes) / 1024;
  int u = 0;
  for (; v >= 1024 && u < 5; u++) v /= 1024;
  return fmt("%.1f ", v) + kUnits[u];
}

std::string percent(uint64_t part, uint64_t whole) {
  return whole ? fmt("%.1f%%", 100.0 * double(part) / double(whole)) : "-";
}

std::string duration(uint64_t ns) {
  if (ns < 1000) return std::to_string(ns) + " ns";
  if (ns < 1000000) return fmt("%.1f us", double(ns) / 1e3);
  if (ns < 1000000000) return fmt("%.1f ms", double(ns) / 1e6);
  return fmt("%.1f s", double(ns) / 1e9);
}

std::string ratio(uint64_t num, uint64_t den) {
  return den ? fmt("%.2f", double(num) / double(den)) : "-";
}

// Collects "label: value" lines, section headers flush left and their members indented,
// and prints them with the values in one column.
class Report {
 public:
  explicit Report(const FlatJson& j) : j_(j) {}
  uint64_t get(const std::string& key) const {
    auto it = j_.find(key);
    return it == j_.end() ? 0 : it->second.num;
  }
  bool has(const std::string& section) const {
    auto it = j_.lower_bound(section + ".");
    return it != j_.end() && it->first.starts_with(section + ".");
  }
  void header(std::string title, std::string value = "") {
    lines_.push_back({std::move(title), std::move(value), 0});
  }
  void line(std::string label, std::string value) {
    lines_.push_back({std::move(label), std::move(value), 2});
  }
  void print() const {
    size_t width = 0;
    for (auto& l : lines_) width = std::max(width, l.indent + l.label.size() + 1);
    for (auto& l : lines_) {
      std::string left = std::string(l.indent, ' ') + l.label + (l.value.empty() ? "" : ":");
      if (l.value.empty())
        std::printf("%s\n", left.c_str());
      else
        std::printf("%-*s %s\n", int(width), left.c_str(), l.value.c_str());
    }
  }

 private:
  struct Line {
    std::string label, value;
    size_t indent;
  };
  const FlatJson& j_;
  std::vector<Line> lines_;
};

void report(const std::string& path, const FlatJson& j) {
  Report r(j);
  auto n = [&](const std::string& key) { return std::to_string(r.get(key)); };
  r.header("mount", path);
  r.header("read-only", r.get("read_only") ? "yes" : "no");
  if (r.has("space")) {
    uint64_t bs = r.get("space.block_size"), blocks = r.get("space.blocks"),
             used = blocks - r.get("space.blocks_free");
    uint64_t inodes = r.get("space.inodes"), iused = inodes - r.get("space.inodes_free");
    r.header("space");
    r.line("blocks used", std::to_string(used) + " of " + std::to_string(blocks) + " (" +
                              percent(used, blocks) + "), " + human_size(used * bs) + " of " +
                              human_size(blocks * bs));
    r.line("inodes used", std::to_string(iused) + " of " + std::to_string(inodes) + " (" +
                              percent(iused, inodes) + ")");
  }
  if (r.has("cache")) {
    uint64_t hits = r.get("cache.hits"), misses = r.get("cache.misses"),
             app = r.get("cache.app_bytes_written");
    uint64_t batches = r.get("cache.flush_batches");
    r.header("cache");
    r.line("capacity", human_size(r.get("cache.capacity_bytes")));
    r.line("cached", human_size(r.get("cache.cached_bytes")));
    r.line("dirty", human_size(r.get("cache.dirty_bytes")));
    r.line("hit rate", percent(hits, hits + misses) + " (" + std::to_string(hits) + " hits, " +
                           std::to_string(misses) + " misses)");
    r.line("written by apps", human_size(app));
    r.line("written to pmem", human_size(r.get("cache.pmem_bytes_written")));
    r.line("write amplification",
           ratio(r.get("cache.pmem_bytes_written"), app) + " cache (pmem/app), " +
               ratio(r.get("media.bytes_stored"), app) + " device (media/app)");
    r.line("flush batches",
           n("cache.flush_batches") + ", mean " +
               (batches ? duration(r.get("cache.flush_ns_total") / batches) : "-") + ", max " +
               duration(r.get("cache.flush_ns_max")));
    r.line("second buffers", n("cache.second_buffers"));
    r.line("evictions", n("cache.evictions"));
    r.line("pressure waits", n("cache.pressure_waits"));
  } else {
    r.header("cache", "off");
  }
  if (r.has("dax_windows")) {
    r.header("dax windows");
    r.line("slots mapped", n("dax_windows.mapped") + " of " + n("dax_windows.slots"));
    for (const char* k : {"hits", "misses", "reclaims", "fallbacks", "teardowns"})
      r.line(k, n(std::string("dax_windows.") + k));
  } else {
    r.header("dax windows", "off");
  }
  if (r.has("journal")) {
    r.header("journal");
    r.line("commits", n("journal.commits"));
    r.line("bytes logged", human_size(r.get("journal.bytes_logged")));
    r.line("checkpoints", n("journal.checkpoints"));
    r.line("replayed at mount", n("journal.replayed"));
  }
  if (r.has("writeback")) {
    r.header("writeback");
    r.line("errors", n("writeback.errors"));
  }
  if (r.has("media")) {
    r.header("media");
    r.line("bytes stored", human_size(r.get("media.bytes_stored")));
  }
  r.print();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Show the counters of a mounted pmemfuse filesystem: space, cache, write amplification, "
      "DAX windows, journal (docs/cache.md)",
      "pmemfuse-stat"};
  std::string path;
  bool json = false;
  app.add_option("MOUNTPOINT", path, "where the pmemfuse filesystem is mounted")->required();
  app.add_flag("--json", json, "print the counters as one JSON object, as the daemon gave them");
  app.set_version_flag("-V,--version", "pmemfuse-stat 0.1.0");
  if (int rc = tools::parse_args(app, argc, argv, kUsage); rc >= 0) return rc;

  auto raw = read_stats(path);
  if (!raw) return fail(raw.error().msg);
  auto parsed = tools::FlatJsonParser::parse(*raw);
  if (!parsed) {
    return fail(path + ": " + kStatsName + " is not in the expected shape (" + parsed.error().msg +
                "); is pmemfuse-stat older than the daemon?");
  }
  if (json)
    std::fwrite(raw->data(), 1, raw->size(), stdout);
  else
    report(path, *parsed);
  if (std::fflush(stdout) != 0 || std::ferror(stdout))
    return fail(std::string("writing the output: ") + std::strerror(errno));
  return 0;
}
