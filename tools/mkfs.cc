// tools/mkfs.cc: mkfs.pmemfuse: write an empty pmemfuse filesystem on an image file or a
// device-dax device.

#include <cstdio>
#include <cstring>
#include <string>

#include "fs/filesystem.h"
#include "fs/format.h"
#include "mm/region.h"
#include "tools/cli.h"
#include "tools/progress.h"

namespace {

int fail(const std::string& msg, int code = 1) {
  std::fprintf(stderr, "mkfs.pmemfuse: %s\n", msg.c_str());
  return code;
}

bool has_pmemfuse_magic(const pmemfuse::mm::Region& r) {
  uint64_t magic;
  std::memcpy(&magic, r.at(0), sizeof magic);
  return magic == pmemfuse::fs::kSuperMagic;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace pmemfuse;
  CLI::App app{"Create a pmemfuse filesystem on DEVICE (an image file or /dev/daxX.Y)", "mkfs.pmemfuse"};
  std::string device, size_s, label, devdax_s;
  bool force = false, quiet = false;
  app.add_option("DEVICE", device, "image file or device-dax device")->required();
  app.add_option("-s,--size", size_s, "create or extend the image file to SIZE (e.g. 2G); default: its current size");
  app.add_option("-L,--label", label, "volume label (up to 31 bytes)");
  app.add_flag("-f,--force", force, "overwrite an existing pmemfuse filesystem");
  app.add_flag("-q,--quiet", quiet, "print nothing on success");
  tools::add_devdax_option(app, &devdax_s);
  app.set_version_flag("-V,--version", "mkfs.pmemfuse 0.1.0 (format v1)");
  if (int rc = tools::parse_args(app, argc, argv, 2); rc >= 0) return rc;
  if (label.size() > 31) return fail("label longer than 31 bytes", 2);
  auto opts = tools::region_options(app, devdax_s);
  if (!opts) return fail(opts.error().msg, 2);
  mm::RegionOptions ro = *opts;
  if (!size_s.empty()) {
    auto size = mm::parse_size(size_s);
    if (!size) return fail("--size: " + size.error().msg, 2);
    if (*size < fs::kMinBlocks * fs::kBlockSize) return fail("--size " + size_s + " is below the minimum of 16M", 2);
    if (Status s = mm::Region::create_file(device, *size); !s) return fail(s.error().msg);
  }
  auto region = mm::Region::open(device, ro);
  if (!region) {
    if (region.error().code == Errc::kNotFound) {
      return fail(device + " does not exist; pass --size SIZE to create an image file");
    }
    return fail(region.error().msg);
  }
  if (has_pmemfuse_magic(*region) && !force) {
    return fail(device + " already holds a pmemfuse filesystem; pass -f to overwrite it");
  }
  fs::MkfsOptions mo;
  mo.label = label;
  tools::TerminalProgress progress("mkfs.pmemfuse");
  if (!quiet) mo.progress = progress.callback();
  if (Status s = fs::mkfs(*region, mo); !s) return fail(s.error().msg);
  if (!quiet) {
    std::printf("%s: pmemfuse filesystem, %llu blocks of 4 KiB (%.1f MiB)%s\n", device.c_str(),
                (unsigned long long)(region->size() / fs::kBlockSize), region->size() / 1048576.0,
                region->is_devdax() ? ", device-dax rules" : "");
  }
  return 0;
}
