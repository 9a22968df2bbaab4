// Bit packing: exact round trips, the documented byte layout, and the byte counts.
#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <vector>

#include "core/compression/bitpack.h"
#include "core/util/error.h"

namespace {

at::Tensor bytes_of(const std::vector<int>& v) {
  at::Tensor t = at::empty({int64_t(v.size())}, at::kByte);
  for (size_t i = 0; i < v.size(); ++i) t[int64_t(i)] = v[i];
  return t;
}

}  // namespace

TEST_CASE("bitpack: packed_bytes counts whole bytes (3-bit: whole 32-bit words of 10)", "[compression]") {
  CHECK(gear::packed_bytes(0, 2) == 0);
  CHECK(gear::packed_bytes(1, 2) == 1);
  CHECK(gear::packed_bytes(5, 2) == 2);
  CHECK(gear::packed_bytes(8, 2) == 2);
  CHECK(gear::packed_bytes(3, 4) == 2);
  CHECK(gear::packed_bytes(7, 8) == 7);
  CHECK(gear::packed_bytes(1, 3) == 4);
  CHECK(gear::packed_bytes(10, 3) == 4);
  CHECK(gear::packed_bytes(11, 3) == 8);
  CHECK(gear::packed_bytes(1001, 3) == 4 * 101);
}

TEST_CASE("bitpack: round trips random and maximal codes exactly for odd sizes", "[compression]") {
  at::manual_seed(7);
  for (int bits : {2, 3, 4, 8}) {
    for (int64_t n : {1, 3, 7, 10, 11, 1001}) {
      INFO("bits " << bits << " n " << n);
      const at::Tensor random = at::randint(0, int64_t(1) << bits, {n}, at::kByte);
      const at::Tensor maximal = at::full({n}, (1 << bits) - 1, at::kByte);
      for (const at::Tensor& codes : {random, maximal}) {
        const at::Tensor packed = gear::pack_codes(codes, bits);
        REQUIRE(packed.dim() == 1);
        REQUIRE(packed.scalar_type() == at::kByte);
        REQUIRE(packed.numel() == gear::packed_bytes(n, bits));
        const at::Tensor back = gear::unpack_codes(packed, n, bits);
        REQUIRE(back.scalar_type() == at::kByte);
        CHECK(at::equal(back, codes));
      }
    }
  }
}

TEST_CASE("bitpack: non-contiguous multi-dimensional codes pack in row-major order", "[compression]") {
  const at::Tensor codes = at::arange(12, at::kLong).remainder(4).to(at::kByte).view({3, 4}).t();  // [4, 3] view
  REQUIRE_FALSE(codes.is_contiguous());
  const at::Tensor back = gear::unpack_codes(gear::pack_codes(codes, 2), 12, 2);
  CHECK(at::equal(back, codes.reshape(-1)));
}

TEST_CASE("bitpack: 2-bit and 4-bit layout is first code in the low bits", "[compression]") {
  // 2-bit: [1, 2, 3, 0 | 3] -> 0b00111001 = 0x39, then 0x03 with zero padding.
  CHECK(at::equal(gear::pack_codes(bytes_of({1, 2, 3, 0, 3}), 2), bytes_of({0x39, 0x03})));
  // 4-bit: [0xA, 0x5, 0xF] -> 0x5A, 0x0F.
  CHECK(at::equal(gear::pack_codes(bytes_of({10, 5, 15}), 4), bytes_of({0x5A, 0x0F})));
}

TEST_CASE("bitpack: 3-bit layout is ten codes per little-endian 32-bit word", "[compression]") {
  // Codes 0..7 then 1, 2: word = sum c_i << 3i.
  //   = 0 | 1<<3 | 2<<6 | 3<<9 | 4<<12 | 5<<15 | 6<<18 | 7<<21 | 1<<24 | 2<<27 = 0x11FAC688
  const std::vector<int> first{0, 1, 2, 3, 4, 5, 6, 7, 1, 2};
  std::vector<int> codes = first;
  codes.push_back(7);  // the 11th code opens a second word: 0x00000007
  CHECK(at::equal(gear::pack_codes(bytes_of(codes), 3), bytes_of({0x88, 0xC6, 0xFA, 0x11, 0x07, 0, 0, 0})));
  // Ten maximal codes fill exactly 30 bits: 0x3FFFFFFF.
  CHECK(at::equal(gear::pack_codes(at::full({10}, 7, at::kByte), 3), bytes_of({0xFF, 0xFF, 0xFF, 0x3F})));
}

TEST_CASE("bitpack: empty input packs to nothing", "[compression]") {
  const at::Tensor packed = gear::pack_codes(at::empty({0}, at::kByte), 4);
  CHECK(packed.numel() == 0);
  CHECK(gear::unpack_codes(packed, 0, 4).numel() == 0);
}

TEST_CASE("bitpack: bad bits, out-of-range codes and short input are errors", "[compression]") {
  const at::Tensor codes = at::zeros({4}, at::kByte);
  CHECK_THROWS_WITH(gear::pack_codes(codes, 5), "bitpack: bits must be 2, 3, 4 or 8, got 5");
  CHECK_THROWS_WITH(gear::packed_bytes(4, 1), "bitpack: bits must be 2, 3, 4 or 8, got 1");
  CHECK_THROWS_WITH(gear::unpack_codes(codes, 4, 6), "bitpack: bits must be 2, 3, 4 or 8, got 6");
  CHECK_THROWS_WITH(gear::pack_codes(bytes_of({1, 4}), 2), "bitpack: code 4 does not fit in 2 bits");
  CHECK_THROWS_WITH(gear::pack_codes(codes.to(at::kInt), 2), Catch::Contains("must be uint8"));
  CHECK_THROWS_WITH(gear::unpack_codes(at::zeros({1}, at::kByte), 11, 3),
                    "bitpack: 11 codes of 3 bits need 8 bytes, got 1");
}

TEST_CASE("bitpack: CUDA packs the same bytes as the CPU", "[compression][cuda]") {
  if (!at::hasCUDA()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  at::manual_seed(3);
  for (int bits : {2, 3, 4, 8}) {
    INFO("bits " << bits);
    const at::Tensor codes = at::randint(0, int64_t(1) << bits, {1001}, at::kByte);
    const at::Tensor packed = gear::pack_codes(codes.cuda(), bits);
    CHECK(packed.is_cuda());
    CHECK(at::equal(packed.cpu(), gear::pack_codes(codes, bits)));
    CHECK(at::equal(gear::unpack_codes(packed, 1001, bits).cpu(), codes));
  }
}
