// daemon/ops.h: the FUSE lowlevel operation table. Each operation decodes the request,
// calls the Filesystem and encodes the reply; no filesystem logic lives here.
#pragma once

#include <fuse_lowlevel.h>

#include "daemon/options.h"
#include "fs/filesystem.h"

namespace pmemfuse::daemon {

class DevFuse;

struct Context {
  fs::Filesystem* fs;
  const Options* opts;
  fuse_session* se = nullptr;  // for notifications; set once the session exists
  DevFuse* dev = nullptr;      // our /dev/fuse I/O (daemon/devfuse.h), if installed
};

// The operation table; the session's userdata must be a Context*.
const fuse_lowlevel_ops& lowlevel_ops();

}  // namespace pmemfuse::daemon
