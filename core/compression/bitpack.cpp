#include "core/compression/bitpack.h"

#include <ATen/ATen.h>

#include <string>

#include "core/util/error.h"

namespace gear {
namespace {

void require_bits(int bits) {
  require(bits == 2 || bits == 3 || bits == 4 || bits == 8,
          "bitpack: bits must be 2, 3, 4 or 8, got " + std::to_string(bits));
}

// Codes per storage word and bytes per word: 3-bit codes do not tile a byte, so they go 10 to a
// 32-bit word (30 of 32 bits used) instead of straddling byte boundaries.
int codes_per_word(int bits) { return bits == 3 ? 10 : 8 / bits; }
int bytes_per_word(int bits) { return bits == 3 ? 4 : 1; }

// [per_word] shifts bits*i (or 8*j for bytes) as int64 on `device`, the positions inside a word.
at::Tensor shifts(int64_t count, int64_t stride, const at::Device& device) {
  return at::arange(count, at::TensorOptions().dtype(at::kLong).device(device)) * stride;
}

// Little-endian bytes of each word: [words] int64 -> [words * bytes_per_word] uint8.
at::Tensor words_to_bytes(const at::Tensor& words, int bits) {
  const at::Tensor s = shifts(bytes_per_word(bits), 8, words.device());
  return at::bitwise_and(at::bitwise_right_shift(words.unsqueeze(1), s), 0xFF).to(at::kByte).reshape(-1);
}

// Inverse of words_to_bytes: [words * bytes_per_word] uint8 -> [words] int64.
at::Tensor bytes_to_words(const at::Tensor& bytes, int bits) {
  const at::Tensor s = shifts(bytes_per_word(bits), 8, bytes.device());
  return at::bitwise_left_shift(bytes.to(at::kLong).view({-1, bytes_per_word(bits)}), s).sum(1);
}

void check_code_range(const at::Tensor& codes, int bits) {
  if (!codes.device().is_cpu() || codes.numel() == 0) return;  // no host sync on accelerators
  const int64_t top = codes.max().item<int64_t>();
  require(top < (int64_t(1) << bits), "bitpack: code " + std::to_string(top) + " does not fit in " +
                                          std::to_string(bits) + " bits");
}

}  // namespace

int64_t packed_bytes(int64_t n, int bits) {
  require_bits(bits);
  require(n >= 0, "bitpack: code count must be >= 0, got " + std::to_string(n));
  const int64_t per = codes_per_word(bits);
  return (n + per - 1) / per * bytes_per_word(bits);
}

at::Tensor pack_codes(const at::Tensor& codes, int bits) {
  require_bits(bits);
  require(codes.scalar_type() == at::kByte,
          std::string("bitpack: codes must be uint8, got ") + at::toString(codes.scalar_type()));
  check_code_range(codes, bits);
  const int64_t n = codes.numel(), per = codes_per_word(bits);
  const int64_t words = (n + per - 1) / per;
  // Zero-pad to whole words, then each word is the sum of its codes shifted into place (the
  // fields do not overlap, so sum == bitwise or).
  at::Tensor flat = at::bitwise_and(codes.reshape(-1).to(at::kLong), (int64_t(1) << bits) - 1);
  flat = at::constant_pad_nd(flat, {0, words * per - n}, 0).view({words, per});
  const at::Tensor word = at::bitwise_left_shift(flat, shifts(per, bits, codes.device())).sum(1);
  return words_to_bytes(word, bits);
}

at::Tensor unpack_codes(const at::Tensor& packed, int64_t n, int bits) {
  const int64_t need = packed_bytes(n, bits);
  require(packed.scalar_type() == at::kByte,
          std::string("bitpack: packed data must be uint8, got ") + at::toString(packed.scalar_type()));
  require(packed.numel() >= need, "bitpack: " + std::to_string(n) + " codes of " + std::to_string(bits) +
                                      " bits need " + std::to_string(need) + " bytes, got " +
                                      std::to_string(packed.numel()));
  const int64_t per = codes_per_word(bits);
  const at::Tensor word = bytes_to_words(packed.reshape(-1).slice(0, 0, need), bits);
  const at::Tensor fields = at::bitwise_right_shift(word.unsqueeze(1), shifts(per, bits, packed.device()));
  return at::bitwise_and(fields, (int64_t(1) << bits) - 1).reshape(-1).slice(0, 0, n).to(at::kByte);
}

}  // namespace gear
