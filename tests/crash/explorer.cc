// tests/crash/explorer.cc: recording a workload, rebuilding crash images, and checking
// each one (see explorer.h).
#include "tests/crash/explorer.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "fs/check.h"

namespace pmemfuse::crash {
namespace {

constexpr uint64_t kLine = 64;  // the unit in which a store can be torn
constexpr uint64_t kRoot = 1;

std::string hash_of(std::string_view s) {
  std::ostringstream o;
  o << std::hex << std::hash<std::string_view>{}(s) << "/" << std::dec << s.size();
  return o.str();
}

Result<std::string> describe_xattrs(fs::Filesystem& fs, uint64_t ino) {
  PF_TRY(names, fs.listxattr(ino, true));
  std::sort(names.begin(), names.end());
  std::string out;
  for (const std::string& n : names) {
    PF_TRY(v, fs.getxattr(ino, n));
    out += " x:" + n + "=" + hash_of(v);
  }
  return out;
}

Result<std::string> describe(fs::Filesystem& fs, const fs::Attr& a) {
  std::ostringstream o;
  o << std::oct << a.mode << std::dec << " uid=" << a.uid << " gid=" << a.gid << " nlink=" << a.nlink
    << " ino=" << a.ino << " size=" << a.size;
  if (S_ISREG(a.mode)) {
    PF_TRY(data, file_data(fs, a.ino, a.size));
    o << " data=" << hash_of(data);
  } else if (S_ISLNK(a.mode)) {
    PF_TRY(target, fs.readlink(a.ino));
    o << " -> " << target;
  }
  if (S_ISREG(a.mode) || S_ISDIR(a.mode)) {
    PF_TRY(dax, fs.dax_state(a.ino));
    if (dax.flag) o << " dax";
  }
  PF_TRY(x, describe_xattrs(fs, a.ino));
  return o.str() + x;
}

Result<std::vector<std::string>> entries(fs::Filesystem& fs, uint64_t dir) {
  std::vector<std::string> names;
  PF_CHECK(fs.readdir(dir, 0, false, [&](std::string_view name, const fs::Attr&, uint64_t) {
    if (name != "." && name != "..") names.emplace_back(name);
    return true;
  }));
  std::sort(names.begin(), names.end());
  return names;
}

Status walk(fs::Filesystem& fs, uint64_t dir, const std::string& path, Snapshot& out) {
  PF_TRY(names, entries(fs, dir));
  for (const std::string& name : names) {
    PF_TRY(a, fs.lookup(dir, name));
    std::string child = path + "/" + name;
    auto d = describe(fs, a);
    Status sub;
    if (d && S_ISDIR(a.mode) && name.rfind("bulk", 0) == 0) {
      auto kids = entries(fs, a.ino);
      if (kids) {
        std::string all;
        for (const std::string& k : *kids) all += k + "/";
        *d += " entries=" + std::to_string(kids->size()) + " names=" + hash_of(all);
      } else {
        sub = kids.error();
      }
    } else if (d && S_ISDIR(a.mode)) {
      sub = walk(fs, a.ino, child, out);
    }
    fs.forget(a.ino, 1);
    if (!d) return d.error();
    PF_CHECK(sub);
    out[child] = *d;
  }
  return {};
}

std::string diff(const Snapshot& want, const Snapshot& got) {
  std::string out;
  int lines = 0;
  auto note = [&](const std::string& s) {
    if (lines++ < 12) out += "      " + s + "\n";
  };
  for (const auto& [k, v] : want) {
    auto g = got.find(k);
    if (g == got.end()) note("missing " + k + ": " + v);
    else if (g->second != v) note("changed " + k + ": want " + v + ", got " + g->second);
  }
  for (const auto& [k, v] : got) {
    if (!want.count(k)) note("extra   " + k + ": " + v);
  }
  return out;
}

std::vector<uint8_t> bytes_of(const mm::Region& r) {
  return std::vector<uint8_t>(r.base(), r.base() + r.size());
}

Result<mm::Region> region_from(const std::vector<uint8_t>& image) {
  return mm::Region::anonymous_copy(image.data(), image.size());
}

// ---- recording ----

struct StepSpan {
  std::string name;
  uint64_t start, end;  // event indices [start, end)
  // A step that stores file data in place: the file's content before and after it.
  std::string data_path, before, after;
};

struct Recording {
  std::vector<uint8_t> base;  // the media before the recorded phase
  std::vector<mm::PersistEvent> events;
  std::vector<StepSpan> steps;
  std::vector<Snapshot> states;  // states[k]: after the first k steps
};

fs::MkfsOptions mkfs_options(const Workload& w) {
  fs::MkfsOptions o;
  o.journal_blocks = w.journal_blocks;
  return o;
}

Result<std::vector<uint8_t>> prepare_base(const Workload& w, Snapshot* state) {
  PF_TRY(r, mm::Region::anonymous(w.image_size));
  if (w.record_mkfs) {
    *state = no_filesystem();
    return bytes_of(r);
  }
  PF_CHECK(fs::mkfs(r, mkfs_options(w)));
  PF_TRY(fs, fs::Filesystem::mount(std::move(r), {}));
  Script s(fs.get());
  if (w.setup) w.setup(s);
  PF_CHECK(s.status());
  PF_TRY(snap, snapshot(*fs));
  *state = std::move(snap);
  PF_CHECK(fs->unmount());
  return bytes_of(fs->region());
}

// Runs the workload's body, noting each step's events and the state after it.
Status record_body(const Workload& w, fs::Filesystem& fs, const mm::PersistLog& log, Recording& rec) {
  Script s(&fs);
  Status walk_error;
  uint64_t start = 0;
  std::string before;
  s.before_step = [&](const std::string& data_path) {
    before = data_path.empty() ? "" : s.content(data_path);
    start = log.size();
  };
  s.after_step = [&](const std::string& name, const std::string& data_path) {
    uint64_t end = log.size();
    rec.steps.push_back({name, start, end, data_path, before, data_path.empty() ? "" : s.content(data_path)});
    auto snap = snapshot(fs);
    if (!snap && walk_error.ok()) walk_error = snap.error();
    rec.states.push_back(snap ? std::move(*snap) : Snapshot{});
  };
  w.body(s);
  PF_CHECK(s.status());
  return walk_error;
}

Result<Recording> record(const Workload& w) {
  Recording rec;
  rec.states.emplace_back();
  PF_TRY(base, prepare_base(w, &rec.states[0]));
  rec.base = std::move(base);
  PF_TRY(region, region_from(rec.base));
  auto log = std::make_shared<mm::PersistLog>();
  region.set_persister(std::make_unique<mm::RecordingPersister>(region.base(), region.size(), log));
  if (w.record_mkfs) {
    PF_CHECK(fs::mkfs(region, mkfs_options(w)));
    rec.steps.push_back({"mkfs", 0, log->size(), "", "", ""});
  }
  uint64_t start = log->size();
  fs::MountOptions mo;
  mo.cache_pages = w.cache_pages;
  mo.flush_interval_ms = 0;  // writeback only where the workload asks for it
  PF_TRY(fs, fs::Filesystem::mount(std::move(region), mo));
  rec.steps.push_back({"mount", start, log->size(), "", "", ""});
  PF_TRY(after_mount, snapshot(*fs));
  while (rec.states.size() <= rec.steps.size()) rec.states.push_back(after_mount);
  PF_CHECK(record_body(w, *fs, *log, rec));
  start = log->size();
  PF_CHECK(fs->unmount());
  rec.steps.push_back({"unmount", start, log->size(), "", "", ""});
  rec.states.push_back(rec.states.back());
  rec.events = log->events();
  return rec;
}

// ---- crash images ----

struct Piece {
  uint64_t off;
  const uint8_t* data;
  uint64_t len;
};

// The stores of one epoch cut at cache-line boundaries, in program order.
std::vector<Piece> pieces_of(const std::vector<mm::PersistEvent>& ev, size_t from, size_t to) {
  std::vector<Piece> out;
  for (size_t k = from; k < to; k++) {
    const mm::PersistEvent& e = ev[k];
    if (e.kind != mm::PersistEvent::Kind::kStore) continue;
    uint64_t pos = 0;
    while (pos < e.data.size()) {
      uint64_t off = e.off + pos;
      uint64_t n = std::min<uint64_t>(e.data.size() - pos, kLine - off % kLine);
      out.push_back({off, e.data.data() + pos, n});
      pos += n;
    }
  }
  return out;
}

void apply_pieces(uint8_t* img, const std::vector<Piece>& ps) {
  for (const Piece& p : ps) std::memcpy(img + p.off, p.data, p.len);
}

struct CrashPoint {
  std::string label;
  std::shared_ptr<const std::vector<uint8_t>> durable;  // the media as of the previous fence
  std::vector<Piece> pending;                           // the stores since that reached it
  size_t lo, hi;  // the states that may be found: steps completed .. steps started
};

// ---- checking ----

class Checker {
 public:
  Checker(const Recording& rec, const ExploreOptions& o, ExploreResult& res)
      : rec_(rec), opts_(o), res_(res) {}

