// daemon/control.h: the control interface, as virtual extended attributes on the root
// directory. They are not stored and not listed (so cp -a and tar do not copy them):
//   user.pmemfuse.stats  read: counters as one JSON object (cache, writeback, media,
//                        space)
//   user.pmemfuse.sync   write (any value): write back every dirty cached page, which is
//                        what syncfs(2) would ask for; the kernel sends SYNCFS to virtiofs
//                        only, so sync(1) cannot reach a FUSE daemon.
#pragma once

#include <fuse_lowlevel.h>

#include <string>
#include <string_view>

#include "fs/filesystem.h"

namespace pmemfuse::daemon {

bool is_control_xattr(fuse_ino_t ino, std::string_view name);
Result<std::string> control_get(fs::Filesystem& fs, std::string_view name);
Status control_set(fs::Filesystem& fs, std::string_view name);

}  // namespace pmemfuse::daemon
