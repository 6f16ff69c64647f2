// daemon/devfuse.cc: every /dev/fuse read and reply write of the session passes here. INIT,
// OPEN and CREATE requests are noted; the replies to them are patched in a local copy, never
// in libfuse's buffers; all other traffic passes through untouched.
#include "daemon/devfuse.h"

#include <linux/fuse.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>
#include <optional>
#include <span>

#include "daemon/ops.h"

namespace pmemfuse::daemon {
namespace {

// FUSE_DIRECT_IO_ALLOW_MMAP (protocol 7.39) is bit 36 of the 64-bit init flags, i.e. bit 4 of
// flags2; this machine's <linux/fuse.h> (7.38) predates it.
constexpr uint32_t kDirectIoAllowMmap = 1u << (36 - 32);

// The wire layout read and patched here, as in the kernel's include/uapi/linux/fuse.h (7.45).
static_assert(offsetof(fuse_init_in, flags) == 12 && offsetof(fuse_init_in, flags2) == 16);
static_assert(offsetof(fuse_init_out, flags) == 12 && offsetof(fuse_init_out, flags2) == 32);
static_assert(offsetof(fuse_open_out, open_flags) == 8 && sizeof(fuse_open_out) == 16);
static_assert(sizeof(fuse_entry_out) == 128);

constexpr size_t kOpenReply = sizeof(fuse_out_header) + sizeof(fuse_open_out);
constexpr size_t kCreateReply = kOpenReply + sizeof(fuse_entry_out);  // entry, then open

struct InitReply {
  fuse_out_header header;
  fuse_init_out init;
};
static_assert(sizeof(InitReply) == 16 + 64);

// Copies the message spread over iov into buf; its size, or nullopt if it does not fit.
std::optional<size_t> gather(const iovec* iov, int count, std::span<char> buf) {
  size_t n = 0;
  for (int i = 0; i < count; i++) {
    if (iov[i].iov_len > buf.size() - n) return std::nullopt;
    std::memcpy(buf.data() + n, iov[i].iov_base, iov[i].iov_len);
    n += iov[i].iov_len;
  }
  return n;
}

template <class T>
T load(const void* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// libfuse passes the session's userdata, our Context.
DevFuse& dev(void* ctx) { return *static_cast<Context*>(ctx)->dev; }
ssize_t io_writev(int fd, iovec* iov, int count, void* ctx) {
  return dev(ctx).writev(fd, iov, count);
}
ssize_t io_read(int fd, void* buf, size_t size, void* ctx) { return dev(ctx).read(fd, buf, size); }

}  // namespace

const fuse_custom_io& DevFuse::io() {
  static const fuse_custom_io io{
      .writev = io_writev,
      .read = io_read,
      .splice_receive = nullptr,  // see devfuse.h
      .splice_send = nullptr,
  };
  return io;
}

ssize_t DevFuse::read(int fd, void* buf, size_t size) {
  ssize_t n = ::read(fd, buf, size);
  if (n >= ssize_t(sizeof(fuse_in_header))) note_request(static_cast<const char*>(buf), size_t(n));
  return n;
}

void DevFuse::note_request(const char* msg, size_t size) {
  auto h = load<fuse_in_header>(msg);
  if (h.opcode == FUSE_OPEN || h.opcode == FUSE_CREATE) {
    std::lock_guard lock(opens_mu_);
    opens_.insert(h.unique);
    open_count_ = opens_.size();
  } else if (h.opcode == FUSE_INIT) {
    fuse_init_in in{};  // older kernels send less; the rest reads as zero
    std::memcpy(&in, msg + sizeof h, std::min(size - sizeof h, sizeof in));
    // flags2 is valid only with FUSE_INIT_EXT.
    mmap_offered_ = (in.flags & FUSE_INIT_EXT) && (in.flags2 & kDirectIoAllowMmap);
    init_unique_ = h.unique;
  }
}

ssize_t DevFuse::writev(int fd, const iovec* iov, int count) {
  fuse_out_header h{};  // libfuse puts it in iov[0]
  if (count > 0 && iov[0].iov_len >= sizeof h) h = load<fuse_out_header>(iov[0].iov_base);
  if (h.unique == 0) return ::writev(fd, iov, count);  // a notification, not a reply
  if (h.unique == init_unique_) return write_init(fd, iov, count, h.error);
  // An interrupted OPEN may be answered with an error: that forgets it too.
  bool open_sized = h.error != 0 || h.len == kOpenReply || h.len == kCreateReply;
  if (open_count_ > 0 && open_sized && forget_open(h.unique) && h.error == 0) {
    return write_open(fd, iov, count);
  }
  return ::writev(fd, iov, count);
}

bool DevFuse::forget_open(uint64_t unique) {
  std::lock_guard lock(opens_mu_);
  bool found = opens_.erase(unique) > 0;
  open_count_ = opens_.size();
  return found;
}

ssize_t DevFuse::write_init(int fd, const iovec* iov, int count, int32_t error) {
  init_unique_ = 0;
  if (error != 0) return ::writev(fd, iov, count);  // the mount fails anyway
  if (!mmap_offered_) {
    spdlog::warn(
        "the kernel does not offer FUSE_DIRECT_IO_ALLOW_MMAP: mmap(MAP_SHARED) of DAX "
        "files fails with ENODEV (Linux 6.6 or later offers it; use read/write on them meanwhile)");
    return ::writev(fd, iov, count);
  }
  // libfuse 3.14 sends the whole 64-byte fuse_init_out (flags2 included, zero); a shorter
  // reply is extended with zeros, which the kernel reads as "not set".
  InitReply r{};
  if (!gather(iov, count, {reinterpret_cast<char*>(&r), sizeof r})) return ::writev(fd, iov, count);
  r.header.len = sizeof r;
  r.init.flags |= FUSE_INIT_EXT;
  r.init.flags2 |= kDirectIoAllowMmap;
  spdlog::debug("INIT reply: enabled shared mmap of direct_io files");
  direct_io_mmap_ = true;
  return ::write(fd, &r, sizeof r);
}

ssize_t DevFuse::write_open(int fd, const iovec* iov, int count) {
  std::array<char, kCreateReply> msg;
  auto n = gather(iov, count, msg);
  if (!n || *n < kOpenReply) return ::writev(fd, iov, count);
  char* tail = msg.data() + *n - sizeof(fuse_open_out);  // it ends OPEN and CREATE replies
  auto out = load<fuse_open_out>(tail);
  if (!(out.open_flags & FOPEN_DIRECT_IO)) return ::writev(fd, iov, count);
  out.open_flags |= FOPEN_PARALLEL_DIRECT_WRITES;
  std::memcpy(tail, &out, sizeof out);
  return ::write(fd, msg.data(), *n);
}

}  // namespace pmemfuse::daemon
