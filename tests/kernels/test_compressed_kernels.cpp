// The GEAR / KIVI compressed layout (CompressedKV, kernels/kernels.h): its float64 references against
// core/compression (every build: bit-exact codes, scales and outliers; attention over core's
// decompress_block reconstruction within 1e-6), and the CUDA kernels against the references on fresh
// random inputs (CUDA builds with a device; a hidden "[.bench]" test times the attention).
#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "core/compression/gear_block.h"
#include "core/compression/low_rank.h"
#include "core/compression/outlier_filter.h"
#include "core/compression/quantizer.h"
#include "kernels/kernels.h"
#include "kernels/reference.h"
#include "kernels/split_rule.h"
#include "kernels/kernel_testing.h"

#ifdef GEARLAB_WITH_CUDA
#include <cuda_runtime.h>
#if __has_include(<torch/version.h>)
#include <torch/version.h>
#endif
// LibTorch's scaled_dot_product_attention with grouped query heads (enable_gqa): 2.5 and later.
#if defined(TORCH_VERSION_MAJOR) && (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5))
#define GEARLAB_TEST_SDPA 1
#include <ATen/cuda/CUDAContext.h>
#else
#define GEARLAB_TEST_SDPA 0
#endif

#include <iomanip>
#include <iostream>
#endif

using gear::kernels::CompressedKV;
using gear::kernels::DType;
namespace ref = gear::kernels::ref;

namespace {

using gear::kernels::testing::host;
using gear::kernels::testing::kAllTypes;
using gear::kernels::testing::name;
using gear::kernels::testing::scalar_type;




// The fp16 bit patterns of a half tensor.
std::vector<uint16_t> half_bits_of(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(at::kCPU).contiguous().view(at::kShort);
  std::vector<uint16_t> out(static_cast<size_t>(c.numel()));
  std::memcpy(out.data(), c.data_ptr<int16_t>(), out.size() * 2);
  return out;
}

std::vector<uint8_t> bytes_of(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(at::kCPU).contiguous();
  REQUIRE(c.scalar_type() == at::kByte);
  return std::vector<uint8_t>(c.data_ptr<uint8_t>(), c.data_ptr<uint8_t>() + c.numel());
}

// Max-norm relative error and non-finite count (got non-finite where want is finite).
struct Diff {
  double max_abs = 0, max_ref = 0, rel = 0;
  size_t bad = 0, worst_at = 0;
  std::string str() const {
    std::ostringstream os;
    os << "max abs err " << max_abs << " at " << worst_at << ", max|ref| " << max_ref << ", max-norm rel err " << rel
       << ", non-finite " << bad;
    return os.str();
  }
};
Diff compare(const std::vector<double>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  Diff d;
  for (double w : want) d.max_ref = std::max(d.max_ref, std::fabs(w));
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i]) && std::isfinite(want[i])) {
      ++d.bad;
      continue;
    }
    const double e = std::fabs(got[i] - want[i]);
    if (e > d.max_abs) {
      d.max_abs = e;
      d.worst_at = i;
    }
  }
  d.rel = d.max_ref > 0 ? d.max_abs / d.max_ref : d.max_abs;
  return d;
}

// The spacing of fp16 values around |x| (normal range; subnormals: 2^-24).
[[maybe_unused]] double half_ulp(double x) {
  const double a = std::abs(x);
  return a < 6.103515625e-05 ? std::ldexp(1.0, -24) : std::ldexp(1.0, std::ilogb(a) - 10);
}

// ---- a CompressedKV on the host ----

#define GEAR_KV_ARRAYS(X) \
  X(k_codes) X(k_scale) X(k_zero) X(v_codes) X(v_scale) X(v_zero) X(lr_block) X(k_lr_a) X(k_lr_b) X(v_lr_a) X(v_lr_b) \
  X(k_sp_off) X(k_sp_pos) X(k_sp_val) X(v_sp_off) X(v_sp_pos) X(v_sp_val) X(k_buf) X(v_buf) X(n_comp) X(n_buf)

CompressedKV sizes(int B, int nkv, int hd, int bits, int G, int VG, int R, long long tile_cap, long long lr_cap,
                   long long sparse_cap, int buf_cap) {
  CompressedKV c;
  c.B = B, c.nkv = nkv, c.hd = hd, c.bits = bits, c.group = G, c.v_group = VG, c.rank = R;
  c.tile_cap = tile_cap, c.lr_cap = lr_cap, c.sparse_cap = sparse_cap, c.buf_cap = buf_cap;
  return c;
}

// Owns the arrays; kv points into them. Codes start as `code_fill`, fp16 arrays as `half_fill`, the sparse
// offsets and lengths as 0, lr_block as 0 (so that poisoned layouts show unwritten bytes).
struct HostKV {
  CompressedKV kv;
  std::vector<uint8_t> k_codes, v_codes;
  std::vector<uint16_t> k_scale, k_zero, v_scale, v_zero, k_lr_a, k_lr_b, v_lr_a, v_lr_b, k_sp_pos, k_sp_val, v_sp_pos, v_sp_val,
      k_buf, v_buf;
  std::vector<int32_t> lr_block, k_sp_off, v_sp_off, n_comp, n_buf;

