// tools/cli.h: command-line pieces shared by mkfs.pmemfuse and fsck.pmemfuse.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>

#include "mm/region.h"

namespace pmemfuse::tools {

// Adds --emulate-devdax[=ALIGN], stored in *value.
inline void add_devdax_option(CLI::App& app, std::string* value) {
  app.add_option("--emulate-devdax", *value,
                 "apply device-dax rules (aligned mapping and size, no resize) to an image file; "
                 "ALIGN defaults to 2M")
      ->expected(0, 1);
}

// Parses argv. Returns -1 to go on, else the exit code: 0 after --help or --version,
// usage_code (with one line on stderr) for bad arguments.
inline int parse_args(CLI::App& app, int argc, char** argv, int usage_code) {
  try {
    app.parse(argc, argv);
    return -1;
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "%s: %s (see %s --help)\n", app.get_name().c_str(), e.what(), app.get_name().c_str());
    return usage_code;
  }
}

// The region options the command line asked for; kInvalid for a bad --emulate-devdax.
inline Result<mm::RegionOptions> region_options(const CLI::App& app, const std::string& devdax) {
  mm::RegionOptions ro;
  if (app.count("--emulate-devdax")) {
    PF_TRY(a, mm::parse_alignment(devdax));
    ro.emulate_devdax_align = a;
  }
  return ro;
}

}  // namespace pmemfuse::tools
