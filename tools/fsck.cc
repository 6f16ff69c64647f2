// tools/fsck.pmemfuse: check a pmemfuse filesystem. Exit codes as fsck(8): 0 clean,
// 1 errors corrected (the journal was replayed), 4 errors left uncorrected,
// 8 operational error, 16 usage error.

#include <cstdio>
#include <string>

#include "fs/check.h"
#include "mm/region.h"
#include "tools/cli.h"

namespace {

constexpr int kClean = 0, kCorrected = 1, kUncorrected = 4, kOperational = 8, kUsage = 16;

int fail(const std::string& msg, int code) {
  std::fprintf(stderr, "fsck.pmemfuse: %s\n", msg.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace pmemfuse;
  CLI::App app{"Check a pmemfuse filesystem", "fsck.pmemfuse"};
  std::string device, devdax_s;
  bool no = false, yes = false, preen = false, force = false, verbose = false;
  app.add_option("DEVICE", device, "image file or device-dax device")->required();
  app.add_flag("-n", no, "check only; open the image read-only and change nothing (journal replayed in memory)");
  app.add_flag("-y", yes, "repair without asking");
  app.add_flag("-p,-a", preen, "repair what is safe without asking (preen)");
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
  auto rep = fs::check_image(*region);
  if (!rep) return fail(rep.error().msg, rep.error().code == Errc::kCorrupt ? kUncorrected : kOperational);
  bool repaired = false;
  if (rep->primary_super_bad && (yes || preen)) {
    // The only repair so far: the backup superblock, verified, replaces the primary.
    std::printf("%s: %s\n%s: primary superblock restored from the backup in block %llu\n", device.c_str(),
                rep->problems.front().c_str(), device.c_str(), (unsigned long long)rep->backup_block);
    fs::restore_primary_super(*region, *rep);
    rep = fs::check_image(*region);
    if (!rep) return fail(rep.error().msg, kUncorrected);
    repaired = true;
  }
  for (const std::string& p : rep->problems) std::printf("%s: %s\n", device.c_str(), p.c_str());
  if (rep->problem_count > rep->problems.size()) {
    std::printf("%s: ... and %llu more problems\n", device.c_str(),
                (unsigned long long)(rep->problem_count - rep->problems.size()));
  }
  if (rep->replayed) {
    std::printf("%s: journal: %llu committed transactions replayed%s\n", device.c_str(),
                (unsigned long long)rep->replayed, no ? " (in memory only)" : "");
  }
  if (verbose || rep->problem_count == 0) {
    std::printf("%s: %s, %llu inodes (%llu directories), %llu/%llu blocks used\n", device.c_str(),
                rep->problem_count ? "PROBLEMS FOUND" : "clean", (unsigned long long)rep->inodes,
                (unsigned long long)rep->directories, (unsigned long long)rep->blocks_used,
                (unsigned long long)rep->blocks_total);
  }
  if (rep->problem_count) {
    if (yes || preen) std::printf("%s: only the superblock can be repaired in this version; nothing else was changed\n", device.c_str());
    return kUncorrected;
  }
  return (rep->replayed && !no) || repaired ? kCorrected : kClean;
}