  explicit HostKV(const CompressedKV& s, uint8_t code_fill = 0, uint16_t half_fill = 0) : kv(s) {
    const std::string p = gear::kernels::compressed_kv_problem(s);
    INFO(p);
    REQUIRE(p.empty());
    const auto z = gear::kernels::compressed_kv_sizes(s);
    k_codes.assign(z.k_codes, code_fill);
    v_codes.assign(z.v_codes, code_fill);
    for (auto* v : {&k_scale, &k_zero}) v->assign(z.k_scale, half_fill);
    for (auto* v : {&v_scale, &v_zero}) v->assign(z.v_scale, half_fill);
    for (auto* v : {&k_lr_a, &v_lr_a}) v->assign(z.lr_a, half_fill);
    for (auto* v : {&k_lr_b, &v_lr_b}) v->assign(z.lr_b, half_fill);
    for (auto* v : {&k_sp_pos, &k_sp_val, &v_sp_pos, &v_sp_val}) v->assign(z.sp_entries, half_fill);
    for (auto* v : {&k_buf, &v_buf}) v->assign(z.buf, half_fill);
    lr_block.assign(z.lr_block, 0);
    k_sp_off.assign(z.sp_off, 0);
    v_sp_off.assign(z.sp_off, 0);
    n_comp.assign(z.lengths, 0);
    n_buf.assign(z.lengths, 0);
    bind();
  }
  HostKV(const HostKV&) = delete;
  HostKV& operator=(const HostKV&) = delete;
  void bind() {
#define X(f) kv.f = f.empty() ? nullptr : f.data();
    GEAR_KV_ARRAYS(X)
#undef X
  }
  // Every array equal to another layout's (same sizes); names the first that differs.
  void require_equal(const HostKV& o) const {
#define X(f)                                      \
  {                                               \
    INFO("array " #f);                            \
    REQUIRE(f.size() == o.f.size());              \
    size_t first = f.size();                      \
    for (size_t i = 0; i < f.size(); ++i)         \
      if (f[i] != o.f[i]) {                       \
        first = i;                                \
        break;                                    \
      }                                           \
    INFO("first difference at element " << first); \
    CHECK(first == f.size());                     \
  }
    GEAR_KV_ARRAYS(X)
#undef X
  }
  size_t bh(int b, int h) const { return static_cast<size_t>(b) * kv.nkv + h; }
  size_t k_row(int b, int h, long long tile, int d) const { return (bh(b, h) * kv.tile_cap + tile) * kv.hd + d; }
  size_t tok(int b, int h, long long t) const { return bh(b, h) * kv.token_cap() + t; }
};

// A KV block of dtype-`t` values (float32 tensor [nkv, T, hd]) with the features that stress the quantizer:
// scaled and offset channels, a constant channel, an all-zero channel, a tiny-range channel (fp16 subnormal
// scales) and planted outliers.
at::Tensor kv_block(int64_t nkv, int64_t T, int64_t hd, DType t, uint64_t seed, double scale = 1.0) {
  at::manual_seed(seed);
  at::Tensor x = at::randn({nkv, T, hd}, at::kDouble) * scale;
  if (hd > 4) {
    x.select(2, 1).mul_(20).add_(3);       // a wide, offset channel
    x.select(2, 2).fill_(0.37);            // constant
    x.select(2, 3).zero_();                // zero
    x.select(2, 4).mul_(1e-4);             // tiny range
  }
  x.select(1, 0).select(1, 0).fill_(40.0);  // a planted outlier
  return x.to(scalar_type(t)).to(at::kFloat);
}

std::vector<double> as_doubles(const at::Tensor& t) { return host(t); }

// ---- core's GearBlocks put into the layout ----

// Appends core's K and V blocks (same tokens) to row b at tile `tile`, low-rank block `lr`; returns the
// next tile. Sparse entries go through ref::sparse_to_tiles from core's per-vector lists.
long long put_block(HostKV& L, int b, long long tile, int lr, const gear::GearBlock& kb, const gear::GearBlock& vb) {
  const CompressedKV& c = L.kv;
  const int nkv = c.nkv, hd = c.hd, G = c.group, bits = c.bits, T = static_cast<int>(kb.q.T);
  REQUIRE(T % G == 0);
  REQUIRE(kb.q.spec.axis == gear::QuantAxis::Channel);
  REQUIRE(vb.q.spec.axis == gear::QuantAxis::Token);
  REQUIRE(kb.q.m.group == G);
  REQUIRE(vb.q.m.group == c.v_group);
  const std::vector<uint8_t> kc = bytes_of(kb.q.m.codes), vc = bytes_of(vb.q.m.codes);
  const std::vector<uint16_t> ks = half_bits_of(kb.q.m.scale), kz = half_bits_of(kb.q.m.zero);
  const std::vector<uint16_t> vs = half_bits_of(vb.q.m.scale), vz = half_bits_of(vb.q.m.zero);
  const int krow = G * bits / 8, vrow = hd * bits / 8, ng = hd / c.v_group;
  for (int h = 0; h < nkv; ++h) {
    for (int j = 0; j < T / G; ++j)
      for (int d = 0; d < hd; ++d) {
        const size_t r = L.k_row(b, h, tile + j, d), cr = static_cast<size_t>(h) * hd + d;
        std::memcpy(&L.k_codes[r * krow], &kc[(cr * T + static_cast<size_t>(j) * G) * bits / 8], krow);
        L.k_scale[r] = ks[cr * (T / G) + j];
        L.k_zero[r] = kz[cr * (T / G) + j];
      }
    for (int t = 0; t < T; ++t) {
      const size_t tk = L.tok(b, h, tile * G + t);
      std::memcpy(&L.v_codes[tk * vrow], &vc[(static_cast<size_t>(t) * nkv * hd + static_cast<size_t>(h) * hd) * bits / 8], vrow);
      for (int g = 0; g < ng; ++g) {
        L.v_scale[tk * ng + g] = vs[static_cast<size_t>(t) * (nkv * hd / c.v_group) + h * ng + g];
        L.v_zero[tk * ng + g] = vz[static_cast<size_t>(t) * (nkv * hd / c.v_group) + h * ng + g];
      }
    }
  }
  if (c.rank > 0) {
    for (int j = 0; j < T / G; ++j) L.lr_block[static_cast<size_t>(b) * c.tile_cap + tile + j] = lr;
    for (int side = 0; side < 2; ++side) {
      const gear::LowRankFactors& f = side == 0 ? kb.l : vb.l;
      std::vector<uint16_t>& A = side == 0 ? L.k_lr_a : L.v_lr_a;
      std::vector<uint16_t>& Bf = side == 0 ? L.k_lr_b : L.v_lr_b;
      const int r = static_cast<int>(f.rank);
      REQUIRE(r <= c.rank);
      const std::vector<uint16_t> a = r > 0 ? half_bits_of(f.a) : std::vector<uint16_t>{};
      const std::vector<uint16_t> bb = r > 0 ? half_bits_of(f.b) : std::vector<uint16_t>{};
      for (int h = 0; h < nkv; ++h) {
        for (int t = 0; t < T; ++t)
          for (int q = 0; q < c.rank; ++q)
            A[L.tok(b, h, tile * G + t) * c.rank + q] = q < r ? a[(static_cast<size_t>(h) * T + t) * r + q] : 0;
        for (int q = 0; q < c.rank; ++q)
          for (int d = 0; d < hd; ++d)
            Bf[((L.bh(b, h) * c.lr_cap + lr) * c.rank + q) * hd + d] = q < r ? bb[(static_cast<size_t>(h) * r + q) * hd + d] : 0;
      }
    }
  }
  if (c.sparse_cap > 0) {
    const int32_t row = b, t32 = static_cast<int32_t>(tile);
    for (int side = 0; side < 2; ++side) {
      const gear::GearBlock& blk = side == 0 ? kb : vb;
      std::vector<uint16_t> vals;
      std::vector<int32_t> idx;
      int k = 0;
      if (blk.s && blk.s->per_side > 0) {
        k = static_cast<int>(blk.s->per_side);
        vals = half_bits_of(blk.s->values);
        const at::Tensor i32 = blk.s->index.to(at::kInt).contiguous();
        idx.assign(i32.data_ptr<int32_t>(), i32.data_ptr<int32_t>() + i32.numel());
      }
      ref::sparse_to_tiles(c, side == 0, vals.data(), idx.data(), 1, T, k, &row, &t32);
    }
  }
  return tile + T / G;
}

// ATen float64 attention of one token per row over K/V [nkv, S, hd] of each row (GQA).
at::Tensor attention_aten(const at::Tensor& q, const std::vector<at::Tensor>& K, const std::vector<at::Tensor>& V, double scale) {
  const int64_t B = q.size(0), nh = q.size(1);
  std::vector<at::Tensor> rows;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t nkv = K[b].size(0);
    const at::Tensor kb = K[b].repeat_interleave(nh / nkv, 0), vb = V[b].repeat_interleave(nh / nkv, 0);
    const at::Tensor s = at::bmm(q[b].unsqueeze(1), kb.transpose(1, 2)) * scale;
    rows.push_back(at::bmm(at::softmax(s, -1), vb).squeeze(1));
  }
  return at::stack(rows);
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// CPU: the references against core/compression
// ------------------------------------------------------------------------------------------------

TEST_CASE("ref fp16 helpers: bits, values and core's directed rounding", "[kernels][ref][gear]") {
  // Every fp16 pattern round-trips, and its value is ATen's.
  std::vector<int16_t> all(65536);
  for (int i = 0; i < 65536; ++i) all[i] = static_cast<int16_t>(static_cast<uint16_t>(i));
  const at::Tensor h = at::from_blob(all.data(), {65536}, at::kShort).clone().view(at::kHalf);
  const std::vector<double> want = host(h);
  size_t bad = 0;
  for (int i = 0; i < 65536; ++i) {
    const double v = ref::half_value(static_cast<uint16_t>(i));
    if (std::isnan(want[i])) {
      bad += !std::isnan(v);
      continue;
    }
    bad += v != want[i] || std::signbit(v) != std::signbit(want[i]);
    bad += ref::half_bits(v) != static_cast<uint16_t>(i);
  }
  CHECK(bad == 0);
  // Directed rounding: the nearest fp16 on the right side of v.
  at::manual_seed(3);
  const at::Tensor r = at::cat({at::randn({20000}), at::randn({2000}) * 1e-6, at::randn({2000}) * 3e4});
  for (int64_t i = 0; i < r.numel(); ++i) {
    const float v = r[i].item<float>();
    const double dn = ref::half_value(ref::half_directed(v, false)), up = ref::half_value(ref::half_directed(v, true));
    REQUIRE(dn <= v);
    REQUIRE(up >= v);
    REQUIRE(ref::half_value(static_cast<uint16_t>(ref::half_directed(v, false) + (dn >= 0 ? 1 : -1))) > v);
  }
  CHECK(ref::half_directed(0.f, false) == 0);
  CHECK(ref::half_directed(-1e-9f, false) == 0x8001);  // -2^-24
  CHECK(ref::half_directed(1e-9f, true) == 0x0001);
  CHECK(ref::half_directed(1.f, true) == 0x3C00);      // exact: no step
}

TEST_CASE("ref quantize_keys / quantize_values: codes, scales and zeros bit-exact with core's quantize_block",
          "[kernels][ref][gear]") {
  int cases = 0;
  for (DType dt : kAllTypes)
    for (int bits : {2, 4, 8})
      for (int G : {16, 32, 64, 128})
        for (const auto& [hd, VG] : std::vector<std::pair<int, int>>{{16, 8}, {16, 16}, {64, 32}, {64, 64}, {24, 8}}) {
          const int nkv = 3, T = 2 * G;
          const double scale = (cases % 3 == 0) ? 1e-3 : (cases % 3 == 1) ? 1.0 : 300.0;
          INFO(name(dt) << " bits " << bits << " G " << G << " hd " << hd << " VG " << VG << " scale " << scale);
          const at::Tensor x = kv_block(nkv, T, hd, dt, 100 + cases, scale);
          ++cases;
          // Into row 1, tiles 1..2 of a poisoned two-row layout.
          HostKV L(sizes(2, nkv, hd, bits, G, VG, 0, 3, 0, 0, 0), 0xA5, 0x7E00);
          const std::vector<double> xd = as_doubles(x);
          const int32_t row = 1, tile = 1;
          ref::quantize_keys(xd.data(), T, 1, T, L.kv, &row, &tile);
          ref::quantize_values(xd.data(), T, 1, T, L.kv, &row, &tile);

          const gear::QuantizedBlock qk = gear::quantize_block(x, gear::QuantSpec{bits, gear::QuantAxis::Channel, G});
          const gear::QuantizedBlock qv = gear::quantize_block(x, gear::QuantSpec{bits, gear::QuantAxis::Token, VG});
          const std::vector<uint8_t> kc = bytes_of(qk.m.codes), vc = bytes_of(qv.m.codes);
          const std::vector<uint16_t> ks = half_bits_of(qk.m.scale), kz = half_bits_of(qk.m.zero);
          const std::vector<uint16_t> vs = half_bits_of(qv.m.scale), vz = half_bits_of(qv.m.zero);
          const int krow = G * bits / 8, vrow = hd * bits / 8, ng = hd / VG;
          size_t code_diff = 0, scale_diff = 0;
          for (int h = 0; h < nkv; ++h) {
            for (int j = 0; j < 2; ++j)
              for (int d = 0; d < hd; ++d) {
                const size_t r = L.k_row(row, h, tile + j, d), cr = static_cast<size_t>(h) * hd + d;
                code_diff += std::memcmp(&L.k_codes[r * krow], &kc[(cr * T + static_cast<size_t>(j) * G) * bits / 8], krow) != 0;
                scale_diff += L.k_scale[r] != ks[cr * 2 + j] || L.k_zero[r] != kz[cr * 2 + j];
              }
            for (int t = 0; t < T; ++t) {
              const size_t tk = L.tok(row, h, tile * G + t);
              code_diff += std::memcmp(&L.v_codes[tk * vrow], &vc[(static_cast<size_t>(t) * nkv + h) * hd * bits / 8], vrow) != 0;
              for (int g = 0; g < ng; ++g)
                scale_diff += L.v_scale[tk * ng + g] != vs[static_cast<size_t>(t) * nkv * ng + h * ng + g] ||
                              L.v_zero[tk * ng + g] != vz[static_cast<size_t>(t) * nkv * ng + h * ng + g];
            }
          }
          CHECK(code_diff == 0);
          CHECK(scale_diff == 0);
          // Nothing outside the destination was touched: row 0 and tile 0 of row 1 keep the poison.
          size_t touched = 0;
          for (int b = 0; b < 2; ++b)
            for (int h = 0; h < nkv; ++h)
              for (int j = 0; j < 3; ++j) {
                if (b == row && j >= tile) continue;
                for (int d = 0; d < hd; ++d) {
                  const size_t r = L.k_row(b, h, j, d);
                  touched += L.k_scale[r] != 0x7E00;
                  for (int i = 0; i < krow; ++i) touched += L.k_codes[r * krow + i] != 0xA5;
                }
                for (int t = 0; t < G; ++t) touched += L.v_codes[L.tok(b, h, j * G + t) * vrow] != 0xA5;
              }
          CHECK(touched == 0);

          // Dequantization: core's float32 values, bit for bit.
          std::vector<double> kd(xd.size(), NAN), vd(xd.size(), NAN);
          ref::dequantize_keys(L.kv, kd.data(), T, 1, T, &row, &tile);
          ref::dequantize_values(L.kv, vd.data(), T, 1, T, &row, &tile);
          CHECK(kd == host(gear::dequantize_block(qk)));
          CHECK(vd == host(gear::dequantize_block(qv)));
        }
  CHECK(cases == 3 * 3 * 4 * 5);
}

TEST_CASE("ref quantize_keys whole_block: KCVT's one range per channel over the block, held by each of its tiles",
          "[kernels][ref][gear]") {
  int cases = 0;
  for (DType dt : kAllTypes)
    for (int bits : {2, 4, 8})
      for (const auto& [G, tiles] : std::vector<std::pair<int, int>>{{16, 1}, {16, 5}, {64, 3}}) {
        const int nkv = 2, hd = 16, T = G * tiles;
        INFO(name(dt) << " bits " << bits << " G " << G << " tiles " << tiles);
        const at::Tensor x = kv_block(nkv, T, hd, dt, 900 + cases++, 2.0);
        HostKV L(sizes(2, nkv, hd, bits, G, 8, 0, tiles + 1, 0, 0, 0), 0xA5, 0x7E00);
        const std::vector<double> xd = as_doubles(x);
        const int32_t row = 1, tile = 1;
        ref::quantize_keys(xd.data(), T, 1, T, L.kv, &row, &tile, /*whole_block=*/true);
        // core's KCVT keys: per channel, one group over the whole block.
        const gear::QuantizedBlock qk = gear::quantize_block(x, gear::QuantSpec{bits, gear::QuantAxis::Channel, 0});
        const std::vector<uint8_t> kc = bytes_of(qk.m.codes);
        const std::vector<uint16_t> ks = half_bits_of(qk.m.scale), kz = half_bits_of(qk.m.zero);
        REQUIRE(ks.size() == size_t(nkv) * hd);  // one range per channel
        const int krow = G * bits / 8;
        size_t code_diff = 0, scale_diff = 0, tile_ranges = 0;
        for (int h = 0; h < nkv; ++h)
          for (int d = 0; d < hd; ++d) {
            const size_t cr = static_cast<size_t>(h) * hd + d;
            for (int j = 0; j < tiles; ++j) {
              const size_t r = L.k_row(row, h, tile + j, d);
              code_diff += std::memcmp(&L.k_codes[r * krow], &kc[(cr * T + static_cast<size_t>(j) * G) * bits / 8], krow) != 0;
              scale_diff += L.k_scale[r] != ks[cr] || L.k_zero[r] != kz[cr];
            }
          }
        CHECK(code_diff == 0);
        CHECK(scale_diff == 0);
        // Not the tiles' own ranges: with several tiles some channel's tile range is narrower than the block's.
        if (tiles > 1) {
          HostKV P(sizes(2, nkv, hd, bits, G, 8, 0, tiles + 1, 0, 0, 0), 0xA5, 0x7E00);
          ref::quantize_keys(xd.data(), T, 1, T, P.kv, &row, &tile);  // per tile
          for (size_t r = 0; r < L.k_scale.size(); ++r) tile_ranges += P.k_scale[r] != L.k_scale[r];
          CHECK(tile_ranges > 0);
        }
        // Row 0 and tile 0 of row 1 keep the poison.
        size_t touched = 0;
        for (int h = 0; h < nkv; ++h)
          for (int d = 0; d < hd; ++d) {
            touched += L.k_scale[L.k_row(0, h, 0, d)] != 0x7E00 || L.k_scale[L.k_row(1, h, 0, d)] != 0x7E00;
            touched += L.k_codes[L.k_row(1, h, 0, d) * krow] != 0xA5;
          }
        CHECK(touched == 0);
      }
}

TEST_CASE("ref quantize_values: value groups spanning whole heads (v_span) are core's groups", "[kernels][ref][gear]") {
  // Small heads (stories260K: 8 channels) under KIVI's wider groups: every head of a span holds the group's one
  // scale / zero, and its codes are core's codes of the hidden vector.
  int cases = 0;
  for (DType dt : kAllTypes)
    for (int bits : {2, 4, 8})
      for (const auto& [nkv, hd, VG] : std::vector<std::tuple<int, int, int>>{{4, 8, 32}, {4, 8, 16}, {6, 16, 48}, {2, 24, 48}}) {
        const int G = 16, T = 2 * G, span = VG / hd;
        INFO(name(dt) << " bits " << bits << " nkv " << nkv << " hd " << hd << " VG " << VG);
        const at::Tensor x = kv_block(nkv, T, hd, dt, 900 + cases, cases % 2 ? 1.0 : 40.0);
        ++cases;
        CompressedKV s = sizes(2, nkv, hd, bits, G, hd, 0, 3, 0, 0, 0);
        s.v_span = span;
        HostKV L(s, 0xA5, 0x7E00);
        const std::vector<double> xd = as_doubles(x);
        const int32_t row = 1, tile = 1;
        ref::quantize_values(xd.data(), T, 1, T, L.kv, &row, &tile);
        const gear::QuantizedBlock qv = gear::quantize_block(x, gear::QuantSpec{bits, gear::QuantAxis::Token, VG});
        const std::vector<uint8_t> vc = bytes_of(qv.m.codes);
        const std::vector<uint16_t> vs = half_bits_of(qv.m.scale), vz = half_bits_of(qv.m.zero);
        const int vrow = hd * bits / 8, groups = nkv * hd / VG;
        size_t code_diff = 0, scale_diff = 0;
        for (int h = 0; h < nkv; ++h)
          for (int t = 0; t < T; ++t) {
            const size_t tk = L.tok(row, h, tile * G + t), cg = static_cast<size_t>(t) * groups + h / span;
            code_diff += std::memcmp(&L.v_codes[tk * vrow], &vc[(static_cast<size_t>(t) * nkv + h) * hd * bits / 8], vrow) != 0;
            scale_diff += L.v_scale[tk] != vs[cg] || L.v_zero[tk] != vz[cg];
          }
        CHECK(code_diff == 0);
        CHECK(scale_diff == 0);
        std::vector<double> vd(xd.size(), NAN);
        ref::dequantize_values(L.kv, vd.data(), T, 1, T, &row, &tile);
        CHECK(vd == host(gear::dequantize_block(qv)));
      }
  CHECK(cases == 3 * 3 * 4);
  // Spans must tile the heads and take whole heads.
  CompressedKV bad = sizes(1, 6, 8, 2, 16, 8, 0, 1, 0, 0, 0);
  bad.v_span = 4;
  CHECK_THAT(gear::kernels::compressed_kv_problem(bad), Catch::Contains("spanning 4 heads"));
  bad = sizes(1, 4, 16, 2, 16, 8, 0, 1, 0, 0, 0);
  bad.v_span = 2;
  CHECK_THAT(gear::kernels::compressed_kv_problem(bad), Catch::Contains("v_group = hd"));
}

TEST_CASE("ref extract_outliers: core's entries in core's order, inliers with the inlier mean", "[kernels][ref][gear]") {
  // Per-side counts agree with core's formula.
  for (long long cols : {1LL, 7LL, 64LL, 100LL, 1000LL, 4096LL, 32768LL})
    for (double s : {0.0, 0.7, 2.0, 5.0, 10.0, 33.3, 50.0}) CHECK(gear::kernels::outliers_per_side(cols, s) == gear::outliers_per_side(cols, s));
  int cases = 0;
  size_t mean_ulps = 0;
  for (bool per_channel : {true, false})
    for (const auto& [nkv, T, hd] : std::vector<std::tuple<int, int, int>>{{2, 64, 16}, {1, 200, 8}, {4, 32, 32}, {2, 1000, 8}})
      for (double s : {2.0, 5.0, 10.0, 50.0}) {
        const int64_t cols = per_channel ? T : nkv * hd;
        const int k = gear::kernels::outliers_per_side(cols, s);
        if (k == 0 || 2 * k >= cols) continue;
        INFO((per_channel ? "per channel" : "per token") << " nkv " << nkv << " T " << T << " hd " << hd << " s " << s << " k " << k);
        ++cases;
        // float32 values: tie-free in practice (core leaves ties to at::topk).
        const at::Tensor x = kv_block(nkv, T, hd, DType::F32, 500 + cases) * 0.5 + at::randn({nkv, T, hd}) * 0.01;
        const gear::QuantAxis axis = per_channel ? gear::QuantAxis::Channel : gear::QuantAxis::Token;
        const gear::OutlierSplit split = gear::extract_outliers(gear::to_matrix(x, axis), s);
        REQUIRE(split.sparse.per_side == k);
        const int64_t rows = split.sparse.rows;
        std::vector<uint16_t> vals(static_cast<size_t>(rows * 2 * k));
        std::vector<int32_t> idx(vals.size());
        std::vector<double> inl(static_cast<size_t>(x.numel()), NAN);
        const std::vector<double> xd = as_doubles(x);
        ref::extract_outliers(xd.data(), T, 1, T, nkv, hd, per_channel, k, vals.data(), idx.data(), inl.data());
        CHECK(vals == half_bits_of(split.sparse.values));
        const at::Tensor ci = split.sparse.index.to(at::kInt).contiguous();
        CHECK(idx == std::vector<int32_t>(ci.data_ptr<int32_t>(), ci.data_ptr<int32_t>() + ci.numel()));
        // Inliers: core's everywhere but at the outliers. There the reference holds the inlier mean rounded once
        // from float64 (checked against ATen float64 here); core's is sum(x) - sum(picked) in float32, which
        // cancels against the outliers and is only as accurate as float32 sums of the whole row.
        const std::vector<double> want = host(gear::from_matrix(split.inliers, axis, nkv, T, hd));
        const at::Tensor m = gear::to_matrix(x, axis).to(at::kDouble);
        const at::Tensor picked = m.gather(1, ci.to(at::kLong));
        const std::vector<double> exact_mean =
            host(((m.sum(1) - picked.sum(1)) / static_cast<double>(cols - 2 * k)).to(at::kFloat));
        const std::vector<double> row_scale = host(m.abs().sum(1) / static_cast<double>(cols - 2 * k));
        const std::vector<double> inl_m = host(gear::to_matrix(at::from_blob(inl.data(), {nkv, T, hd}, at::kDouble), axis));
        const std::vector<double> want_m = host(split.inliers);
        const std::vector<int32_t> cidx(ci.data_ptr<int32_t>(), ci.data_ptr<int32_t>() + ci.numel());
        size_t differ_off_outliers = 0, bad_mean = 0;
        for (int64_t r = 0; r < rows; ++r) {
          std::set<int32_t> out_cols(cidx.begin() + r * 2 * k, cidx.begin() + (r + 1) * 2 * k);
          for (int64_t c = 0; c < cols; ++c) {
            const size_t i = static_cast<size_t>(r * cols + c);
            if (!out_cols.count(static_cast<int32_t>(c))) {
              differ_off_outliers += inl_m[i] != want_m[i];
              continue;
            }
            bad_mean += inl_m[i] != exact_mean[r];
            const double core_err = std::fabs(want_m[i] - exact_mean[r]) / row_scale[r];
            mean_ulps = std::max(mean_ulps, static_cast<size_t>(core_err / 0x1p-24));  // core's error in units of float32 eps * mean|x|
          }
        }
        CHECK(differ_off_outliers == 0);
        CHECK(bad_mean == 0);
        (void)inl;
      }
  CHECK(cases >= 20);
  // core's float32 mean stays within a few cols * eps of the row's scale (a sanity bound, not exactness).
  INFO("core's inlier mean error, in float32 eps times mean|x| of the row: " << mean_ulps);
  CHECK(mean_ulps <= 4096);

  // Ties go to the lower column; +0 and -0 are equal.
  std::vector<double> row(16, 1.0);
  row[9] = -0.0, row[3] = 0.0;
  std::vector<uint16_t> v(4);
  std::vector<int32_t> ix(4);
  ref::extract_outliers(row.data(), 16, 1, 1, 1, 16, /*per_channel=*/false, 2, v.data(), ix.data(), nullptr);
  CHECK(ix == std::vector<int32_t>{0, 1, 3, 9});
  CHECK(v[3] == 0x8000);  // -0 keeps its sign
}

TEST_CASE("ref sparse_to_tiles: core's outliers regrouped per tile, sorted by position", "[kernels][ref][gear]") {
  const int nkv = 2, hd = 16, G = 16, T = 64;
  for (bool keys : {true, false}) {
    INFO((keys ? "keys" : "values"));
    const at::Tensor x = kv_block(nkv, T, hd, DType::F32, 77);
    const gear::QuantAxis axis = keys ? gear::QuantAxis::Channel : gear::QuantAxis::Token;
    const gear::OutlierSplit split = gear::extract_outliers(gear::to_matrix(x, axis), 10.0);
    const int k = static_cast<int>(split.sparse.per_side);
    REQUIRE(k > 0);
    HostKV L(sizes(1, nkv, hd, 2, G, 8, 0, 8, 0, 4000, 0));
    const std::vector<uint16_t> vals = half_bits_of(split.sparse.values);
    const at::Tensor i32 = split.sparse.index.to(at::kInt).contiguous();
    const std::vector<int32_t> idx(i32.data_ptr<int32_t>(), i32.data_ptr<int32_t>() + i32.numel());
    // Two blocks: T tokens at tile 0, the same again at tile 4.
    for (int32_t tile : {0, 4}) {
      const int32_t row = 0;  // the second block starts where the first one's offsets end (sp_off[4])
      ref::sparse_to_tiles(L.kv, keys, vals.data(), idx.data(), 1, T, k, &row, &tile);
    }
    const std::vector<int32_t>& off = keys ? L.k_sp_off : L.v_sp_off;
    const std::vector<uint16_t>& pos = keys ? L.k_sp_pos : L.v_sp_pos;
    const std::vector<uint16_t>& val = keys ? L.k_sp_val : L.v_sp_val;
    // Dense per head from the tiles == core's dense outliers (twice).
    const at::Tensor dense = gear::from_matrix(gear::outliers_dense(split.sparse), axis, nkv, T, hd);  // [nkv, T, hd]
    for (int h = 0; h < nkv; ++h) {
      const size_t base = static_cast<size_t>(h) * (L.kv.tile_cap + 1);
      std::vector<double> got(static_cast<size_t>(2 * T * hd), 0.0);
      std::vector<char> seen(got.size(), 0);
      for (int j = 0; j < 8; ++j) {
        REQUIRE(off[base + j] <= off[base + j + 1]);
        for (int e = off[base + j]; e < off[base + j + 1]; ++e) {
          const size_t at_ = static_cast<size_t>(h) * L.kv.sparse_cap + e;
          if (e > off[base + j]) CHECK(pos[at_ - 1] < pos[at_]);
          const int t = j * G + pos[at_] / hd, d = pos[at_] % hd;
          got[static_cast<size_t>(t) * hd + d] = ref::half_value(val[at_]);
          seen[static_cast<size_t>(t) * hd + d] = 1;
        }
      }
      const std::vector<double> want1 = host(dense[h].to(at::kHalf));
      std::vector<double> want(want1);
      want.insert(want.end(), want1.begin(), want1.end());
      CHECK(got == want);
      // An outlier whose value is exactly 0 is still an entry: count them.
      size_t n_entries = 0;
      for (char c : seen) n_entries += c;
      CHECK(static_cast<long long>(n_entries) == off[base + 8]);
    }
  }
  // A pool that would pass sparse_cap throws; so does an index outside the block.
  HostKV small(sizes(1, 1, 16, 2, 16, 8, 0, 1, 0, 3, 0));
  std::vector<uint16_t> vals(32, 0x3C00);
  std::vector<int32_t> idx(32);
  for (int r = 0; r < 16; ++r) idx[2 * r] = r, idx[2 * r + 1] = (r + 1) % 16;
  CHECK_THROWS_WITH(ref::sparse_to_tiles(small.kv, true, vals.data(), idx.data(), 1, 16, 1, nullptr, nullptr),
                    Catch::Contains("sparse_cap"));
  idx[5] = 16;
  CHECK_THROWS_AS(ref::sparse_to_tiles(small.kv, true, vals.data(), idx.data(), 1, 16, 1, nullptr, nullptr), std::runtime_error);
}

TEST_CASE("ref: the GEAR block pipeline (outliers, inliers, quantize) reproduces core's compress_block codes",
          "[kernels][ref][gear]") {
  int cases = 0;
  size_t code_diff = 0, scale_diff = 0, sparse_diff = 0;
  for (int bits : {2, 4})
    for (const auto& [nkv, hd, G, VG] : std::vector<std::tuple<int, int, int, int>>{{2, 16, 16, 8}, {2, 64, 32, 32}, {4, 32, 64, 16}})
      for (double s : {2.0, 10.0}) {
        const int T = 4 * G;
        ++cases;
        // float32 data without constant channels: no ties (core leaves them to at::topk), and no group whose
        // extreme is the inlier mean (core's float32 mean is inexact, see above).
        at::manual_seed(900 + cases);
        at::Tensor x = at::randn({nkv, T, hd}) * 0.5;
        x.select(2, 1).mul_(20).add_(3);
        x.select(1, 0).select(1, 0).copy_(at::arange(nkv) * 3.0 + 40.0);  // planted outliers, distinct per head
        const std::vector<double> xd = as_doubles(x);
        HostKV L(sizes(1, nkv, hd, bits, G, VG, 0, T / G, 0, 0, 0));
        for (bool keys : {true, false}) {
          const gear::QuantSpec spec{bits, keys ? gear::QuantAxis::Channel : gear::QuantAxis::Token, keys ? G : VG};
          gear::BlockSettings st;
          st.quant = spec;
          st.sparsity = s;
          const gear::GearBlock blk = gear::compress_block(x, st);
          const int k = blk.s ? static_cast<int>(blk.s->per_side) : 0;
          const int64_t rows = keys ? nkv * hd : T;
          std::vector<uint16_t> vals(static_cast<size_t>(rows * 2 * k));
          std::vector<int32_t> idx(vals.size());
          std::vector<double> inl(xd.size());
          ref::extract_outliers(xd.data(), T, 1, T, nkv, hd, keys, k, vals.data(), idx.data(), inl.data());
          if (k > 0) {
            sparse_diff += vals != half_bits_of(blk.s->values);
            const at::Tensor ci = blk.s->index.to(at::kInt).contiguous();
            sparse_diff += idx != std::vector<int32_t>(ci.data_ptr<int32_t>(), ci.data_ptr<int32_t>() + ci.numel());
          }
          if (keys)
            ref::quantize_keys(inl.data(), T, 1, T, L.kv, nullptr, nullptr);
          else
            ref::quantize_values(inl.data(), T, 1, T, L.kv, nullptr, nullptr);
          const std::vector<uint8_t> cc = bytes_of(blk.q.m.codes);
          const std::vector<uint16_t> cs = half_bits_of(blk.q.m.scale), cz = half_bits_of(blk.q.m.zero);
          for (int h = 0; h < nkv; ++h) {
            if (keys) {
              for (int j = 0; j < T / G; ++j)
                for (int d = 0; d < hd; ++d) {
                  const size_t r = L.k_row(0, h, j, d), cr = static_cast<size_t>(h) * hd + d;
                  code_diff += std::memcmp(&L.k_codes[r * (G * bits / 8)], &cc[(cr * T + static_cast<size_t>(j) * G) * bits / 8],
                                           G * bits / 8) != 0;
                  scale_diff += L.k_scale[r] != cs[cr * (T / G) + j] || L.k_zero[r] != cz[cr * (T / G) + j];
                }
            } else {
              const int ng = hd / VG, vrow = hd * bits / 8;
              for (int t = 0; t < T; ++t) {
                const size_t tk = L.tok(0, h, t);
                code_diff += std::memcmp(&L.v_codes[tk * vrow], &cc[(static_cast<size_t>(t) * nkv + h) * vrow], vrow) != 0;
                for (int g = 0; g < ng; ++g)
                  scale_diff += L.v_scale[tk * ng + g] != cs[static_cast<size_t>(t) * nkv * ng + h * ng + g] ||
                                L.v_zero[tk * ng + g] != cz[static_cast<size_t>(t) * nkv * ng + h * ng + g];
              }
            }
          }
        }
      }
  CHECK(cases == 12);
  CHECK(sparse_diff == 0);
  CHECK(code_diff == 0);
  CHECK(scale_diff == 0);
}

namespace {
struct RowPlan {
  std::vector<int> blocks;  // tokens per compressed block (multiples of G): the prompt, then streamed blocks
  int buf = 0;              // buffered tokens
};
struct GearCase {
  int nh, nkv, hd, bits, G, VG;
  int prefill_rank, block_rank;  // 0: no low rank
  double sparsity;               // 0: no sparse part
  std::vector<RowPlan> rows;
};

// Builds the layout from core's compress_block of random K/V, and the ATen reconstruction of each row.
struct GearRows {
  std::unique_ptr<HostKV> L;
  std::vector<at::Tensor> K, V;  // per row: [nkv, S, hd] float64, core's decompress_block + the fp16 buffer
};
GearRows build_gear_rows(const GearCase& c, uint64_t seed) {
  const int B = static_cast<int>(c.rows.size());
  long long tiles = 1, lr_blocks = 1;
  int buf_cap = 1;
  for (const RowPlan& r : c.rows) {
    long long t = 0;
    for (int n : r.blocks) t += n / c.G;
    tiles = std::max(tiles, t);
    lr_blocks = std::max(lr_blocks, static_cast<long long>(r.blocks.size()));
    buf_cap = std::max(buf_cap, r.buf);
  }
  const int R = std::max(c.prefill_rank, c.block_rank);
  const long long sparse_cap = c.sparsity > 0 ? tiles * c.G * c.hd : 0;
  GearRows out;
  out.L = std::make_unique<HostKV>(sizes(B, c.nkv, c.hd, c.bits, c.G, c.VG, R, tiles, R > 0 ? lr_blocks : 0, sparse_cap, buf_cap));
  HostKV& L = *out.L;
  at::manual_seed(seed);
  for (int b = 0; b < B; ++b) {
    long long tile = 0;
    std::vector<at::Tensor> kparts, vparts;
    for (size_t i = 0; i < c.rows[b].blocks.size(); ++i) {
      const int T = c.rows[b].blocks[i];
      at::Tensor xk = at::randn({c.nkv, T, c.hd}) * 0.5;
      xk.select(2, 1).mul_(6).add_(1);  // key channels with their own scale, as real keys have
      xk.select(2, 5 % c.hd).mul_(3);
      const at::Tensor xv = at::randn({c.nkv, T, c.hd}) * 0.5;
      gear::BlockSettings ks, vs;
      ks.quant = {c.bits, gear::QuantAxis::Channel, c.G};
      vs.quant = {c.bits, gear::QuantAxis::Token, c.VG};
      ks.sparsity = vs.sparsity = c.sparsity;
      const int r = i == 0 ? c.prefill_rank : c.block_rank;
      for (gear::BlockSettings* s : {&ks, &vs}) {
        s->low_rank.rank = gear::resolve_rank(r, 0, T, c.hd);
        s->low_rank.power_iters = 2;
        s->low_rank.seed = seed * 31 + i;
      }
      const gear::GearBlock kb = gear::compress_block(xk.to(at::kHalf), ks), vb = gear::compress_block(xv.to(at::kHalf), vs);
      tile = put_block(L, b, tile, static_cast<int>(i), kb, vb);
      kparts.push_back(gear::decompress_block(kb).to(at::kDouble));
      vparts.push_back(gear::decompress_block(vb).to(at::kDouble));
    }
    L.n_comp[b] = static_cast<int32_t>(tile * c.G);
    const int nb = c.rows[b].buf;
    L.n_buf[b] = nb;
    const at::Tensor kbuf = at::randn({c.nkv, nb, c.hd}).to(at::kHalf), vbuf = at::randn({c.nkv, nb, c.hd}).to(at::kHalf);
    const std::vector<uint16_t> kbb = half_bits_of(kbuf), vbb = half_bits_of(vbuf);
    for (int h = 0; h < c.nkv; ++h)
      for (int i = 0; i < nb; ++i)
        for (int d = 0; d < c.hd; ++d) {
          L.k_buf[((L.bh(b, h)) * buf_cap + i) * c.hd + d] = kbb[(static_cast<size_t>(h) * nb + i) * c.hd + d];
          L.v_buf[((L.bh(b, h)) * buf_cap + i) * c.hd + d] = vbb[(static_cast<size_t>(h) * nb + i) * c.hd + d];
        }
    kparts.push_back(kbuf.to(at::kDouble));
    vparts.push_back(vbuf.to(at::kDouble));
    out.K.push_back(at::cat(kparts, 1));
    out.V.push_back(at::cat(vparts, 1));
  }
  return out;
}

const std::vector<GearCase>& gear_cases() {
  static const std::vector<GearCase> cases = {
      // GEAR (Q + L + S), 2-bit, MHA, tiny heads: per-channel key outliers in the prompt blocks, value outliers
      // spread over both heads; rows: prompt + two streamed blocks + buffer, prompt only, buffer only, no buffer.
      {2, 2, 16, 2, 16, 8, 4, 2, 10.0, {{{64, 32, 32}, 7}, {{16}, 1}, {{}, 3}, {{48, 32}, 0}}},
      // GQA 4, hd 64, 4-bit, groups of 32.
      {8, 2, 64, 4, 32, 32, 4, 2, 5.0, {{{128, 64}, 5}, {{32}, 1}}},
      // GQA 8, hd 128, 8-bit KIVI (no L, no S).
      {16, 2, 128, 8, 64, 64, 0, 0, 0.0, {{{128, 64}, 3}, {{}, 1}}},
      // GEAR-L (Q + L) at GQA 1 with a rank larger than some blocks need (zero-padded columns).
      {4, 4, 32, 2, 32, 16, 8, 1, 0.0, {{{96, 32}, 2}}},
      // GEAR-S only (no low rank), GQA 3.
      {6, 2, 32, 4, 16, 32, 0, 0, 20.0, {{{80}, 4}, {{16, 16}, 9}}},
  };
  return cases;
}
}  // namespace

TEST_CASE("ref reconstruct_row and compressed_attention match ATen attention over core's decompress_block",
          "[kernels][ref][gear]") {
  int seed = 1;
  for (const GearCase& c : gear_cases()) {
    INFO("nh " << c.nh << " nkv " << c.nkv << " hd " << c.hd << " bits " << c.bits << " G " << c.G << " VG " << c.VG << " ranks "
               << c.prefill_rank << "/" << c.block_rank << " s " << c.sparsity);
    GearRows g = build_gear_rows(c, 4000 + seed++);
    const CompressedKV& kv = g.L->kv;
    const int B = kv.B;
    // The layout reconstructs core's K/V (core adds A·B in float32; here it is exact).
    std::vector<at::Tensor> Kr, Vr;
    for (int b = 0; b < B; ++b) {
      const long long S = g.K[b].size(1);
      std::vector<double> k(static_cast<size_t>(c.nkv * S * c.hd)), v(k.size());
      ref::reconstruct_row(kv, b, k.data(), v.data());
      const Diff dk = compare(k, host(g.K[b])), dv = compare(v, host(g.V[b]));
      INFO("row " << b << " K: " << dk.str() << "; V: " << dv.str());
      CHECK(dk.rel <= 1e-6);
      CHECK(dv.rel <= 1e-6);
      Kr.push_back(at::from_blob(k.data(), {c.nkv, S, c.hd}, at::kDouble).clone());
      Vr.push_back(at::from_blob(v.data(), {c.nkv, S, c.hd}, at::kDouble).clone());
    }
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.hd));
    const at::Tensor q = at::randn({B, c.nh, c.hd}, at::kDouble);
    std::vector<double> got(static_cast<size_t>(B * c.nh * c.hd), NAN);
    ref::compressed_attention(host(q).data(), kv, got.data(), c.nh, scale);
    const Diff d_core = compare(got, host(attention_aten(q, g.K, g.V, scale)));
    const Diff d_self = compare(got, host(attention_aten(q, Kr, Vr, scale)));
    INFO("vs core's reconstruction: " << d_core.str() << "; vs the layout's own: " << d_self.str());
    CHECK(d_core.bad == 0);
    CHECK(d_core.rel <= 1e-6);
    CHECK(d_self.rel <= 1e-12);
  }
}

