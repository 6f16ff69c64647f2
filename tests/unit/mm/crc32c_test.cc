// tests/unit/mm/crc32c_test.cc: CRC-32C against published vectors, a bitwise reference
// implementation, the chaining property and unaligned input.
#include "mm/crc32c.h"

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using pmemfuse::mm::crc32c;

namespace {

// Bit-at-a-time reference (reflected Castagnoli polynomial), independent of the table
// and of the SSE4.2 path in mm/crc32c.cc.
uint32_t crc32c_ref(uint32_t crc, const uint8_t* p, size_t n) {
  crc = ~crc;
  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int k = 0; k < 8; k++) crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
  }
  return ~crc;
}

std::vector<uint8_t> random_bytes(std::mt19937_64& rng, size_t n) {
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

}  // namespace

TEST_CASE("crc32c: matches the published check value for \"123456789\"", "[mm][crc32c]") {
  const char* s = "123456789";
  CHECK(crc32c(0, s, 9) == 0xE3069283u);
}

TEST_CASE("crc32c: matches the iSCSI (RFC 3720) vectors for 32 zero and 32 0xFF bytes",
          "[mm][crc32c]") {
  uint8_t buf[32];
  std::memset(buf, 0x00, sizeof buf);
  CHECK(crc32c(0, buf, sizeof buf) == 0x8A9136AAu);
  std::memset(buf, 0xFF, sizeof buf);
  CHECK(crc32c(0, buf, sizeof buf) == 0x62A8AB43u);
}

TEST_CASE("crc32c: matches the RFC 3720 vectors for ascending and descending bytes",
          "[mm][crc32c]") {
  uint8_t buf[32];
  for (int i = 0; i < 32; i++) buf[i] = static_cast<uint8_t>(i);
  CHECK(crc32c(0, buf, sizeof buf) == 0x46DD794Eu);
  for (int i = 0; i < 32; i++) buf[i] = static_cast<uint8_t>(31 - i);
  CHECK(crc32c(0, buf, sizeof buf) == 0x113FDB5Cu);
}

TEST_CASE("crc32c: empty input leaves the running crc unchanged", "[mm][crc32c]") {
  uint8_t dummy = 0x5A;
  CHECK(crc32c(0, &dummy, 0) == 0u);
  CHECK(crc32c(0xE3069283u, &dummy, 0) == 0xE3069283u);
  CHECK(crc32c(0x12345678u, nullptr, 0) == 0x12345678u);
}

TEST_CASE("crc32c: agrees with a bitwise reference for every length 0..300",
          "[mm][crc32c]") {
  std::mt19937_64 rng(1);
  auto data = random_bytes(rng, 300);
  for (size_t n = 0; n <= data.size(); n++) {
    INFO("length " << n);
    REQUIRE(crc32c(0, data.data(), n) == crc32c_ref(0, data.data(), n));
  }
  // A non-zero seed goes through the same inversion as the reference.
  CHECK(crc32c(0xDEADBEEFu, data.data(), 77) == crc32c_ref(0xDEADBEEFu, data.data(), 77));
}

TEST_CASE("crc32c: a single flipped bit changes the crc", "[mm][crc32c]") {
  std::mt19937_64 rng(2);
  auto data = random_bytes(rng, 4096);
  uint32_t base = crc32c(0, data.data(), data.size());
  for (size_t bit : {size_t{0}, size_t{7}, size_t{8 * 1000 + 3}, size_t{8 * 4096 - 1}}) {
    auto copy = data;
    copy[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    INFO("bit " << bit);
    CHECK(crc32c(0, copy.data(), copy.size()) != base);
  }
}

TEST_CASE("crc32c: chaining over any split equals the crc of the whole", "[mm][crc32c]") {
  std::mt19937_64 rng(3);
  for (int iter = 0; iter < 200; iter++) {
    size_t n = rng() % 2048;
    auto data = random_bytes(rng, n);
    size_t split = n ? rng() % (n + 1) : 0;
    uint32_t whole = crc32c(0, data.data(), n);
    uint32_t a = crc32c(0, data.data(), split);
    uint32_t ab = crc32c(a, data.data() + split, n - split);
    INFO("n " << n << " split " << split);
    REQUIRE(ab == whole);
    REQUIRE(whole == crc32c_ref(0, data.data(), n));
  }
}

TEST_CASE("crc32c: chaining byte by byte equals the crc of the whole", "[mm][crc32c]") {
  std::string s = "The quick brown fox jumps over the lazy dog, twice over.";
  uint32_t c = 0;
  for (char ch : s) c = crc32c(c, &ch, 1);
  CHECK(c == crc32c(0, s.data(), s.size()));
  CHECK(c == crc32c_ref(0, reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

TEST_CASE("crc32c: result does not depend on the input's alignment", "[mm][crc32c]") {
  std::mt19937_64 rng(4);
  auto payload = random_bytes(rng, 257);
  uint32_t expect = crc32c_ref(0, payload.data(), payload.size());
  // Copy the same bytes at every offset 0..15 from a 64-byte aligned buffer.
  alignas(64) uint8_t buf[64 + 16 + 257];
  for (size_t off = 0; off < 16; off++) {
    std::memset(buf, 0xCC, sizeof buf);
    std::memcpy(buf + off, payload.data(), payload.size());
    INFO("offset " << off);
    CHECK(crc32c(0, buf + off, payload.size()) == expect);
    // Short unaligned tails as well.
    for (size_t n : {size_t{1}, size_t{3}, size_t{7}, size_t{9}, size_t{15}, size_t{17}}) {
      CHECK(crc32c(0, buf + off, n) == crc32c_ref(0, payload.data(), n));
    }
  }
}
