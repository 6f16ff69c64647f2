// daemon/control.cc: the root's virtual attributes. The JSON is written by hand: flat
// numbers only, so no escaping is needed.
#include "daemon/control.h"

#include <sstream>

namespace pmemfuse::daemon {
namespace {

constexpr std::string_view kStats = "user.pmemfuse.stats";
constexpr std::string_view kSync = "user.pmemfuse.sync";
constexpr std::string_view kDax = "user.pmemfuse.dax";
constexpr std::string_view kDaxEffective = "user.pmemfuse.dax_effective";

class Json {
 public:
  void open(const char* name) {
    sep();
    o_ << '"' << name << "\":{";
    first_ = true;
  }
  void close() {
    o_ << '}';
    first_ = false;
  }
  void num(const char* name, uint64_t v) {
    sep();
    o_ << '"' << name << "\":" << v;
  }
  void flag(const char* name, bool v) {
    sep();
    o_ << '"' << name << "\":" << (v ? "true" : "false");
  }
  std::string str() { return "{" + o_.str() + "}\n"; }

 private:
  void sep() {
    if (!first_) o_ << ',';
    first_ = false;
  }
  std::ostringstream o_;
  bool first_ = true;
};

void cache_json(Json& j, const mm::CacheStats& c) {
  j.open("cache");
  j.num("capacity_bytes", c.capacity_pages * mm::kPageSize);
  j.num("cached_bytes", c.cached_pages * mm::kPageSize);
  j.num("dirty_bytes", c.dirty_pages * mm::kPageSize);
  j.num("hits", c.hits);
  j.num("misses", c.misses);
  j.num("app_bytes_written", c.app_bytes);
  j.num("pmem_bytes_written", c.pmem_bytes);
  j.num("flush_batches", c.flush_batches);
  j.num("flush_ns_total", c.flush_ns_total);
  j.num("flush_ns_max", c.flush_ns_max);
  j.num("second_buffers", c.second_buffers);
  j.num("evictions", c.evictions);
  j.num("pressure_waits", c.pressure_waits);
  j.close();
}

void windows_json(Json& j, const mm::WindowStats& w) {
  j.open("dax_windows");
  j.num("slots", w.slots);
  j.num("mapped", w.mapped);
  j.num("hits", w.hits);
  j.num("misses", w.misses);
  j.num("reclaims", w.reclaims);
  j.num("fallbacks", w.fallbacks);
  j.num("teardowns", w.teardowns);
  j.close();
}

void journal_json(Json& j, const fs::JournalStats& s) {
  j.open("journal");
  j.num("commits", s.commits);
  j.num("bytes_logged", s.bytes);
  j.num("checkpoints", s.checkpoints);
  j.num("replayed", s.replayed);
  j.close();
}

std::string stats_json(fs::Filesystem& fs) {
  Json j;
  j.flag("read_only", fs.info().read_only);
  if (const mm::PageCache* c = fs.cache()) cache_json(j, c->stats());
  if (const mm::DaxWindows* w = fs.windows()) windows_json(j, w->stats());
  journal_json(j, fs.journal_stats());
  j.open("writeback");
  j.num("errors", fs.info().writeback_errors);
  j.close();
  j.open("media");
  j.num("bytes_stored", fs.region().bytes_stored());
  j.close();
  if (auto s = fs.statfs()) {
    j.open("space");
    j.num("block_size", mm::kPageSize);
    j.num("blocks", s->blocks);
    j.num("blocks_free", s->bfree);
    j.num("inodes", s->files);
    j.num("inodes_free", s->ffree);
    j.close();
  }
  return j.str();
}

}  // namespace

bool is_control_xattr(fuse_ino_t ino, std::string_view name) {
  if (name == kDax || name == kDaxEffective) return true;
  return ino == FUSE_ROOT_ID && (name == kStats || name == kSync);
}

Result<std::string> control_get(fs::Filesystem& fs, fuse_ino_t ino, std::string_view name) {
  if (name == kStats) return stats_json(fs);
  if (name == kSync) return make_error(Errc::kNoData, std::string(name) + " can only be set (it triggers writeback)");
  PF_TRY(s, fs.dax_state(ino));
  return std::string((name == kDax ? s.flag : s.effective) ? "1" : "0");
}

Result<bool> control_set(fs::Filesystem& fs, fuse_ino_t ino, std::string_view name,
                         std::optional<std::string_view> value) {
  if (name == kSync && value) {
    PF_CHECK(fs.sync());
    return false;
  }
  if (name != kDax && !value) return make_error(Errc::kNoData, std::string(name) + " is not stored, so cannot be removed");
  if (name != kDax) return make_error(Errc::kPerm, std::string(name) + " is read-only");
  if (value && *value != "0" && *value != "1") {
    return make_error(Errc::kInvalid, std::string(kDax) + " takes 1 (DAX) or 0 (buffered)");
  }
  return fs.set_dax(ino, value && *value == "1");
}

}  // namespace pmemfuse::daemon
