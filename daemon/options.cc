// daemon/options.cc: option table, -o list parsing and --help.
#include "daemon/options.h"

#include <CLI/CLI.hpp>

#include <unistd.h>

#include <algorithm>
#include <functional>
#include <sstream>

#include "mm/region.h"

namespace pmemfuse::daemon {
namespace {

struct Spec {
  const char* name;
  const char* value;  // placeholder for the value; nullptr for a flag
  const char* dflt;
  const char* help;
  std::function<Status(Options&, const std::string&)> apply;
};

constexpr uint64_t kMinCacheSize = 256 << 10;  // mm::PageCache::kMinPages pages

Result<double> parse_seconds(const std::string& name, const std::string& v) {
  try {
    size_t pos = 0;
    double d = std::stod(v, &pos);
    if (pos == v.size() && d >= 0) return d;
  } catch (...) {
  }
  return make_error(Errc::kInvalid, "bad value '" + v + "' for " + name + " (seconds, e.g. 1.5)");
}

const std::vector<Spec>& specs() {
  static const std::vector<Spec> s = {
      {"ro", nullptr, "off", "mount read-only", [](Options& o, const std::string&) { o.read_only = true; return Status{}; }},
      {"rw", nullptr, "on", "mount read-write", [](Options& o, const std::string&) { o.read_only = false; return Status{}; }},
      {"allow_other", nullptr, "off", "let users other than the mounter access the files",
       [](Options& o, const std::string&) { o.allow_other = true; return Status{}; }},
      {"acl", nullptr, "off", "store POSIX ACLs (system.posix_acl_*) and have the kernel enforce them",
       [](Options& o, const std::string&) { o.acl = true; return Status{}; }},
      {"noacl", nullptr, "on", "no POSIX ACLs: setting one fails with EOPNOTSUPP",
       [](Options& o, const std::string&) { o.acl = false; return Status{}; }},
      {"noatime", nullptr, "off", "never update access times",
       [](Options& o, const std::string&) { o.atime = fs::AtimeMode::kNever; return Status{}; }},
      {"relatime", nullptr, "on", "update the access time when it is older than the modification or change time, or a day old",
       [](Options& o, const std::string&) { o.atime = fs::AtimeMode::kRelative; return Status{}; }},
      {"strictatime", nullptr, "off", "update the access time at every read",
       [](Options& o, const std::string&) { o.atime = fs::AtimeMode::kStrict; return Status{}; }},
      {"nodiratime", nullptr, "off", "never update the access times of directories",
       [](Options& o, const std::string&) { o.dir_atime = false; return Status{}; }},
      {"diratime", nullptr, "on", "update directories' access times as files' (undoes nodiratime)",
       [](Options& o, const std::string&) { o.dir_atime = true; return Status{}; }},
      {"nosymfollow", nullptr, "off", "do not follow symlinks on this mount (they can still be read with readlink)",
       [](Options& o, const std::string&) { o.nosymfollow = true; return Status{}; }},
      {"clone_fd", nullptr, "off", "one /dev/fuse descriptor per worker thread",
       [](Options& o, const std::string&) { o.clone_fd = true; return Status{}; }},
      {"max_threads", "N", "10", "most worker threads",
       [](Options& o, const std::string& v) -> Status {
         try {
           o.max_threads = unsigned(std::stoul(v));
           if (o.max_threads >= 1 && o.max_threads <= 1024) return {};
         } catch (...) {
         }
         return make_error(Errc::kInvalid, "bad value '" + v + "' for max_threads (1-1024)");
       }},
      {"attr_timeout", "SECONDS", "60", "how long the kernel caches attributes (nothing changes them behind its back)",
       [](Options& o, const std::string& v) -> Status {
         PF_TRY(d, parse_seconds("attr_timeout", v));
         o.attr_timeout = d;
         return {};
       }},
      {"entry_timeout", "SECONDS", "60", "how long the kernel caches names, and that a name does not exist",
       [](Options& o, const std::string& v) -> Status {
         PF_TRY(d, parse_seconds("entry_timeout", v));
         o.entry_timeout = d;
         return {};
       }},
      {"log_level", "LEVEL", "info", "trace, debug, info, warn, error or off",
       [](Options& o, const std::string& v) -> Status {
         static const char* ok[] = {"trace", "debug", "info", "warn", "error", "off"};
         for (const char* l : ok)
           if (v == l) {
             o.log_level = v;
             return {};
           }
         return make_error(Errc::kInvalid, "bad value '" + v + "' for log_level (trace, debug, info, warn, error, off)");
       }},
      {"cache_size", "SIZE", "1/8 of RAM, at most 1G",
       "DRAM write-back cache for file data, e.g. 512M; 0 turns it off (writes go straight to pmem)",
       [](Options& o, const std::string& v) -> Status {
         auto n = mm::parse_size(v);
         if (!n || (*n != 0 && *n < kMinCacheSize))
           return make_error(Errc::kInvalid, "bad value '" + v + "' for cache_size (0, or a size of at least 256K, e.g. 512M)");
         o.cache_size = *n;
         return {};
       }},
      {"flush_interval", "SECONDS", "5", "how long written data may stay only in DRAM before it is written back; 0: until fsync, memory pressure or unmount",
       [](Options& o, const std::string& v) -> Status {
         PF_TRY(d, parse_seconds("flush_interval", v));
         if (d != 0 && (d < 0.001 || d > 31536000))
           return make_error(Errc::kInvalid, "bad value '" + v + "' for flush_interval (0, or 0.001 to 31536000 seconds)");
         o.flush_interval = d;
         return {};
       }},
      {"flush_on_close", nullptr, "off", "write a file's cached data back at every close(2), which returns its errors",
       [](Options& o, const std::string&) { o.flush_on_close = true; return Status{}; }},
      {"writeback_cache", nullptr, "off", "let the kernel cache writes too (fewer, larger requests; mtime kept by the kernel)",
       [](Options& o, const std::string&) { o.writeback_cache = true; return Status{}; }},
      {"dax", "[=MODE]", "inode",
       "which files use DAX: inode (files with the DAX flag: setfattr -n user.pmemfuse.dax -v 1, or chattr +x), always, or never; dax alone means always",
       [](Options& o, const std::string& v) -> Status {
         if (v.empty()) o.dax = "always";
         else if (v == "always" || v == "never" || v == "inode") o.dax = v;
         else return make_error(Errc::kInvalid, "bad value '" + v + "' for dax (always, never or inode)");
         return {};
       }},
      {"dax_window", "SIZE", "4G",
       "address space for DAX windows, 2 MiB slots that show a DAX file's fragmented range contiguously; 0: none",
       [](Options& o, const std::string& v) -> Status {
         auto n = mm::parse_size(v);
         if (!n || (*n != 0 && *n < (2u << 20)) || *n > (1ull << 40))
           return make_error(Errc::kInvalid, "bad value '" + v + "' for dax_window (0, or 2M to 1T, e.g. 4G)");
         o.dax_window = *n;
         return {};
       }},
      {"emulate_devdax", "[=ALIGN]", "off", "apply device-dax rules (mapping alignment, no resize) to an image file; ALIGN defaults to 2M",
       [](Options& o, const std::string& v) -> Status {
         PF_TRY(a, mm::parse_alignment(v));
         o.emulate_devdax = a;
         return {};
       }},
  };
  return s;
}

// mount(8) flags the kernel applies to the mount itself; handed on to libfuse.
bool kernel_mount_flag(const std::string& n) {
  static const char* names[] = {"dev", "nodev", "suid", "nosuid", "exec", "noexec", "sync",
                                "async", "dirsync"};
  for (const char* k : names)
    if (n == k) return true;
  return false;
}

// Generic mount(8) options that mount.fuse3 may pass; they have no meaning here.
bool generic_mount_option(const std::string& n) {
  static const char* names[] = {"defaults", "auto", "noauto", "nofail", "_netdev", "atime",
                                "default_permissions", "user", "nouser", "users", "owner",
                                "group", "silent", "loud", "lazytime", "nolazytime", "mand",
                                "nomand", "symfollow", "norelatime", "nostrictatime"};
  for (const char* g : names)
    if (n == g) return true;
  return n.rfind("x-", 0) == 0;
}

Status apply_one(Options& o, const std::string& item) {
  auto eq = item.find('=');
  std::string name = item.substr(0, eq), value = eq == std::string::npos ? "" : item.substr(eq + 1);
  for (const Spec& s : specs()) {
    if (name != s.name) continue;
    if (!s.value && eq != std::string::npos) return make_error(Errc::kInvalid, "option " + name + " takes no value");
    if (s.value && s.value[0] != '[' && eq == std::string::npos) {  // "[=X]": the value may be left out
      return make_error(Errc::kInvalid, "option " + name + " needs a value (" + name + "=" + s.value + ")");
    }
    return s.apply(o, value);
  }
  if (kernel_mount_flag(name) && eq == std::string::npos) {
    o.kernel_flags.push_back(name);
    return {};
  }
  if (generic_mount_option(name)) return {};
  return make_error(Errc::kInvalid, "unknown option '" + name + "' (see pmemfuse --help)");
}

}  // namespace

uint64_t cache_pages(const Options& o) {
  uint64_t bytes = o.cache_size;
  if (bytes == kAutoCacheSize) {
    uint64_t ram = uint64_t(sysconf(_SC_PHYS_PAGES)) * uint64_t(sysconf(_SC_PAGESIZE));
    bytes = std::max<uint64_t>(std::min<uint64_t>(ram / 8, 1ull << 30), kMinCacheSize);
  }
  return bytes / mm::kPageSize;
}

std::string help_text() {
  std::ostringstream h;
  h << "Usage: pmemfuse [OPTIONS] DEVICE MOUNTPOINT\n"
       "Mount a pmemfuse filesystem from DEVICE (a /dev/daxX.Y device or an image file made\n"
       "by mkfs.pmemfuse) on MOUNTPOINT. Unmount with fusermount3 -u MOUNTPOINT.\n\n"
       "Options:\n"
       "  -f, --foreground      stay in the foreground (default: daemonize once mounted)\n"
       "  -d, --debug           foreground, with FUSE request tracing\n"
       "  -s, --single-thread   serve requests on one thread\n"
       "  -o OPT[,OPT...]       mount options below, mount(8) style\n"
       "  -h, --help            show this help\n"
       "  -V, --version         show the version\n\n"
       "Mount options (also accepted as --NAME or --NAME=VALUE):\n";
  for (const Spec& s : specs()) {
    std::string left = std::string(s.name) + (!s.value ? "" : s.value[0] == '[' ? s.value : std::string("=") + s.value);
    h << "  " << left << std::string(left.size() < 22 ? 22 - left.size() : 1, ' ') << s.help
      << " (default: " << s.dflt << ")\n";
  }
  h << "\nThe mount flags dev, nodev, suid, nosuid, exec, noexec, sync, async and dirsync go to\n"
       "the kernel (FUSE mounts default to nosuid,nodev). Generic mount(8) and fstab options\n"
       "that change nothing here are accepted and ignored: defaults, auto, noauto, nofail,\n"
       "_netdev, x-*, user, nouser, users, owner, group, atime, norelatime, nostrictatime,\n"
       "symfollow, lazytime, nolazytime, silent, loud, mand, nomand (Linux no longer has\n"
       "mandatory locks).\n"
       "Permissions are always checked by the kernel (default_permissions).\n";
  return h.str();
}

Result<Options> parse_options(int argc, char** argv) {
  Options o;
  CLI::App app{"pmemfuse"};
  app.set_help_flag();
  std::vector<std::string> olists, positional;
  app.add_flag("-f,--foreground", o.foreground);
  app.add_flag("-d,--debug", o.debug);
  app.add_flag("-s,--single-thread", o.single_thread);
  app.add_flag("-h,--help", o.show_help);
  app.add_flag("-V,--version", o.show_version);
  app.add_option("-o", olists)->allow_extra_args(false);
  std::vector<std::string> long_opts;
  for (const Spec& s : specs()) {
    std::string n = s.name;
    if (s.value) {
      app.add_option_function<std::string>("--" + n, [&long_opts, n](const std::string& v) { long_opts.push_back(n + "=" + v); })
          ->expected(0, 1)->default_str("");
    } else {
      app.add_flag_callback("--" + n, [&long_opts, n] { long_opts.push_back(n); });
    }
  }
  app.add_option("args", positional);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return make_error(Errc::kInvalid, std::string(e.what()) + " (see pmemfuse --help)");
  }
  if (o.show_help || o.show_version) return o;
  if (o.debug) o.foreground = true;
  for (const std::string& l : olists) {
    std::stringstream ss(l);
    std::string item;
    while (std::getline(ss, item, ','))
      if (!item.empty()) PF_CHECK(apply_one(o, item));
  }
  for (const std::string& l : long_opts) {
    std::string item = l.back() == '=' ? l.substr(0, l.size() - 1) : l;
    PF_CHECK(apply_one(o, item));
  }
  if (positional.size() != 2) {
    return make_error(Errc::kInvalid, "expected DEVICE and MOUNTPOINT, got " + std::to_string(positional.size()) +
                                          " arguments (see pmemfuse --help)");
  }
  o.device = positional[0];
  o.mountpoint = positional[1];
  return o;
}

}  // namespace pmemfuse::daemon
