// daemon/reply.cc: the reply guard.
#include "daemon/reply.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>

namespace pmemfuse::daemon {

Reply::~Reply() {
  if (done_) return;
  spdlog::error("a request finished without a reply; answered EIO (a pmemfuse bug: please report it)");
  fuse_reply_err(req_, EIO);
}

bool Reply::claim() {
  if (done_) {
    spdlog::error("a second reply to one request was suppressed (a pmemfuse bug: please report it)");
    return false;
  }
  done_ = true;
  return true;
}

void Reply::error(const Error& e) {
  int n = to_errno(e.code);
  if (e.code == Errc::kCorrupt || e.code == Errc::kIo) {
    spdlog::error("{}; answered {}: unmount and run fsck.pmemfuse on the device", e.msg, strerrorname_np(n));
  } else spdlog::debug("{}: {}", errc_name(e.code), e.msg);
  err(n);
}

void Reply::err(int errnum) {
  if (claim()) fuse_reply_err(req_, errnum);
}
void Reply::entry(const fuse_entry_param& e) {
  if (claim()) fuse_reply_entry(req_, &e);
}
void Reply::create(const fuse_entry_param& e, const fuse_file_info* fi) {
  if (claim()) fuse_reply_create(req_, &e, fi);
}
void Reply::attr(const struct stat& st, double timeout) {
  if (claim()) fuse_reply_attr(req_, &st, timeout);
}
void Reply::open(const fuse_file_info* fi) {
  if (claim()) fuse_reply_open(req_, fi);
}
void Reply::write(size_t count) {
  if (claim()) fuse_reply_write(req_, count);
}
void Reply::buf(const char* data, size_t size) {
  if (claim()) fuse_reply_buf(req_, data, size);
}
void Reply::ioctl(const void* out, size_t size) {
  if (claim()) fuse_reply_ioctl(req_, 0, out, size);
}
void Reply::iov(const struct iovec* v, int count) {
  if (claim()) fuse_reply_iov(req_, v, count);
}
void Reply::readlink(const char* target) {
  if (claim()) fuse_reply_readlink(req_, target);
}
void Reply::statfs(const struct statvfs& s) {
  if (claim()) fuse_reply_statfs(req_, &s);
}
void Reply::xattr_size(size_t size) {
  if (claim()) fuse_reply_xattr(req_, size);
}
void Reply::lseek(off_t off) {
  if (claim()) fuse_reply_lseek(req_, off);
}
void Reply::none() {
  if (claim()) fuse_reply_none(req_);
}

}  // namespace pmemfuse::daemon
