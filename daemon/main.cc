// daemon/main.cc: pmemfuse: parse options, open and mount the filesystem, serve FUSE
// requests until unmount or SIGTERM/SIGINT/SIGHUP, then write back and mark the image
// clean. Errors before the mount is up are one line on stderr and a non-zero exit.
#include <fuse_lowlevel.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "daemon/devfuse.h"
#include "daemon/ops.h"
#include "daemon/options.h"
#include "fs/filesystem.h"
#include "tools/progress.h"

namespace pmemfuse::daemon {
namespace {

constexpr const char* kVersion = "pmemfuse 0.1.0 (format v1)";

int fail(const std::string& msg, int code = 1) {
  std::fprintf(stderr, "pmemfuse: %s\n", msg.c_str());
  return code;
}

// A device path with '%' in it would otherwise be read as a pattern flag.
std::string escape_pattern(const std::string& s) {
  std::string out;
  for (char c : s) out += c == '%' ? std::string("%%") : std::string(1, c);
  return out;
}

void setup_logging(const Options& o, bool to_syslog) {
  std::shared_ptr<spdlog::logger> log;
  if (to_syslog) log = spdlog::syslog_logger_mt("pmemfuse", "pmemfuse", LOG_PID, LOG_DAEMON);
  else log = spdlog::stderr_color_mt("pmemfuse");
  log->set_level(spdlog::level::from_str(o.log_level));
  // Every message names the device: one daemon's lines stay apart from another's. syslog
  // adds the time, the level and "pmemfuse[PID]" itself.
  std::string dev = escape_pattern(o.device);
  log->set_pattern(to_syslog ? dev + ": %v" : "%Y-%m-%d %H:%M:%S.%e pmemfuse %^%l%$: " + dev + ": %v");
  spdlog::set_default_logger(log);
}

Status check_mountpoint(const std::string& mp) {
  struct stat st;
  if (stat(mp.c_str(), &st) != 0) {
    return make_error(Errc::kNotFound, "mount point " + mp + " does not exist (create it with mkdir -p " + mp + ")");
  }
  if (!S_ISDIR(st.st_mode)) return make_error(Errc::kNotDir, "mount point " + mp + " is not a directory");
  return {};
}

// libfuse 3.14's mount code does not know nosymfollow: the flag is set on the mount after.
bool set_nosymfollow(const std::string& mp) {
  mount_attr attr{};
  attr.attr_set = MOUNT_ATTR_NOSYMFOLLOW;
  return mount_setattr(AT_FDCWD, mp.c_str(), 0, &attr, sizeof attr) == 0;
}

// libfuse arguments: our own options are consumed; the rest are FUSE mount options.
std::vector<std::string> fuse_argv(const Options& o) {
  std::string mo = "fsname=" + o.device + ",subtype=pmemfuse,default_permissions";
  if (o.allow_other) mo += ",allow_other";
  if (o.read_only) mo += ",ro";
  for (const std::string& f : o.kernel_flags) mo += "," + f;
  std::vector<std::string> a{"pmemfuse", "-o", mo};
  if (o.debug) a.push_back("-d");
  return a;
}

int serve(const Options& o, fs::Filesystem& fs) {
  std::vector<std::string> args = fuse_argv(o);
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  fuse_args fargs = FUSE_ARGS_INIT(int(argv.size()), argv.data());
  DevFuse dev;
  Context ctx{&fs, &o};
  ctx.dev = &dev;
  fuse_session* se = fuse_session_new(&fargs, &lowlevel_ops(), sizeof(fuse_lowlevel_ops), &ctx);
  if (!se) {
    fuse_opt_free_args(&fargs);
    return fail("cannot create the FUSE session (see the message above)");
  }
  ctx.se = se;
  int rc = 1;
  if (fuse_set_signal_handlers(se) != 0) {
    fail("cannot install signal handlers");
  } else if (fuse_session_mount(se, o.mountpoint.c_str()) != 0) {
    fail("cannot mount on " + o.mountpoint + " (is /dev/fuse available and the mount point empty?)");
  } else if (fuse_session_custom_io(se, &DevFuse::io(), fuse_session_fd(se)) != 0) {
    fail("cannot route /dev/fuse through our own I/O functions");
    fuse_session_unmount(se);
  } else if (o.nosymfollow && !set_nosymfollow(o.mountpoint)) {
    fail("cannot set nosymfollow on " + o.mountpoint + ": " + std::strerror(errno) + " (needs Linux 5.14 or later)");
    fuse_session_unmount(se);
  } else {
    if (!o.foreground) {
      fuse_daemonize(0);
      spdlog::drop("pmemfuse");
      setup_logging(o, true);
    }
    fs.start_writeback();  // threads do not survive fuse_daemonize's fork
    spdlog::info("mounted on {}{}", o.mountpoint, fs.info().read_only ? " read-only" : "");
    if (o.single_thread) {
      rc = fuse_session_loop(se);
    } else {
      fuse_loop_config* cfg = fuse_loop_cfg_create();
      fuse_loop_cfg_set_clone_fd(cfg, o.clone_fd);
      fuse_loop_cfg_set_max_threads(cfg, o.max_threads);
      rc = fuse_session_loop_mt(se, cfg);
      fuse_loop_cfg_destroy(cfg);
    }
    fuse_session_unmount(se);
  }
  fuse_remove_signal_handlers(se);
  fuse_session_destroy(se);
  fuse_opt_free_args(&fargs);
  // The loops return a signal number when SIGTERM/SIGINT/SIGHUP ended them: a clean exit.
  return rc >= 0 ? 0 : 1;
}

int run(int argc, char** argv) {
  auto opts = parse_options(argc, argv);
  if (!opts) return fail(opts.error().msg, 2);
  const Options& o = *opts;
  if (o.show_help) {
    std::fputs(help_text().c_str(), stdout);
    return 0;
  }
  if (o.show_version) {
    std::printf("%s\nFUSE library %s\n", kVersion, fuse_pkgversion());
    return 0;
  }
  setup_logging(o, false);
  if (Status s = check_mountpoint(o.mountpoint); !s) return fail(s.error().msg);
  mm::RegionOptions ro;
  ro.read_only = false;
  ro.emulate_devdax_align = o.emulate_devdax;
  auto region = mm::Region::open(o.device, ro);
  if (!region) return fail(region.error().msg);
  fs::MountOptions mo;
  mo.read_only = o.read_only;
  mo.acl = o.acl;
  mo.atime = o.atime;
  mo.dir_atime = o.dir_atime;
  mo.cache_pages = cache_pages(o);
  mo.flush_interval_ms = uint64_t(std::llround(o.flush_interval * 1000));
  mo.kernel_times = o.writeback_cache;
  mo.dax = o.dax == "always" ? fs::DaxMode::kAlways : o.dax == "never" ? fs::DaxMode::kNever : fs::DaxMode::kInode;
  mo.dax_window_bytes = o.dax_window;
  tools::TerminalProgress progress("pmemfuse");
  mo.progress = progress.callback();
  auto fs = fs::Filesystem::mount(std::move(*region), mo);
  if (!fs) return fail(fs.error().msg);
  if ((*fs)->info().replayed) spdlog::info("replayed {} journal transactions", (*fs)->info().replayed);
  if ((*fs)->info().orphans_reclaimed) {
    spdlog::info("freed {} inodes unlinked while open before a crash", (*fs)->info().orphans_reclaimed);
  }
  int rc = serve(o, **fs);
  // The kernel has let go of the mount; what the cache holds still has to reach pmem. A
  // SIGTERM now (systemd stopping a mount unit kills what is left in its cgroup) must not
  // cut that short: the write-back ends on its own.
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) std::signal(sig, SIG_IGN);
  if (Status s = (*fs)->unmount(); !s) {
    spdlog::error("unmount failed: {}; run fsck.pmemfuse {} before mounting again", s.error().msg, o.device);
    rc = 1;
  } else {
    spdlog::info("unmounted cleanly");
  }
  return rc;
}

}  // namespace
}  // namespace pmemfuse::daemon

int main(int argc, char** argv) { return pmemfuse::daemon::run(argc, argv); }
