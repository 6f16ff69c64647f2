// tools/fsck.pmemfuse: check a pmemfuse filesystem and, with -y or -p, repair it
// (fs/repair.h; what each problem becomes is in docs/fsck.md). Exit codes as fsck(8):
// 0 clean, 1 errors corrected (a journal replay included), 4 errors left uncorrected,
// 8 operational error, 16 usage error.

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "fs/check.h"
#include "fs/repair.h"
#include "mm/region.h"
#include "tools/cli.h"
#include "tools/progress.h"

namespace {

constexpr int kClean = 0, kCorrected = 1, kUncorrected = 4, kOperational = 8, kUsage = 16;

int fail(const std::string& msg, int code) {
  std::fprintf(stderr, "fsck.pmemfuse: %s\n", msg.c_str());
  return code;
}

// Prints lines (total may be more than were kept) as "DEVICE: <prefix><line>".
void print_lines(const std::string& dev, const std::vector<std::string>& lines, uint64_t total,
                 const char* prefix) {
  size_t shown = std::min<size_t>(lines.size(), 200);
  for (size_t k = 0; k < shown; k++) std::printf("%s: %s%s\n", dev.c_str(), prefix, lines[k].c_str());
  if (total > shown) std::printf("%s: ... and %llu more\n", dev.c_str(), (unsigned long long)(total - shown));
}

void print_replayed(const std::string& dev, const pmemfuse::fs::CheckReport& rep, bool in_memory) {
  if (!rep.replayed) return;
  std::printf("%s: journal: %llu committed transactions replayed%s\n", dev.c_str(),
              (unsigned long long)rep.replayed, in_memory ? " (in memory only)" : "");
}

void print_summary(const std::string& dev, const pmemfuse::fs::CheckReport& rep) {
  std::printf("%s: %s, %llu inodes (%llu directories), %llu/%llu blocks used\n", dev.c_str(),
              rep.problem_count ? "PROBLEMS FOUND" : "clean", (unsigned long long)rep.inodes,
              (unsigned long long)rep.directories, (unsigned long long)rep.blocks_used,
              (unsigned long long)rep.blocks_total);
}

int error_code(const pmemfuse::Error& e) {
  return e.code == pmemfuse::Errc::kCorrupt ? kUncorrected : kOperational;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace pmemfuse;
  CLI::App app{"Check a pmemfuse filesystem", "fsck.pmemfuse"};
  std::string device, devdax_s;
  bool no = false, yes = false, preen = false, force = false, verbose = false;
  app.add_option("DEVICE", device, "image file or device-dax device")->required();
  app.add_flag("-n", no, "check only; open the image read-only and change nothing (journal replayed in memory)");
  app.add_flag("-y", yes, "repair everything that can be repaired, without asking");
  app.add_flag("-p,-a", preen, "repair what loses no data, without asking; exit 4 if more is needed");
  app.add_flag("-f", force, "check even if the filesystem seems clean (always done)");
  app.add_flag("-v", verbose, "list every problem and a summary");
  tools::add_devdax_option(app, &devdax_s);
  app.set_version_flag("-V,--version", "fsck.pmemfuse 0.1.0 (format v1)");
  if (int rc = tools::parse_args(app, argc, argv, kUsage); rc >= 0) return rc;
  if (no && (yes || preen)) return fail("-n cannot be combined with -y or -p", kUsage);
  auto opts = tools::region_options(app, devdax_s);
  if (!opts) return fail(opts.error().msg, kUsage);
  mm::RegionOptions ro = *opts;
  ro.private_copy = no;
  auto region = mm::Region::open(device, ro);
  if (!region) return fail(region.error().msg, kOperational);

  tools::TerminalProgress progress("fsck.pmemfuse");
  if (!yes && !preen) {
    auto rep = fs::check_image(*region, progress.callback());
    if (!rep) return fail(rep.error().msg, error_code(rep.error()));
    print_lines(device, rep->problems, rep->problem_count, "");
    print_replayed(device, *rep, no);
    if (verbose || rep->problem_count == 0) print_summary(device, *rep);
    if (rep->problem_count) {
      std::printf("%s: nothing repaired; run fsck.pmemfuse -y to repair\n", device.c_str());
      return kUncorrected;
    }
    return rep->replayed && !no ? kCorrected : kClean;
  }

  auto res = fs::repair_image(*region, {preen, progress.callback()});
  if (!res) return fail(res.error().msg, error_code(res.error()));
  print_lines(device, res->first.problems, res->first.problem_count, "");
  print_replayed(device, res->first, false);
  print_lines(device, res->actions, res->actions.size(), "repaired: ");
  if (res->refused) {
    std::printf("%s: UNEXPECTED INCONSISTENCY: the repair would discard damaged inodes, directory blocks "
                "or xattrs; run fsck.pmemfuse -y\n", device.c_str());
    return kUncorrected;
  }
  const fs::CheckReport& last = res->last;
  print_lines(device, last.problems, last.problem_count, "not repaired: ");
  print_summary(device, last);
  if (last.problem_count) return kUncorrected;
  return res->actions.empty() && !res->first.replayed ? kClean : kCorrected;
}
