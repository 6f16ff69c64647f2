// daemon/devfuse.h: our own /dev/fuse read and writev (fuse_session_custom_io), which let
// the daemon enable two kernel features libfuse 3.14 cannot ask for: FUSE_DIRECT_IO_ALLOW_MMAP
// in the INIT reply (mmap(MAP_SHARED) of direct_io files) and FOPEN_PARALLEL_DIRECT_WRITES
// in direct_io open replies (the kernel then does not serialize direct writes to one file on
// the inode lock; the filesystem orders concurrent writers itself). Thread-safe: libfuse
// calls both from every worker thread, on the session fd and on cloned fds alike.
#pragma once

#include <fuse_lowlevel.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <unordered_set>

namespace pmemfuse::daemon {

// read and writev keep the syscalls' contract, which libfuse 3.14 relies on: the byte count,
// or -1 with errno untouched (ENOENT: the request was interrupted; ENODEV: unmounted; EINTR:
// a signal, after which the loop checks whether it should exit, so it is never retried here).
//
// libfuse 3.14 calls splice(2) on the fd itself, bypassing these functions, when splicing is
// wanted and the custom io has no splice functions: FUSE_CAP_SPLICE_READ must stay off (it
// is, without a write_buf operation), or open requests would go unseen. Spliced replies carry
// only read data, which needs no patching.
class DevFuse {
 public:
  // The table for fuse_session_custom_io(). Its functions get the session's userdata, a
  // Context whose `dev` points at the DevFuse.
  static const fuse_custom_io& io();

  ssize_t read(int fd, void* buf, size_t size);
  ssize_t writev(int fd, const iovec* iov, int count);

  // Whether the INIT reply enabled FUSE_DIRECT_IO_ALLOW_MMAP: it does iff the kernel offers it.
  bool direct_io_mmap() const { return direct_io_mmap_; }

 private:
  void note_request(const char* msg, size_t size);
  bool forget_open(uint64_t unique);
  ssize_t write_init(int fd, const iovec* iov, int count, int32_t error);
  ssize_t write_open(int fd, const iovec* iov, int count);

  std::atomic<uint64_t> init_unique_ = 0;   // the INIT request until its reply; 0: none
  std::atomic<bool> mmap_offered_ = false;  // the INIT request offered DIRECT_IO_ALLOW_MMAP
  std::atomic<bool> direct_io_mmap_ = false;
  std::mutex opens_mu_;
  std::unordered_set<uint64_t> opens_;  // guarded by opens_mu_: OPEN/CREATE awaiting reply
  std::atomic<size_t> open_count_ = 0;  // opens_.size(), so most replies skip the lock
};

}  // namespace pmemfuse::daemon
