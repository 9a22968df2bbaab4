#pragma once
// Dense bit packing of quantization codes, so a b-bit code really costs b bits (3-bit: 3.2 bits)
// and the byte counts GEAR reports are what a kernel would read.
//
// Layout (little-endian, first code in the lowest bits):
//   2-bit: byte = c0 | c1<<2 | c2<<4 | c3<<6
//   4-bit: byte = c0 | c1<<4
//   8-bit: byte = c0
//   3-bit: 32-bit word = c0 | c1<<3 | ... | c9<<27 (top 2 bits zero), stored as 4 bytes, low byte first
// The tail is padded with zero codes up to a whole byte (word for 3-bit).
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace gear {

// Bytes that n codes of `bits` (2, 3, 4 or 8) occupy when packed: 2-bit 4 per byte, 4-bit 2 per byte,
// 8-bit 1 per byte, 3-bit 10 per 32-bit little-endian word (the top 2 bits unused) -> 4*ceil(n/10).
int64_t packed_bytes(int64_t n, int bits);

// codes: uint8 tensor (any shape, contiguous or not, values < 2^bits) -> uint8 1-D tensor of
// packed_bytes(numel, bits) on the same device, in flattened row-major order, padding bits zero.
// Codes >= 2^bits are a gear::Error for CPU tensors (checked with one max()); on other devices the
// check would cost a host sync, so there the codes are masked to `bits` instead (never corrupting
// a neighbour).
at::Tensor pack_codes(const at::Tensor& codes, int bits);

// Inverse: the first n codes as a uint8 1-D tensor.
at::Tensor unpack_codes(const at::Tensor& packed, int64_t n, int bits);

}  // namespace gear
