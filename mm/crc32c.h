// mm/crc32c.h: CRC-32C (Castagnoli), hardware-accelerated where the CPU has SSE4.2.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pmemfuse::mm {

// Continues a CRC: crc32c(crc32c(0, a), b) == crc32c(0, a + b).
uint32_t crc32c(uint32_t crc, const void* data, size_t n);

}  // namespace pmemfuse::mm
