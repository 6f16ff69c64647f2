// fs/acl.h: POSIX access control lists in their xattr encoding
// (system.posix_acl_access / system.posix_acl_default). The kernel enforces them on
// permission checks; the filesystem keeps them consistent with the mode, as ext4 does:
// inheritance from a directory's default ACL at create, the mode derived from an access
// ACL when one is set, and the ACL rewritten on chmod. Pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "mm/result.h"

namespace pmemfuse::fs {

inline constexpr std::string_view kAclAccess = "system.posix_acl_access";
inline constexpr std::string_view kAclDefault = "system.posix_acl_default";

struct AclEntry {
  uint16_t tag;   // kAclUserObj ...
  uint16_t perm;  // rwx bits
  uint32_t id;    // uid or gid for kAclUser / kAclGroup
};
inline constexpr uint16_t kAclUserObj = 0x01, kAclUser = 0x02, kAclGroupObj = 0x04,
                          kAclGroup = 0x08, kAclMask = 0x10, kAclOther = 0x20;

using Acl = std::vector<AclEntry>;

// Decodes and validates (required entries present, sorted, no duplicates); kInvalid if not.
Result<Acl> parse_acl(std::string_view value);
std::string encode_acl(const Acl& acl);
// True when the ACL says no more than the mode's permission bits.
bool acl_is_mode(const Acl& acl);
// The permission bits the ACL implies (group bits from the mask when there is one).
uint32_t acl_mode_bits(const Acl& acl);
// A new inode's access ACL from its directory's default ACL: entries masked by the
// requested mode, which is narrowed in turn (posix_acl_create semantics).
Acl acl_for_create(const Acl& dir_default, uint32_t* mode);
// chmod: owner, group (or mask) and other entries take the new permission bits.
void acl_chmod(Acl* acl, uint32_t mode);

}  // namespace pmemfuse::fs
