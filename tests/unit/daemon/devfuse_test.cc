// tests/unit/daemon/devfuse_test.cc: DevFuse's read and writev, called through the
// fuse_custom_io table as libfuse calls them, against a fake kernel on a SOCK_SEQPACKET
// socketpair (one message per write, as on /dev/fuse): INIT and OPEN/CREATE replies are
// patched exactly when they should be, and everything else passes byte-identical.
#include "daemon/devfuse.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "daemon/ops.h"

using namespace pmemfuse::daemon;

namespace {

constexpr uint32_t kAllowMmap2 = 1u << 4;  // FUSE_DIRECT_IO_ALLOW_MMAP (1ull << 36) in flags2

using Bytes = std::vector<char>;

template <class T>
Bytes bytes_of(const T& v) {
  Bytes b(sizeof v);
  std::memcpy(b.data(), &v, sizeof v);
  return b;
}

template <class T>
T field_at(const Bytes& b, size_t off) {
  T v;
  REQUIRE(b.size() >= off + sizeof v);
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}

// A reply as libfuse builds it: fuse_out_header with len set, then the body.
Bytes message(uint64_t unique, int32_t error, const Bytes& body = {}) {
  fuse_out_header h{uint32_t(sizeof h + body.size()), error, unique};
  Bytes m = bytes_of(h);
  m.insert(m.end(), body.begin(), body.end());
  return m;
}

fuse_init_out libfuse_init_out() {
  fuse_init_out o{};
  o.major = 7;
  o.minor = 31;
  o.max_readahead = 128 * 1024;
  o.flags = FUSE_ASYNC_READ | FUSE_MAX_PAGES | FUSE_INIT_EXT;
  o.max_write = 1 << 20;
  o.time_gran = 1;
  o.max_pages = 256;
  return o;
}

fuse_open_out open_out(uint32_t open_flags) {
  fuse_open_out o{};
  o.fh = 0x1234;
  o.open_flags = open_flags;
  return o;
}

Bytes create_body(uint32_t open_flags) {
  fuse_entry_out e{};
  e.nodeid = 42;
  e.generation = 7;
  e.attr.ino = 42;
  e.attr.mode = 0100644;
  Bytes b = bytes_of(e);
  Bytes o = bytes_of(open_out(open_flags));
  b.insert(b.end(), o.begin(), o.end());
  return b;
}

// The kernel's end of /dev/fuse; the daemon's end is used only through DevFuse::io().
class FakeKernel {
 public:
  FakeKernel() {
    REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds_) == 0);
    ctx_.dev = &dev;
  }
  ~FakeKernel() {
    close(fds_[0]);
    close(fds_[1]);
  }

  // The kernel sends a request; the daemon reads it.
  void request(uint32_t opcode, uint64_t unique, const Bytes& body = {}) {
    fuse_in_header h{};
    h.len = uint32_t(sizeof h + body.size());
    h.opcode = opcode;
    h.unique = unique;
    Bytes m = bytes_of(h);
    m.insert(m.end(), body.begin(), body.end());
    REQUIRE(write(fds_[1], m.data(), m.size()) == ssize_t(m.size()));
    REQUIRE(read_request() == ssize_t(m.size()));
    REQUIRE(std::memcmp(buf_.data(), m.data(), m.size()) == 0);
  }

  // DevFuse::io().read into buf_, as libfuse's receive loop calls it.
  ssize_t read_request() { return DevFuse::io().read(fds_[0], buf_.data(), buf_.size(), &ctx_); }

  void init_request(uint32_t flags, uint32_t flags2) {
    fuse_init_in in{};
    in.major = 7;
    in.minor = 45;
    in.max_readahead = 128 * 1024;
    in.flags = flags;
    in.flags2 = flags2;
    request(FUSE_INIT, 2, bytes_of(in));
  }

  // The daemon writes msg split at `cuts` (the header alone first, as libfuse does); returns
  // what the kernel receives.
  Bytes reply(const Bytes& msg, std::vector<size_t> cuts = {sizeof(fuse_out_header)}) {
    REQUIRE(write_reply(fds_[0], msg, cuts) >= 0);  // libfuse looks only for -1
    Bytes got(64 * 1024);
    ssize_t n = recv(fds_[1], got.data(), got.size(), MSG_DONTWAIT);
    REQUIRE(n >= 0);
    got.resize(size_t(n));
    return got;
  }

  // DevFuse::io().writev of msg cut into pieces, on any fd.
  ssize_t write_reply(int fd, const Bytes& msg, std::vector<size_t> cuts) {
    cuts.push_back(msg.size());
    std::vector<iovec> iov;
    size_t at = 0;
    for (size_t c : cuts) {
      if (c > at) iov.push_back({const_cast<char*>(msg.data()) + at, c - at});
      at = std::max(at, c);
    }
    return DevFuse::io().writev(fd, iov.data(), int(iov.size()), &ctx_);
  }

  int daemon_fd() const { return fds_[0]; }

  DevFuse dev;

 private:
  int fds_[2];
  Context ctx_{};
  Bytes buf_ = Bytes(FUSE_MIN_READ_BUFFER);
};

}  // namespace