  void check(const CrashPoint& p) {
    std::string why = verify(p);
    std::lock_guard lk(mu_);
    res_.states++;
    if (why.empty()) return;
    res_.violations++;
    if (res_.reports.size() < opts_.max_reports) res_.reports.push_back(p.label + "\n" + why);
  }

 private:
  std::string allowed(const CrashPoint& p) const {
    std::string s;
    for (size_t k = p.lo; k <= p.hi; k++) s += k == 0 ? "(start) " : rec_.steps[k - 1].name + " ";
    return "    states allowed: after " + s + "\n";
  }

  bool may_be_unformatted(const CrashPoint& p) const {
    for (size_t k = p.lo; k <= p.hi; k++)
      if (rec_.states[k] == no_filesystem()) return true;
    return false;
  }

  std::string verify(const CrashPoint& p) const {
    auto region = region_from(*p.durable);
    if (!region) return "    " + region.error().msg + "\n";
    apply_pieces(region->base(), p.pending);
    auto fs = fs::Filesystem::mount(std::move(*region), {});
    if (!fs) {
      if (may_be_unformatted(p)) return "";
      return "    mount failed: " + fs.error().msg + "\n" + allowed(p);
    }
    auto snap = snapshot(**fs);
    if (!snap) return "    walking the tree failed: " + snap.error().msg + "\n" + allowed(p);
    bool found = false;
    for (size_t k = p.lo; k <= p.hi && !found; k++) found = rec_.states[k] == *snap;
    if (!found && p.hi == p.lo + 1) found = torn_in_flight(rec_.steps[p.lo], rec_.states[p.lo], *snap, **fs);
    if (!found) return "    the tree matches no allowed state\n" + allowed(p) + diff(rec_.states[p.lo], *snap);
    if (Status s = (*fs)->unmount(); !s.ok()) return "    unmount failed: " + s.error().msg + "\n";
    return fsck((*fs)->region());
  }

