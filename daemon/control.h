// daemon/control.h: the control interface, as virtual extended attributes. They are not
// stored and not listed (so cp -a and tar do not copy them). On the root directory:
//   user.pmemfuse.stats  read: counters as one JSON object (cache, dax_windows,
//                        journal: commits and bytes logged since mount, writeback,
//                        media, space); read by pmemfuse-stat (tools/stat.cc)
//   user.pmemfuse.sync   write (any value): write back every dirty cached page, which is
//                        what syncfs(2) would ask for; the kernel sends SYNCFS to virtiofs
//                        only, so sync(1) cannot reach a FUSE daemon.
// On every regular file and directory:
//   user.pmemfuse.dax            "1" or "0": the DAX flag (FS_XFLAG_DAX); setting it to
//                                "0" and removing it clear it. Directories hand it on.
//   user.pmemfuse.dax_effective  read: "1" when opens of the file use DAX (for a
//                                directory: when files created in it will), given the
//                                mount's dax= mode.
#pragma once

#include <fuse_lowlevel.h>

#include <optional>
#include <string>
#include <string_view>

#include "fs/filesystem.h"

namespace pmemfuse::daemon {

bool is_control_xattr(fuse_ino_t ino, std::string_view name);
Result<std::string> control_get(fs::Filesystem& fs, fuse_ino_t ino, std::string_view name);
// A set, or with no value a removal. Returns whether the file's data path changed: the
// kernel's cached pages of it are then stale.
Result<bool> control_set(fs::Filesystem& fs, fuse_ino_t ino, std::string_view name,
                         std::optional<std::string_view> value);

}  // namespace pmemfuse::daemon