TEST_CASE("devfuse: INIT reply enables DIRECT_IO_ALLOW_MMAP when the kernel offers it",
          "[devfuse]") {
  FakeKernel k;
  k.init_request(FUSE_ASYNC_READ | FUSE_INIT_EXT, kAllowMmap2 | 1u /* SECURITY_CTX */);
  fuse_init_out sent = libfuse_init_out();
  Bytes msg = message(2, 0, bytes_of(sent));
  REQUIRE(msg.size() == 80);  // libfuse 3.14 sends the whole 64-byte fuse_init_out

  Bytes got = k.reply(msg);
  fuse_init_out want = sent;
  want.flags |= FUSE_INIT_EXT;
  want.flags2 = kAllowMmap2;
  CHECK(got == message(2, 0, bytes_of(want)));
  CHECK(field_at<uint32_t>(got, 16 + 32) == kAllowMmap2);  // flags2 at byte 32 of the body
  CHECK(k.dev.direct_io_mmap());
}

TEST_CASE("devfuse: INIT reply is untouched when the kernel does not offer the bit", "[devfuse]") {
  FakeKernel k;
  SECTION("flags2 without the bit") { k.init_request(FUSE_INIT_EXT, 1u); }
  SECTION("flags2 is ignored without FUSE_INIT_EXT") {
    k.init_request(FUSE_ASYNC_READ, kAllowMmap2);
  }
  SECTION("an old kernel's short fuse_init_in") {
    fuse_init_in in{7, 31, 128 * 1024, FUSE_ASYNC_READ, 0, {}};
    Bytes body = bytes_of(in);
    body.resize(offsetof(fuse_init_in, flags2));
    k.request(FUSE_INIT, 2, body);
  }
  Bytes msg = message(2, 0, bytes_of(libfuse_init_out()));
  CHECK(k.reply(msg) == msg);
  CHECK(!k.dev.direct_io_mmap());
}

TEST_CASE("devfuse: a short INIT reply is extended to the full fuse_init_out", "[devfuse]") {
  FakeKernel k;
  k.init_request(FUSE_INIT_EXT, kAllowMmap2);
  Bytes body = bytes_of(libfuse_init_out());
  body.resize(24);  // FUSE_COMPAT_22_INIT_OUT_SIZE: no flags2 field
  Bytes got = k.reply(message(2, 0, body));

  REQUIRE(got.size() == 16 + 64);
  CHECK(field_at<uint32_t>(got, 0) == 16 + 64);  // fuse_out_header.len follows
  CHECK(field_at<uint32_t>(got, 16 + 12) == (libfuse_init_out().flags | FUSE_INIT_EXT));
  CHECK(field_at<uint32_t>(got, 16 + 32) == kAllowMmap2);
  CHECK(std::memcmp(got.data() + 16, body.data(), 12) == 0);  // major, minor, readahead
  CHECK(k.dev.direct_io_mmap());
}

TEST_CASE("devfuse: a failed INIT passes unchanged", "[devfuse]") {
  FakeKernel k;
  k.init_request(FUSE_INIT_EXT, kAllowMmap2);
  Bytes msg = message(2, -EPROTO);
  CHECK(k.reply(msg) == msg);
  CHECK(!k.dev.direct_io_mmap());
}

