// tools/mkfs.cc: mkfs.pmemfuse: write an empty pmemfuse filesystem on an image file or a
// device-dax device.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstring>
#include <string>

#include "fs/filesystem.h"
#include "fs/format.h"
#include "mm/region.h"

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
  app.add_option("--emulate-devdax", devdax_s, "apply device-dax rules to an image file (alignment, default 2M)")
      ->expected(0, 1)->default_str("2M");
  app.set_version_flag("-V,--version", "mkfs.pmemfuse 0.1.0 (format v1)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return fail(std::string(e.what()) + " (see mkfs.pmemfuse --help)", 2);
  }
  if (label.size() > 31) return fail("label longer than 31 bytes", 2);
  mm::RegionOptions ro;
  if (app.count("--emulate-devdax")) {
    auto a = mm::parse_size(devdax_s.empty() ? "2M" : devdax_s);
    if (!a || *a < 4096 || (*a & (*a - 1))) return fail("--emulate-devdax: alignment must be a power of two >= 4K", 2);
    ro.emulate_devdax_align = *a;
  }
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
  if (Status s = fs::mkfs(*region, mo); !s) return fail(s.error().msg);
  if (!quiet) {
    std::printf("%s: pmemfuse filesystem, %llu blocks of 4 KiB (%.1f MiB)%s\n", device.c_str(),
                (unsigned long long)(region->size() / fs::kBlockSize), region->size() / 1048576.0,
                region->is_devdax() ? ", device-dax rules" : "");
  }
  return 0;
}
