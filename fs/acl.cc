// fs/acl.cc: the POSIX ACL xattr encoding (version 2 header, then 8-byte entries).
#include "fs/acl.h"

#include <cstring>

namespace pmemfuse::fs {
namespace {

constexpr uint32_t kAclVersion = 2;

AclEntry* find(Acl* acl, uint16_t tag) {
  for (AclEntry& e : *acl)
    if (e.tag == tag) return &e;
  return nullptr;
}

}  // namespace

Result<Acl> parse_acl(std::string_view v) {
  uint32_t version;
  if (v.size() < 4 || (v.size() - 4) % 8) return make_error(Errc::kInvalid, "ACL: bad length");
  std::memcpy(&version, v.data(), 4);
  if (version != kAclVersion) return make_error(Errc::kInvalid, "ACL: version " + std::to_string(version));
  Acl acl((v.size() - 4) / 8);
  int seen = 0;
  for (size_t i = 0; i < acl.size(); i++) {
    std::memcpy(&acl[i], v.data() + 4 + 8 * i, 8);
    AclEntry& e = acl[i];
    bool named = e.tag == kAclUser || e.tag == kAclGroup;
    if (e.perm & ~7u) return make_error(Errc::kInvalid, "ACL: bad permission bits");
    if (!named) e.id = UINT32_MAX;
    bool sorted = i == 0 || acl[i - 1].tag < e.tag || (named && acl[i - 1].tag == e.tag && acl[i - 1].id < e.id);
    if (!sorted || (e.tag & (e.tag - 1)) || e.tag > kAclOther || e.tag == 0) {
      return make_error(Errc::kInvalid, "ACL: entries unsorted, duplicated or of unknown type");
    }
    seen |= e.tag;
  }
  int base = kAclUserObj | kAclGroupObj | kAclOther;
  if ((seen & base) != base) return make_error(Errc::kInvalid, "ACL: owner, group or other entry missing");
  if ((seen & (kAclUser | kAclGroup)) && !(seen & kAclMask)) return make_error(Errc::kInvalid, "ACL: named entries need a mask");
  return acl;
}

std::string encode_acl(const Acl& acl) {
  std::string out(4 + 8 * acl.size(), '\0');
  std::memcpy(out.data(), &kAclVersion, 4);
  for (size_t i = 0; i < acl.size(); i++) std::memcpy(out.data() + 4 + 8 * i, &acl[i], 8);
  return out;
}

bool acl_is_mode(const Acl& acl) {
  for (const AclEntry& e : acl)
    if (e.tag == kAclUser || e.tag == kAclGroup || e.tag == kAclMask) return false;
  return true;
}

uint32_t acl_mode_bits(const Acl& acl) {
  uint32_t u = 0, g = 0, o = 0, m = 8;
  for (const AclEntry& e : acl) {
    if (e.tag == kAclUserObj) u = e.perm;
    if (e.tag == kAclGroupObj) g = e.perm;
    if (e.tag == kAclOther) o = e.perm;
    if (e.tag == kAclMask) m = e.perm;
  }
  return u << 6 | (m != 8 ? m : g) << 3 | o;
}

Acl acl_for_create(const Acl& dir_default, uint32_t* mode) {
  Acl acl = dir_default;
  uint32_t m = *mode;
  AclEntry* group = nullptr;
  AclEntry* mask = nullptr;
  for (AclEntry& e : acl) {
    if (e.tag == kAclUserObj) e.perm &= (m >> 6) & 7, m = (m & ~0700u) | e.perm << 6;
    if (e.tag == kAclOther) e.perm &= m & 7, m = (m & ~07u) | e.perm;
    if (e.tag == kAclGroupObj) group = &e;
    if (e.tag == kAclMask) mask = &e;
  }
  AclEntry* g = mask ? mask : group;
  g->perm &= (m >> 3) & 7;
  m = (m & ~070u) | g->perm << 3;
  *mode = m;
  return acl;
}

void acl_chmod(Acl* acl, uint32_t mode) {
  find(acl, kAclUserObj)->perm = (mode >> 6) & 7;
  AclEntry* mask = find(acl, kAclMask);
  (mask ? mask : find(acl, kAclGroupObj))->perm = (mode >> 3) & 7;
  find(acl, kAclOther)->perm = mode & 7;
}

}  // namespace pmemfuse::fs
