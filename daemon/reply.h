// daemon/reply.h: exactly one reply per FUSE request. A Reply that goes out of scope
// unanswered answers EIO and logs the bug; a second answer is refused and logged.
#pragma once

#include <fuse_lowlevel.h>

#include "daemon/errors.h"
#include "mm/result.h"

namespace pmemfuse::daemon {

class Reply {
 public:
  explicit Reply(fuse_req_t req) : req_(req) {}
  Reply(const Reply&) = delete;
  Reply& operator=(const Reply&) = delete;
  ~Reply();

  fuse_req_t req() const { return req_; }
  // Each returns libfuse's result; all mark the request answered.
  void error(const Error& e);
  void err(int errnum);  // 0 answers success for requests without a payload
  void entry(const fuse_entry_param& e);
  void create(const fuse_entry_param& e, const fuse_file_info* fi);
  void attr(const struct stat& st, double timeout);
  void open(const fuse_file_info* fi);
  void write(size_t count);
  void buf(const char* data, size_t size);
  void iov(const struct iovec* v, int count);
  void readlink(const char* target);
  void statfs(const struct statvfs& s);
  void xattr_size(size_t size);
  void lseek(off_t off);
  void ioctl(const void* out, size_t size);  // result 0 with the output data
  void none();  // forget: no reply is sent, the request is finished

 private:
  bool claim();
  fuse_req_t req_;
  bool done_ = false;
};

}  // namespace pmemfuse::daemon