  // In-place data stores are not atomic (as on ext4): a crash during a step that makes
  // them, before its metadata commits, may leave each byte of the file old or new. All
  // else, the file's size and attributes included, must be as before the step.
  static bool torn_in_flight(const StepSpan& st, const Snapshot& before, const Snapshot& got, fs::Filesystem& fs) {
    if (st.data_path.empty() || got.size() != before.size()) return false;
    for (const auto& [path, desc] : before) {
      auto g = got.find(path);
      if (g == got.end()) return false;
      if (path == st.data_path ? without_data(g->second) != without_data(desc) : g->second != desc) return false;
    }
    std::string now = Script(&fs).content(st.data_path);
    if (now.size() != st.before.size()) return false;
    for (size_t k = 0; k < now.size(); k++) {
      char after = k < st.after.size() ? st.after[k] : 0;
      if (now[k] != st.before[k] && now[k] != after) return false;
    }
    return true;
  }

  static std::string without_data(const std::string& desc) {
    size_t d = desc.find(" data=");
    if (d == std::string::npos) return desc;
    size_t end = desc.find(' ', d + 1);
    return desc.substr(0, d) + (end == std::string::npos ? "" : desc.substr(end));
  }

  static std::string fsck(const mm::Region& recovered) {
    auto copy = mm::Region::anonymous_copy(recovered.base(), recovered.size());
    if (!copy) return "    " + copy.error().msg + "\n";
    auto rep = fs::check_image(*copy);
    if (!rep) return "    fsck cannot check the recovered image: " + rep.error().msg + "\n";
    if (rep->problem_count == 0) return "";
    std::string out = "    fsck after recovery: " + std::to_string(rep->problem_count) + " problems\n";
    for (const std::string& s : rep->problems) out += "      " + s + "\n";
    return out;
  }

  const Recording& rec_;
  const ExploreOptions& opts_;
  ExploreResult& res_;
  std::mutex mu_;
};

// A bounded queue of crash points checked by worker threads, so building images (one
// thread, in order) overlaps with mounting them.
class Pool {
 public:
  Pool(uint32_t jobs, Checker& c) : checker_(c) {
    for (uint32_t k = 0; k < std::max(1u, jobs); k++) workers_.emplace_back([this] { run(); });
  }
  ~Pool() {
    {
      std::lock_guard lk(mu_);
      done_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  void submit(CrashPoint p) {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return queue_.size() < 2 * workers_.size(); });
    queue_.push_back(std::move(p));
    cv_.notify_all();
  }

 private:
  void run() {
    for (;;) {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return done_ || !queue_.empty(); });
      if (queue_.empty()) return;
      CrashPoint p = std::move(queue_.front());
      queue_.pop_front();
      cv_.notify_all();
      lk.unlock();
      checker_.check(p);
    }
  }

  Checker& checker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<CrashPoint> queue_;
  std::vector<std::thread> workers_;
  bool done_ = false;
};

