// tests/unit/fs/acl_test.cc: POSIX ACL encoding and the mode rules of fs/acl.cc.
#include <catch2/catch.hpp>

#include "fs/acl.h"

using namespace pmemfuse;
using namespace pmemfuse::fs;

namespace {

Acl base(uint16_t u, uint16_t g, uint16_t o) {
  return {{kAclUserObj, u, UINT32_MAX}, {kAclGroupObj, g, UINT32_MAX}, {kAclOther, o, UINT32_MAX}};
}

Acl with_named_user(uint32_t uid, uint16_t perm, uint16_t mask) {
  return {{kAclUserObj, 7, UINT32_MAX}, {kAclUser, perm, uid}, {kAclGroupObj, 5, UINT32_MAX},
          {kAclMask, mask, UINT32_MAX}, {kAclOther, 4, UINT32_MAX}};
}

}  // namespace

TEST_CASE("acl: encode then parse gives the same entries", "[fs][acl]") {
  Acl a = with_named_user(4242, 6, 7);
  auto back = parse_acl(encode_acl(a));
  REQUIRE(back.ok());
  REQUIRE(back->size() == a.size());
  for (size_t i = 0; i < a.size(); i++) {
    CHECK(back->at(i).tag == a[i].tag);
    CHECK(back->at(i).perm == a[i].perm);
  }
  CHECK(back->at(1).id == 4242);
}

TEST_CASE("acl: malformed ACLs are refused", "[fs][acl]") {
  CHECK_FALSE(parse_acl("").ok());
  CHECK_FALSE(parse_acl(std::string("\x01\0\0\0", 4)).ok());  // version 1
  Acl no_other = {{kAclUserObj, 7, 0}, {kAclGroupObj, 5, 0}};
  CHECK_FALSE(parse_acl(encode_acl(no_other)).ok());
  Acl no_mask = {{kAclUserObj, 7, 0}, {kAclUser, 6, 1}, {kAclGroupObj, 5, 0}, {kAclOther, 4, 0}};
  CHECK(parse_acl(encode_acl(no_mask)).error().code == Errc::kInvalid);
  Acl unsorted = {{kAclGroupObj, 5, 0}, {kAclUserObj, 7, 0}, {kAclOther, 4, 0}};
  CHECK_FALSE(parse_acl(encode_acl(unsorted)).ok());
  Acl bad_perm = base(7, 5, 4);
  bad_perm[0].perm = 8;
  CHECK_FALSE(parse_acl(encode_acl(bad_perm)).ok());
}

TEST_CASE("acl: mode bits come from owner, mask (or group) and other", "[fs][acl]") {
  CHECK(acl_mode_bits(base(6, 4, 0)) == 0640);
  CHECK(acl_mode_bits(with_named_user(1, 6, 3)) == 0734);
  CHECK(acl_is_mode(base(7, 5, 5)));
  CHECK_FALSE(acl_is_mode(with_named_user(1, 6, 7)));
}

TEST_CASE("acl: create narrows the inherited entries and the mode", "[fs][acl]") {
  uint32_t mode = 0666;
  Acl got = acl_for_create(with_named_user(4242, 7, 7), &mode);
  CHECK(mode == 0664);
  CHECK(got[0].perm == 6);  // owner: rwx & rw-
  CHECK(got[1].perm == 7);  // named entries stay; the mask limits them
  CHECK(got[3].perm == 6);  // mask: rwx & rw-
  CHECK(got[4].perm == 4);  // other: r-x & rw-
}

TEST_CASE("acl: chmod rewrites owner, mask and other", "[fs][acl]") {
  Acl a = with_named_user(4242, 7, 7);
  acl_chmod(&a, 0750);
  CHECK(a[0].perm == 7);
  CHECK(a[2].perm == 5);  // the group entry keeps its bits when there is a mask
  CHECK(a[3].perm == 5);
  CHECK(a[4].perm == 0);
  Acl b = base(7, 7, 7);
  acl_chmod(&b, 0604);
  CHECK(acl_mode_bits(b) == 0604);
}
