// fs/xattr.h: extended attributes of one inode. Entries are packed first into the
// inode's inline area, the rest into one xattr block (allocated and freed as needed), so
// all of an inode's xattrs fit in kInlineXattrBytes + kXattrBlockBytes, as on ext4 without
// ea_inode. Callers hold the inode's lock (exclusively for changes).
#pragma once

#include <string>
#include <vector>

#include "fs/journal.h"
#include "fs/space.h"

namespace pmemfuse::fs {

struct Xattr {
  std::string name;   // full name with namespace prefix
  std::string value;
};

Result<std::vector<Xattr>> load_xattrs(const mm::Region& region, uint64_t ino, const DiskInode& d);
// Stores the whole set; kNoSpace when it does not fit.
Status store_xattrs(Tx& tx, Space& space, uint64_t ino, DiskInode& d, const std::vector<Xattr>& xs);
// Bytes one entry takes on media.
inline uint32_t xattr_entry_size(const Xattr& x) {
  return uint32_t(sizeof(DiskXattrEntry) + x.name.size() + x.value.size());
}

}  // namespace pmemfuse::fs