// Which states a crash just before event `pos` may show: steps that returned before it
// must be there; the step in flight may or may not.
std::pair<size_t, size_t> window(const Recording& rec, uint64_t pos) {
  size_t lo = 0, hi = 0;
  for (const StepSpan& s : rec.steps) {
    if (s.end <= pos) lo++;
    if (s.start <= pos) hi++;
  }
  return {lo, std::max(lo, hi)};
}

class Explorer {
 public:
  Explorer(const Recording& rec, const ExploreOptions& o, double cost, Pool& pool, ExploreResult& res)
      : rec_(rec), opts_(o), cost_(cost), pool_(pool), res_(res), img_(rec.base) {}

  void run() {
    std::vector<size_t> bounds = epoch_ends();
    res_.fences = bounds.size() - 1;
    uint64_t per_fence = 2 + opts_.random_subsets;
    uint64_t budget = std::max<uint64_t>(1, opts_.max_states / cost_);
    uint64_t stride = std::max<uint64_t>(1, (bounds.size() * per_fence + budget - 1) / budget);
    size_t from = 0;
    for (size_t f = 0; f < bounds.size(); f++) {
      auto ps = pieces_of(rec_.events, from, bounds[f]);
      if (f % stride == 0 || f + 1 == bounds.size()) crash_at(f, bounds[f], ps);
      apply_pieces(img_.data(), ps);
      from = bounds[f];
    }
  }

 private:
  // Event indices at which a crash is simulated: each honoured fence, and the end.
  std::vector<size_t> epoch_ends() const {
    std::vector<size_t> out;
    uint64_t ordinal = 0;
    for (size_t k = 0; k < rec_.events.size(); k++) {
      if (rec_.events[k].kind != mm::PersistEvent::Kind::kFence) continue;
      bool ignored = opts_.ignore_fence_every && ordinal++ % opts_.ignore_fence_every == opts_.ignore_fence_every - 1;
      if (!ignored) out.push_back(k);
    }
    out.push_back(rec_.events.size());
    return out;
  }

  void crash_at(size_t f, size_t pos, const std::vector<Piece>& ps) {
    res_.fences_explored++;
    auto durable = std::make_shared<const std::vector<uint8_t>>(img_);
    const std::pair<size_t, size_t> win = window(rec_, pos);  // no binding: clang 14 cannot capture one
    std::string where = "crash before fence " + std::to_string(f) + " (event " + std::to_string(pos) + "), ";
    auto submit = [&](std::string what, std::vector<Piece> kept) {
      pool_.submit({where + what, durable, std::move(kept), win.first, win.second});
    };
    submit("all " + std::to_string(ps.size()) + " pending lines lost", std::vector<Piece>{});
    if (ps.empty()) return;
    submit("all pending lines kept", ps);
    if (ps.size() < 2) return;
    std::mt19937_64 rng(opts_.seed * 1000003 + f);
    for (uint32_t v = 0; v < opts_.random_subsets; v++) {
      std::vector<Piece> kept;
      for (const Piece& p : ps)
        if (rng() & 1) kept.push_back(p);
      submit("random subset " + std::to_string(v) + " (seed " + std::to_string(opts_.seed) + ")", std::move(kept));
    }
  }

  const Recording& rec_;
  const ExploreOptions& opts_;
  double cost_;
  Pool& pool_;
  ExploreResult& res_;
  std::vector<uint8_t> img_;  // the media as of the last simulated fence
};

}  // namespace

Snapshot no_filesystem() { return {{"", "no filesystem"}}; }

Result<std::string> file_data(fs::Filesystem& fs, uint64_t ino, uint64_t size) {
  std::string out;
  PF_CHECK(fs.read(ino, 0, size, [&](const struct iovec* iov, int n) {
    for (int k = 0; k < n; k++) out.append(static_cast<const char*>(iov[k].iov_base), iov[k].iov_len);
  }));
  return out;
}

Result<Snapshot> snapshot(fs::Filesystem& fs) {
  Snapshot out;
  PF_TRY(root, fs.getattr(kRoot));
  PF_TRY(d, describe(fs, root));
  out["/"] = d;
  PF_CHECK(walk(fs, kRoot, "", out));
  return out;
}

Result<ExploreResult> explore(const Workload& w, const ExploreOptions& o) {
  auto t0 = std::chrono::steady_clock::now();
  PF_TRY(rec, record(w));
  ExploreResult res;
  res.steps = rec.steps.size();
  res.events = rec.events.size();
  {
    Checker checker(rec, o, res);
    Pool pool(o.jobs, checker);
    Explorer(rec, o, w.cost, pool, res).run();
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace pmemfuse::crash
