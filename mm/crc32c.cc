// mm/crc32c.cc: SSE4.2 crc32 instructions when present, a table otherwise.
#include "mm/crc32c.h"

#include <array>
#include <cstring>

namespace pmemfuse::mm {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // reflected Castagnoli polynomial

constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr auto kTable = make_table();

uint32_t crc_soft(uint32_t crc, const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i++) crc = kTable[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

__attribute__((target("sse4.2"))) uint32_t crc_hw(uint32_t crc, const uint8_t* p, size_t n) {
  uint64_t c = crc;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    c = __builtin_ia32_crc32di(c, w);
    p += 8;
    n -= 8;
  }
  auto c32 = static_cast<uint32_t>(c);
  while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
  return c32;
}

const bool kHaveHw = __builtin_cpu_supports("sse4.2");

}  // namespace

uint32_t crc32c(uint32_t crc, const void* data, size_t n) {
  auto p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  crc = kHaveHw ? crc_hw(crc, p, n) : crc_soft(crc, p, n);
  return ~crc;
}

}  // namespace pmemfuse::mm