TEST_CASE("ref outlier_corrections: the reconstruction without the outliers plus the corrections is the layout's",
          "[kernels][ref][gear]") {
  int seed = 1;
  for (const GearCase& c : gear_cases()) {
    if (c.sparsity <= 0) continue;
    INFO("nh " << c.nh << " nkv " << c.nkv << " hd " << c.hd << " bits " << c.bits << " G " << c.G << " ranks " << c.prefill_rank
               << "/" << c.block_rank << " s " << c.sparsity);
    GearRows g = build_gear_rows(c, 6000 + seed++);
    const HostKV& L = *g.L;
    const CompressedKV& kv = L.kv;
    const int B = kv.B;
    const size_t ne = gear::kernels::compressed_kv_sizes(kv).sp_entries;
    std::vector<double> corr[2] = {std::vector<double>(ne, NAN), std::vector<double>(ne, NAN)};
    std::vector<int32_t> rows(B), first(B, 0);
    for (int b = 0; b < B; ++b) rows[b] = b;
    for (int b = 0; b < B; ++b)  // each row's own tiles (the offsets past them are not set)
      ref::outlier_corrections(kv, &rows[b], &first[b], 1, kv.n_comp[b] / kv.group, corr[0].data(), corr[1].data());
    CompressedKV dense = kv;  // the same layout without its outliers
    dense.sparse_cap = 0;
    size_t applied = 0;
    for (int b = 0; b < B; ++b) {
      const long long S = static_cast<long long>(kv.n_comp[b]) + kv.n_buf[b], tiles = kv.n_comp[b] / kv.group;
      std::vector<double> k(static_cast<size_t>(kv.nkv * S * kv.hd)), v(k.size()), k0(k.size()), v0(k.size());
      ref::reconstruct_row(kv, b, k.data(), v.data());
      ref::reconstruct_row(dense, b, k0.data(), v0.data());
      for (int side = 0; side < 2; ++side)
        for (int h = 0; h < kv.nkv; ++h)
          for (long long tile = 0; tile < tiles; ++tile) {
            const std::vector<int32_t>& off = side ? L.v_sp_off : L.k_sp_off;
            const std::vector<uint16_t>& pos = side ? L.v_sp_pos : L.k_sp_pos;
            const size_t o = L.bh(b, h) * (kv.tile_cap + 1) + tile, sp = L.bh(b, h) * kv.sparse_cap;
            for (long long e = off[o]; e < off[o + 1]; ++e) {
              const int lt = pos[sp + e] / kv.hd, d = pos[sp + e] % kv.hd;
              (side ? v0 : k0)[(static_cast<size_t>(h) * S + tile * kv.group + lt) * kv.hd + d] += corr[side][sp + e];
              ++applied;
            }
          }
      const Diff dk = compare(k0, k), dv = compare(v0, v);
      INFO("row " << b << " K: " << dk.str() << "; V: " << dv.str());
      CHECK(dk.bad == 0);
      CHECK(dv.bad == 0);
      CHECK(dk.rel <= 1e-12);
      CHECK(dv.rel <= 1e-12);
    }
    CHECK(applied > 0);
    // The attention reads a layout's fp16 corrections where it carries them (as the kernels do): zero corrections
    // give the attention without the outliers, the exact ones rounded to fp16 the layout's own within that rounding,
    // and a layout of corrections only (no values) the same as one with both.
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.hd));
    const at::Tensor q = at::randn({B, c.nh, c.hd}, at::kDouble);
    const size_t no = static_cast<size_t>(B) * c.nh * c.hd;
    auto attend = [&](const CompressedKV& layout) {
      std::vector<double> o(no, NAN);
      ref::compressed_attention(host(q).data(), layout, o.data(), c.nh, scale);
      return o;
    };
    std::vector<uint16_t> zero(ne, 0), rounded[2] = {std::vector<uint16_t>(ne, 0), std::vector<uint16_t>(ne, 0)};
    for (int side = 0; side < 2; ++side)
      for (size_t e = 0; e < ne; ++e)
        if (!std::isnan(corr[side][e])) rounded[side][e] = ref::half_bits(corr[side][e]);
    CompressedKV zeroed = kv, with_corr = kv, corr_only = kv;
    zeroed.k_sp_corr = zeroed.v_sp_corr = zero.data();
    with_corr.k_sp_corr = corr_only.k_sp_corr = rounded[0].data();
    with_corr.v_sp_corr = corr_only.v_sp_corr = rounded[1].data();
    corr_only.k_sp_val = corr_only.v_sp_val = nullptr;
    const std::vector<double> exact = attend(kv), without = attend(dense), got_corr = attend(with_corr);
    const Diff d_zero = compare(attend(zeroed), without), d_corr = compare(got_corr, exact),
               d_only = compare(attend(corr_only), got_corr), d_outliers = compare(without, exact);
    INFO("attention: zero corrections vs none " << d_zero.str() << "; fp16 corrections vs exact " << d_corr.str()
                                                << "; corrections only vs with values " << d_only.str()
                                                << "; without outliers vs exact " << d_outliers.str());
    CHECK(d_zero.rel <= 1e-12);
    CHECK(d_only.rel == 0.0);
    CHECK(d_outliers.rel > 1e-2);  // (the outliers matter here, so the two checks above can fail)
    CHECK(d_corr.rel <= 2e-3);
    CHECK_THROWS_WITH(ref::outlier_corrections(dense, rows.data(), first.data(), B, 1, corr[0].data(), corr[1].data()),
                      Catch::Contains("outlier_corrections") && Catch::Contains("sparse"));
  }
}

TEST_CASE("ref compressed layout: invalid sizes, destinations and lengths throw", "[kernels][ref][gear]") {
  using gear::kernels::compressed_kv_problem;
  CHECK(compressed_kv_problem(sizes(1, 1, 64, 3, 64, 64, 0, 1, 0, 0, 0)).find("bits") != std::string::npos);
  CHECK(compressed_kv_problem(sizes(1, 1, 64, 2, 48, 64, 0, 1, 0, 0, 0)).find("key group") != std::string::npos);
  CHECK(compressed_kv_problem(sizes(1, 1, 64, 2, 64, 24, 0, 1, 0, 0, 0)).find("value group") != std::string::npos);
  CHECK(compressed_kv_problem(sizes(1, 1, 64, 2, 64, 64, 9, 1, 1, 0, 0)).find("rank") != std::string::npos);
  CHECK(compressed_kv_problem(sizes(1, 1, 96, 2, 64, 32, 0, 1, 0, 0, 0), true).find("head dim") != std::string::npos);
  CHECK(compressed_kv_problem(sizes(1, 1, 96, 2, 64, 32, 0, 1, 0, 0, 0)).empty());
  HostKV L(sizes(2, 1, 16, 2, 16, 8, 0, 2, 0, 0, 4));
  std::vector<double> x(16 * 48, 0.5), q(16, 1.0), o(16);
  const int32_t bad_row = 2, bad_tile = 1, ok_row = 0;
  CHECK_THROWS_WITH(ref::quantize_keys(x.data(), 48, 1, 24, L.kv, nullptr, nullptr), Catch::Contains("quantize_keys"));  // T % G
  CHECK_THROWS_AS(ref::quantize_keys(x.data(), 48, 1, 16, L.kv, &bad_row, nullptr), std::runtime_error);
  CHECK_THROWS_AS(ref::quantize_values(x.data(), 48, 1, 32, L.kv, &ok_row, &bad_tile), std::runtime_error);
  L.n_comp[0] = 8;  // not a multiple of G
  L.n_buf[0] = 1;
  CHECK_THROWS_WITH(ref::compressed_attention(q.data(), L.kv, o.data(), 1, 1.0), Catch::Contains("invalid lengths"));
  L.n_comp[0] = 0;
  L.n_buf[0] = 0;  // no token at all
  CHECK_THROWS_AS(ref::compressed_attention(q.data(), L.kv, o.data(), 1, 1.0), std::runtime_error);
  L.n_buf[0] = 5;  // past buf_cap
  CHECK_THROWS_AS(ref::compressed_attention(q.data(), L.kv, o.data(), 1, 1.0), std::runtime_error);
}