TEST_CASE("devfuse: direct_io OPEN and CREATE replies allow parallel direct writes", "[devfuse]") {
  FakeKernel k;
  uint32_t flags = FOPEN_DIRECT_IO | FOPEN_NOFLUSH;
  SECTION("OPEN") {
    k.request(FUSE_OPEN, 10);
    Bytes got = k.reply(message(10, 0, bytes_of(open_out(flags))));
    CHECK(got == message(10, 0, bytes_of(open_out(flags | FOPEN_PARALLEL_DIRECT_WRITES))));
  }
  SECTION("CREATE, its body split across iovecs") {
    k.request(FUSE_CREATE, 12);
    Bytes got = k.reply(message(12, 0, create_body(flags)), {16, 16 + 100, 16 + 136});
    CHECK(got == message(12, 0, create_body(flags | FOPEN_PARALLEL_DIRECT_WRITES)));
  }
  SECTION("concurrent opens answered out of order") {
    k.request(FUSE_OPEN, 20);
    k.request(FUSE_CREATE, 22);
    Bytes created = k.reply(message(22, 0, create_body(flags)));
    Bytes opened = k.reply(message(20, 0, bytes_of(open_out(flags))));
    CHECK(created == message(22, 0, create_body(flags | FOPEN_PARALLEL_DIRECT_WRITES)));
    CHECK(opened == message(20, 0, bytes_of(open_out(flags | FOPEN_PARALLEL_DIRECT_WRITES))));
  }
}

TEST_CASE("devfuse: OPEN and CREATE replies without direct_io pass unchanged", "[devfuse]") {
  FakeKernel k;
  k.request(FUSE_OPEN, 10);
  Bytes opened = message(10, 0, bytes_of(open_out(FOPEN_KEEP_CACHE)));
  CHECK(k.reply(opened) == opened);
  k.request(FUSE_CREATE, 12);
  Bytes created = message(12, 0, create_body(FOPEN_KEEP_CACHE));
  CHECK(k.reply(created) == created);
}

TEST_CASE("devfuse: an error reply forgets its OPEN", "[devfuse]") {
  FakeKernel k;
  k.request(FUSE_OPEN, 30);
  Bytes err = message(30, -EINTR);  // e.g. after FUSE_INTERRUPT
  CHECK(k.reply(err) == err);
  // Were it still remembered, this (impossible) second reply would be patched.
  Bytes late = message(30, 0, bytes_of(open_out(FOPEN_DIRECT_IO)));
  CHECK(k.reply(late) == late);
}

TEST_CASE("devfuse: replies to other requests pass byte-identical", "[devfuse]") {
  FakeKernel k;
  k.request(FUSE_OPEN, 40);  // pending while the others pass
  k.request(FUSE_READ, 42);
  Bytes read = message(42, 0, bytes_of(open_out(FOPEN_DIRECT_IO)));  // open-sized, bit 0 set
  CHECK(k.reply(read) == read);
  Bytes notify = message(0, FUSE_NOTIFY_INVAL_INODE, Bytes(24, 1));
  CHECK(k.reply(notify) == notify);
  Bytes never_seen = message(44, 0, bytes_of(open_out(FOPEN_DIRECT_IO)));
  CHECK(k.reply(never_seen) == never_seen);
  CHECK(k.reply(message(40, 0, bytes_of(open_out(FOPEN_DIRECT_IO)))) ==
        message(40, 0, bytes_of(open_out(FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES))));
}

TEST_CASE("devfuse: failures return -1 with the syscall's errno, as libfuse expects", "[devfuse]") {
  FakeKernel k;
  SECTION("read with nothing to read") {
    REQUIRE(fcntl(k.daemon_fd(), F_SETFL, O_NONBLOCK) == 0);
    errno = 0;
    CHECK(k.read_request() == -1);
    CHECK(errno == EAGAIN);
  }
  SECTION("writev, passed through") {
    errno = 0;
    CHECK(k.write_reply(-1, message(50, -ENOENT), {16}) == -1);
    CHECK(errno == EBADF);
  }
  SECTION("writev, patched; the OPEN is forgotten all the same") {
    k.request(FUSE_OPEN, 52);
    Bytes msg = message(52, 0, bytes_of(open_out(FOPEN_DIRECT_IO)));
    errno = 0;
    CHECK(k.write_reply(-1, msg, {16}) == -1);
    CHECK(errno == EBADF);
    CHECK(k.reply(msg) == msg);
  }
  SECTION("INIT, patched") {
    k.init_request(FUSE_INIT_EXT, kAllowMmap2);
    errno = 0;
    CHECK(k.write_reply(-1, message(2, 0, bytes_of(libfuse_init_out())), {16}) == -1);
    CHECK(errno == EBADF);
  }
}