// ------------------------------------------------------------------------------------------------
// GPU: the kernels against the references
// ------------------------------------------------------------------------------------------------
#ifdef GEARLAB_WITH_CUDA
namespace {

bool have_gpu() {
  if (!at::hasCUDA() || !gear::kernels::cuda_available()) {
    WARN("SKIPPED: no CUDA device");
    return false;
  }
  return true;
}

const at::Device kGpu(at::kCUDA, 0);
void device_sync() { REQUIRE(cudaDeviceSynchronize() == cudaSuccess); }

at::Tensor poisoned(at::IntArrayRef shape, DType t) {
  return at::full(shape, std::numeric_limits<double>::quiet_NaN(), at::TensorOptions().dtype(scalar_type(t)).device(kGpu));
}

// Device copy of a HostKV (same sizes); download() reads every array back.
struct DeviceKV {
  CompressedKV kv;
  std::vector<at::Tensor> keep;
  explicit DeviceKV(const HostKV& h) : kv(h.kv) {
#define X(f) kv.f = static_cast<decltype(kv.f)>(upload(h.f));
    GEAR_KV_ARRAYS(X)
#undef X
  }
  template <class V> void* upload(const V& v) {
    if (v.empty()) return nullptr;
    const size_t bytes = v.size() * sizeof(v[0]);
    at::Tensor t = at::empty({static_cast<int64_t>(bytes)}, at::TensorOptions().dtype(at::kByte).device(kGpu));
    REQUIRE(cudaMemcpy(t.data_ptr(), v.data(), bytes, cudaMemcpyHostToDevice) == cudaSuccess);
    keep.push_back(t);
    return t.data_ptr();
  }
  void download(HostKV& h) const {
    device_sync();
#define X(f) \
  if (!h.f.empty()) REQUIRE(cudaMemcpy(h.f.data(), kv.f, h.f.size() * sizeof(h.f[0]), cudaMemcpyDeviceToHost) == cudaSuccess);
    GEAR_KV_ARRAYS(X)
#undef X
  }
};

template <class T> at::Tensor to_device(const std::vector<T>& v) {
  at::Tensor t = at::empty({static_cast<int64_t>(v.size() * sizeof(T))}, at::TensorOptions().dtype(at::kByte).device(kGpu));
  if (!v.empty()) REQUIRE(cudaMemcpy(t.data_ptr(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  return t;
}
template <class T> std::vector<T> from_device(const at::Tensor& t, size_t n) {
  device_sync();
  std::vector<T> v(n);
  if (n) REQUIRE(cudaMemcpy(v.data(), t.data_ptr(), n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
  return v;
}

// Source blocks [n, nkv, x_cap, hd] of dtype t (CPU): kv_block's features per block, tokens past T NaN.
at::Tensor blocks(int n, int nkv, long long x_cap, int T, int hd, DType t, uint64_t seed) {
  std::vector<at::Tensor> parts;
  for (int i = 0; i < n; ++i) {
    const at::Tensor x = kv_block(nkv, T, hd, t, seed + i, i % 2 ? 3.0 : 0.7).to(at::kDouble);
    parts.push_back(at::cat({x, at::full({nkv, x_cap - T, hd}, std::numeric_limits<double>::quiet_NaN(), at::kDouble)}, 1));
  }
  return at::stack(parts).to(scalar_type(t));
}

}  // namespace

TEST_CASE("cuda quantize_keys / quantize_values match the reference bit for bit", "[kernels][cuda][gear]") {
  if (!have_gpu()) return;
  struct Q { int nkv, hd, G, VG, bits, span = 1; };
  int seed = 0;
  for (DType dt : kAllTypes)
    for (const Q c : {Q{1, 64, 16, 8, 2}, Q{8, 128, 64, 64, 2}, Q{32, 128, 32, 32, 4}, Q{4, 64, 128, 16, 8}, Q{2, 24, 16, 8, 4},
                      Q{3, 128, 64, 128, 8}, Q{2, 128, 128, 64, 2}, Q{4, 8, 64, 8, 2, 4}, Q{6, 16, 16, 16, 4, 3}}) {
      INFO(name(dt) << " nkv " << c.nkv << " hd " << c.hd << " G " << c.G << " VG " << c.VG << " bits " << c.bits << " span " << c.span);
      const int n = 2, T = 2 * c.G;
      const long long x_cap = T + 5;
      const at::Tensor x = blocks(n, c.nkv, x_cap, T, c.hd, dt, 7000 + 10 * seed++);
      CompressedKV s = sizes(3, c.nkv, c.hd, c.bits, c.G, c.VG, 0, 5, 0, 0, 0);
      s.v_span = c.span;  // value groups of `span` whole heads (stories260K's 8-channel heads)
      HostKV L(s, 0xA5, 0x7E00);
      DeviceKV D(L);
      const std::vector<int32_t> rows = {2, 0}, tiles = {1, 3};
      const at::Tensor rows_d = to_device(rows), tiles_d = to_device(tiles), xd = x.to(kGpu);
      const auto* rp = static_cast<const int32_t*>(rows_d.data_ptr());
      const auto* tp = static_cast<const int32_t*>(tiles_d.data_ptr());
      gear::kernels::quantize_keys(dt, xd.data_ptr(), x_cap, n, T, D.kv, rp, tp, nullptr);
      gear::kernels::quantize_values(dt, xd.data_ptr(), x_cap, n, T, D.kv, rp, tp, nullptr);
      const std::vector<double> xh = host(x);
      ref::quantize_keys(xh.data(), x_cap, n, T, L.kv, rows.data(), tiles.data());
      ref::quantize_values(xh.data(), x_cap, n, T, L.kv, rows.data(), tiles.data());
      HostKV got(L.kv);
      D.download(got);
      got.require_equal(L);  // codes, scales, zeros; and the poison everywhere else
      {
        // KCVT's keys (one range per channel over the block) into fresh poisoned layouts.
        HostKV Lw(s, 0xA5, 0x7E00);
        DeviceKV Dw(Lw);
        gear::kernels::quantize_keys(dt, xd.data_ptr(), x_cap, n, T, Dw.kv, rp, tp, nullptr, /*whole_block=*/true);
        ref::quantize_keys(xh.data(), x_cap, n, T, Lw.kv, rows.data(), tiles.data(), /*whole_block=*/true);
        HostKV gw(Lw.kv);
        Dw.download(gw);
        INFO("whole_block");
        gw.require_equal(Lw);
      }

      // Unpack + dequantize: core's float32 values rounded to the dtype, bit for bit.
      for (DType ot : kAllTypes) {
        INFO("dequantize to " << name(ot));
        const long long out_cap = T + 3;
        at::Tensor ok = poisoned({n, c.nkv, out_cap, c.hd}, ot), ov = poisoned({n, c.nkv, out_cap, c.hd}, ot);
        gear::kernels::dequantize_keys(D.kv, ot, ok.data_ptr(), out_cap, n, T, rp, tp, nullptr);
        gear::kernels::dequantize_values(D.kv, ot, ov.data_ptr(), out_cap, n, T, rp, tp, nullptr);
        std::vector<double> wk(static_cast<size_t>(n) * c.nkv * out_cap * c.hd, std::numeric_limits<double>::quiet_NaN()), wv(wk);
        ref::dequantize_keys(L.kv, wk.data(), out_cap, n, T, rows.data(), tiles.data());
        ref::dequantize_values(L.kv, wv.data(), out_cap, n, T, rows.data(), tiles.data());
        for (double* w : {wk.data(), wv.data()})
          for (size_t i = 0; i < wk.size(); ++i) w[i] = ref::round_to(ot, w[i]);
        const std::vector<double> gk = host(ok), gv = host(ov);
        size_t diff = 0;
        for (size_t i = 0; i < wk.size(); ++i) {
          diff += !(gk[i] == wk[i] || (std::isnan(gk[i]) && std::isnan(wk[i])));
          diff += !(gv[i] == wv[i] || (std::isnan(gv[i]) && std::isnan(wv[i])));
        }
        CHECK(diff == 0);
      }
    }
  // An out-of-range destination is not written; an out-of-range source reads as NaN.
  HostKV L(sizes(1, 2, 64, 2, 16, 16, 0, 2, 0, 0, 0), 0xA5, 0x7E00);
  DeviceKV D(L);
  const at::Tensor x = blocks(1, 2, 16, 16, 64, DType::F16, 1).to(kGpu);
  const at::Tensor bad = to_device(std::vector<int32_t>{2});
  gear::kernels::quantize_keys(DType::F16, x.data_ptr(), 16, 1, 16, D.kv, nullptr, static_cast<const int32_t*>(bad.data_ptr()), nullptr);
  HostKV got(L.kv);
  D.download(got);
  got.require_equal(L);
  at::Tensor o = at::zeros({1, 2, 16, 64}, at::TensorOptions().dtype(at::kHalf).device(kGpu));
  gear::kernels::dequantize_keys(D.kv, DType::F16, o.data_ptr(), 16, 1, 16, nullptr, static_cast<const int32_t*>(bad.data_ptr()), nullptr);
  device_sync();
  CHECK(at::isnan(o).all().item<bool>());
  CHECK_THROWS_WITH(gear::kernels::quantize_keys(DType::F16, x.data_ptr(), 16, 1, 24, D.kv, nullptr, nullptr, nullptr),
                    Catch::Contains("quantize_keys"));
}

TEST_CASE("cuda extract_outliers matches the reference (entries, order, ties, inliers)", "[kernels][cuda][gear]") {
  if (!have_gpu()) return;
  struct O { bool per_channel; int nkv, T, hd; double s; bool ties; };
  int seed = 0;
  for (DType dt : kAllTypes)
    for (const O c : {O{false, 32, 64, 128, 2.0, false}, O{false, 8, 17, 128, 10.0, false}, O{true, 2, 4096, 64, 2.0, false},
                      O{true, 4, 64, 128, 10.0, false}, O{true, 1, 1000, 64, 50.0, false}, O{false, 4, 33, 64, 5.0, true},
                      O{true, 2, 300, 16, 20.0, true}, O{true, 2, 64, 128, 2.0, false} /* k == 0: a copy */,
                      O{false, 40, 5, 128, 2.0, false} /* fp16 rows past the register path's 4096 */}) {
      const long long cols = c.per_channel ? c.T : static_cast<long long>(c.nkv) * c.hd;
      const int k = gear::kernels::outliers_per_side(cols, c.s);
      INFO(name(dt) << (c.per_channel ? " per channel" : " per token") << " nkv " << c.nkv << " T " << c.T << " hd " << c.hd << " k " << k
                    << (c.ties ? " (many ties)" : ""));
      const int n = 2;
      const long long x_cap = c.T + 2;
      at::Tensor x = blocks(n, c.nkv, x_cap, c.T, c.hd, dt, 9000 + 10 * seed++);
      if (c.ties) x = (x.to(at::kDouble) * 2).round().div(2).clamp(-3, 3).to(scalar_type(dt));  // a handful of values
      const long long rows = c.per_channel ? static_cast<long long>(c.nkv) * c.hd : c.T;
      const size_t ne = static_cast<size_t>(n * rows * 2 * k), ni = static_cast<size_t>(n) * c.nkv * c.T * c.hd;
      std::vector<uint16_t> wv(ne);
      std::vector<int32_t> wi(ne);
      std::vector<double> win(ni);
      const std::vector<double> xh = host(x);
      ref::extract_outliers(xh.data(), x_cap, n, c.T, c.nkv, c.hd, c.per_channel, k, wv.data(), wi.data(), win.data());
      const at::Tensor xd = x.to(kGpu);
      at::Tensor gv = at::full({static_cast<int64_t>(ne) + 1}, -1, at::TensorOptions().dtype(at::kShort).device(kGpu));
      at::Tensor gi = at::full({static_cast<int64_t>(ne) + 1}, -7, at::TensorOptions().dtype(at::kInt).device(kGpu));
      at::Tensor gin = at::full({static_cast<int64_t>(ni)}, std::numeric_limits<float>::quiet_NaN(), at::TensorOptions().dtype(at::kFloat).device(kGpu));
      gear::kernels::extract_outliers(dt, xd.data_ptr(), x_cap, n, c.T, c.nkv, c.hd, c.per_channel, k,
                                      reinterpret_cast<uint16_t*>(gv.data_ptr<int16_t>()), gi.data_ptr<int32_t>(), gin.data_ptr<float>(), nullptr);
      device_sync();
      const at::Tensor gvc = gv.cpu(), gic = gi.cpu();
      std::vector<uint16_t> got_v(ne);
      if (ne) std::memcpy(got_v.data(), gvc.data_ptr<int16_t>(), ne * 2);
      const std::vector<int32_t> got_i(gic.data_ptr<int32_t>(), gic.data_ptr<int32_t>() + ne);
      CHECK(got_v == wv);
      CHECK(got_i == wi);
      CHECK(gic.data_ptr<int32_t>()[ne] == -7);  // nothing written past the end
      CHECK(host(gin) == win);
    }
  // Bad arguments.
  at::Tensor x = at::zeros({1, 1, 8, 16}, at::TensorOptions().dtype(at::kHalf).device(kGpu));
  CHECK_THROWS_WITH(gear::kernels::extract_outliers(DType::F16, x.data_ptr(), 8, 1, 8, 1, 16, true, 4, nullptr, nullptr, nullptr, nullptr),
                    Catch::Contains("extract_outliers"));
}

TEST_CASE("cuda scatter_outliers writes each extracted entry at its place and nothing else", "[kernels][cuda][gear]") {
  if (!have_gpu()) return;
  struct O { bool per_channel; int nkv, T, hd; double s; };
  int seed = 0;
  for (const O c : {O{false, 8, 64, 128, 2.0}, O{true, 4, 64, 128, 10.0}, O{false, 3, 17, 64, 10.0}, O{true, 2, 300, 16, 20.0}}) {
    const long long cols = c.per_channel ? c.T : static_cast<long long>(c.nkv) * c.hd;
    const long long rows = c.per_channel ? static_cast<long long>(c.nkv) * c.hd : c.T;
    const int k = gear::kernels::outliers_per_side(cols, c.s), n = 2;
    INFO((c.per_channel ? "per channel" : "per token") << " nkv " << c.nkv << " T " << c.T << " hd " << c.hd << " k " << k);
    REQUIRE(k > 0);
    const at::Tensor x = blocks(n, c.nkv, c.T, c.T, c.hd, DType::F16, 9500 + seed++).to(kGpu);
    const size_t ne = static_cast<size_t>(n * rows * 2 * k);
    at::Tensor vals = at::empty({static_cast<int64_t>(ne)}, at::TensorOptions().dtype(at::kShort).device(kGpu));
    at::Tensor idx = at::empty({static_cast<int64_t>(ne)}, at::TensorOptions().dtype(at::kInt).device(kGpu));
    gear::kernels::extract_outliers(DType::F16, x.data_ptr(), c.T, n, c.T, c.nkv, c.hd, c.per_channel, k,
                                    reinterpret_cast<uint16_t*>(vals.data_ptr<int16_t>()), idx.data_ptr<int32_t>(), nullptr, nullptr);
    // A block that differs from x everywhere, so an entry written to the wrong place or not at all shows.
    at::Tensor out = at::full({n, c.nkv, c.T, c.hd}, -1234.5f, at::TensorOptions().dtype(at::kFloat).device(kGpu));
    gear::kernels::scatter_outliers(reinterpret_cast<const uint16_t*>(vals.data_ptr<int16_t>()), idx.data_ptr<int32_t>(), n, c.T,
                                    c.nkv, c.hd, c.per_channel, k, out.data_ptr<float>(), nullptr);
    device_sync();
    // Expected: the float64 loop over the entries, each value at ((i*nkv + h)*T + t)*hd + d.
    const at::Tensor vc = vals.cpu(), ic = idx.cpu();
    std::vector<float> want(static_cast<size_t>(n) * c.nkv * c.T * c.hd, -1234.5f);
    for (size_t e = 0; e < ne; ++e) {
      const long long row = static_cast<long long>(e) / (2 * k), i = row / rows, r = row % rows, col = ic.data_ptr<int32_t>()[e];
      const long long h = c.per_channel ? r / c.hd : col / c.hd, d = c.per_channel ? r % c.hd : col % c.hd, t = c.per_channel ? col : r;
      const at::Tensor v = at::from_blob(vc.data_ptr<int16_t>() + e, {1}, at::kShort).view(at::kHalf).to(at::kFloat);
      want[static_cast<size_t>(((i * c.nkv + h) * c.T + t) * c.hd + d)] = v.item<float>();
    }
    const at::Tensor got = out.cpu().contiguous();
    CHECK(std::vector<float>(got.data_ptr<float>(), got.data_ptr<float>() + got.numel()) == want);
    // Every outlier is x's own value at its place (the scatter undoes the extraction).
    const at::Tensor placed = got != -1234.5f;
    CHECK(placed.sum().item<int64_t>() == static_cast<int64_t>(ne));
    CHECK(at::equal(got.masked_select(placed), x.cpu().to(at::kFloat).masked_select(placed)));
  }
  float dummy = 0;
  CHECK_THROWS_WITH(gear::kernels::scatter_outliers(nullptr, nullptr, 1, 8, 1, 16, true, 5, &dummy, nullptr),
                    Catch::Contains("scatter_outliers"));
}

TEST_CASE("cuda sparse_to_tiles matches the reference; overflow is flagged and clamped", "[kernels][cuda][gear]") {
  if (!have_gpu()) return;
  struct S { int nkv, hd, G, T; double s; };
  int seed = 0;
  for (const S c : {S{2, 64, 64, 256, 10.0}, S{8, 128, 64, 64, 2.0}, S{2, 128, 128, 512, 5.0}, S{3, 16, 16, 96, 20.0}, S{32, 128, 32, 64, 2.0}})
    for (bool keys : {true, false}) {
      const int n = 3;
      const long long cols = keys ? c.T : static_cast<long long>(c.nkv) * c.hd;
      const int k = gear::kernels::outliers_per_side(cols, c.s);
      INFO((keys ? "keys" : "values") << " nkv " << c.nkv << " hd " << c.hd << " G " << c.G << " T " << c.T << " k " << k);
      const at::Tensor x = blocks(n, c.nkv, c.T, c.T, c.hd, DType::F32, 11000 + 10 * seed++);
      const long long rows = keys ? static_cast<long long>(c.nkv) * c.hd : c.T;
      std::vector<uint16_t> vals(static_cast<size_t>(n * rows * 2 * k));
      std::vector<int32_t> idx(vals.size());
      const std::vector<double> xh = host(x);
      ref::extract_outliers(xh.data(), c.T, n, c.T, c.nkv, c.hd, keys, k, vals.data(), idx.data(), nullptr);
      // One call: block 0 -> row 1 tiles 0.., blocks 1 and 2 -> row 0 one after the other; a second call appends
      // block 0 to row 1.
      const long long tiles = c.T / c.G;
      HostKV L(sizes(2, c.nkv, c.hd, 2, c.G, 8, 0, 2 * tiles, 0, 2 * tiles * c.G * c.hd, 0), 0, 0xFFFF);
      DeviceKV D(L);
      const at::Tensor vd = to_device(vals), id = to_device(idx);
      const std::vector<int32_t> rows1 = {1, 0, 0}, tiles1 = {0, 0, static_cast<int32_t>(tiles)}, rows2 = {1},
                                 tiles2 = {static_cast<int32_t>(tiles)};
      const at::Tensor r1 = to_device(rows1), t1 = to_device(tiles1), r2 = to_device(rows2), t2 = to_device(tiles2);
      const at::Tensor flag = to_device(std::vector<int32_t>{0});
      auto* fp = static_cast<int32_t*>(flag.data_ptr());
      gear::kernels::sparse_to_tiles(D.kv, keys, static_cast<const uint16_t*>(vd.data_ptr()), static_cast<const int32_t*>(id.data_ptr()), n,
                                     c.T, k, static_cast<const int32_t*>(r1.data_ptr()), static_cast<const int32_t*>(t1.data_ptr()), fp, nullptr);
      gear::kernels::sparse_to_tiles(D.kv, keys, static_cast<const uint16_t*>(vd.data_ptr()), static_cast<const int32_t*>(id.data_ptr()), 1,
                                     c.T, k, static_cast<const int32_t*>(r2.data_ptr()), static_cast<const int32_t*>(t2.data_ptr()), fp, nullptr);
      ref::sparse_to_tiles(L.kv, keys, vals.data(), idx.data(), n, c.T, k, rows1.data(), tiles1.data());
      ref::sparse_to_tiles(L.kv, keys, vals.data(), idx.data(), 1, c.T, k, rows2.data(), tiles2.data());
      HostKV got(L.kv, 0, 0xFFFF);
      D.download(got);
      got.require_equal(L);
      CHECK(from_device<int32_t>(flag, 1)[0] == 0);
      // Corrections only (no value arrays: GearCudaCache's GPU pools): the same offsets and positions, each value
      // (fp16) in its correction's slot (for outlier_corrections to replace).
      HostKV L0(sizes(2, c.nkv, c.hd, 2, c.G, 8, 0, 2 * tiles, 0, 2 * tiles * c.G * c.hd, 0), 0, 0xFFFF);
      DeviceKV D0(L0);
      CompressedKV only = D0.kv;
      const size_t ne = gear::kernels::compressed_kv_sizes(only).sp_entries;
      const at::Tensor corr = at::full({2, static_cast<int64_t>(ne)}, std::numeric_limits<float>::quiet_NaN(),
                                       at::TensorOptions().dtype(at::kHalf).device(kGpu));
      only.k_sp_val = only.v_sp_val = nullptr;
      only.k_sp_corr = static_cast<uint16_t*>(corr[0].data_ptr());
      only.v_sp_corr = static_cast<uint16_t*>(corr[1].data_ptr());
      gear::kernels::sparse_to_tiles(only, keys, static_cast<const uint16_t*>(vd.data_ptr()), static_cast<const int32_t*>(id.data_ptr()), n,
                                     c.T, k, static_cast<const int32_t*>(r1.data_ptr()), static_cast<const int32_t*>(t1.data_ptr()), fp, nullptr);
      gear::kernels::sparse_to_tiles(only, keys, static_cast<const uint16_t*>(vd.data_ptr()), static_cast<const int32_t*>(id.data_ptr()), 1,
                                     c.T, k, static_cast<const int32_t*>(r2.data_ptr()), static_cast<const int32_t*>(t2.data_ptr()), fp, nullptr);
      HostKV g0(L0.kv, 0, 0xFFFF);
      D0.download(g0);
      CHECK((keys ? g0.k_sp_off : g0.v_sp_off) == (keys ? L.k_sp_off : L.v_sp_off));
      CHECK((keys ? g0.k_sp_pos : g0.v_sp_pos) == (keys ? L.k_sp_pos : L.v_sp_pos));
      const std::vector<double> raw = host(corr[keys ? 0 : 1]);
      const std::vector<uint16_t>& want_v = keys ? L.k_sp_val : L.v_sp_val;
      size_t differ = 0;
      for (size_t e = 0; e < ne; ++e)
        differ += want_v[e] == 0xFFFF ? !std::isnan(raw[e]) : raw[e] != ref::half_value(want_v[e]);  // 0xFFFF: no entry there
      CHECK(differ == 0);
    }
  // Overflow: a pool of 10 entries for a block that has more.
  const int nkv = 1, hd = 64, G = 64, T = 128, k = 3;
  const at::Tensor x = blocks(1, nkv, T, T, hd, DType::F32, 5);
  std::vector<uint16_t> vals(static_cast<size_t>(hd * 2 * k));
  std::vector<int32_t> idx(vals.size());
  const std::vector<double> xh = host(x);
  ref::extract_outliers(xh.data(), T, 1, T, nkv, hd, true, k, vals.data(), idx.data(), nullptr);
  HostKV L(sizes(1, nkv, hd, 2, G, 8, 0, 2, 0, 10, 0));
  DeviceKV D(L);
  const at::Tensor vd = to_device(vals), id = to_device(idx), flag = to_device(std::vector<int32_t>{0});
  gear::kernels::sparse_to_tiles(D.kv, true, static_cast<const uint16_t*>(vd.data_ptr()), static_cast<const int32_t*>(id.data_ptr()), 1, T, k,
                                 nullptr, nullptr, static_cast<int32_t*>(flag.data_ptr()), nullptr);
  HostKV got(L.kv);
  D.download(got);
  CHECK(from_device<int32_t>(flag, 1)[0] == hd * 2 * k);  // what the pool would have needed: every key entry
  CHECK(got.k_sp_off[0] == 0);
  CHECK(got.k_sp_off[1] <= got.k_sp_off[2]);
  CHECK(got.k_sp_off[2] == 10);
}

namespace {

// Fills a layout with valid random contents for rows of (n_comp, n_buf): codes uniform, scales / zeros
// giving K/V of magnitude ~1, low-rank blocks of 1..4 tiles with ranks 0..R (unused columns zero),
// 0..max_e sparse entries per tile at distinct sorted positions, buffers N(0, 1).
void random_layout(HostKV& L, const std::vector<std::pair<int, int>>& rows, uint32_t seed, int max_e) {
  CompressedKV& c = L.kv;
  std::mt19937 rng(seed);
  std::normal_distribution<double> N(0.0, 1.0);
  std::uniform_real_distribution<double> U(0.0, 1.0);
  const double levels = (1 << c.bits) - 1;
  for (auto* v : {&L.k_codes, &L.v_codes})
    for (auto& b : *v) b = static_cast<uint8_t>(rng());
  for (auto [s, z] : {std::pair{&L.k_scale, &L.k_zero}, std::pair{&L.v_scale, &L.v_zero}})
    for (size_t i = 0; i < s->size(); ++i) {
      const double sc = (0.2 + 0.4 * U(rng)) * 3.0 / levels;
      (*s)[i] = ref::half_bits(sc);
      (*z)[i] = ref::half_bits(-sc * levels / 2 + 0.3 * N(rng));
    }
  for (auto* v : {&L.k_buf, &L.v_buf})
    for (auto& h : *v) h = ref::half_bits(N(rng));
  for (int b = 0; b < c.B; ++b) {
    L.n_comp[b] = rows[b].first;
    L.n_buf[b] = rows[b].second;
    const long long tiles = rows[b].first / c.group;
    if (c.rank > 0) {
      long long j = 0;
      int l = 0;
      while (j < c.tile_cap) {
        const long long len = 1 + rng() % 4;
        const int r = static_cast<int>(rng() % (c.rank + 1));
        for (long long t = j; t < std::min(c.tile_cap, j + len); ++t) L.lr_block[static_cast<size_t>(b) * c.tile_cap + t] = l;
        for (int h = 0; h < c.nkv; ++h)
          for (int side = 0; side < 2; ++side) {
            std::vector<uint16_t>& A = side ? L.v_lr_a : L.k_lr_a;
            std::vector<uint16_t>& Bf = side ? L.v_lr_b : L.k_lr_b;
            for (long long t = j * c.group; t < std::min(c.tile_cap, j + len) * c.group; ++t)
              for (int q = 0; q < c.rank; ++q) A[L.tok(b, h, t) * c.rank + q] = q < r ? ref::half_bits(0.3 * N(rng)) : 0;
            for (int q = 0; q < c.rank; ++q)
              for (int d = 0; d < c.hd; ++d)
                Bf[((L.bh(b, h) * c.lr_cap + l) * c.rank + q) * c.hd + d] = q < r ? ref::half_bits(0.3 * N(rng)) : 0;
          }
        j += len;
        ++l;
      }
      REQUIRE(l <= c.lr_cap);
    }
    if (c.sparse_cap > 0)
      for (int h = 0; h < c.nkv; ++h)
        for (int side = 0; side < 2; ++side) {
          std::vector<int32_t>& off = side ? L.v_sp_off : L.k_sp_off;
          std::vector<uint16_t>& pos = side ? L.v_sp_pos : L.k_sp_pos;
          std::vector<uint16_t>& val = side ? L.v_sp_val : L.k_sp_val;
          const size_t ob = L.bh(b, h) * (c.tile_cap + 1), pb = L.bh(b, h) * c.sparse_cap;
          off[ob] = 0;
          for (long long j = 0; j < c.tile_cap; ++j) {
            const int n = j < tiles ? static_cast<int>(rng() % (max_e + 1)) : 0;
            std::set<int> ps;
            while (static_cast<int>(ps.size()) < n) ps.insert(static_cast<int>(rng() % (c.group * c.hd)));
            int e = off[ob + j];
            REQUIRE(e + n <= c.sparse_cap);
            for (int p : ps) {
              pos[pb + e] = static_cast<uint16_t>(p);
              val[pb + e] = ref::half_bits(2.0 * N(rng));
              ++e;
            }
            off[ob + j + 1] = e;
          }
        }
  }
}

using gear::kernels::AttentionKernel;

// Selects compressed_attention's kernel for a scope (process-wide setting; restored to Auto).
struct KernelChoice {
  explicit KernelChoice(AttentionKernel k) { gear::kernels::set_compressed_attention_kernel(k); }
  ~KernelChoice() { gear::kernels::set_compressed_attention_kernel(AttentionKernel::Auto); }
  KernelChoice(const KernelChoice&) = delete;
  KernelChoice& operator=(const KernelChoice&) = delete;
};

// Selects compressed_attention's tokens per split for a scope (0: the automatic rule, restored at the end).
struct SplitChoice {
  explicit SplitChoice(int t) { gear::kernels::set_attention_split_tokens(t); }
  ~SplitChoice() { gear::kernels::set_attention_split_tokens(0); }
  SplitChoice(const SplitChoice&) = delete;
  SplitChoice& operator=(const SplitChoice&) = delete;
};

// FNV-1a over a device tensor's bytes: a fingerprint of a kernel's output bits.
uint64_t fnv1a(const at::Tensor& t) {
  const at::Tensor c = t.contiguous().cpu();
  const auto* p = static_cast<const uint8_t*>(c.data_ptr());
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < c.nbytes(); ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// The integers in environment variable `name` (separated by spaces), or `unset` when it is not set.
std::vector<int> env_ints(const char* name, std::vector<int> unset) {
  const char* env = std::getenv(name);
  if (!env) return unset;
  std::vector<int> out;
  std::istringstream in(env);
  for (int v = 0; in >> v;) out.push_back(v);
  return out;
}

// The timing test's tokens per split: the automatic rule (0), or GEARLAB_BENCH_SPLITS="0 1024 1280 -1" (each timed;
// -1: v7's stream-K plan; past 2048 only v7 runs, -1 only v7 without the outlier passes).
std::vector<int> bench_splits() {
  const std::vector<int> out = env_ints("GEARLAB_BENCH_SPLITS", {0});
  return out.empty() ? std::vector<int>{0} : out;
}

// Sets the key outlier pass's tiles per warp for a scope (restored to the rule at the end).
struct KeyTiles {
  explicit KeyTiles(int tiles) { gear::kernels::set_key_pass_tiles_per_warp(tiles); }
  ~KeyTiles() { gear::kernels::set_key_pass_tiles_per_warp(0); }
  KeyTiles(const KeyTiles&) = delete;
  KeyTiles& operator=(const KeyTiles&) = delete;
};

// Sets KIVI's GQA-4 kernel's blocks an SM for a scope (0: the rule, restored at the end).
struct GqaBlocks {
  explicit GqaBlocks(int blocks) { gear::kernels::set_kivi_gqa_blocks_per_sm(blocks); }
  ~GqaBlocks() { gear::kernels::set_kivi_gqa_blocks_per_sm(0); }
  GqaBlocks(const GqaBlocks&) = delete;
  GqaBlocks& operator=(const GqaBlocks&) = delete;
};

// The timing test's batch sizes: 1, 8, 16, 64, or GEARLAB_BENCH_BATCHES="18 19 20" (e.g. to time a wave step).
std::vector<int> bench_batches() {
  std::vector<int> out = env_ints("GEARLAB_BENCH_BATCHES", {1, 8, 16, 64});
  out.erase(std::remove_if(out.begin(), out.end(), [](int b) { return b <= 0; }), out.end());
  return out;
}

// Which kernel compressed_attention runs on kv with nh query heads now, for test messages.
std::string kernel_label(const CompressedKV& kv, int nh) {
  if (gear::kernels::compressed_attention_uses_tensor_cores(kv)) return "v4 (tensor cores)";
  if (gear::kernels::compressed_attention_uses_lean(kv, nh))
    return gear::kernels::compressed_attention_outliers_inside(kv, nh)  ? "v7 (lean, outliers inside)"
           : gear::kernels::compressed_attention_uses_outlier_passes(kv) ? "v7 (lean) + outlier passes"
                                                                         : "v7 (lean)";
  if (gear::kernels::compressed_attention_uses_outlier_passes(kv)) return "v3 + outlier passes";
  return "v3 (CUDA cores, outliers inside)";
}

struct AttnCase {
  int nh, nkv, hd, bits, G, VG, R;
  bool sparse;
  std::vector<std::pair<int, int>> rows;  // (n_comp, n_buf)
  int buf_cap;
  long long extra_max = 0;  // max_compressed above the longest row
  double q_scale = 1.0;
  int max_e = 0;  // sparse entries a tile and side, at most (0: G * hd / 32)
  double key_range = 1.0;  // multiplies the key scales and zeros (v7's GQA tiles: q·scale past fp16's range guard)
};

// Runs compressed_attention on a fresh random layout (output and workspace poisoned with NaN) and compares
// with ref::compressed_attention on the same inputs. lean_only: only v7's runs (the only kernel that takes splits
// longer than kMaxSplit), with the outliers inside or the passes.
void check_compressed_attention(DType dt, const AttnCase& c, uint32_t seed, bool lean_only = false) {
  const int B = static_cast<int>(c.rows.size());
  long long longest = 0;
  for (const auto& r : c.rows) longest = std::max<long long>(longest, r.first);
  const long long tiles = std::max(1LL, longest / c.G);
  const int max_e = c.sparse ? (c.max_e > 0 ? c.max_e : c.G * c.hd / 32) : 0;
  HostKV L(sizes(B, c.nkv, c.hd, c.bits, c.G, c.VG, c.R, tiles, c.R > 0 ? tiles : 0, c.sparse ? tiles * max_e : 0, c.buf_cap));
  random_layout(L, c.rows, seed, max_e);
  if (c.key_range != 1.0)
    for (auto* v : {&L.k_scale, &L.k_zero})
      for (uint16_t& h : *v) h = ref::half_bits(ref::half_value(h) * c.key_range);
  DeviceKV D(L);
  const long long max_comp = longest + c.extra_max;
  INFO(name(dt) << " B " << B << " nh " << c.nh << " nkv " << c.nkv << " hd " << c.hd << " bits " << c.bits << " G " << c.G << " VG "
                << c.VG << " R " << c.R << (c.sparse ? " sparse" : "") << " longest " << longest << " max_compressed " << max_comp);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
  at::manual_seed(seed);
  const at::Tensor q = (at::randn({B, c.nh, c.hd}, at::kDouble) * c.q_scale).to(scalar_type(dt));
  const at::Tensor qd = q.to(kGpu);
  at::Tensor out = poisoned({B, c.nh, c.hd}, dt);
  const size_t wb = gear::kernels::compressed_attention_workspace_bytes(B, c.nh, c.hd, max_comp);
  const at::Tensor ws = at::full({static_cast<int64_t>(wb / 4) + 4}, std::numeric_limits<float>::quiet_NaN(),
                                 at::TensorOptions().dtype(at::kFloat).device(kGpu));
  std::vector<double> want(static_cast<size_t>(B) * c.nh * c.hd);
  ref::compressed_attention(host(q).data(), L.kv, want.data(), c.nh, scale);
  // The corrections the layout can carry (outlier_corrections over every tile of every row, into NaN-poisoned
  // arrays), against the float64 reference.
  CompressedKV with_corr = D.kv;
  at::Tensor k_corr, v_corr;
  // The reference for the runs that read the layout's fp16 corrections: the same float64 attention with those
  // corrections as its outlier terms (their own accuracy against the exact ones is checked below), so that each
  // kernel is held to 1e-3 on the inputs it reads. (The exact corrections' fp16 rounding alone moves an output
  // dominated by one large outlier by up to half an fp16 ulp of it: 2.7e-3 of the output in a peaky 4-bit case.)
  std::vector<double> want_corr;
  std::vector<uint16_t> host_k_corr, host_v_corr;
  if (c.sparse) {
    const size_t ne = gear::kernels::compressed_kv_sizes(L.kv).sp_entries;
    const auto f16 = at::TensorOptions().dtype(at::kHalf).device(kGpu);
    k_corr = at::full({static_cast<int64_t>(ne)}, std::numeric_limits<float>::quiet_NaN(), f16);
    v_corr = at::full({static_cast<int64_t>(ne)}, std::numeric_limits<float>::quiet_NaN(), f16);
    with_corr.k_sp_corr = static_cast<uint16_t*>(k_corr.data_ptr());
    with_corr.v_sp_corr = static_cast<uint16_t*>(v_corr.data_ptr());
    std::vector<int32_t> rows(B), first(B, 0);
    for (int b = 0; b < B; ++b) rows[b] = b;
    const at::Tensor drows = to_device(rows), dfirst = to_device(first);
    gear::kernels::outlier_corrections(with_corr, static_cast<const int32_t*>(drows.data_ptr()), static_cast<const int32_t*>(dfirst.data_ptr()),
                                       B, static_cast<int>(L.kv.tile_cap), nullptr);
    device_sync();
    std::vector<double> rk(ne, std::nan("")), rv(ne, std::nan(""));
    gear::kernels::ref::outlier_corrections(L.kv, rows.data(), first.data(), B, static_cast<int>(L.kv.tile_cap), rk.data(), rv.data());
    for (auto [got_t, want_c, side] : {std::tuple{&k_corr, &rk, "keys"}, std::tuple{&v_corr, &rv, "values"}}) {
      const std::vector<double> got = host(*got_t);
      size_t bad = 0, set = 0;
      for (size_t e = 0; e < ne; ++e) {
        const double w = (*want_c)[e], g = got[e];
        // fp16 corrections: the nearest fp16 or a neighbour (kernels.h), so within 1.5 fp16 ulps of the exact one
        // (plus float32's rounding of its terms).
        if (std::isnan(w) != std::isnan(g) || (!std::isnan(w) && std::abs(g - w) > 1.5 * half_ulp(w) + 1e-5 * std::max(1.0, std::abs(w)))) ++bad;
        set += !std::isnan(w);
      }
      INFO("outlier_corrections, " << side << ": " << bad << " of " << ne << " entries differ (" << set << " computed)");
      CHECK(bad == 0);
      if (longest > 0) CHECK(set > 0);  // (a layout of buffers only has no entries)
    }
    // Corrections only (no value arrays, as GearCudaCache keeps its GPU pools): each value (fp16) in its
    // correction's slot, as sparse_to_tiles leaves it, becomes the same correction bit for bit.
    CompressedKV only = D.kv;
    only.k_sp_val = only.v_sp_val = nullptr;
    const auto host_i16 = at::TensorOptions().dtype(at::kShort);
    std::vector<uint16_t> raw_k(L.k_sp_val.begin(), L.k_sp_val.begin() + ne), raw_v(L.v_sp_val.begin(), L.v_sp_val.begin() + ne);
    const at::Tensor ok_corr = at::from_blob(raw_k.data(), {static_cast<int64_t>(ne)}, host_i16).to(kGpu).view(at::kHalf);
    const at::Tensor ov_corr = at::from_blob(raw_v.data(), {static_cast<int64_t>(ne)}, host_i16).to(kGpu).view(at::kHalf);
    only.k_sp_corr = static_cast<uint16_t*>(ok_corr.data_ptr());
    only.v_sp_corr = static_cast<uint16_t*>(ov_corr.data_ptr());
    gear::kernels::outlier_corrections(only, static_cast<const int32_t*>(drows.data_ptr()), static_cast<const int32_t*>(dfirst.data_ptr()),
                                       B, static_cast<int>(L.kv.tile_cap), nullptr);
    device_sync();
    // (where no tile holds an entry both keep what they had: NaN in with_corr's, the raw value here)
    const at::Tensor set_k = k_corr.isnan().logical_not(), set_v = v_corr.isnan().logical_not();
    CHECK(at::equal(ok_corr.masked_select(set_k), k_corr.masked_select(set_k)));
    CHECK(at::equal(ov_corr.masked_select(set_v), v_corr.masked_select(set_v)));
    for (auto [t, h] : {std::pair{&k_corr, &host_k_corr}, std::pair{&v_corr, &host_v_corr}}) {
      const at::Tensor bits = t->cpu().view(at::kShort).contiguous();
      h->assign(static_cast<const uint16_t*>(bits.data_ptr()), static_cast<const uint16_t*>(bits.data_ptr()) + ne);
    }
    CompressedKV host_corr = L.kv;
    host_corr.k_sp_corr = host_k_corr.data();
    host_corr.v_sp_corr = host_v_corr.data();
    want_corr.resize(want.size());
    ref::compressed_attention(host(q).data(), host_corr, want_corr.data(), c.nh, scale);
  }
  // The corrections-only layout (no values) only the passes can apply; v3 with the outliers inside cannot.
  CompressedKV only = with_corr;
  only.k_sp_val = only.v_sp_val = nullptr;
  // Each kernel that can take the layout: v3 (CUDA cores) with the outliers inside it, and with the outlier
  // passes (the same kernel where the layout has none) computing the corrections or reading the layout's;
  // v4 (tensor cores) and v7 (lean, with the passes for outliers) where supported.
  struct Run {
    AttentionKernel k;
    bool corr;
  };
  int ran = 0;
  for (const Run run : {Run{AttentionKernel::CudaCore, false}, Run{AttentionKernel::OutlierPasses, false},
                        Run{AttentionKernel::OutlierPasses, true}, Run{AttentionKernel::TensorCore, false},
                        Run{AttentionKernel::Lean, false}, Run{AttentionKernel::Lean, true}, Run{AttentionKernel::LeanPasses, true}}) {
    const bool v7 = run.k == AttentionKernel::Lean || run.k == AttentionKernel::LeanPasses;
    if (run.k == AttentionKernel::TensorCore && !gear::kernels::tensor_core_attention_supported(D.kv)) continue;
    if (v7 && !gear::kernels::lean_attention_supported(D.kv, c.nh)) continue;
    if (run.corr && !c.sparse) continue;
    KernelChoice choice(run.k);
    // v7 applies the layout's corrections itself on GQA-4 tiles of 2-bit codes whose values run on the tensor cores
    // (value groups of 32 / 64 channels, at most 32 value words a lane), unless asked for the passes.
    const int vw = c.VG == 32 ? 2 : c.VG == 64 ? 4 : 0;
    const bool inside = v7 && run.corr && run.k == AttentionKernel::Lean && c.nh == 4 * c.nkv && c.bits == 2 && vw > 0 &&
                        (c.G / 16) * (c.hd / (16 * vw)) * 4 <= 32;
    if (v7 && run.corr) CHECK(gear::kernels::compressed_attention_outliers_inside(with_corr, c.nh) == inside);
    if (inside) {  // its entries are staged in whole 16-byte chunks: pools of a whole number of them only
      CompressedKV ragged = with_corr;
      ragged.sparse_cap -= 1;
      CHECK_FALSE(gear::kernels::compressed_attention_outliers_inside(ragged, c.nh));
    }
    if (lean_only && !v7) continue;
    for (const bool corr_only : {false, true}) {
      if (corr_only && (!run.corr || run.k == AttentionKernel::CudaCore || run.k == AttentionKernel::TensorCore)) continue;
      const CompressedKV& kv = corr_only ? only : run.corr ? with_corr : D.kv;
      INFO(kernel_label(kv, c.nh) << (corr_only ? ", the layout's corrections only" : run.corr ? ", the layout's corrections" : ""));
      out.fill_(std::numeric_limits<double>::quiet_NaN());
      gear::kernels::compressed_attention(dt, qd.data_ptr(), kv, out.data_ptr(), c.nh, max_comp, scale, ws.data_ptr(), wb, nullptr);
      device_sync();
      ++ran;
      const Diff d = compare(host(out), run.corr ? want_corr : want);
      INFO(d.str());
      CHECK(d.bad == 0);
      // float32 accumulation, then one rounding of the output to the dtype (bf16: 2^-8 of the largest output).
      CHECK(d.rel <= (dt == DType::F16 ? 1e-3 : 8e-3));
    }
  }
  if (lean_only) CHECK(ran > 0);
  if (c.sparse && max_comp > 0 && !lean_only) {
    KernelChoice choice(AttentionKernel::CudaCore);
    CHECK_THROWS_WITH(gear::kernels::compressed_attention(dt, qd.data_ptr(), only, out.data_ptr(), c.nh, max_comp, scale, ws.data_ptr(), wb,
                                                          nullptr),
                      Catch::Contains("corrections only"));
  }
}

}  // namespace

TEST_CASE("cuda compressed_attention matches the reference", "[kernels][cuda][gear]") {
  if (!have_gpu()) return;
  const std::vector<AttnCase> cases = {
      {32, 32, 128, 2, 64, 64, 4, true, {{0, 1}}, 64},                                  // one token (the buffer's)
      {32, 32, 128, 2, 64, 64, 4, true, {{4096, 1}}, 64},                               // Llama-2-7B heads, 4k + 1
      {32, 32, 128, 2, 64, 64, 2, true, {{64, 7}}, 64, 0, 4.0},                         // peaky softmax
      {32, 8, 128, 4, 32, 32, 4, true, {{4096, 13}, {448, 1}, {0, 64}}, 64},            // GQA 4, per-row lengths
      {8, 1, 64, 8, 128, 64, 0, false, {{1024, 0}, {128, 1}}, 32},                      // GQA 8, hd 64, KIVI 8-bit
      {16, 2, 64, 2, 16, 16, 8, true, {{48, 5}, {4112, 1}, {0, 1}, {16, 0}, {2048, 127}}, 128},  // GQA 8, G 16, B 5
      {12, 4, 64, 4, 32, 8, 2, true, {{128, 3}, {256, 9}}, 16, 1000},                   // GQA 3, empty splits
      {64, 4, 128, 2, 64, 64, 4, true, {{4096, 2}, {64, 1}}, 64},                       // GQA 16: two blocks per kv head
      {32, 32, 128, 2, 64, 64, 4, true, {{128, 200}}, 256},                             // a buffer longer than a chunk
      {32, 8, 128, 2, 64, 64, 4, true, {{32704, 63}}, 64},                              // 32k context, GQA 4 (GEAR)
      {8, 8, 128, 2, 32, 32, 0, false, {{32768, 1}, {96, 3}}, 128},                     // 32k context, MHA, KIVI-2
      // v4's own corners: 4-bit tiles of 16 (a warp's 32 tokens span two tiles and low-rank blocks), an odd
      // rank, 8-bit codes with value groups of 8, rank 8, a 2-bit tile per warp, outliers everywhere.
      {16, 2, 64, 4, 16, 16, 3, true, {{48, 5}, {4112, 1}, {0, 1}, {16, 0}}, 128},
      {8, 8, 128, 8, 16, 8, 5, true, {{2048, 17}, {80, 64}}, 64},
      {32, 8, 128, 2, 32, 32, 8, true, {{1024, 33}, {32, 0}}, 64, 0, 3.0},
      {4, 4, 64, 2, 128, 64, 1, true, {{640, 9}}, 16},
      // v7's (lean) corners: hd 64 with tiles of 32 (one token per lane after the reduce-scatter) and value groups
      // of 16 (4 per head), an odd rank (16-bit A loads), per-row lengths with an empty prompt and empty splits;
      // one value group per head (16-bit scale loads), rank 1; hd 64 with tiles of 64, peaky; an 8k MHA KIVI-2 row.
      {8, 8, 64, 2, 32, 16, 3, true, {{992, 5}, {64, 0}, {0, 3}, {4096, 64}}, 64, 500},
      {4, 4, 128, 2, 64, 128, 1, true, {{1024, 3}, {2112, 1}}, 16},
      {8, 8, 64, 2, 64, 64, 4, true, {{2048, 31}, {640, 0}}, 32, 0, 4.0},
      {16, 16, 128, 2, 32, 32, 0, false, {{8192, 17}, {32, 1}}, 64},
      // v7 with GQA tiles: 2 query heads a block (hd 64, odd rank), 3 heads in a tile of 4 (one padded head).
      {6, 3, 64, 2, 32, 32, 3, true, {{512, 9}, {64, 0}, {0, 2}}, 16},
      {12, 4, 128, 2, 64, 64, 0, false, {{2048, 5}, {192, 64}}, 64},
      // v7's GQA 4 key scores on the tensor cores (a lane's tokens: a byte of a key word at G 32, a half-word at G 64):
      // hd 64 with tiles of 32, value groups of 16, an odd rank, outliers, an empty prompt; Llama-3-8B's KIVI-2 layout
      // at 8k (tiles of 32); tiles of 32 at hd 128 with one value group per head, peaky.
      {16, 4, 64, 2, 32, 16, 3, true, {{992, 5}, {64, 0}, {0, 3}}, 64, 500},
      {32, 8, 128, 2, 32, 32, 0, false, {{8192, 17}, {96, 3}}, 128},
      {8, 2, 128, 2, 32, 128, 2, false, {{2048, 31}, {128, 1}}, 64, 0, 4.0},
      // ... with the values on the tensor cores in every shape the kernel instantiates them for (value groups of 32 /
      // 64 channels: 2 / 4 words a group): hd 64 with tiles of 32 and of 64, hd 128 with tiles of 32 and groups of 64
      // (the Llama-3-8B rows above: hd 128, groups equal to the tiles).
      {16, 4, 64, 2, 32, 32, 2, true, {{992, 5}, {64, 0}, {0, 3}}, 64, 500},
      {16, 4, 64, 2, 64, 32, 0, false, {{2048, 31}, {128, 1}}, 64},
      {8, 2, 64, 2, 64, 64, 4, true, {{1024, 9}}, 64},
      {8, 2, 128, 2, 32, 64, 3, false, {{4096, 7}}, 64, 0, 4.0},
      // ... and their outliers inside v7 (the Llama-3-8B GEAR row at 32k above is one): tiles of 32 at hd 128 with value
      // groups of 32 and per-row lengths; tiles of 64 at hd 64 with up to 300 entries a tile and side, past the 128 that
      // are staged (the rest read from global memory), peaky.
      {32, 8, 128, 2, 32, 32, 2, true, {{4096, 5}, {0, 3}, {1056, 0}}, 64},
      {8, 2, 64, 2, 64, 64, 4, true, {{2048, 9}, {320, 1}}, 64, 0, 3.0, 300},
      // v7 with 4-bit codes (MHA, no low rank: KCVT's kcvt-4): tiles of 64 (two tokens a lane after the
      // reduce-scatter) and of 32 (one), value groups of a whole head and of 8 channels (one word's), outliers
      // through the passes, per-row lengths with an empty prompt.
      {16, 16, 128, 4, 64, 128, 0, false, {{4096, 3}, {64, 0}, {0, 5}}, 64},
      {8, 8, 64, 4, 32, 8, 0, true, {{992, 5}, {2048, 31}}, 32},
      {4, 4, 128, 4, 64, 32, 0, true, {{8192, 63}}, 64, 0, 4.0},
      // v7 with 4-bit codes and low rank (gear-kcvt-4 / gearl-kcvt-4): at hd 128 a value step holds two tokens, so a
      // lane flushes two ranks (tv, tv + 2); rank 4 with a head's value group, outliers and an empty prompt; an odd
      // rank (the second lane's second rank is past it) with tiles of 32 and value groups of 16; hd 64 (one rank
      // a lane), rank 2, peaky, no outliers.
      {16, 16, 128, 4, 64, 128, 4, true, {{4096, 3}, {64, 0}, {0, 5}}, 64},
      {8, 8, 128, 4, 32, 16, 3, true, {{992, 5}, {2048, 31}}, 32},
      {8, 8, 64, 4, 64, 64, 2, false, {{2048, 17}, {128, 1}}, 64, 0, 4.0},
      // v7's full-rank rows of A at tiles of 32 (one token a lane: one 8-byte load a side, 2bc862c), MHA with the
      // outlier passes and GQA 4 with the outliers inside.
      {8, 8, 128, 2, 32, 32, 4, true, {{1024, 5}, {64, 0}}, 64},
      {16, 4, 128, 2, 32, 32, 4, true, {{2048, 9}, {0, 3}}, 64},
      // Dense tiles: up to 1100 entries a side (a prompt's key outliers cluster on a few tokens), MHA and GQA 4.
      {8, 8, 128, 2, 64, 64, 4, true, {{1024, 5}, {320, 1}}, 64, 0, 1.0, 1100},
      {16, 4, 128, 2, 64, 64, 2, true, {{512, 3}}, 64, 0, 1.0, 1100},
      // v7's GQA key MMA past its fp16 range guard: key scales and zeros times 2^14 (still finite in fp16) and q times 4,
      // so the lanes' q·zero shares (and some q·scale) pass 2^14 and the tile scales them by 2^-e (e > 0; every other
      // case has e = 0). KIVI-2's Llama-3-8B layout (tiles of 32, value groups of 32), and tiles of 64 with low rank.
      // The scores then spread over ~10^5 (log2 units), so the softmax picks one token. Only where two tokens' scores
      // fall within a few units does fp32's absolute error there (~10^-2) move the output; few heads and rows keep
      // that unlikely.
      {8, 2, 128, 2, 32, 32, 0, false, {{1024, 5}}, 64, 0, 4.0, 0, 16384.0},
      {8, 2, 128, 2, 64, 64, 4, false, {{2048, 9}}, 64, 0, 4.0, 0, 16384.0},
  };
  // Under compute-sanitizer (GEARLAB_SANITIZER=1) only the short cases run: memcheck is ~100x slower.
  const bool quick = std::getenv("GEARLAB_SANITIZER") != nullptr;
  uint32_t seed = 100;
  for (DType dt : {DType::F16, DType::BF16})
    for (const AttnCase& c : cases) {
      const bool long_case = std::any_of(c.rows.begin(), c.rows.end(), [](const auto& r) { return r.first > 4200; });
      if (!(quick && long_case)) check_compressed_attention(dt, c, seed);
      ++seed;
    }
  // v7's GQA key MMA with bf16 queries past fp16's range (|q| up to ~2.6e5) and key scales and zeros times 2^-14, so
  // that q·scale stays inside the range guard: a lane holding such a query has no fp16 copy of it, and its tiles take
  // the fp32 products instead of the fp16 ones. Tiles of 32 and of 64; no buffer (its fp16 keys, not scaled down,
  // would dominate every score).
  for (const AttnCase& c : {AttnCase{32, 8, 128, 2, 32, 32, 0, false, {{1024, 0}, {2048, 0}}, 64, 0, 65536.0, 0, 1.0 / 16384},
                            AttnCase{8, 2, 128, 2, 64, 64, 0, false, {{2048, 0}}, 64, 0, 65536.0, 0, 1.0 / 16384}})
    check_compressed_attention(DType::BF16, c, seed++);
  // The key pass's tiles per warp set at both ends (set_key_pass_tiles_per_warp), on layouts with outliers: MHA 4k,
  // GQA 4 with per-row lengths, and GQA 8 with G 16, where 16 tiles a warp do not fit a block's shared memory (so
  // the count is lowered).
  for (int tiles : {16, 1}) {
    KeyTiles set(tiles);
    INFO("key pass: " << tiles << " tiles per warp asked");
    for (int i : {1, 3, 5}) check_compressed_attention(DType::F16, cases[i], seed++);
  }
  // v7's splits past kMaxSplit (the rule's up to kLeanMaxSplit), forced: one split for an 8k row and several of 8192
  // or 2432 tokens (not a power of two) for 32k ones, with the outliers inside (the split's tile offsets in shared
  // memory: up to 8192 / G + 1 of them) and through the passes (the value pass's tile offsets: 8192 / 32 + 1 at tiles
  // of 32), MHA and GQA 4, 2- and 4-bit codes.
  const std::vector<AttnCase> long_splits = {
      {32, 8, 128, 2, 64, 64, 4, true, {{32704, 63}, {8128, 1}}, 64},  // GEAR, Llama-3-8B heads: tiles of 64, inside
      {32, 8, 128, 2, 32, 32, 2, true, {{8192, 5}, {0, 3}}, 64},       // tiles of 32, inside
      {16, 16, 128, 2, 64, 64, 4, true, {{8128, 63}, {3776, 1}, {0, 2}}, 64},  // MHA GEAR (passes), per-row lengths
      {8, 8, 64, 2, 32, 32, 2, true, {{16384, 5}, {8192, 0}}, 64, 0, 4.0},    // the passes at tiles of 32, peaky
      {8, 8, 128, 4, 64, 128, 4, true, {{8192, 3}, {64, 0}}, 64},      // MHA gear-kcvt-4 (passes)
      {32, 8, 128, 2, 32, 32, 0, false, {{8128, 17}, {96, 3}}, 128},   // KIVI-2, Llama-3-8B heads
      {8, 8, 128, 2, 32, 32, 0, false, {{32768, 1}, {96, 3}}, 128},    // MHA KIVI-2, 32k
      {16, 16, 128, 4, 64, 128, 0, false, {{8192, 3}, {64, 0}}, 64},   // MHA kcvt-4
  };
  for (int tokens : {gear::kernels::split_rule::kLeanMaxSplit, 2432}) {
    SplitChoice split(tokens);
    INFO("splits of " << tokens << " tokens");
    for (const AttnCase& c : long_splits)
      if (!quick) check_compressed_attention(DType::F16, c, seed++, /*lean_only=*/true);
  }
  {  // (and one small layout under the sanitizer too: a split of 256 tiles of 32, the most the value pass's shared
     // tile offsets hold, and a shorter row)
    SplitChoice split(gear::kernels::split_rule::kLeanMaxSplit);
    check_compressed_attention(DType::F16, AttnCase{4, 4, 64, 2, 32, 32, 2, true, {{8192, 3}, {2080, 0}}, 64}, seed++, /*lean_only=*/true);
  }
  // v7's stream-K plan (KIVI's GQA tiles of 4 heads: 2-bit codes, no low rank, no outliers): the rows cut into one
  // share a block slot, so on these small batches most blocks take a few tiles of two or three rows, many segments are
  // past a short row's tokens (empty: weight 0 in the combine) or only its buffer's units, and a row's segments run on
  // different blocks. Per-row lengths with empty prompts and max_compressed past the longest row, tiles of 32 and 64,
  // hd 64 and 128; a padded head (GQA 3); the FMA value loop (value groups of 16 and of a whole head), peaky; then the
  // KIVI-2 long layout above. The short ones also run under the sanitizer.
  const std::vector<AttnCase> stream_k = {
      {16, 4, 64, 2, 32, 32, 0, false, {{992, 5}, {64, 0}, {0, 3}}, 64, 500},
      {16, 4, 64, 2, 64, 32, 0, false, {{2048, 31}, {128, 1}}, 64},
      {32, 8, 128, 2, 32, 32, 0, false, {{4096, 5}, {0, 3}, {1056, 0}}, 64},
      {12, 4, 128, 2, 64, 64, 0, false, {{2048, 5}, {192, 64}}, 64},
      {16, 4, 64, 2, 32, 16, 0, false, {{992, 5}, {64, 0}, {0, 3}}, 64, 500},
      {8, 2, 128, 2, 32, 128, 0, false, {{2048, 31}, {128, 1}}, 64, 0, 4.0},
  };
  {
    SplitChoice split(gear::kernels::kAttentionStreamK);
    INFO("v7's stream-K plan");
    for (const AttnCase& c : stream_k) check_compressed_attention(DType::F16, c, seed++, /*lean_only=*/true);
    for (const AttnCase& c : long_splits)
      if (c.nh == 4 * c.nkv && c.R == 0 && !c.sparse && !quick) check_compressed_attention(DType::F16, c, seed++, /*lean_only=*/true);
  }
  // KIVI's GQA-4 kernels are built for 3 blocks an SM and for 2 (set_kivi_gqa_blocks_per_sm). The rule takes 2 for
  // grids as small as the ones above, so each is forced here on the stream-K layouts: at the rule's splits, at
  // kLeanMaxSplit (one split a row) and with the stream-K plan, then the KIVI-2 long layout.
  for (int blocks : {3, 2})
    for (int tokens : {0, gear::kernels::split_rule::kLeanMaxSplit, gear::kernels::kAttentionStreamK}) {
      GqaBlocks set(blocks);
      SplitChoice split(tokens);
      INFO("KIVI's GQA-4 kernel at " << blocks << " blocks an SM, split setting " << tokens);
      for (const AttnCase& c : stream_k) check_compressed_attention(DType::F16, c, seed++, /*lean_only=*/true);
      for (const AttnCase& c : long_splits)
        if (c.nh == 4 * c.nkv && c.R == 0 && !c.sparse && !quick && tokens != 0)
          check_compressed_attention(DType::F16, c, seed++, /*lean_only=*/true);
    }
}

TEST_CASE("cuda compressed_attention: bad arguments throw, invalid rows give NaN, results are deterministic and graph-safe",
          "[kernels][cuda][gear]") {
  if (!have_gpu()) return;
  const int nh = 8, nkv = 2, hd = 64, G = 32;
  HostKV L(sizes(4, nkv, hd, 2, G, 32, 2, 64, 64, 64 * 64, 64));
  random_layout(L, {{1024, 3}, {40, 1}, {2048, 1}, {0, 0}}, 5, 64);  // rows 1 (n_comp % G), 2 (> max) and 3 (empty) are invalid
  DeviceKV D(L);
  const long long max_comp = 1024;
  const at::Tensor q = at::randn({4, nh, hd}, at::TensorOptions().dtype(at::kHalf).device(kGpu));
  at::Tensor out = poisoned({4, nh, hd}, DType::F16);
  const size_t wb = gear::kernels::compressed_attention_workspace_bytes(4, nh, hd, max_comp);
  const at::Tensor ws = at::empty({static_cast<int64_t>(wb) + 16}, at::TensorOptions().dtype(at::kByte).device(kGpu));
  auto call = [&](DType t, long long mc, void* w, size_t b, cudaStream_t s = nullptr) {
    gear::kernels::compressed_attention(t, q.data_ptr(), D.kv, out.data_ptr(), nh, mc, 0.125f, w, b, s);
  };
  CHECK_THROWS_WITH(call(DType::F32, max_comp, ws.data_ptr(), wb), Catch::Contains("compressed_attention") && Catch::Contains("f32"));
  CHECK_THROWS_WITH(gear::kernels::set_key_pass_tiles_per_warp(17), Catch::Contains("set_key_pass_tiles_per_warp") && Catch::Contains("17 tiles"));
  CHECK_THROWS_WITH(gear::kernels::set_key_pass_tiles_per_warp(-1), Catch::Contains("-1 tiles"));
  CHECK_THROWS_WITH(gear::kernels::set_attention_split_tokens(gear::kernels::split_rule::kLeanMaxSplit + 128),
                    Catch::Contains("set_attention_split_tokens") && Catch::Contains("8320 tokens"));
  CHECK_THROWS_WITH(gear::kernels::set_attention_split_tokens(100), Catch::Contains("multiple of 128"));
  for (int blocks : {-1, 1, 4})
    CHECK_THROWS_WITH(gear::kernels::set_kivi_gqa_blocks_per_sm(blocks),
                      Catch::Contains("set_kivi_gqa_blocks_per_sm") && Catch::Contains(std::to_string(blocks) + " blocks an SM"));
  {  // splits past kMaxSplit only for v7 (with or without the passes): v3 cannot take any, a clear error
    SplitChoice split(4096);
    KernelChoice choice(AttentionKernel::CudaCore);
    CHECK_THROWS_WITH(call(DType::F16, max_comp, ws.data_ptr(), wb), Catch::Contains("splits of 4096 tokens") && Catch::Contains("runs v3"));
  }
  CHECK_THROWS_AS(call(DType::F16, max_comp, ws.data_ptr(), 16), std::runtime_error);
  CHECK_THROWS_AS(gear::kernels::compressed_attention(DType::F16, q.data_ptr(), D.kv, out.data_ptr(), 7, max_comp, 0.1f, ws.data_ptr(), wb,
                                                      nullptr),
                  std::runtime_error);
  {  // outlier_corrections needs the corr arrays (this layout has none)
    const at::Tensor rows = at::zeros({1}, at::TensorOptions().dtype(at::kInt).device(kGpu));
    CHECK_THROWS_WITH(gear::kernels::outlier_corrections(D.kv, rows.data_ptr<int32_t>(), rows.data_ptr<int32_t>(), 1, 2, nullptr),
                      Catch::Contains("outlier_corrections") && Catch::Contains("null pointer"));
    CHECK_THROWS_WITH(gear::kernels::outlier_corrections(D.kv, rows.data_ptr<int32_t>(), rows.data_ptr<int32_t>(), -1, 2, nullptr),
                      Catch::Contains("negative"));
  }
  CompressedKV bad = D.kv;
  bad.hd = 96;
  CHECK_THROWS_WITH(gear::kernels::compressed_attention(DType::F16, q.data_ptr(), bad, out.data_ptr(), nh, max_comp, 0.1f, ws.data_ptr(),
                                                        wb, nullptr),
                    Catch::Contains("head dim"));
  for (AttentionKernel k : {AttentionKernel::CudaCore, AttentionKernel::OutlierPasses, AttentionKernel::TensorCore, AttentionKernel::Lean}) {
  KernelChoice choice(k);
  INFO(kernel_label(D.kv, nh));
  out.fill_(0);
  call(DType::F16, max_comp, ws.data_ptr(), wb);
  device_sync();
  CHECK(at::isfinite(out[0]).all().item<bool>());
  for (int b : {1, 2, 3}) CHECK(at::isnan(out[b]).all().item<bool>());
  // One split (max_compressed 0): the split kernel writes the output itself, NaN for rows with compressed tokens.
  out.fill_(0);
  call(DType::F16, 0, nullptr, 0);
  device_sync();
  for (int b : {0, 1, 2, 3}) CHECK(at::isnan(out[b]).all().item<bool>());
  // Deterministic: the same call twice and from a CUDA graph give the same bits.
  call(DType::F16, max_comp, ws.data_ptr(), wb);
  device_sync();
  const at::Tensor first = out.clone();
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  out.fill_(0);
  device_sync();
  REQUIRE(gear::kernels::testing::replay_in_graph(s, [&](cudaStream_t st) { call(DType::F16, max_comp, ws.data_ptr(), wb, st); }) ==
          cudaSuccess);
  CHECK(at::equal(out[0], first[0]));
  cudaStreamDestroy(s);
  }
  {  // v7's stream-K plan needs v7 without the outlier passes: this layout's outliers need them (v7 and v3), a clear
     // error. Without its pools and low rank it runs: invalid rows NaN (written by the combine: no block writes them),
     // the valid row finite, the same bits on every call and from a CUDA graph.
    SplitChoice split(gear::kernels::kAttentionStreamK);
    for (auto [k, what] : {std::pair{AttentionKernel::CudaCore, "runs v3"}, std::pair{AttentionKernel::Lean, "v7 with the passes"}}) {
      KernelChoice choice(k);
      CHECK_THROWS_WITH(call(DType::F16, max_comp, ws.data_ptr(), wb), Catch::Contains("stream-K") && Catch::Contains(what));
    }
    KernelChoice choice(AttentionKernel::Lean);
    CompressedKV plain = D.kv;
    plain.sparse_cap = 0;
    // (and only for KIVI's GQA tiles of 4 heads: not with this layout's low rank, nor for 2 query heads a kv head)
    CHECK_THROWS_WITH(gear::kernels::compressed_attention(DType::F16, q.data_ptr(), plain, out.data_ptr(), nh, max_comp, 0.125f,
                                                          ws.data_ptr(), wb, nullptr),
                      Catch::Contains("stream-K") && Catch::Contains("rank 2"));
    plain.rank = 0;
    CHECK_THROWS_WITH(gear::kernels::compressed_attention(DType::F16, q.data_ptr(), plain, out.data_ptr(), 2 * nkv, max_comp, 0.125f,
                                                          ws.data_ptr(), wb, nullptr),
                      Catch::Contains("stream-K") && Catch::Contains("2 query heads a kv head"));
    auto call_plain = [&](cudaStream_t st) {
      gear::kernels::compressed_attention(DType::F16, q.data_ptr(), plain, out.data_ptr(), nh, max_comp, 0.125f, ws.data_ptr(), wb, st);
    };
    out.fill_(0);
    call_plain(nullptr);
    device_sync();
    CHECK(at::isfinite(out[0]).all().item<bool>());
    for (int b : {1, 2, 3}) CHECK(at::isnan(out[b]).all().item<bool>());
    const at::Tensor first = out.clone();
    out.fill_(0);
    call_plain(nullptr);
    device_sync();
    CHECK(at::equal(out[0], first[0]));
    cudaStream_t s = nullptr;
    REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
    out.fill_(0);
    device_sync();
    REQUIRE(gear::kernels::testing::replay_in_graph(s, call_plain) == cudaSuccess);
    CHECK(at::equal(out[0], first[0]));
    cudaStreamDestroy(s);
  }
  // Auto applies this layout's outliers in the passes (around v7 here, below); forcing v4 where it cannot run is a
  // clear error, not a wrong result.
  CHECK_FALSE(gear::kernels::compressed_attention_uses_tensor_cores(D.kv));
  CHECK(gear::kernels::compressed_attention_uses_outlier_passes(D.kv));
  CHECK(gear::kernels::tensor_core_attention_supported(D.kv));
  {
    KernelChoice choice(AttentionKernel::TensorCore);
    CompressedKV g16 = D.kv;
    g16.group = 16;
    CHECK_THROWS_WITH(gear::kernels::compressed_attention_uses_tensor_cores(g16), Catch::Contains("tensor-core kernel") && Catch::Contains("G 16"));
  }
  // v7 (lean) takes this GQA 4 layout (the loop above ran it) and Auto picks it (low rank; and without it too, as 2-bit
  // GQA tiles of 4 heads run on the tensor cores); with 2 heads a tile and no low rank Auto keeps v3; rank 8 v7 does
  // not take at all, and forcing it there is a clear error.
  CHECK(gear::kernels::lean_attention_supported(D.kv, nh));
  CHECK(gear::kernels::compressed_attention_uses_lean(D.kv, nh));
  CompressedKV r0 = D.kv;
  r0.rank = 0;
  CHECK(gear::kernels::lean_attention_supported(r0, nh));
  CHECK(gear::kernels::compressed_attention_uses_lean(r0, nh));
  CHECK(gear::kernels::lean_attention_supported(r0, 2 * nkv));
  CHECK_FALSE(gear::kernels::compressed_attention_uses_lean(r0, 2 * nkv));
  CompressedKV r8 = D.kv;
  r8.rank = 8;
  CHECK_FALSE(gear::kernels::lean_attention_supported(r8, nh));
  // 4-bit codes: v7 takes them for MHA only (low rank or not), not for this GQA 4 layout.
  CompressedKV b4 = D.kv;
  b4.bits = 4;
  CHECK_FALSE(gear::kernels::lean_attention_supported(b4, nh));
  CompressedKV b4_mha = b4;
  b4_mha.nkv = nh;
  CHECK(gear::kernels::lean_attention_supported(b4_mha, nh));
  // Arrays past 2^32 elements: v7's staged copies take 32-bit element offsets, so it declines (Auto keeps v3).
  CompressedKV huge = r0;
  huge.tile_cap = static_cast<int>((int64_t(1) << 36) / (int64_t(huge.B) * huge.nkv * huge.hd * huge.key_row_bytes()));
  CHECK_FALSE(gear::kernels::lean_attention_supported(huge, nh));
  CHECK_FALSE(gear::kernels::compressed_attention_uses_lean(huge, nh));
  {
    KernelChoice choice(AttentionKernel::Lean);
    CHECK_THROWS_WITH(gear::kernels::compressed_attention_uses_lean(huge, nh), Catch::Contains("under 2^32 elements"));
    CHECK(gear::kernels::compressed_attention_uses_lean(D.kv, nh));
    CHECK_THROWS_WITH(gear::kernels::compressed_attention_uses_lean(r8, nh), Catch::Contains("lean kernel (v7)") && Catch::Contains("rank 8"));
    CHECK_THROWS_WITH(gear::kernels::compressed_attention_uses_lean(b4, nh), Catch::Contains("lean kernel (v7)") && Catch::Contains("bits 4"));
  }
}

// The automatic-choice tests' grid: Llama-3-8B KIVI-2 heads (32 q / 8 kv x 128, tiles of 32, value groups of 32,
// buffers of up to 64) at B rows of ctx - 32 (b mod 5) compressed tokens and 1 + 7b mod 64 buffered ones, on the GPU
// with an fp16 query and a workspace; run() calls compressed_attention with the process-wide settings of the moment.
struct KiviGqaGrid {
  static constexpr int nh = 32, nkv = 8, hd = 128, G = 32;
  const int B;
  const long long max_comp;
  HostKV L;
  DeviceKV D;
  const at::Tensor q;
  const size_t wb;
  const at::Tensor ws;
  KiviGqaGrid(int b, int ctx, uint32_t seed)
      : B(b), max_comp(ctx), L(sizes(b, nkv, hd, 2, G, 32, 0, ctx / G, 0, 0, 64)),
        D((random_layout(L, rows(b, ctx), seed, 0), L)),  // (the layout is filled before it is uploaded)
        q(at::randn({b, nh, hd}, at::TensorOptions().dtype(at::kHalf).device(kGpu))),
        wb(gear::kernels::compressed_attention_workspace_bytes(b, nh, hd, max_comp)),
        ws(at::empty({static_cast<int64_t>(wb) + 16}, at::TensorOptions().dtype(at::kByte).device(kGpu))) {
    REQUIRE(gear::kernels::compressed_attention_uses_lean(D.kv, nh));
  }
  static std::vector<std::pair<int, int>> rows(int b, int ctx) {
    std::vector<std::pair<int, int>> r;
    for (int i = 0; i < b; ++i) r.emplace_back(ctx - G * (i % 5), 1 + (i * 7) % 64);
    return r;
  }
  at::Tensor run() const {
    at::Tensor out = poisoned({B, nh, hd}, DType::F16);
    gear::kernels::compressed_attention(DType::F16, q.data_ptr(), D.kv, out.data_ptr(), nh, max_comp, 0.0883883f, ws.data_ptr(), wb, nullptr);
    device_sync();
    return out;
  }
  static int sms() {
    int n = 0;
    REQUIRE(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, 0) == cudaSuccess);
    return n;
  }
};

// The automatic choice on the grid stream-K was built for: Llama-3-8B KIVI-2 heads at B 64 and ~8k (per-row lengths),
// where on an H100 SXM (132 SMs, 396 slots) each block slot's share passes 8192 tokens and one block a row would fill
// 65 % of two waves (split_rule::stream_k_pays). There the automatic call gives the same bits as forced stream-K (it
// took the plan: another split would sum in another order); on any GPU stream-K agrees with forced 8192-token splits
// (one a row, no combine) within two fp16 roundings of 1e-3-accurate outputs.
TEST_CASE("cuda compressed_attention: the automatic choice takes v7's stream-K plan on a large KIVI grid", "[kernels][cuda][gear]") {
  if (!have_gpu()) return;
  const KiviGqaGrid grid(64, 8192, 21);
  auto run = [&](int split) {
    SplitChoice choice(split);
    return grid.run();
  };
  const at::Tensor automatic = run(0), stream_k = run(gear::kernels::kAttentionStreamK), splits = run(8192);
  if (KiviGqaGrid::sms() == 132) CHECK(at::equal(automatic, stream_k));
  const Diff d = compare(host(stream_k), host(splits));
  INFO(d.str());
  CHECK(d.bad == 0);
  CHECK(d.rel <= 2e-3);
}

// The automatic choice on a small KIVI grid: Llama-3-8B KIVI-2 heads at B 16 and ~4k (per-row lengths), where each of the
// 2-block kernel's slots has a share of ~2k compressed tokens (split_rule::lean_two_blocks_pay on any GPU of 32 SMs or
// more): the automatic call gives the same bits as the 2-block kernel forced (it took that kernel and sized its splits
// for that kernel's slots), and the 3-block kernel agrees within two fp16 roundings of 1e-3-accurate outputs (its
// splits differ).
TEST_CASE("cuda compressed_attention: the automatic choice takes KIVI's 2-block GQA-4 kernel on a small grid", "[kernels][cuda][gear]") {
  if (!have_gpu()) return;
  const KiviGqaGrid grid(16, 4096, 23);
  auto run = [&](int blocks) {
    GqaBlocks choice(blocks);
    return grid.run();
  };
  const at::Tensor automatic = run(0), two = run(2), three = run(3);
  if (KiviGqaGrid::sms() >= 32) CHECK(at::equal(automatic, two));
  const Diff d = compare(host(two), host(three));
  INFO(d.str());
  CHECK(d.bad == 0);
  CHECK(d.rel <= 2e-3);
}

// v7's outliers inside (GQA-4 tiles with the value MMA and the layout's corrections): the same bits on every call and
// from a CUDA graph (fixed-point value sums, key runs walked per token: no order-dependent adds), and a non-finite value
// correction makes exactly its channel of its kv head's query heads NaN, as the value pass does (a NaN term must not
// pass the fixed-point range check as a huge integer).
TEST_CASE("cuda compressed_attention: v7's outliers inside are deterministic, a NaN correction gives its channel NaN",
          "[kernels][cuda][gear]") {
  if (!have_gpu()) return;
  const int B = 2, nh = 8, nkv = 2, hd = 64, G = 32;
  HostKV L(sizes(B, nkv, hd, 2, G, 32, 2, 64, 64, 64 * 64, 64));
  random_layout(L, {{1024, 3}, {512, 1}}, 11, 64);
  DeviceKV D(L);
  const long long max_comp = 1024;
  const size_t ne = gear::kernels::compressed_kv_sizes(L.kv).sp_entries;
  const auto f16 = at::TensorOptions().dtype(at::kHalf).device(kGpu);
  const at::Tensor k_corr = at::full({static_cast<int64_t>(ne)}, 0.0, f16), v_corr = at::full({static_cast<int64_t>(ne)}, 0.0, f16);
  CompressedKV kv = D.kv;
  kv.k_sp_corr = static_cast<uint16_t*>(k_corr.data_ptr());
  kv.v_sp_corr = static_cast<uint16_t*>(v_corr.data_ptr());
  const at::Tensor rows = to_device(std::vector<int32_t>{0, 1}), first = to_device(std::vector<int32_t>{0, 0});
  gear::kernels::outlier_corrections(kv, static_cast<const int32_t*>(rows.data_ptr()), static_cast<const int32_t*>(first.data_ptr()), B,
                                     static_cast<int>(L.kv.tile_cap), nullptr);
  const at::Tensor q = at::randn({B, nh, hd}, at::TensorOptions().dtype(at::kHalf).device(kGpu));
  at::Tensor out = poisoned({B, nh, hd}, DType::F16);
  const size_t wb = gear::kernels::compressed_attention_workspace_bytes(B, nh, hd, max_comp);
  const at::Tensor ws = at::empty({static_cast<int64_t>(wb) + 16}, at::TensorOptions().dtype(at::kByte).device(kGpu));
  auto call = [&](cudaStream_t st) {
    gear::kernels::compressed_attention(DType::F16, q.data_ptr(), kv, out.data_ptr(), nh, max_comp, 0.125f, ws.data_ptr(), wb, st);
  };
  REQUIRE(gear::kernels::compressed_attention_outliers_inside(kv, nh));
  call(nullptr);
  device_sync();
  const at::Tensor first_out = out.clone();
  REQUIRE(at::isfinite(first_out).all().item<bool>());
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  out.fill_(0);
  device_sync();
  REQUIRE(gear::kernels::testing::replay_in_graph(s, call) == cudaSuccess);
  CHECK(at::equal(out, first_out));
  cudaStreamDestroy(s);
  // Row 0, kv head 1: its first value entry's correction becomes NaN (fp16 0x7e00).
  const size_t ob = L.bh(0, 1) * (L.kv.tile_cap + 1);
  long long j = 0;
  while (j < L.kv.tile_cap && L.v_sp_off[ob + j] == L.v_sp_off[ob + j + 1]) ++j;
  REQUIRE(j < 1024 / G);
  const size_t e = L.bh(0, 1) * L.kv.sparse_cap + L.v_sp_off[ob + j];
  const int d = L.v_sp_pos[e] % hd;
  const uint16_t nan_bits = 0x7e00;
  REQUIRE(cudaMemcpy(static_cast<uint16_t*>(v_corr.data_ptr()) + e, &nan_bits, 2, cudaMemcpyHostToDevice) == cudaSuccess);
  for (AttentionKernel k : {AttentionKernel::Lean, AttentionKernel::LeanPasses}) {
    KernelChoice choice(k);
    INFO(kernel_label(kv, nh) << ", channel " << d);
    out.fill_(0);
    call(nullptr);
    device_sync();
    const at::Tensor o = out.cpu().to(at::kFloat);
    for (int h = 0; h < nh; ++h)
      for (int c = 0; c < hd; ++c) {
        const bool want_nan = h >= 4 && c == d;  // (query heads 4..7 read kv head 1)
        CHECK(std::isnan(o[0][h][c].item<float>()) == want_nan);
      }
    CHECK(at::isfinite(o[1]).all().item<bool>());
  }
}

// Timings for docs/kernels.md: hidden, run with `test_kernels "[.bench]"` on the GPU. The compressed cache is
// random (device-generated) with the sizes of kivi-2 (2-bit, G 32, buffer 128), gearl-kivi-2 (2-bit, G 64, rank 4,
// buffer 64) and gear-kivi-2 (the same plus ~2 % outliers per side); bytes = what the kernel reads (codes, scales, A rows, B per
// low-rank block, sparse entries and offsets, buffer, q and out). The FP16 baseline is decode_attention
// (kernels/decode_attention.cu) on an FP16 cache of the same context.
TEST_CASE("cuda compressed_attention: decode timings, Llama-2-7B and Llama-3-8B heads", "[.bench][kernels][cuda][gear]") {
  if (!have_gpu()) return;
  // GEARLAB_BENCH_GQA_BLOCKS=2 or 3: KIVI's GQA-4 kernel built for that many blocks an SM (set_kivi_gqa_blocks_per_sm;
  // 0 or unset: the automatic rule), labelled " blocks N".
  const std::vector<int> gqa_env = env_ints("GEARLAB_BENCH_GQA_BLOCKS", {0});
  const int gqa_blocks = gqa_env.empty() ? 0 : gqa_env[0];
  const GqaBlocks gqa(gqa_blocks);
  at::manual_seed(11);  // (the same inputs in every run and build: GEARLAB_BENCH_DIGEST compares outputs across builds)
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  gear::kernels::testing::EventTimer timer;  // (us per call of a body issuing `iters` calls on a stream)
  // Per-call time (us) of fn(stream) over `iters` calls replayed from a CUDA graph, and from the stream.
  auto time_us = [&](int iters, auto&& fn) {
    // The inputs were written by ATen on its own stream, which `s` (non-blocking) does not wait for.
    device_sync();
    for (int i = 0; i < 3; ++i) fn(s);
    auto elapsed = [&](auto&& body) { return timer.us(s, iters, body); };
    const double stream_us = elapsed([&] { for (int i = 0; i < iters; ++i) fn(s); });
    cudaGraph_t g = nullptr;
    cudaGraphExec_t ge = nullptr;
    REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    for (int i = 0; i < iters; ++i) fn(s);
    REQUIRE(cudaStreamEndCapture(s, &g) == cudaSuccess);
    REQUIRE(cudaGraphInstantiate(&ge, g, 0) == cudaSuccess);
    cudaGraphLaunch(ge, s);
    const double graph_us = elapsed([&] { cudaGraphLaunch(ge, s); });
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
    const cudaError_t err = cudaStreamSynchronize(s);
    if (err != cudaSuccess) FAIL("timed kernels failed: " << cudaGetErrorString(err));
    return std::pair<double, double>{stream_us, graph_us};
  };
  const auto f16 = at::TensorOptions().dtype(at::kHalf).device(kGpu);
  const auto u8 = at::TensorOptions().dtype(at::kByte).device(kGpu);
  const auto i32 = at::TensorOptions().dtype(at::kInt).device(kGpu);
  // This card's copy bandwidth (read + write of a 2 GiB device-to-device copy): the 100 % of the table.
  double kCopyTBs = 0;
  {
    const at::Tensor a = at::empty({int64_t(1) << 31}, u8), b2 = at::empty({int64_t(1) << 31}, u8);
    const double us = time_us(5, [&](cudaStream_t st) { cudaMemcpyAsync(b2.data_ptr(), a.data_ptr(), size_t(1) << 31, cudaMemcpyDeviceToDevice, st); }).first;
    kCopyTBs = 2.0 * double(int64_t(1) << 31) / (us * 1e-6) / 1e12;
    std::cout << "device-to-device copy of 2 GiB: " << us << " us = " << kCopyTBs << " TB/s (read + write)" << std::endl;
  }
  struct Model { const char* name; int nh, nkv; };
  // bits: code width; whole_vector: KCVT's value ranges over the whole hidden vector (value groups of whole heads,
  // v_span = nkv, each head reading its copy of the token's scale / zero).
  struct Method { const char* name; int G, R, buf; double sparse_per_side; int bits = 2; bool whole_vector = false; };
  std::optional<std::regex> only;
  if (const char* env = std::getenv("GEARLAB_BENCH_ONLY")) {
    try {
      only.emplace(env);
    } catch (const std::regex_error& e) {
      FAIL("GEARLAB_BENCH_ONLY=\"" << env << "\" is not a valid regex: " << e.what());
    }
  }
  const int hd = 128, bits = 2;  // (the compression timing below)
  std::cout << std::fixed << std::setprecision(1);
  for (const Model m : {Model{"llama2-7b 32x128", 32, 32}, Model{"llama3-8b 32q/8kv", 32, 8}})
    for (const Method me : {Method{"kivi-2", 32, 0, 128, 0.0}, Method{"gearl-kivi-2", 64, 4, 64, 0.0}, Method{"gear-kivi-2", 64, 4, 64, 0.01},
                            Method{"kcvt-4", 64, 0, 64, 0.0, 4, true}, Method{"gearl-kcvt-4", 64, 4, 64, 0.0, 4, true},
                            Method{"gear-kcvt-4", 64, 4, 64, 0.01, 4, true}})
      for (int B : bench_batches())
        for (long long ctx : {1024LL, 4096LL, 8192LL, 32768LL}) {
          // GEARLAB_BENCH_ONLY="<ECMAScript regex>" times the shapes whose label it matches (a plain part of a label works:
          // "gear-kivi-2 B 16 ctx 4096"; several: "32x128 gearl?-kivi-2 B (16|19) ctx 4096").
          const std::string label = std::string(m.name) + " " + me.name + " B " + std::to_string(B) + " ctx " + std::to_string(ctx);
          if (only && !std::regex_search(label, *only)) continue;
          const int nbuf = me.buf / 2;
          const long long n_comp = (ctx - nbuf) / me.G * me.G;
          const long long tiles = n_comp / me.G;
          const int E = static_cast<int>(me.sparse_per_side * 2 * me.G * hd);  // entries per tile and side
          const int mbits = me.bits, VG = me.whole_vector ? hd : me.G;
          // The pools in whole chunks, as GearCudaCache sizes them (v7 keeps the outliers inside only then).
          const long long sparse_cap = E > 0 ? gear::kernels::sparse_cap_in_chunks(tiles * E) : 0;
          CompressedKV kv = sizes(B, m.nkv, hd, mbits, me.G, VG, me.R, tiles, me.R > 0 ? (tiles + 7) / 8 : 0, sparse_cap, me.buf);
          if (me.whole_vector) kv.v_span = m.nkv;
          const auto z = gear::kernels::compressed_kv_sizes(kv);
          const double levels = (1 << mbits) - 1;
          std::vector<at::Tensor> keep;
          auto half_t = [&](at::Tensor t) {
            keep.push_back(t.to(at::kHalf).contiguous());
            return reinterpret_cast<uint16_t*>(keep.back().data_ptr());
          };
          auto bytes_t = [&](size_t n) {
            keep.push_back(at::randint(0, 256, {static_cast<int64_t>(n)}, u8));
            return static_cast<uint8_t*>(keep.back().data_ptr());
          };
          auto int_t = [&](at::Tensor t) {
            keep.push_back(t.to(at::kInt).contiguous());
            return keep.back().data_ptr<int32_t>();
          };
          const auto fopt = at::TensorOptions().dtype(at::kFloat).device(kGpu);
          kv.k_codes = bytes_t(z.k_codes);
          kv.v_codes = bytes_t(z.v_codes);
          kv.k_scale = half_t((at::rand({static_cast<int64_t>(z.k_scale)}, fopt) * 0.4 + 0.2) * (3.0 / levels));
          kv.k_zero = half_t(at::randn({static_cast<int64_t>(z.k_scale)}, fopt) * 0.3 - 0.6);
          kv.v_scale = half_t((at::rand({static_cast<int64_t>(z.v_scale)}, fopt) * 0.4 + 0.2) * (3.0 / levels));
          kv.v_zero = half_t(at::randn({static_cast<int64_t>(z.v_scale)}, fopt) * 0.3 - 0.6);
          kv.k_buf = half_t(at::randn({static_cast<int64_t>(z.buf)}, fopt));
          kv.v_buf = half_t(at::randn({static_cast<int64_t>(z.buf)}, fopt));
          kv.n_comp = int_t(at::full({B}, static_cast<int64_t>(n_comp), i32));
          kv.n_buf = int_t(at::full({B}, nbuf, i32));
          if (me.R > 0) {
            kv.lr_block = int_t(at::arange(static_cast<int64_t>(tiles), i32).div(8, "floor").repeat({B}));  // low-rank blocks of 8 tiles
            kv.k_lr_a = half_t(at::randn({static_cast<int64_t>(z.lr_a)}, fopt) * 0.3);
            kv.v_lr_a = half_t(at::randn({static_cast<int64_t>(z.lr_a)}, fopt) * 0.3);
            kv.k_lr_b = half_t(at::randn({static_cast<int64_t>(z.lr_b)}, fopt) * 0.3);
            kv.v_lr_b = half_t(at::randn({static_cast<int64_t>(z.lr_b)}, fopt) * 0.3);
          }
          if (E > 0) {
            const int stride = me.G * hd / E;
            const at::Tensor pos = (at::arange(E, i32) * stride).view({1, 1, 1, E}) +
                                   at::randint(0, stride, {B, m.nkv, static_cast<int64_t>(tiles), E}, i32);  // sorted and distinct in each tile
            const at::Tensor off = (at::arange(static_cast<int64_t>(tiles + 1), i32) * E).repeat({B * m.nkv});
            kv.k_sp_off = int_t(off);
            kv.v_sp_off = int_t(off);
            // Each (row, head)'s pool holds sparse_cap entries: its tiles' entries, then the padding.
            const at::Tensor pool = at::constant_pad_nd(pos.reshape({B, m.nkv, tiles * E}), {0, sparse_cap - tiles * E});
            for (uint16_t** p : {&kv.k_sp_pos, &kv.v_sp_pos}) {
              keep.push_back(pool.to(at::kShort).contiguous());
              *p = reinterpret_cast<uint16_t*>(keep.back().data_ptr());
            }
            kv.k_sp_val = half_t(at::randn({static_cast<int64_t>(z.sp_entries)}, fopt) * 2);
            kv.v_sp_val = half_t(at::randn({static_cast<int64_t>(z.sp_entries)}, fopt) * 2);
            // The corrections, as GearCudaCache keeps them (the outlier passes read them; v3 and v4 do not).
            keep.push_back(at::empty({static_cast<int64_t>(z.sp_entries)}, fopt.dtype(at::kHalf)));
            kv.k_sp_corr = static_cast<uint16_t*>(keep.back().data_ptr());
            keep.push_back(at::empty({static_cast<int64_t>(z.sp_entries)}, fopt.dtype(at::kHalf)));
            kv.v_sp_corr = static_cast<uint16_t*>(keep.back().data_ptr());
            const int32_t* rows = int_t(at::arange(B, i32));
            const int32_t* first = int_t(at::zeros({B}, i32));
            gear::kernels::outlier_corrections(kv, rows, first, B, static_cast<int>(tiles), nullptr);
          }
          const at::Tensor q = at::randn({B, m.nh, hd}, f16);
          at::Tensor out = at::empty({B, m.nh, hd}, f16);
          // Bytes the kernel reads (per row and kv head), plus q and out.
          const double per_head = static_cast<double>(n_comp) * hd * mbits / 8 * 2    // K and V codes
                                  + static_cast<double>(tiles) * hd * 4                 // K scale + zero
                                  + static_cast<double>(n_comp) * (hd / VG) * 4         // V scale + zero
                                  + static_cast<double>(n_comp) * me.R * 2 * 2          // A rows, K and V
                                  + static_cast<double>((tiles + 7) / 8) * me.R * hd * 2 * 2  // B per low-rank block
                                  + (me.R > 0 ? tiles * 4.0 / m.nkv : 0.0)             // lr_block (per row)
                                  + (E > 0 ? 2.0 * tiles * (E * 4.0 + 4.0) : 0.0)      // sparse entries + offsets
                                  + 2.0 * nbuf * hd * 2;                                // buffer
          const double bytes = per_head * B * m.nkv + 2.0 * B * m.nh * hd * 2;
          const int iters = static_cast<int>(std::clamp(2e9 / bytes, 5.0, 200.0));
          // Every kernel on the same data: v3 (CUDA cores, outliers inside), v4 (tensor cores), and with
          // outliers v3 + the outlier passes.
          // v7 (lean; the outliers inside where it can, else the passes) on the layouts it takes, and with outliers
          // v7 + the passes always.
          constexpr int kKerns = 5;
          const AttentionKernel kerns[kKerns] = {AttentionKernel::CudaCore, AttentionKernel::TensorCore, AttentionKernel::OutlierPasses,
                                                 AttentionKernel::Lean, AttentionKernel::LeanPasses};
          const char* kern_name[kKerns] = {"v3", "v4", "v3+passes", "v7", "v7+passes"};
          // Every split setting with every key-pass setting (GEARLAB_BENCH_KEY_TILES="0 7 8": tiles per warp, 0 the rule;
          // only with outliers).
          std::vector<int> splits, key_tiles;
          for (int sp : bench_splits())
            for (int t : E > 0 ? env_ints("GEARLAB_BENCH_KEY_TILES", {0}) : std::vector<int>{0}) splits.push_back(sp), key_tiles.push_back(t);
          std::vector<std::array<std::array<double, 2>, kKerns>> us(splits.size());
          // GEARLAB_BENCH_DIGEST=1: each timed kernel's output hashed (FNV-1a over its bytes), so that two builds of a
          // change meant to keep the bits (the bench's inputs come from the same seeded generator) can be compared.
          const bool digest = std::getenv("GEARLAB_BENCH_DIGEST") != nullptr;
          std::vector<std::array<uint64_t, kKerns>> digests(splits.size());
          const bool v7 = gear::kernels::lean_attention_supported(kv, m.nh);
          const bool v4 = gear::kernels::tensor_core_attention_supported(kv);
          // GEARLAB_BENCH_KERNELS="v3,v3+passes" (names as printed) times only those (e.g. for a profiler run).
          const char* only_k = std::getenv("GEARLAB_BENCH_KERNELS");
          auto listed = [&](int kern) {
            if (!only_k) return true;
            const std::string list = std::string(",") + only_k + ",";
            return list.find(std::string(",") + kern_name[kern] + ",") != std::string::npos;
          };
          auto runs = [&](int kern) {
            return listed(kern) && (kern == 0 || (kern == 1 && v4) || (kern == 2 && E > 0) || (kern == 3 && v7) || (kern == 4 && v7 && E > 0));
          };
          // Splits past kMaxSplit only for v7, the stream-K plan (-1) only for v7 without the outlier passes (others throw).
          const bool v7_alone = v7 && (kv.sparse_cap == 0 || [&] {
                                  KernelChoice lean(AttentionKernel::Lean);
                                  return gear::kernels::compressed_attention_outliers_inside(kv, m.nh);
                                }());
          const bool v7_stream_k =  // (KIVI's GQA tiles of 4)
              v7_alone && kv.bits == 2 && kv.rank == 0 && kv.sparse_cap == 0 && (m.nh / m.nkv == 3 || m.nh / m.nkv == 4);
          auto takes = [&](size_t si, int kern) {
            const int sp = splits[si];
            return runs(kern) && ((sp >= 0 && sp <= gear::kernels::split_rule::kMaxSplit) ||
                                  ((kern == 3 || kern == 4) && (sp == gear::kernels::kAttentionStreamK ? kern == 3 && v7_stream_k : sp > 0)));
          };
          for (size_t si = 0; si < splits.size(); ++si) {
            SplitChoice split(splits[si]);
            KeyTiles tiles(key_tiles[si]);
            const size_t wb = gear::kernels::compressed_attention_workspace_bytes(B, m.nh, hd, n_comp);
            const at::Tensor ws = at::empty({static_cast<int64_t>(wb) + 16}, u8);
            for (int kern = 0; kern < kKerns; ++kern) {
              if (!takes(si, kern)) continue;
              KernelChoice choice(kerns[kern]);
              const auto [a, b2] = time_us(iters, [&](cudaStream_t st) {
                gear::kernels::compressed_attention(DType::F16, q.data_ptr(), kv, out.data_ptr(), m.nh, n_comp, 0.0883883f, ws.data_ptr(), wb, st);
              });
              us[si][kern] = {a, b2};
              if (digest) digests[si][kern] = fnv1a(out);
            }
          }
          keep.clear();
          // FP16 baseline on the same context.
          double fp16_us = 0, sdpa_us = 0, fp16_bytes = 2.0 * B * m.nkv * ctx * hd * 2;
          {
            const at::Tensor k = at::randn({B, m.nkv, static_cast<int64_t>(ctx), hd}, f16), v = at::randn({B, m.nkv, static_cast<int64_t>(ctx), hd}, f16);
            const at::Tensor pos = at::full({B}, static_cast<int64_t>(ctx - 1), at::TensorOptions().dtype(at::kLong).device(kGpu));
            const size_t fwb = gear::kernels::decode_attention_workspace_bytes(B, m.nh, hd, ctx);
            const at::Tensor fws = at::empty({static_cast<int64_t>(fwb) + 16}, u8);
            const int fit = static_cast<int>(std::clamp(2e9 / fp16_bytes, 5.0, 200.0));
            fp16_us = time_us(fit, [&](cudaStream_t st) {
                        gear::kernels::decode_attention(DType::F16, q.data_ptr(), k.data_ptr(), v.data_ptr(), pos.data_ptr<int64_t>(),
                                                        out.data_ptr(), B, m.nh, m.nkv, hd, ctx, ctx, 0.0883883f, fws.data_ptr(), fwb, st);
                      }).second;
#if GEARLAB_TEST_SDPA
            // The issue's baseline, LibTorch's scaled_dot_product_attention (whatever backend it picks; grouped heads
            // through enable_gqa, so K/V are read once per kv head): timed from ATen's stream (it allocates its output,
            // so no graph), against the compressed kernels' stream times.
            {
              const at::Tensor q4 = q.view({B, m.nh, 1, hd});
              const cudaStream_t as = at::cuda::getCurrentCUDAStream().stream();
              auto sdpa = [&] { return at::scaled_dot_product_attention(q4, k, v, {}, 0.0, false, 0.0883883, m.nh != m.nkv); };
              for (int i = 0; i < 3; ++i) sdpa();
              sdpa_us = timer.us(as, fit, [&] {
                for (int i = 0; i < fit; ++i) sdpa();
              });
            }
#endif
          }
          for (size_t si = 0; si < splits.size(); ++si) {
            std::string split = splits[si] == gear::kernels::kAttentionStreamK ? std::string(" stream-K")
                                : splits[si]                                   ? " split " + std::to_string(splits[si])
                                                                               : std::string();
            if (key_tiles[si]) split += " key tiles " + std::to_string(key_tiles[si]);
            if (gqa_blocks && v7_stream_k) split += " blocks " + std::to_string(gqa_blocks);
            for (int kern = 0; kern < kKerns; ++kern) {
              if (!takes(si, kern)) continue;
              const double st_us = us[si][kern][0], gr_us = us[si][kern][1];
              const double tbs = bytes / (gr_us * 1e-6) / 1e12;
              std::cout << "compressed_attention " << m.name << " " << me.name << " " << kern_name[kern] << " B " << B << " ctx " << ctx
                        << split << ": stream " << st_us << " us, graph " << gr_us << " us, " << bytes / 1e6 << " MB = " << std::setprecision(2)
                        << tbs << " TB/s (" << std::setprecision(0) << 100 * tbs / kCopyTBs << " % of " << std::setprecision(2) << kCopyTBs
                        << " TB/s); fp16 decode_attention " << std::setprecision(1) << fp16_us << " us -> " << std::setprecision(2)
                        << fp16_us / gr_us << "x" << std::setprecision(1);
              if (sdpa_us > 0)
                std::cout << "; LibTorch SDPA (stream) " << sdpa_us << " us -> " << std::setprecision(2) << sdpa_us / st_us << "x (stream)"
                          << std::setprecision(1);
              if (digest) std::cout << "; digest " << std::hex << digests[si][kern] << std::dec;
              // Which way v7 applied the outliers: a layout it cannot take inside (e.g. ragged pools) silently
              // falls back to the passes, a different kernel with different timings.
              if (kern == 3 && E > 0) std::cout << (v7_alone ? "; outliers inside" : "; outliers by the passes");
              std::cout << std::endl;
            }
          }
        }

  // Compressing one streaming block (n_b = 64 tokens of every row, all kv heads of a layer) at batch 16,
  // Llama-2-7B heads, gear-kivi-2: value outliers per token (k = 40 of 4096), keys per channel (k = 0 at
  // 64 tokens), quantize + pack both sides, the sparse store. (The low-rank step is ATen's, not timed here.)
  {
    const int B = 16, nkv = 32, G = 64, nb = 64, k_v = gear::kernels::outliers_per_side(nkv * hd, 2.0);
    CompressedKV kv = sizes(B, nkv, hd, bits, G, G, 0, 64, 0, 64LL * G * hd / 16, nb);
    const auto z = gear::kernels::compressed_kv_sizes(kv);
    std::vector<at::Tensor> keep;
    auto alloc = [&](size_t bytes) {
      keep.push_back(at::zeros({static_cast<int64_t>(bytes)}, u8));
      return keep.back().data_ptr();
    };
    kv.k_codes = static_cast<uint8_t*>(alloc(z.k_codes));
    kv.v_codes = static_cast<uint8_t*>(alloc(z.v_codes));
    kv.k_scale = static_cast<uint16_t*>(alloc(z.k_scale * 2));
    kv.k_zero = static_cast<uint16_t*>(alloc(z.k_scale * 2));
    kv.v_scale = static_cast<uint16_t*>(alloc(z.v_scale * 2));
    kv.v_zero = static_cast<uint16_t*>(alloc(z.v_scale * 2));
    kv.v_sp_off = static_cast<int32_t*>(alloc(z.sp_off * 4));
    kv.v_sp_pos = static_cast<uint16_t*>(alloc(z.sp_entries * 2));
    kv.v_sp_val = static_cast<uint16_t*>(alloc(z.sp_entries * 2));
    kv.k_sp_off = static_cast<int32_t*>(alloc(z.sp_off * 4));
    kv.k_sp_pos = static_cast<uint16_t*>(alloc(z.sp_entries * 2));
    kv.k_sp_val = static_cast<uint16_t*>(alloc(z.sp_entries * 2));
    const at::Tensor xk = at::randn({B, nkv, nb, hd}, f16), xv = at::randn({B, nkv, nb, hd}, f16);
    at::Tensor inl = at::empty({B, nkv, nb, hd}, at::TensorOptions().dtype(at::kFloat).device(kGpu));
    at::Tensor vals = at::empty({B * nb * 2 * k_v}, at::TensorOptions().dtype(at::kShort).device(kGpu));
    at::Tensor idx = at::empty({B * nb * 2 * k_v}, i32);
    const at::Tensor rows = at::arange(B, i32), tile = at::full({B}, 5, i32);
    const auto [st_us, gr_us] = time_us(50, [&](cudaStream_t st) {
      gear::kernels::quantize_keys(DType::F16, xk.data_ptr(), nb, B, nb, kv, rows.data_ptr<int32_t>(), tile.data_ptr<int32_t>(), st);
      gear::kernels::extract_outliers(DType::F16, xv.data_ptr(), nb, B, nb, nkv, hd, false, k_v,
                                      reinterpret_cast<uint16_t*>(vals.data_ptr<int16_t>()), idx.data_ptr<int32_t>(), inl.data_ptr<float>(), st);
      gear::kernels::quantize_values(DType::F32, inl.data_ptr(), nb, B, nb, kv, rows.data_ptr<int32_t>(), tile.data_ptr<int32_t>(), st);
      gear::kernels::sparse_to_tiles(kv, false, reinterpret_cast<const uint16_t*>(vals.data_ptr<int16_t>()), idx.data_ptr<int32_t>(), B, nb,
                                     k_v, rows.data_ptr<int32_t>(), tile.data_ptr<int32_t>(), nullptr, st);
    });
    std::cout << "compress one streaming block (B 16, 64 tokens, 32 kv heads x 128, gear-kivi-2 without L): stream " << st_us
              << " us, graph " << gr_us << " us" << std::endl;
  }
  cudaStreamDestroy(s);
  device_sync();
}
#endif  // GEARLAB_WITH_CUDA
