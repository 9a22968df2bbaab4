// kernels/: the float64 CPU references against plain ATen float64 computations (every build), and the
// CUDA kernels against the references on fresh random inputs (CUDA builds with a device).
#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/code_bits.h"
#include "kernels/mma_map.h"
#include "kernels/kernels.h"
#include "kernels/reference.h"
#include "kernels/split_rule.h"
#include "kernels/kernel_testing.h"

#ifdef GEARLAB_WITH_CUDA
#include <cuda_runtime.h>

#include <iostream>
#endif

using gear::kernels::DType;
namespace ref = gear::kernels::ref;

namespace {

using gear::kernels::testing::host;
using gear::kernels::testing::kAllTypes;
using gear::kernels::testing::name;
using gear::kernels::testing::scalar_type;




// randn * scale, rounded to dtype t, on the CPU.
at::Tensor randn_as(at::IntArrayRef shape, DType t, double scale = 1.0) {
  return (at::randn(shape, at::kDouble) * scale).to(scalar_type(t));
}

// Elementwise |got - want| <= atol + rtol * |want| with atol = atol_rel * max|want|; `worst` is the largest
// ratio of the error to that bound (<= 1 passes); `bad` counts non-finite results where want is finite.
struct Diff {
  double worst = 0, max_abs = 0, max_ref = 0, rel_max = 0;  // rel_max = max|got - want| / max|want|
  size_t bad = 0, worst_at = 0;
  std::string str() const {
    std::ostringstream os;
    os << "worst ratio " << worst << " at " << worst_at << ", max abs err " << max_abs << ", max|ref| " << max_ref
       << ", max-norm rel err " << rel_max << ", non-finite " << bad;
    return os.str();
  }
};

Diff compare(const std::vector<double>& got, const std::vector<double>& want, double rtol, double atol_rel) {
  REQUIRE(got.size() == want.size());
  Diff d;
  for (double w : want) d.max_ref = std::max(d.max_ref, std::fabs(w));
  const double atol = atol_rel * d.max_ref;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i]) && std::isfinite(want[i])) {
      ++d.bad;
      continue;
    }
    const double e = std::fabs(got[i] - want[i]);
    d.max_abs = std::max(d.max_abs, e);
    const double r = e / (atol + rtol * std::fabs(want[i]) + std::numeric_limits<double>::min());
    if (r > d.worst) {
      d.worst = r;
      d.worst_at = i;
    }
  }
  d.rel_max = d.max_ref > 0 ? d.max_abs / d.max_ref : d.max_abs;
  return d;
}

#define CHECK_DIFF(d)       \
  do {                      \
    const Diff dd_ = (d);   \
    INFO(dd_.str());        \
    CHECK(dd_.bad == 0);    \
    CHECK(dd_.worst <= 1.0); \
  } while (0)

// Rounds every element to dtype t through ATen (a double -> t -> double round trip).
at::Tensor round_aten(const at::Tensor& x, DType t) { return x.to(scalar_type(t)).to(at::kDouble); }

// Rotary tables [n, hd/2] float32: angle p * theta^(-2i/hd).
std::pair<at::Tensor, at::Tensor> rope_tables(int64_t n, int hd, double theta = 10000.0) {
  const at::Tensor i = at::arange(hd / 2, at::kDouble);
  const at::Tensor inv = at::pow(theta, -2.0 * i / hd);
  const at::Tensor ang = at::outer(at::arange(n, at::kDouble), inv);
  return {at::cos(ang).to(at::kFloat).contiguous(), at::sin(ang).to(at::kFloat).contiguous()};
}


}  // namespace

// ------------------------------------------------------------------------------------------------
// CPU: the references against ATen float64
// ------------------------------------------------------------------------------------------------

TEST_CASE("ref::round_to matches ATen's float -> half / bfloat16 conversions", "[kernels][ref]") {
  at::manual_seed(1);
  std::vector<float> vals;
  const at::Tensor r = at::randn({20000}, at::kFloat);
  for (int64_t i = 0; i < r.numel(); ++i) {
    const float v = r[i].item<float>();
    vals.push_back(v);
    vals.push_back(v * 1e-6f);  // fp16 subnormals
    vals.push_back(v * 3e4f);   // near the fp16 maximum
    vals.push_back(v * 1e37f);  // near the bf16 maximum
  }
  // Ties and overflow boundaries.
  for (float v : {1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 65504.f, 65519.f, 65520.f, -65520.f,
                  0x1p-24f, 0x1p-25f, 3 * 0x1p-26f, 0.f, -0.f, std::numeric_limits<float>::max(), 3.3895e38f, 3.3962e38f})
    vals.push_back(v);
  const at::Tensor t = at::from_blob(vals.data(), {static_cast<int64_t>(vals.size())}, at::kFloat).clone();
  for (DType dt : kAllTypes) {
    INFO(name(dt));
    const std::vector<double> want = host(t.to(scalar_type(dt)));
    size_t mismatches = 0, first = 0;
    for (size_t i = 0; i < vals.size(); ++i) {
      const double got = ref::round_to(dt, vals[i]);
      const bool same = got == want[i] && std::signbit(got) == std::signbit(want[i]);
      if (!same && mismatches++ == 0) first = i;
    }
    INFO("first mismatch: " << vals[first] << " -> " << ref::round_to(dt, vals[first]) << " vs ATen " << want[first]);
    CHECK(mismatches == 0);
  }
  CHECK(std::isnan(ref::round_to(DType::F16, std::nan(""))));
  CHECK(ref::round_to(DType::F16, 1e6) == std::numeric_limits<double>::infinity());
  CHECK(ref::round_to(DType::BF16, -1e39) == -std::numeric_limits<double>::infinity());
}

namespace {
// A float32's bits and back (the code tests below work on both).
float as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
}  // namespace

// The attention kernel decodes 2-bit (and 4-bit) codes as f = 1 + eps * c straight from their bits (kernels/code_bits.h) and
// recovers dot products as (sum x f - sum x) / eps. Every word of eight codes decodes exactly, and the recovered
// dot product of 128 channels stays within the float32 bound (16 ulps of sum |x| per term, after the division).
TEST_CASE("codes::biased_bits decodes every 2-bit and 4-bit word exactly; dot products recover to float32 accuracy", "[kernels][ref]") {
  namespace codes = gear::kernels::codes;
  size_t bad = 0;
  for (uint32_t w = 0; w < (1u << 16); ++w)
    for (int j = 0; j < 8; ++j) {
      const float want = 1.0f + codes::biased_eps(j) * static_cast<float>((w >> (2 * j)) & 3u);
      bad += as_float(codes::biased_bits(w, j)) != want;
    }
  CHECK(bad == 0);
  // The 32-bit form (v7's sixteen codes a word): every 16-bit pattern in either half, with the other half random.
  size_t bad32 = 0;
  uint32_t lcg = 12345u;
  for (uint32_t w16 = 0; w16 < (1u << 16); ++w16)
    for (int half = 0; half < 2; ++half) {
      lcg = lcg * 1664525u + 1013904223u;
      const uint32_t w = half ? (w16 << 16) | (lcg >> 16) : (lcg & 0xffff0000u) | w16;
      for (int j = 0; j < 16; ++j) {
        const float want = 1.0f + codes::biased_eps(j) * static_cast<float>((w >> (2 * j)) & 3u);
        bad32 += as_float(codes::biased_bits32(w, j)) != want;
      }
    }
  CHECK(bad32 == 0);
  // 4-bit codes, eight a word (a 4-bit v7): every 16-bit pattern in either half, the other half random.
  size_t bad4 = 0;
  for (uint32_t w16 = 0; w16 < (1u << 16); ++w16)
    for (int half = 0; half < 2; ++half) {
      lcg = lcg * 1664525u + 1013904223u;
      const uint32_t w = half ? (w16 << 16) | (lcg >> 16) : (lcg & 0xffff0000u) | w16;
      for (int j = 0; j < 8; ++j) {
        const float want = 1.0f + codes::kBiased4Eps * static_cast<float>((w >> (4 * j)) & 15u);
        bad4 += as_float(codes::biased4_bits32(w, j)) != want;
      }
    }
  CHECK(bad4 == 0);
  CHECK(codes::kBiased4Eps * codes::kBiased4InvEps == 1.0f);
  for (int j = 0; j < 8; ++j) CHECK(codes::biased_eps(j) * codes::biased_inv_eps(j) == 1.0f);
  // Dot products over 128 channels: 16 words per token, for each of the eight token slots j.
  at::manual_seed(7);
  const at::Tensor x = at::randn({128}, at::kDouble) * 3.0;
  const at::Tensor words = at::randint(0, 1 << 16, {128}, at::kLong);
  for (int j = 0; j < 8; ++j) {
    float fsum = 0.f, xsum = 0.f;
    double exact = 0.0, scale = 0.0;
    for (int i = 0; i < 128; ++i) {
      const float xi = static_cast<float>(x[i].item<double>());
      const uint32_t w = static_cast<uint32_t>(words[i].item<int64_t>());
      fsum = std::fma(xi, as_float(codes::biased_bits(w, j)), fsum);
      xsum += xi;
      exact += static_cast<double>(xi) * ((w >> (2 * j)) & 3u);
      scale += std::abs(static_cast<double>(xi));
    }
    const double got = (static_cast<double>(fsum) - xsum) * codes::biased_inv_eps(j);
    INFO("slot " << j << ": recovered " << got << ", exact " << exact);
    CHECK(std::abs(got - exact) <= 128 * 0x1p-24 * 3.0 * scale * codes::biased_inv_eps(j));
  }
}

// v7 takes a warp's float maximum as one integer REDUX of codes::ordered_bits: the images must order as the floats do
// (every sign, zero, subnormal, normal and infinity) and map back to the same bits.
TEST_CASE("codes::ordered_bits orders floats as unsigned integers and maps back", "[kernels][ref]") {
  namespace codes = gear::kernels::codes;
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> v = {-inf, -std::numeric_limits<float>::max(), -1.5f, -1e-30f, -std::numeric_limits<float>::denorm_min(), -0.0f,
                          0.0f, std::numeric_limits<float>::denorm_min(), 1e-30f, 1.0f, std::numeric_limits<float>::max(), inf};
  uint32_t lcg = 777u;
  for (int i = 0; i < 20000; ++i) {
    lcg = lcg * 1664525u + 1013904223u;
    const float f = as_float(lcg);
    if (!std::isnan(f)) v.push_back(f);
  }
  size_t misordered = 0, roundtrip = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    roundtrip += codes::from_ordered_bits(codes::ordered_bits(float_bits(v[i]))) != float_bits(v[i]);
    const size_t j = (i * 7919 + 13) % v.size();
    const uint32_t a = codes::ordered_bits(float_bits(v[i])), b = codes::ordered_bits(float_bits(v[j]));
    // a < b as floats exactly when the images are (-0 below +0, the one pair the floats call equal)
    if (v[i] < v[j]) misordered += !(a < b);
    else if (v[i] > v[j]) misordered += !(a > b);
    else misordered += !(a == b || (v[i] == 0.0f && v[j] == 0.0f));
  }
  CHECK(misordered == 0);
  CHECK(roundtrip == 0);
  // The largest image is the largest float: a warp's maximum from one integer reduction.
  uint32_t top = 0;
  float want = -inf;
  for (size_t i = 0; i < 32; ++i) top = std::max(top, codes::ordered_bits(float_bits(v[12 + i]))), want = std::max(want, v[12 + i]);
  CHECK(as_float(codes::from_ordered_bits(top)) == want);
  CHECK(codes::ordered_bits(float_bits(-inf)) < codes::ordered_bits(float_bits(-0.0f)));
  CHECK(codes::ordered_bits(float_bits(-0.0f)) < codes::ordered_bits(float_bits(0.0f)));
}

// v7's GQA-4 tiles feed mma.m16n8k16 from their own slices of the packed codes (kernels/mma_map.h). Emulated here
// with the PTX fragment layouts (lane = 4 g + t; A rows g / g + 8 and k 2t, 2t + 1 / + 8, B k 2t, 2t + 1 / + 8 and
// n g, C rows g / g + 8 and n 2t, 2t + 1) and codes as fp16 subnormals (integer bits times 2^-24), the maps must
// reproduce every head's key scores and value sums of a tile exactly, each output once.
namespace {
uint32_t byte_perm(uint32_t x, uint32_t y, uint32_t sel) {
  const uint64_t xy = (static_cast<uint64_t>(y) << 32) | x;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<uint32_t>((xy >> (8 * ((sel >> (4 * i)) & 7))) & 0xffu) << (8 * i);
  return r;
}
// C[16][8] += A[16][16] B[16][8] from the lanes' fragments: a[lane][4] code bits (fp16 pairs, subnormal), b[lane][2][2]
// values (k 2t, 2t + 1 and 2t + 8, 2t + 9 of column g).
void mma_emulated(double (&C)[16][8], const uint32_t (&a)[32][4], const double (&b)[32][2][2]) {
  double A[16][16] = {}, Bm[16][8] = {};
  auto half_int = [](uint32_t r, int i) { return static_cast<double>((r >> (16 * i)) & 0xffffu) * std::ldexp(1.0, -24); };
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 2; ++i) {
      A[g][2 * t + i] = half_int(a[lane][0], i);
      A[g + 8][2 * t + i] = half_int(a[lane][1], i);
      A[g][2 * t + 8 + i] = half_int(a[lane][2], i);
      A[g + 8][2 * t + 8 + i] = half_int(a[lane][3], i);
      Bm[2 * t + i][g] = b[lane][0][i];
      Bm[2 * t + 8 + i][g] = b[lane][1][i];
    }
  }
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n)
      for (int k = 0; k < 16; ++k) C[m][n] += A[m][k] * Bm[k][n];
}
// One k-step's fragments of every lane, as the kernel builds them: words(g, t, w) gives lane (g, t)'s four words
// (k 2t, 2t + 1, 2t + 8, 2t + 9), whose slot pairs `__byte_perm` gathers (`slots` a lane), shifted down by `shift`;
// row g's code is at bits 0-1 of each half, row g + 8's at `hi_bit`. B: the shared fragment row brow.
template <typename Words>
void lane_fragments(uint32_t (&a)[32][4], double (&b)[32][2][2], int slots, int shift, int hi_bit, const std::array<double, 2>* brow,
                    Words&& words) {
  constexpr uint32_t M0 = 0x00030003u;
  const uint32_t M1 = M0 << hi_bit;
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    uint32_t w[4];
    words(g, t, w);
    const uint32_t sel = gear::kernels::mma_map::pair_selector(slots, g);
    const uint32_t x = byte_perm(w[0], w[1], sel) >> shift, y = byte_perm(w[2], w[3], sel) >> shift;
    a[lane][0] = x & M0, a[lane][1] = x & M1, a[lane][2] = y & M0, a[lane][3] = y & M1;
    for (int r = 0; r < 2; ++r)
      for (int i = 0; i < 2; ++i) b[lane][r][i] = brow[2 * lane + r][i];
  }
}
}  // namespace

TEST_CASE("mma_map: v7's GQA tensor-core fragments reproduce a tile's key scores and value sums (emulated)", "[kernels][ref]") {
  namespace mm = gear::kernels::mma_map;
  constexpr int GT = 4, FSTR = 72;
  uint32_t lcg = 4242u;
  auto next = [&] { return lcg = lcg * 1664525u + 1013904223u; };
  auto uniform = [&] { return static_cast<double>(next() >> 8) / 16777216.0 - 0.5; };
  for (int HD : {64, 128})
    for (int G : {32, 64}) {
      INFO("hd " << HD << ", G " << G);
      const int KS = HD / 16, SPL = G / 8, MB = G / 16, TBS = G / 16, QCH = HD / 32;
      // ---- keys: codes [channel][token] packed 16 tokens a word, one row of TBS words a channel
      std::vector<int> code(static_cast<size_t>(HD) * G);
      std::vector<uint32_t> words(static_cast<size_t>(HD) * TBS, 0u);
      for (int c = 0; c < HD; ++c)
        for (int tok = 0; tok < G; ++tok) {
          code[c * G + tok] = static_cast<int>(next() >> 30);
          words[c * TBS + tok / 16] |= static_cast<uint32_t>(code[c * G + tok]) << (2 * (tok % 16));
        }
      double qs[GT][128];
      for (auto& row : qs)
        for (double& x : row) x = uniform();
      double qz[GT][32];  // each lane's share of sum_d q_d z_d
      for (auto& row : qz)
        for (double& x : row) x = uniform();
      // The B rows as the kernel's lanes write them (part 0 = the value, part 1 = 0: the map, not the fp16 split):
      // KS k-steps of q·scale, then two of the lanes' q·zero shares (lane l: k = l mod 16 of k-step KS + l / 16, a half
      // of its pair's word).
      std::vector<std::array<double, 2>> frag(static_cast<size_t>(KS + 2) * FSTR, {0.0, 0.0});
      std::vector<int> written(frag.size(), 0);
      for (int lane = 0; lane < 32; ++lane)
        for (int h = 0; h < GT; ++h)
          for (int p = 0; p < QCH / 2; ++p) {
            const int c0 = QCH * lane + 2 * p, ks = c0 >> 4;
            const int w = ks * FSTR + mm::b_word(h, 0, mm::b_col(c0 & 15), mm::b_reg(c0 & 15));
            const int w_lo = ks * FSTR + mm::b_word(h, 1, mm::b_col(c0 & 15), mm::b_reg(c0 & 15));
            frag[w] = {qs[h][c0], qs[h][c0 + 1]};
            frag[w_lo] = {0.0, 0.0};
            ++written[w], ++written[w_lo];
          }
      std::vector<int> zwritten(2 * frag.size(), 0);
      for (int lane = 0; lane < 32; ++lane)
        for (int h = 0; h < GT; ++h) {
          const int k = lane & 15, ks = KS + (lane >> 4);
          const int w = ks * FSTR + mm::b_word(h, 0, mm::b_col(k & 14), mm::b_reg(k));
          const int w_lo = ks * FSTR + mm::b_word(h, 1, mm::b_col(k & 14), mm::b_reg(k));
          frag[w][k & 1] = qz[h][lane];
          frag[w_lo][k & 1] = 0.0;
          ++zwritten[2 * w + (k & 1)], ++zwritten[2 * w_lo + (k & 1)];
        }
      size_t twice = 0;
      for (int ks = 0; ks < KS + 2; ++ks)
        for (int i = 0; i < 64; ++i)
          twice += ks < KS ? written[ks * FSTR + i] != 1 : zwritten[2 * (ks * FSTR + i)] != 1 || zwritten[2 * (ks * FSTR + i) + 1] != 1;
      CHECK(twice == 0);  // every B word of every k-step written once (the shares' words: each half once)
      std::vector<double> score(GT * G, 0.0);
      std::vector<int> seen(GT * G, 0);
      for (int mb = 0; mb < MB; ++mb) {
        double C[16][8] = {};
        for (int ks = 0; ks < KS + 2; ++ks) {
          uint32_t a[32][4];
          double b[32][2][2];
          lane_fragments(a, b, SPL, 2 * mb, 2 * MB, &frag[ks * FSTR], [&](int g, int t, uint32_t(&w)[4]) {
            // (the shares' k-steps: every code 1, the kernel's constant A)
            for (int j = 0; j < 4; ++j) w[j] = ks < KS ? words[mm::k_index(ks, t, j) * TBS + (SPL * g) / 16] : 0x55555555u;
          });
          if (ks >= KS)  // the kernel's constant A of the shares' k-steps: Z0, Z1, Z0, Z1
            for (int lane = 0; lane < 32; ++lane)
              CHECK((a[lane][0] == 0x00010001u && a[lane][1] == 0x00010001u << (2 * MB) && a[lane][2] == a[lane][0] && a[lane][3] == a[lane][1]));
          mma_emulated(C, a, b);
        }
        for (int lane = 0; lane < 32; ++lane) {  // row g: token SPL g + mb (scale 2^24), row g + 8: + MB (2^(24 - 2 MB))
          const int g = lane >> 2, t = lane & 3;
          score[t * G + SPL * g + mb] += (C[g][2 * t] + C[g][2 * t + 1]) * std::ldexp(1.0, 24);
          score[t * G + SPL * g + mb + MB] += (C[g + 8][2 * t] + C[g + 8][2 * t + 1]) * std::ldexp(1.0, 24 - 2 * MB);
          ++seen[t * G + SPL * g + mb], ++seen[t * G + SPL * g + mb + MB];
        }
      }
      double worst = 0;
      size_t not_once = 0;
      for (int h = 0; h < GT; ++h)
        for (int tok = 0; tok < G; ++tok) {
          double want = 0;
          for (int c = 0; c < HD; ++c) want += qs[h][c] * code[c * G + tok];
          for (int l = 0; l < 32; ++l) want += qz[h][l];
          worst = std::max(worst, std::abs(score[h * G + tok] - want));
          not_once += seen[h * G + tok] != 1;
        }
      CHECK(worst < 1e-12);
      CHECK(not_once == 0);

      // ---- values: codes [token][channel] packed 16 channels a word; value groups of 16 VW channels
      for (int VW : {2, 4}) {
        if ((G / 16) * (HD / (16 * VW)) * 4 > 32) continue;  // (the kernel keeps its FMA values there)
        INFO("value groups of " << 16 * VW);
        const int NGV = HD / (16 * VW), KSV = G / 16, VPL = HD / 16, CPS = 32 / TBS, TPL = G / 32;
        std::vector<int> vcode(static_cast<size_t>(G) * HD);
        std::vector<uint32_t> vwords(static_cast<size_t>(G) * VPL, 0u);
        for (int tok = 0; tok < G; ++tok)
          for (int c = 0; c < HD; ++c) {
            vcode[tok * HD + c] = static_cast<int>(next() >> 30);
            vwords[tok * VPL + c / 16] |= static_cast<uint32_t>(vcode[tok * HD + c]) << (2 * (c % 16));
          }
        // The tile's value words staged as the kernel's 16-byte copies place them (poisoned between tokens' rows);
        // each lane's reads there split into a lane base and a constant offset per (k-step, group, load).
        const int VSTR = mm::staged_value_stride(VPL);
        std::vector<uint32_t> staged(static_cast<size_t>(G) * VSTR, 0xdeadbeefu);
        for (int i = 0; i < G * VPL / 4; ++i)
          for (int e = 0; e < 4; ++e) staged[mm::staged_value_copy(i, VPL) + e] = vwords[4 * i + e];
        size_t split_bad = 0;
        for (int ks = 0; ks < KSV; ++ks)
          for (int q = 0; q < NGV; ++q)
            for (int lane = 0; lane < 32; ++lane)
              for (int j4 = 0; j4 < 4; ++j4) {
                const int g = lane >> 2, t = lane & 3;
                const int base = 2 * t * VSTR + mm::value_word(0, g, VW), offset = mm::k_index(ks, 0, j4) * VSTR + q * VW;
                split_bad += mm::staged_value_read(ks, q, t, g, j4, VPL, VW) != base + offset;
                split_bad += staged[base + offset] != vwords[mm::k_index(ks, t, j4) * VPL + mm::value_word(q, g, VW)];
              }
        CHECK(split_bad == 0);
        std::vector<double> ps(static_cast<size_t>(GT) * G * NGV);  // p·scale [head][token][group]
        for (double& x : ps) x = uniform() + 0.5;
        // B rows from the FMA layout: lane (tb, cp) holds tokens 16 tb + TPL cp (+ 1); one token a lane pairs with lane + TBS.
        std::vector<std::array<double, 2>> fv(static_cast<size_t>(KSV) * NGV * FSTR, {0.0, 0.0});
        std::vector<int> vwritten(fv.size(), 0);
        for (int lane = 0; lane < 32; ++lane) {
          const int tb = lane % TBS, cp = lane / TBS, t_lane = 16 * tb + TPL * cp;
          if (TPL == 1 && (cp & 1)) continue;  // (its pair is the even neighbour's)
          REQUIRE(cp < CPS);
          const int k0 = TPL == 2 ? 2 * cp : cp;
          for (int h = 0; h < GT; ++h)
            for (int q = 0; q < NGV; ++q) {
              const int row = (tb * NGV + q) * FSTR;
              const int w = row + mm::b_word(h, 0, mm::b_col(k0), mm::b_reg(k0)), w_lo = row + mm::b_word(h, 1, mm::b_col(k0), mm::b_reg(k0));
              fv[w] = {ps[(h * G + t_lane) * NGV + q], ps[(h * G + t_lane + 1) * NGV + q]};
              fv[w_lo] = {0.0, 0.0};
              ++vwritten[w], ++vwritten[w_lo];
            }
        }
        size_t vtwice = 0;
        for (int r = 0; r < KSV * NGV; ++r)
          for (int i = 0; i < 64; ++i) vtwice += vwritten[r * FSTR + i] != 1;
        CHECK(vtwice == 0);
        std::vector<double> out(GT * HD, 0.0);
        std::vector<int> vseen(GT * HD, 0);
        for (int q = 0; q < NGV; ++q)
          for (int j = 0; j < VW; ++j) {
            double C[16][8] = {};
            for (int ks = 0; ks < KSV; ++ks) {
              uint32_t a[32][4];
              double b[32][2][2];
              // (through the warp's staged copy of the tile, as the kernel reads it)
              lane_fragments(a, b, 2 * VW, 2 * j, 2 * VW, &fv[(ks * NGV + q) * FSTR], [&](int g, int t, uint32_t(&w)[4]) {
                for (int j4 = 0; j4 < 4; ++j4) w[j4] = staged[mm::staged_value_read(ks, q, t, g, j4, VPL, VW)];
              });
              mma_emulated(C, a, b);
            }
            for (int lane = 0; lane < 32; ++lane) {
              const int g = lane >> 2, t = lane & 3, ch = mm::value_channel(q, j, g, VW);
              out[t * HD + ch] += (C[g][2 * t] + C[g][2 * t + 1]) * std::ldexp(1.0, 24);
              out[t * HD + ch + VW] += (C[g + 8][2 * t] + C[g + 8][2 * t + 1]) * std::ldexp(1.0, 24 - 2 * VW);
              ++vseen[t * HD + ch], ++vseen[t * HD + ch + VW];
            }
          }
        double vworst = 0;
        size_t vnot_once = 0;
        for (int h = 0; h < GT; ++h)
          for (int c = 0; c < HD; ++c) {
            double want = 0;
            for (int tok = 0; tok < G; ++tok) want += ps[(h * G + tok) * NGV + c / (16 * VW)] * vcode[tok * HD + c];
            vworst = std::max(vworst, std::abs(out[h * HD + c] - want));
            vnot_once += vseen[h * HD + c] != 1;
          }
        CHECK(vworst < 1e-12);
        CHECK(vnot_once == 0);
      }
    }
}

TEST_CASE("ref::rmsnorm matches ATen float64 (normalise, round to dtype, times w)", "[kernels][ref]") {
  at::manual_seed(2);
  for (DType dt : kAllTypes) {
    for (double eps : {1e-5, 0.5}) {
      const int rows = 5, dim = 96;
      INFO(name(dt) << " eps " << eps);
      const at::Tensor x = randn_as({rows, dim}, dt, 2.0).to(at::kDouble);
      const at::Tensor w = randn_as({dim}, dt).to(at::kDouble);
      const at::Tensor normed = x * at::rsqrt(x.pow(2).mean(-1, true) + eps);
      const at::Tensor want = round_aten(round_aten(normed, dt) * w, dt);
      std::vector<double> got(rows * dim, NAN);
      ref::rmsnorm(dt, host(x).data(), host(w).data(), got.data(), rows, dim, eps);
      // Rounding is emulated, so a difference is at most one unit in the last place (summation order).
      CHECK_DIFF(compare(got, host(want), dt == DType::F32 ? 1.2e-7 : dt == DType::F16 ? 1e-3 : 8e-3, 0));
    }
  }
  std::vector<double> out(4);
  CHECK_THROWS_AS(ref::rmsnorm(DType::F32, out.data(), out.data(), out.data(), 1, 0, 1e-5), std::runtime_error);
}

TEST_CASE("ref::silu_mul matches ATen float64 (silu rounded to dtype, times up)", "[kernels][ref]") {
  at::manual_seed(3);
  for (DType dt : kAllTypes) {
    INFO(name(dt));
    const int rows = 3, hidden = 77;
    const at::Tensor gu = randn_as({rows, 2 * hidden}, dt, 4.0).to(at::kDouble);
    const at::Tensor gate = gu.slice(1, 0, hidden), up = gu.slice(1, hidden);
    const at::Tensor want = round_aten(round_aten(at::silu(gate), dt) * up, dt);
    std::vector<double> got(rows * hidden, NAN);
    ref::silu_mul(dt, host(gu).data(), got.data(), rows, hidden);
    CHECK_DIFF(compare(got, host(want), dt == DType::F32 ? 1.2e-7 : dt == DType::F16 ? 1e-3 : 8e-3, 0));
  }
}

namespace {
// ATen version of rope_qkv_append on float64: returns q_out and updates k_cache / v_cache in place.
at::Tensor rope_aten(const at::Tensor& qkv, const std::vector<int64_t>& pos, const at::Tensor& cos, const at::Tensor& sin,
                     at::Tensor& k_cache, at::Tensor& v_cache, int nh, int nkv, int hd, bool half_split, DType dt) {
  const int64_t B = qkv.size(0);
  const at::Tensor p = at::tensor(pos, at::kLong);
  const at::Tensor c = cos.index_select(0, p).to(at::kDouble).view({B, 1, hd / 2});
  const at::Tensor s = sin.index_select(0, p).to(at::kDouble).view({B, 1, hd / 2});
  auto rotate = [&](const at::Tensor& x) {  // [B, heads, hd]
    at::Tensor a, b;
    if (half_split) {
      a = x.slice(-1, 0, hd / 2);
      b = x.slice(-1, hd / 2);
    } else {
      const at::Tensor pairs = x.reshape({B, x.size(1), hd / 2, 2});
      a = pairs.select(-1, 0);
      b = pairs.select(-1, 1);
    }
    const at::Tensor ra = a * c - b * s, rb = a * s + b * c;
    const at::Tensor r = half_split ? at::cat({ra, rb}, -1) : at::stack({ra, rb}, -1).reshape({B, x.size(1), hd});
    return round_aten(r, dt);
  };
  const at::Tensor heads = qkv.view({B, nh + 2 * nkv, hd});
  const at::Tensor q = rotate(heads.slice(1, 0, nh));
  const at::Tensor k = rotate(heads.slice(1, nh, nh + nkv));
  const at::Tensor v = heads.slice(1, nh + nkv);
  for (int64_t b = 0; b < B; ++b) {
    k_cache[b].select(1, pos[b]).copy_(k[b]);
    v_cache[b].select(1, pos[b]).copy_(v[b]);
  }
  return q;
}
}  // namespace

TEST_CASE("ref::rope_qkv_append matches ATen float64 for both pair layouts", "[kernels][ref]") {
  at::manual_seed(4);
  const int B = 3, nh = 4, nkv = 2, hd = 16;
  const long long cap = 10;
  const std::vector<int64_t> pos = {0, 9, 4};
  const auto [cos, sin] = rope_tables(cap, hd);
  for (DType dt : kAllTypes) {
    for (bool half_split : {false, true}) {
      INFO(name(dt) << (half_split ? " half-split" : " interleaved"));
      const at::Tensor qkv = randn_as({B, (nh + 2 * nkv) * hd}, dt).to(at::kDouble);
      const at::Tensor kc0 = randn_as({B, nkv, cap, hd}, dt).to(at::kDouble);
      const at::Tensor vc0 = randn_as({B, nkv, cap, hd}, dt).to(at::kDouble);
      at::Tensor kc = kc0.clone(), vc = vc0.clone();
      const at::Tensor q_want = rope_aten(qkv, pos, cos, sin, kc, vc, nh, nkv, hd, half_split, dt);

      std::vector<double> q(B * nh * hd, NAN), k = host(kc0), v = host(vc0);
      ref::rope_qkv_append(dt, host(qkv).data(), pos.data(), cos.data_ptr<float>(), sin.data_ptr<float>(), q.data(), k.data(),
                           v.data(), B, nh, nkv, hd, cap, half_split);
      const double rtol = dt == DType::F32 ? 1.2e-7 : dt == DType::F16 ? 1e-3 : 8e-3;
      CHECK_DIFF(compare(q, host(q_want), rtol, 1e-12));
      CHECK_DIFF(compare(k, host(kc), rtol, 1e-12));
      CHECK(v == host(vc));  // exact: a copy, and nothing else touched
    }
  }
  // Position 0 of an interleaved head: cos 1, sin 0, so q passes through unchanged.
  std::vector<double> qkv(3 * 4), q(4), k(4), v(4);
  for (size_t i = 0; i < qkv.size(); ++i) qkv[i] = static_cast<double>(i) + 1;
  const auto [c1, s1] = rope_tables(1, 4);
  const int64_t p0 = 0, bad = 1;
  ref::rope_qkv_append(DType::F32, qkv.data(), &p0, c1.data_ptr<float>(), s1.data_ptr<float>(), q.data(), k.data(), v.data(), 1, 1,
                       1, 4, 1, false);
  CHECK(q == std::vector<double>{1, 2, 3, 4});
  CHECK(v == std::vector<double>{9, 10, 11, 12});
  CHECK_THROWS_AS(ref::rope_qkv_append(DType::F32, qkv.data(), &bad, c1.data_ptr<float>(), s1.data_ptr<float>(), q.data(), k.data(),
                                       v.data(), 1, 1, 1, 4, 1, false),
                  std::runtime_error);
}

namespace {
// ATen float64 attention of one new token per row over keys 0..pos[b].
at::Tensor attention_aten(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::vector<int64_t>& pos,
                          double scale) {
  const int64_t B = q.size(0), nh = q.size(1), nkv = k.size(1);
  std::vector<at::Tensor> rows;
  for (int64_t b = 0; b < B; ++b) {
    const at::Tensor kb = k[b].slice(1, 0, pos[b] + 1).repeat_interleave(nh / nkv, 0);  // [nh, len, hd]
    const at::Tensor vb = v[b].slice(1, 0, pos[b] + 1).repeat_interleave(nh / nkv, 0);
    const at::Tensor s = at::bmm(q[b].unsqueeze(1), kb.transpose(1, 2)) * scale;  // [nh, 1, len]
    rows.push_back(at::bmm(at::softmax(s, -1), vb).squeeze(1));
  }
  return at::stack(rows);
}
}  // namespace

TEST_CASE("ref::decode_attention matches ATen float64 (GQA, per-row lengths)", "[kernels][ref]") {
  at::manual_seed(5);
  struct Case { int nh, nkv, hd; std::vector<int64_t> pos; };
  for (const Case& c : {Case{4, 4, 8, {0, 6}}, Case{8, 2, 16, {3, 0, 19}}, Case{8, 1, 4, {12}}}) {
    const int B = static_cast<int>(c.pos.size());
    const long long cap = 20;
    const double scale = 1.0 / std::sqrt(c.hd);
    const at::Tensor q = at::randn({B, c.nh, c.hd}, at::kDouble) * 2;
    const at::Tensor k = at::randn({B, c.nkv, cap, c.hd}, at::kDouble);
    const at::Tensor v = at::randn({B, c.nkv, cap, c.hd}, at::kDouble);
    const at::Tensor want = attention_aten(q, k, v, c.pos, scale);
    std::vector<double> got(B * c.nh * c.hd, NAN);
    ref::decode_attention(host(q).data(), host(k).data(), host(v).data(), c.pos.data(), got.data(), B, c.nh, c.nkv, c.hd, cap, scale);
    CHECK_DIFF(compare(got, host(want), 1e-12, 1e-12));
  }
  std::vector<double> d(8);
  const int64_t bad = 2;
  CHECK_THROWS_AS(ref::decode_attention(d.data(), d.data(), d.data(), &bad, d.data(), 1, 1, 1, 4, 2, 1.0), std::runtime_error);
}

TEST_CASE("ref::rope_qkv_append with slots rotates by the position and writes at the slot", "[kernels][ref]") {
  at::manual_seed(5);
  const int B = 3, nh = 4, nkv = 2, hd = 16;
  const long long rows = 40, cap = 5;  // RoPE table rows; a 5-token buffer
  const std::vector<int64_t> pos = {0, 39, 17};
  const std::vector<int32_t> slots = {4, 0, 2};
  const auto [cos, sin] = rope_tables(rows, hd);
  const at::Tensor qkv = randn_as({B, (nh + 2 * nkv) * hd}, DType::F16).to(at::kDouble);
  at::Tensor kbig = at::zeros({B, nkv, rows, hd}, at::kDouble), vbig = kbig.clone();
  const at::Tensor q_want = rope_aten(qkv, pos, cos, sin, kbig, vbig, nh, nkv, hd, false, DType::F16);
  const at::Tensor k0 = randn_as({B, nkv, cap, hd}, DType::F16).to(at::kDouble), v0 = k0.clone() + 1;
  at::Tensor k_want = k0.clone(), v_want = v0.clone();
  for (int b = 0; b < B; ++b) {
    k_want[b].select(1, slots[b]).copy_(kbig[b].select(1, pos[b]));
    v_want[b].select(1, slots[b]).copy_(vbig[b].select(1, pos[b]));
  }
  std::vector<double> q(B * nh * hd, NAN), k = host(k0), v = host(v0);
  ref::rope_qkv_append(DType::F16, host(qkv).data(), pos.data(), cos.data_ptr<float>(), sin.data_ptr<float>(), q.data(), k.data(),
                       v.data(), B, nh, nkv, hd, cap, false, slots.data(), rows);
  CHECK_DIFF(compare(q, host(q_want), 1e-3, 1e-12));
  CHECK_DIFF(compare(k, host(k_want), 1e-3, 1e-12));
  CHECK(v == host(v_want));
  const std::vector<int32_t> bad_slot = {5, 0, 2};
  CHECK_THROWS_WITH(ref::rope_qkv_append(DType::F16, host(qkv).data(), pos.data(), cos.data_ptr<float>(), sin.data_ptr<float>(),
                                         q.data(), k.data(), v.data(), B, nh, nkv, hd, cap, false, bad_slot.data(), rows),
                    Catch::Contains("slot 5 of row 0 outside [0, 5)"));
  const std::vector<int64_t> bad_pos = {0, 40, 17};
  CHECK_THROWS_WITH(ref::rope_qkv_append(DType::F16, host(qkv).data(), bad_pos.data(), cos.data_ptr<float>(), sin.data_ptr<float>(),
                                         q.data(), k.data(), v.data(), B, nh, nkv, hd, cap, false, slots.data(), rows),
                    Catch::Contains("position 40 of row 1 outside [0, 40)"));
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

// Tolerances of the elementwise kernels against a reference that emulates their roundings: about two
// units in the last place of the dtype (one for an intermediate that lands on the other side of a
// rounding boundary, one for the final rounding), 1e-5 relative in float32.
double ew_rtol(DType t) { return t == DType::F32 ? 1e-5 : t == DType::F16 ? 2e-3 : 1.6e-2; }
double ew_atol(DType t) { return t == DType::F32 ? 1e-6 : t == DType::F16 ? 1e-5 : 1e-4; }

at::Tensor poisoned(at::IntArrayRef shape, DType t) {
  return at::full(shape, std::numeric_limits<double>::quiet_NaN(), at::TensorOptions().dtype(scalar_type(t)).device(kGpu));
}

void device_sync() { REQUIRE(cudaDeviceSynchronize() == cudaSuccess); }

}  // namespace

TEST_CASE("cuda rmsnorm matches the reference", "[kernels][cuda]") {
  if (!have_gpu()) return;
  at::manual_seed(11);
  struct Shape { int rows, dim; bool misaligned; };
  for (DType dt : kAllTypes) {
    for (const Shape s : {Shape{1, 4096, false}, Shape{7, 4096, false}, Shape{3, 5120, false}, Shape{17, 64, false},
                          Shape{1, 64, false}, Shape{5, 100, false}, Shape{3, 4095, false}, Shape{2, 4096, true}}) {
      INFO(name(dt) << " rows " << s.rows << " dim " << s.dim << (s.misaligned ? " misaligned" : ""));
      const float eps = 1e-5f;
      const at::Tensor x_all = randn_as({s.rows * s.dim + 1}, dt, 3.0).to(kGpu);
      const at::Tensor x = x_all.slice(0, s.misaligned ? 1 : 0, s.rows * s.dim + (s.misaligned ? 1 : 0));
      const at::Tensor w = (randn_as({s.dim}, dt, 0.3) + 1).to(kGpu);
      at::Tensor out = poisoned({s.rows, s.dim}, dt);
      gear::kernels::rmsnorm(dt, x.data_ptr(), w.data_ptr(), out.data_ptr(), s.rows, s.dim, eps, nullptr);
      device_sync();
      std::vector<double> want(s.rows * s.dim);
      ref::rmsnorm(dt, host(x).data(), host(w).data(), want.data(), s.rows, s.dim, eps);
      CHECK_DIFF(compare(host(out), want, ew_rtol(dt), ew_atol(dt)));
    }
  }
  CHECK_NOTHROW(gear::kernels::rmsnorm(DType::F16, nullptr, nullptr, nullptr, 0, 64, 1e-5f, nullptr));  // no rows: no-op
  CHECK_THROWS_AS(gear::kernels::rmsnorm(DType::F16, nullptr, nullptr, nullptr, 1, 0, 1e-5f, nullptr), std::runtime_error);
}

TEST_CASE("cuda silu_mul matches the reference", "[kernels][cuda]") {
  if (!have_gpu()) return;
  at::manual_seed(12);
  struct Shape { int rows, hidden; };
  for (DType dt : kAllTypes) {
    for (const Shape s : {Shape{1, 11008}, Shape{5, 11008}, Shape{3, 64}, Shape{7, 13}, Shape{1, 13824}}) {
      INFO(name(dt) << " rows " << s.rows << " hidden " << s.hidden);
      const at::Tensor gu = randn_as({s.rows, 2 * s.hidden}, dt, 4.0).to(kGpu);
      at::Tensor out = poisoned({s.rows, s.hidden}, dt);
      gear::kernels::silu_mul(dt, gu.data_ptr(), out.data_ptr(), s.rows, s.hidden, nullptr);
      device_sync();
      std::vector<double> want(s.rows * s.hidden);
      ref::silu_mul(dt, host(gu).data(), want.data(), s.rows, s.hidden);
      CHECK_DIFF(compare(host(out), want, ew_rtol(dt), ew_atol(dt)));
    }
  }
}

TEST_CASE("cuda rope_qkv_append with slots matches the reference; a bad slot writes NaN q and nothing else", "[kernels][cuda]") {
  if (!have_gpu()) return;
  at::manual_seed(14);
  const int B = 4, nh = 32, nkv = 8, hd = 128;
  const long long rows = 4096, cap = 64;
  const std::vector<int64_t> pos = {4095, 0, 1000, 77};
  const std::vector<int32_t> slots = {63, 0, 31, 64};  // row 3's slot is past the buffer
  const auto [cos, sin] = rope_tables(rows, hd);
  for (DType dt : kAllTypes) {
    INFO(name(dt));
    const at::Tensor qkv = randn_as({B, (nh + 2 * nkv) * hd}, dt).to(kGpu);
    const at::Tensor k0 = randn_as({B, nkv, cap, hd}, dt).to(kGpu), v0 = randn_as({B, nkv, cap, hd}, dt).to(kGpu);
    at::Tensor k = k0.clone(), v = v0.clone(), q = poisoned({B, nh, hd}, dt);
    const at::Tensor pos_d = at::tensor(pos, at::kLong).to(kGpu), slots_d = at::tensor(slots, at::kInt).to(kGpu);
    const at::Tensor cos_d = cos.to(kGpu), sin_d = sin.to(kGpu);
    gear::kernels::rope_qkv_append(dt, qkv.data_ptr(), pos_d.data_ptr<int64_t>(), cos_d.data_ptr<float>(), sin_d.data_ptr<float>(),
                                   q.data_ptr(), k.data_ptr(), v.data_ptr(), B, nh, nkv, hd, cap, false, nullptr,
                                   slots_d.data_ptr<int32_t>(), rows);
    device_sync();
    // Rows 0-2 against the reference; row 3 (bad slot) NaN q, caches untouched.
    const int good = 3;
    std::vector<double> q_want(good * nh * hd);
    std::vector<double> k_want = host(k0.narrow(0, 0, good)), v_want = host(v0.narrow(0, 0, good));
    ref::rope_qkv_append(dt, host(qkv.narrow(0, 0, good)).data(), pos.data(), cos.data_ptr<float>(), sin.data_ptr<float>(),
                         q_want.data(), k_want.data(), v_want.data(), good, nh, nkv, hd, cap, false, slots.data(), rows);
    CHECK_DIFF(compare(host(q.narrow(0, 0, good)), q_want, ew_rtol(dt), ew_atol(dt)));
    CHECK_DIFF(compare(host(k.narrow(0, 0, good)), k_want, ew_rtol(dt), ew_atol(dt)));
    CHECK(host(v.narrow(0, 0, good)) == v_want);
    CHECK(at::isnan(q[3].to(at::kFloat)).all().item<bool>());
    CHECK(at::equal(k[3], k0[3]));
    CHECK(at::equal(v[3], v0[3]));
  }
  CHECK_THROWS_WITH(gear::kernels::rope_qkv_append(DType::F16, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1, 1, 1,
                                                   64, 4, false, nullptr, reinterpret_cast<const int32_t*>(16), 0),
                    Catch::Contains("slots need the RoPE tables' row count"));
}

TEST_CASE("cuda rope_qkv_append matches the reference and touches only positions[b]", "[kernels][cuda]") {
  if (!have_gpu()) return;
  at::manual_seed(13);
  struct Shape { int nh, nkv, hd; std::vector<int64_t> pos; long long cap; };
  const std::vector<Shape> shapes = {
      {32, 32, 128, {4095}, 4096},            // Llama-2-7B, one token
      {32, 8, 128, {0, 17, 63, 5, 40}, 64},   // GQA 4, B = 5
      {8, 1, 64, {3, 0, 31}, 33},             // GQA 8, hd 64, odd cap
      {6, 6, 64, {1, 2}, 8},
  };
  for (DType dt : kAllTypes) {
    for (bool half_split : {false, true}) {
      for (const Shape& s : shapes) {
        const int B = static_cast<int>(s.pos.size());
        INFO(name(dt) << (half_split ? " half-split" : " interleaved") << " B " << B << " nh " << s.nh << " nkv " << s.nkv << " hd "
                      << s.hd << " cap " << s.cap);
        const auto [cos, sin] = rope_tables(s.cap, s.hd, 500000.0);
        const at::Tensor qkv = randn_as({B, (s.nh + 2 * s.nkv) * s.hd}, dt).to(kGpu);
        const at::Tensor k0 = randn_as({B, s.nkv, s.cap, s.hd}, dt).to(kGpu), v0 = randn_as({B, s.nkv, s.cap, s.hd}, dt).to(kGpu);
        at::Tensor k = k0.clone(), v = v0.clone(), q = poisoned({B, s.nh, s.hd}, dt);
        const at::Tensor pos = at::tensor(s.pos, at::kLong).to(kGpu);
        const at::Tensor cos_d = cos.to(kGpu), sin_d = sin.to(kGpu);
        gear::kernels::rope_qkv_append(dt, qkv.data_ptr(), pos.data_ptr<int64_t>(), cos_d.data_ptr<float>(), sin_d.data_ptr<float>(),
                                       q.data_ptr(), k.data_ptr(), v.data_ptr(), B, s.nh, s.nkv, s.hd, s.cap, half_split, nullptr);
        device_sync();
        std::vector<double> q_want(B * s.nh * s.hd), k_want = host(k0), v_want = host(v0);
        ref::rope_qkv_append(dt, host(qkv).data(), s.pos.data(), cos.data_ptr<float>(), sin.data_ptr<float>(), q_want.data(),
                             k_want.data(), v_want.data(), B, s.nh, s.nkv, s.hd, s.cap, half_split);
        CHECK_DIFF(compare(host(q), q_want, ew_rtol(dt), ew_atol(dt)));
        CHECK_DIFF(compare(host(k), k_want, ew_rtol(dt), ew_atol(dt)));
        CHECK(host(v) == v_want);  // v is a raw copy
        // Bitwise: every other cache entry is untouched.
        at::Tensor k_expect = k0.clone(), v_expect = v0.clone();
        for (int b = 0; b < B; ++b) {
          k_expect[b].select(1, s.pos[b]).copy_(k[b].select(1, s.pos[b]));
          v_expect[b].select(1, s.pos[b]).copy_(v[b].select(1, s.pos[b]));
        }
        CHECK(at::equal(k, k_expect));
        CHECK(at::equal(v, v_expect));
      }
    }
  }
}

TEST_CASE("cuda rope_rows: a prompt's q and k rotated bit for bit as rope_qkv_append rotates them, within the float64 reference",
          "[kernels][cuda]") {
  if (!have_gpu()) return;
  at::manual_seed(29);
  struct Shape { int T, nh, nkv, hd; long long start; };
  const std::vector<Shape> shapes = {{1, 4, 4, 64, 0}, {37, 32, 8, 128, 5}, {300, 8, 1, 64, 100}, {3, 6, 2, 8, 2}};
  for (DType dt : {DType::F16, DType::BF16}) {
    for (bool half_split : {false, true}) {
      for (const Shape& s : shapes) {
        INFO(name(dt) << (half_split ? " half-split" : " interleaved") << " T " << s.T << " nh " << s.nh << " nkv " << s.nkv << " hd " << s.hd
                      << " start " << s.start);
        const long long rows = s.start + s.T;
        const auto [cos, sin] = rope_tables(rows, s.hd, 500000.0);
        const at::Tensor cos_d = cos.to(kGpu), sin_d = sin.to(kGpu);
        const int width = (s.nh + 2 * s.nkv) * s.hd;
        const at::Tensor qkv = randn_as({s.T, width}, dt).to(kGpu);
        // The prompt's rows through rope_rows: q and k read in place from the fused rows (row stride = width).
        at::Tensor q = poisoned({s.T, s.nh, s.hd}, dt), k = poisoned({s.T, s.nkv, s.hd}, dt);
        const at::Tensor c_rows = cos_d.narrow(0, s.start, s.T).contiguous(), s_rows = sin_d.narrow(0, s.start, s.T).contiguous();
        const auto elem = static_cast<long long>(qkv.element_size());
        gear::kernels::rope_rows(dt, qkv.data_ptr(), width, q.data_ptr(), s.T, s.nh, s.hd, c_rows.data_ptr<float>(), s_rows.data_ptr<float>(),
                                 half_split, nullptr);
        gear::kernels::rope_rows(dt, static_cast<const char*>(qkv.data_ptr()) + elem * s.nh * s.hd, width, k.data_ptr(), s.T, s.nkv, s.hd,
                                 c_rows.data_ptr<float>(), s_rows.data_ptr<float>(), half_split, nullptr);
        // The same rows decoded one per batch row at positions start .. start + T - 1.
        std::vector<int64_t> pos(s.T);
        for (int t = 0; t < s.T; ++t) pos[t] = s.start + t;
        const at::Tensor pos_d = at::tensor(pos, at::kLong).to(kGpu);
        at::Tensor q2 = poisoned({s.T, s.nh, s.hd}, dt), kc = poisoned({s.T, s.nkv, rows, s.hd}, dt), vc = poisoned({s.T, s.nkv, rows, s.hd}, dt);
        gear::kernels::rope_qkv_append(dt, qkv.data_ptr(), pos_d.data_ptr<int64_t>(), cos_d.data_ptr<float>(), sin_d.data_ptr<float>(),
                                       q2.data_ptr(), kc.data_ptr(), vc.data_ptr(), s.T, s.nh, s.nkv, s.hd, rows, half_split, nullptr);
        device_sync();
        CHECK(at::equal(q, q2));
        const at::Tensor k2 = kc.gather(2, pos_d.view({s.T, 1, 1, 1}).expand({s.T, s.nkv, 1, s.hd})).squeeze(2);
        CHECK(at::equal(k, k2));
        // And within one rounding of the float64 rotation.
        at::Tensor kw = at::zeros({s.T, s.nkv, rows, s.hd}, at::kDouble), vw = kw.clone();
        const at::Tensor q_want = rope_aten(qkv.cpu().to(at::kDouble), pos, cos, sin, kw, vw, s.nh, s.nkv, s.hd, half_split, dt);
        CHECK_DIFF(compare(host(q), host(q_want), ew_rtol(dt), ew_atol(dt)));
      }
    }
  }
  const at::Tensor x = randn_as({4, 64}, DType::F16).to(kGpu);
  const auto [c1, s1] = rope_tables(4, 64);
  const at::Tensor c1d = c1.to(kGpu), s1d = s1.to(kGpu);
  at::Tensor o = poisoned({4, 1, 64}, DType::F16);
  CHECK_THROWS_WITH(gear::kernels::rope_rows(DType::F16, x.data_ptr(), 64, o.data_ptr(), 4, 1, 63, c1d.data_ptr<float>(), s1d.data_ptr<float>(),
                                             false, nullptr),
                    Catch::Contains("rope_rows") && Catch::Contains("hd=63"));
  CHECK_THROWS_WITH(gear::kernels::rope_rows(DType::F16, x.data_ptr(), 32, o.data_ptr(), 4, 1, 64, c1d.data_ptr<float>(), s1d.data_ptr<float>(),
                                             false, nullptr),
                    Catch::Contains("row stride"));
  CHECK_THROWS_WITH(gear::kernels::rope_rows(DType::F16, nullptr, 64, o.data_ptr(), 4, 1, 64, c1d.data_ptr<float>(), s1d.data_ptr<float>(),
                                             false, nullptr),
                    Catch::Contains("null pointer"));
}

TEST_CASE("cuda rope_qkv_append: a position outside the cache writes NaN q and no cache entry", "[kernels][cuda]") {
  if (!have_gpu()) return;
  const int B = 2, nh = 2, nkv = 1, hd = 64;
  const long long cap = 4;
  const auto [cos, sin] = rope_tables(cap, hd);
  const at::Tensor qkv = randn_as({B, (nh + 2 * nkv) * hd}, DType::F16).to(kGpu);
  const at::Tensor k0 = randn_as({B, nkv, cap, hd}, DType::F16).to(kGpu);
  at::Tensor k = k0.clone(), v = k0.clone(), q = poisoned({B, nh, hd}, DType::F16);
  q.zero_();
  const at::Tensor pos = at::tensor(std::vector<int64_t>{1, cap}, at::kLong).to(kGpu);
  const at::Tensor cos_d = cos.to(kGpu), sin_d = sin.to(kGpu);
  gear::kernels::rope_qkv_append(DType::F16, qkv.data_ptr(), pos.data_ptr<int64_t>(), cos_d.data_ptr<float>(), sin_d.data_ptr<float>(),
                                 q.data_ptr(), k.data_ptr(), v.data_ptr(), B, nh, nkv, hd, cap, true, nullptr);
  device_sync();
  CHECK(at::isfinite(q[0]).all().item<bool>());
  CHECK(at::isnan(q[1]).all().item<bool>());
  CHECK(at::equal(k[1], k0[1]));
  CHECK(at::equal(v[1], k0[1]));
  CHECK_FALSE(at::equal(k[0], k0[0]));
}

namespace {
struct AttnCase {
  int nh, nkv, hd;
  std::vector<int64_t> lens;  // per row: positions[b] + 1
  double q_scale = 1.0;       // larger -> peakier softmax
  long long extra_max_len = 0;  // max_len above the longest row
};

// Runs decode_attention on fresh random inputs (cache entries past each row's length are NaN, and so is
// the workspace) and compares with the float64 reference on the same (dtype-rounded) inputs.
void check_attention(DType dt, const AttnCase& c) {
  const int B = static_cast<int>(c.lens.size());
  const long long longest = *std::max_element(c.lens.begin(), c.lens.end());
  const long long cap = longest + 3, max_len = std::min(cap, longest + c.extra_max_len);
  INFO(name(dt) << " B " << B << " nh " << c.nh << " nkv " << c.nkv << " hd " << c.hd << " longest " << longest << " max_len " << max_len);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
  const at::Tensor q = randn_as({B, c.nh, c.hd}, dt, c.q_scale);
  at::Tensor k = randn_as({B, c.nkv, cap, c.hd}, dt), v = randn_as({B, c.nkv, cap, c.hd}, dt);
  std::vector<int64_t> pos;
  for (int b = 0; b < B; ++b) pos.push_back(c.lens[b] - 1);
  const std::vector<double> qh = host(q), kh = host(k), vh = host(v);
  for (int b = 0; b < B; ++b) {  // poison the keys / values past each row's end
    k[b].slice(1, c.lens[b]).fill_(std::numeric_limits<double>::quiet_NaN());
    v[b].slice(1, c.lens[b]).fill_(std::numeric_limits<double>::quiet_NaN());
  }
  const at::Tensor qd = q.to(kGpu), kd = k.to(kGpu), vd = v.to(kGpu), posd = at::tensor(pos, at::kLong).to(kGpu);
  at::Tensor out = poisoned({B, c.nh, c.hd}, dt);
  const size_t ws_bytes = gear::kernels::decode_attention_workspace_bytes(B, c.nh, c.hd, max_len);
  at::Tensor ws = at::full({static_cast<int64_t>(ws_bytes / 4) + 1}, std::numeric_limits<float>::quiet_NaN(),
                           at::TensorOptions().dtype(at::kFloat).device(kGpu));
  gear::kernels::decode_attention(dt, qd.data_ptr(), kd.data_ptr(), vd.data_ptr(), posd.data_ptr<int64_t>(), out.data_ptr(), B, c.nh,
                                  c.nkv, c.hd, cap, max_len, scale, ws.data_ptr(), ws_bytes, nullptr);
  device_sync();
  std::vector<double> want(B * c.nh * c.hd);
  ref::decode_attention(qh.data(), kh.data(), vh.data(), pos.data(), want.data(), B, c.nh, c.nkv, c.hd, cap, scale);
  const Diff d = compare(host(out), want, 0, 1);
  INFO(d.str());
  CHECK(d.bad == 0);
  // Max-norm relative error: float32 accumulation, then one rounding of the output to the dtype.
  CHECK(d.rel_max <= (dt == DType::F32 ? 1e-5 : dt == DType::F16 ? 1e-3 : 8e-3));
}
}  // namespace

TEST_CASE("cuda decode_attention matches the reference", "[kernels][cuda]") {
  if (!have_gpu()) return;
  at::manual_seed(14);
  const std::vector<AttnCase> cases = {
      {32, 32, 128, {1}},                      // one token
      {32, 32, 128, {7}},
      {32, 32, 128, {300}, 4.0},               // peaky softmax
      {32, 32, 128, {4097}},                   // Llama-2-7B shape, 4k context + 1
      {32, 8, 128, {4097, 7, 300}},            // GQA 4, per-row lengths
      {8, 1, 64, {300, 1}},                    // GQA 8, hd 64
      {16, 2, 64, {7, 4097, 1, 300, 33}},      // GQA 8, B = 5
      {12, 4, 64, {129, 300, 5}, 1.0, 1000},   // GQA 3 (not a power of two), empty splits for every row
      {64, 4, 128, {4097, 2}},                 // GQA 16: two blocks per kv head
      {4, 4, 64, {1, 7}, 1.0, 5000},           // tiny rows, large max_len
      {32, 8, 128, {32768}},                   // 32k context, GQA 4
      {8, 8, 128, {32768, 3}},                 // 32k context, MHA, B = 2
  };
  for (DType dt : kAllTypes)
    for (const AttnCase& c : cases) check_attention(dt, c);
}

TEST_CASE("cuda decode_attention: bad arguments throw, bad positions give NaN rows", "[kernels][cuda]") {
  if (!have_gpu()) return;
  const int B = 2, nh = 4, nkv = 2, hd = 64;
  const long long cap = 600;
  const at::TensorOptions f16 = at::TensorOptions().dtype(at::kHalf).device(kGpu);
  const at::Tensor q = at::randn({B, nh, hd}, f16), k = at::randn({B, nkv, cap, hd}, f16), v = at::randn({B, nkv, cap, hd}, f16);
  at::Tensor out = poisoned({B, nh, hd}, DType::F16);
  const size_t ws_bytes = gear::kernels::decode_attention_workspace_bytes(B, nh, hd, cap);
  REQUIRE(ws_bytes > 0);
  const at::Tensor ws = at::empty({static_cast<int64_t>(ws_bytes)}, at::TensorOptions().dtype(at::kByte).device(kGpu));
  const at::Tensor pos = at::tensor(std::vector<int64_t>{cap - 1, cap}, at::kLong).to(kGpu);  // row 1 is out of range
  auto call = [&](int hd_, long long max_len, void* w, size_t wb) {
    gear::kernels::decode_attention(DType::F16, q.data_ptr(), k.data_ptr(), v.data_ptr(), pos.data_ptr<int64_t>(), out.data_ptr(), B,
                                    nh, nkv, hd_, cap, max_len, 0.125f, w, wb, nullptr);
  };
  CHECK_THROWS_AS(call(96, cap, ws.data_ptr(), ws_bytes), std::runtime_error);
  CHECK_THROWS_WITH(call(96, cap, ws.data_ptr(), ws_bytes), Catch::Contains("decode_attention") && Catch::Contains("96"));
  CHECK_THROWS_AS(call(hd, cap, ws.data_ptr(), 16), std::runtime_error);
  CHECK_THROWS_AS(call(hd, cap, nullptr, 0), std::runtime_error);
  call(hd, cap, ws.data_ptr(), ws_bytes);
  device_sync();
  CHECK(at::isfinite(out[0]).all().item<bool>());
  CHECK(at::isnan(out[1]).all().item<bool>());
  // A single split (max_len 1 row long) writes the output directly, and flags the bad row the same way.
  out.fill_(0);
  const at::Tensor pos2 = at::tensor(std::vector<int64_t>{0, -1}, at::kLong).to(kGpu);
  gear::kernels::decode_attention(DType::F16, q.data_ptr(), k.data_ptr(), v.data_ptr(), pos2.data_ptr<int64_t>(), out.data_ptr(), B, nh,
                                  nkv, hd, cap, 1, 0.125f, nullptr, 0, nullptr);
  device_sync();
  CHECK(at::allclose(out[0].to(at::kFloat), v[0].select(1, 0).repeat_interleave(nh / nkv, 0).to(at::kFloat)));
  CHECK(at::isnan(out[1]).all().item<bool>());
}

TEST_CASE("cuda kernels: captured in a CUDA graph, replays give the direct results", "[kernels][cuda]") {
  if (!have_gpu()) return;
  at::manual_seed(15);
  const DType dt = DType::F16;
  const at::TensorOptions f16 = at::TensorOptions().dtype(at::kHalf).device(kGpu);
  const int rows = 3, dim = 4096, B = 2, nh = 32, nkv = 8, hd = 128;
  const long long cap = 5000;
  const at::Tensor x = at::randn({rows, dim}, f16), w = at::randn({dim}, f16);
  const at::Tensor q = at::randn({B, nh, hd}, f16), k = at::randn({B, nkv, cap, hd}, f16), v = at::randn({B, nkv, cap, hd}, f16);
  const at::Tensor pos = at::tensor(std::vector<int64_t>{4096, 299}, at::kLong).to(kGpu);
  const size_t wb = gear::kernels::decode_attention_workspace_bytes(B, nh, hd, cap);
  const at::Tensor ws = at::empty({static_cast<int64_t>(wb)}, at::TensorOptions().dtype(at::kByte).device(kGpu));
  at::Tensor norm = poisoned({rows, dim}, dt), attn = poisoned({B, nh, hd}, dt);
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  auto step = [&] {
    gear::kernels::rmsnorm(dt, x.data_ptr(), w.data_ptr(), norm.data_ptr(), rows, dim, 1e-5f, s);
    gear::kernels::decode_attention(dt, q.data_ptr(), k.data_ptr(), v.data_ptr(), pos.data_ptr<int64_t>(), attn.data_ptr(), B, nh,
                                    nkv, hd, cap, cap, 0.0883883f, ws.data_ptr(), wb, s);
  };
  device_sync();
  step();
  device_sync();
  const at::Tensor norm_direct = norm.clone(), attn_direct = attn.clone();
  norm.fill_(std::numeric_limits<double>::quiet_NaN());
  attn.fill_(std::numeric_limits<double>::quiet_NaN());
  device_sync();
  REQUIRE(gear::kernels::testing::replay_in_graph(s, [&](cudaStream_t) { step(); }) == cudaSuccess);  // (step issues on s)
  CHECK(at::equal(norm, norm_direct));  // deterministic kernels: bitwise the same
  CHECK(at::equal(attn, attn_direct));
  cudaStreamDestroy(s);
}

// Timings for docs/kernels.md: hidden, run with `test_kernels "[.bench]"` on the GPU. Each kernel is
// timed as 200 back-to-back launches on a stream (launch-bound for the small ones) and as the same
// 200 calls replayed from a CUDA graph (closer to the kernel's own duration).
TEST_CASE("cuda kernels: Llama-2-7B batch-1 decode timings", "[.bench][kernels][cuda]") {
  if (!have_gpu()) return;
  const DType dt = DType::F16;
  const int dim = 4096, nh = 32, hd = 128, hidden = 11008;
  const at::TensorOptions f16 = at::TensorOptions().dtype(at::kHalf).device(kGpu);
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  gear::kernels::testing::EventTimer timer;
  const int iters = 200;
  auto elapsed_us = [&](auto&& body) { return timer.us(s, iters, body); };
  auto report = [&](const std::string& what, double bytes, auto&& fn) {  // fn(cudaStream_t)
    device_sync();
    for (int i = 0; i < 20; ++i) fn(s);
    const double stream_us = elapsed_us([&] { for (int i = 0; i < iters; ++i) fn(s); });
    cudaGraph_t g = nullptr;
    cudaGraphExec_t ge = nullptr;
    REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    for (int i = 0; i < iters; ++i) fn(s);
    REQUIRE(cudaStreamEndCapture(s, &g) == cudaSuccess);
    REQUIRE(cudaGraphInstantiate(&ge, g, 0) == cudaSuccess);
    cudaGraphLaunch(ge, s);
    const double graph_us = elapsed_us([&] { cudaGraphLaunch(ge, s); });
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
    std::cout << what << ": stream " << stream_us << " us, graph " << graph_us << " us = " << bytes / (graph_us * 1e-6) / 1e12
              << " TB/s (" << bytes / 1e6 << " MB)" << std::endl;
  };
  const at::Tensor x = at::randn({1, dim}, f16), w = at::randn({dim}, f16);
  at::Tensor o = at::empty({1, dim}, f16);
  report("rmsnorm [1,4096]", 3.0 * dim * 2,
         [&](cudaStream_t st) { gear::kernels::rmsnorm(dt, x.data_ptr(), w.data_ptr(), o.data_ptr(), 1, dim, 1e-5f, st); });
  const at::Tensor gu = at::randn({1, 2 * hidden}, f16);
  at::Tensor so = at::empty({1, hidden}, f16);
  report("silu_mul [1,11008]", 3.0 * hidden * 2,
         [&](cudaStream_t st) { gear::kernels::silu_mul(dt, gu.data_ptr(), so.data_ptr(), 1, hidden, st); });
  for (long long ctx : {1024LL, 4096LL, 32768LL}) {
    const long long cap = ctx;
    const at::Tensor qkv = at::randn({1, 3 * dim}, f16);
    at::Tensor k = at::randn({1, nh, cap, hd}, f16), v = at::randn({1, nh, cap, hd}, f16), q = at::randn({1, nh, hd}, f16);
    const auto [cos, sin] = rope_tables(cap, hd);
    const at::Tensor cd = cos.to(kGpu), sd = sin.to(kGpu), pos = at::full({1}, static_cast<int64_t>(ctx - 1), at::TensorOptions().dtype(at::kLong).device(kGpu));
    if (ctx == 4096)
      report("rope_qkv_append 7B", (3.0 * dim + dim + 2 * dim) * 2 + hd * 4, [&](cudaStream_t st) {
        gear::kernels::rope_qkv_append(dt, qkv.data_ptr(), pos.data_ptr<int64_t>(), cd.data_ptr<float>(), sd.data_ptr<float>(),
                                       q.data_ptr(), k.data_ptr(), v.data_ptr(), 1, nh, nh, hd, cap, true, st);
      });
    const size_t wb = gear::kernels::decode_attention_workspace_bytes(1, nh, hd, ctx);
    const at::Tensor ws = at::empty({static_cast<int64_t>(wb) + 16}, at::TensorOptions().dtype(at::kByte).device(kGpu));
    at::Tensor ao = at::empty({1, nh, hd}, f16);
    report("decode_attention 7B ctx " + std::to_string(ctx), 2.0 * ctx * nh * hd * 2, [&](cudaStream_t st) {
      gear::kernels::decode_attention(dt, q.data_ptr(), k.data_ptr(), v.data_ptr(), pos.data_ptr<int64_t>(), ao.data_ptr(), 1, nh, nh,
                                      hd, cap, ctx, 0.0883883f, ws.data_ptr(), wb, st);
    });
    // GQA 4 (Llama-3-8B heads): the first 8 kv heads of the same caches.
    report("decode_attention 32q/8kv ctx " + std::to_string(ctx), 2.0 * ctx * 8 * hd * 2, [&](cudaStream_t st) {
      gear::kernels::decode_attention(dt, q.data_ptr(), k.data_ptr(), v.data_ptr(), pos.data_ptr<int64_t>(), ao.data_ptr(), 1, nh, 8,
                                      hd, cap, ctx, 0.0883883f, ws.data_ptr(), wb, st);
    });
  }
  cudaStreamDestroy(s);
  device_sync();
}
#endif  // GEARLAB_WITH_CUDA

TEST_CASE("split_rule: v7's tokens per split fill one wave of a small grid, make a row one block where that fits and "
          "keep long splits for a large grid",
          "[kernels][ref]") {
  using gear::kernels::split_rule::kLeanMaxSplit;
  using gear::kernels::split_rule::kMaxSplit;
  using gear::kernels::split_rule::lean_split_cost;
  using gear::kernels::split_rule::lean_split_tokens;
  const long long any = 1LL << 30;  // (no workspace bound)
  // Llama-3-8B heads (8 kv heads a row), 132 SMs: KIVI-2's GQA kernel holds 3 blocks an SM (396 slots), GEAR-L's 2 (264).
  // B 1, 32k: the fewest splits that still fill one wave (8 (32704 / s + 1) <= 396: s = 768; <= 264: s = 1024; run EC:
  // GEAR at 1280 tokens, 208 blocks, 53.5 us against 45.5 at 1024).
  CHECK(lean_split_tokens(1, 8, 32704, 396, any) == 768);
  CHECK(lean_split_tokens(1, 8, 32704, 264, any) == 1024);
  // B 16, 4k: 384 blocks of 1408 tokens (one wave of 396) rather than 256 of 2048; with 264 slots, 256 of 2048.
  CHECK(lean_split_tokens(16, 8, 4032, 396, any) == 1408);
  CHECK(lean_split_tokens(16, 8, 4032, 264, any) == 2048);
  // B 32, 4k: one split a row (256 blocks, no combine; run EB: 76.5 us against 97.7 for 512 blocks of 2048), and
  // Llama-2-7B heads at B 16 4k the same on 528 slots (512 blocks: 102.1 us against 112.7).
  CHECK(lean_split_tokens(32, 8, 4032, 396, any) == 4096);
  CHECK(lean_split_tokens(16, 32, 4032, 528, any) == 4096);
  // ... but not where one split a row is 1.3 waves: Llama-2-7B GEAR-L at B 16 4k on 396 slots keeps two (run EB: 4096,
  // 143.6 us against 131.4; run BH: 1408 tokens, 3.9 of 4 waves, measured slower than 2048; the model ties the two).
  CHECK(lean_split_tokens(16, 32, 4032, 396, any) == 2048);
  // Large grids: long splits (B 64 32k GEAR-L: 8192, 1108 us against 1232 at 2048; GEAR-L B 64 8k: one split a row,
  // 1.9 waves, 286.5 us against 337.2).
  CHECK(lean_split_tokens(64, 8, 32704, 264, any) == kLeanMaxSplit);
  CHECK(lean_split_tokens(64, 8, 8128, 264, any) == kLeanMaxSplit);
  // A shorter max_split: the same costs over the shorter splits.
  CHECK(lean_split_tokens(64, 8, 32704, 264, any, kMaxSplit) == kMaxSplit);
  CHECK(lean_split_tokens(16, 32, 4032, 396, any, kMaxSplit) == 2048);
  // Llama-2-7B GEAR at the 24 GiB budget's shape (B 22, 3776 compressed tokens, 3 blocks an SM on 132 SMs): one split
  // a row, 704 blocks in 2 waves, where splits of at most kMaxSplit (v7 with the outlier passes until the thirty-second
  // session) took two of 1920 tokens, 1408 blocks in 4 waves and the combine (ncu, H200: 148.6 us a layer).
  CHECK(lean_split_tokens(22, 32, 3776, 396, any) == 3840);
  CHECK(lean_split_tokens(22, 32, 3776, 396, any, kMaxSplit) == 1920);
  // KIVI's GQA-4 kernel on its own fit (kLeanKiviGqaCost, run JC): one split a row at B 32 8k (256 blocks, 131.2 us
  // against 148.2 for 2816-token splits) and B 64 4k (147.0 against 159.8 for 2048), and the same picks as kLeanCost
  // where those measured best or within noise: B 1 32k, B 8 4k / 8k / 32k, B 16 4k / 8k / 32k, B 32 4k / 32k, B 128 4k /
  // 8k / 32k. (B 64 8k moves from 2816 to 4096, 257.0 against 263.5 us; on 132 SMs stream-K takes that grid.)
  using gear::kernels::split_rule::kLeanCost;
  using gear::kernels::split_rule::kLeanKiviGqaCost;
  // (compressed_attention's bound on the splits a row, on 132 SMs)
  auto bound = [](long long B, long long M) { return gear::kernels::split_rule::auto_split_bound(B, M, 132); };
  CHECK(lean_split_tokens(32, 8, 8128, 396, any, kLeanMaxSplit, kLeanCost) == 2816);
  CHECK(lean_split_tokens(32, 8, 8128, 396, any, kLeanMaxSplit, kLeanKiviGqaCost) == kLeanMaxSplit);
  CHECK(lean_split_tokens(64, 8, 4032, 396, any, kLeanMaxSplit, kLeanCost) == 2048);
  CHECK(lean_split_tokens(64, 8, 4032, 396, any, kLeanMaxSplit, kLeanKiviGqaCost) == 4096);
  CHECK(lean_split_tokens(64, 8, 8128, 396, bound(64, 8128), kLeanMaxSplit, kLeanCost) == 2816);
  CHECK(lean_split_tokens(64, 8, 8128, 396, bound(64, 8128), kLeanMaxSplit, kLeanKiviGqaCost) == 4096);
  for (const auto& [B, M] : std::vector<std::pair<long long, long long>>{
           {1, 32704}, {8, 4032}, {8, 8128}, {8, 32704}, {16, 4032}, {16, 8128}, {16, 32704}, {32, 4032}, {32, 32704}, {128, 4032},
           {128, 8128}, {128, 32704}}) {
    INFO("B " << B << " M " << M);
    CHECK(lean_split_tokens(B, 8, M, 396, bound(B, M), kLeanMaxSplit, kLeanKiviGqaCost) ==
          lean_split_tokens(B, 8, M, 396, bound(B, M), kLeanMaxSplit, kLeanCost));
  }
  // The model's parts: whole waves, the block's own work and the combine.
  CHECK(lean_split_cost(1, 396, 4032, 396, 4096) == 4096 + 512);             // one full wave, one split a row
  CHECK(lean_split_cost(1, 100, 4032, 396, 4096) == 4096 + 512);             // a quarter wave costs a wave
  CHECK(lean_split_cost(1, 396, 4096, 396, 4096) == 2 * (4096 + 512) + 1024);  // two splits a row (the second empty)
  CHECK(lean_split_cost(1, 1160, 100, 400, 128) == 3 * (128 + 512));         // 2.9 waves: 3
  // Every result is a multiple of the chunk, at most the split asked for, with at most `bound` splits.
  for (long long M : {0LL, 1LL, 127LL, 4032LL, 32704LL})
    for (long long slots : {1LL, 264LL, 528LL})
      for (long long bound : {M / kMaxSplit + 1, M / 128 + 1})
        for (int max_split : {kMaxSplit, kLeanMaxSplit}) {
          const int s = lean_split_tokens(1, 8, M, slots, bound, max_split);
          CHECK(s % 128 == 0);
          CHECK(s <= max_split);
          CHECK(M / s + 1 <= bound);
        }
  // No slots known (the occupancy query failed): the largest split.
  CHECK(lean_split_tokens(1, 8, 32704, 0, 256) == kLeanMaxSplit);
}

TEST_CASE("split_rule: v7's stream-K plan gives every unit of every row to exactly one block, in segments the "
          "combine can count",
          "[kernels][ref]") {
  using gear::kernels::split_rule::StreamK;
  using gear::kernels::split_rule::stream_k_first_block;
  using gear::kernels::split_rule::stream_k_plan;
  using gear::kernels::split_rule::stream_k_segments;
  // Llama-3-8B KIVI-2 at B 64 8k on 396 slots: 512 rows of 254 tiles and a 128-token buffer (4 units); one wave of
  // blocks, each ceil(512 * 258 / 396) = 334 units, so a row spans 2 blocks (or 1, where it starts a block's share).
  const StreamK p = stream_k_plan(512, 254, 4, 396, 1LL << 30, 8);
  CHECK(p.U == 258);
  CHECK(p.W == 334);
  CHECK(p.blocks == 396);
  CHECK(p.slots == 2);
  // What the kernel does: block k walks units [k W, (k + 1) W) of the line, one segment a row it meets; the segment
  // of row r is partial output k - first_block(r). Every unit is walked once, every row's segments are
  // first_block(r) .. first_block(r) + segments(r) - 1, and no slot reaches p.slots.
  auto walk = [](const StreamK& q) {
    std::vector<int> seen(static_cast<size_t>(q.rows * q.U), 0);
    std::vector<std::vector<long long>> slots(static_cast<size_t>(q.rows));
    for (long long k = 0; k < q.blocks; ++k) {
      const long long end = std::min((k + 1) * q.W, q.rows * q.U);
      for (long long u = k * q.W; u < end;) {
        const long long r = u / q.U, u0 = u - r * q.U, u1 = std::min(q.U, u0 + (end - u));
        for (long long x = u0; x < u1; ++x) ++seen[static_cast<size_t>(r * q.U + x)];
        slots[static_cast<size_t>(r)].push_back(k - stream_k_first_block(q, r));
        u += u1 - u0;
      }
    }
    bool ok = std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; });
    for (long long r = 0; r < q.rows; ++r) {
      const auto& s = slots[static_cast<size_t>(r)];
      ok = ok && static_cast<long long>(s.size()) == stream_k_segments(q, r) && stream_k_segments(q, r) <= q.slots;
      for (size_t i = 0; i < s.size(); ++i) ok = ok && s[i] == static_cast<long long>(i);
    }
    return ok;
  };
  CHECK(walk(p));
  for (long long rows : {1LL, 7LL, 64LL, 512LL})
    for (long long T : {0LL, 1LL, 31LL, 254LL, 1022LL})
      for (long long buf : {0LL, 1LL, 4LL})
        for (long long slots : {1LL, 264LL, 396LL}) {
          const StreamK q = stream_k_plan(rows, T, buf, slots, T / 4 + 2, 8);
          INFO("rows " << rows << " T " << T << " buf " << buf << " slots " << slots);
          if (T + buf == 0) {
            CHECK(q.W == 0);  // nothing to run
            continue;
          }
          REQUIRE(q.W > 0);
          CHECK(q.W >= 8);  // a block's least share
          CHECK(q.slots <= T / 4 + 2);  // the workspace bound
          CHECK((q.blocks - 1) * q.W < rows * q.U);
          CHECK(q.blocks * q.W >= rows * q.U);
          CHECK(walk(q));
        }
  // No slot count (the occupancy query failed) or a bound of one partial: no plan.
  CHECK(stream_k_plan(8, 100, 1, 0, 100, 8).W == 0);
  CHECK(stream_k_plan(8, 100, 1, 396, 1, 8).W == 0);
  // The automatic choice (runs FA, FB, FD: Llama-3-8B KIVI-2, tiles of 32, 396 slots): B 64 at 8k and 32k (shares of
  // ~10.7k and ~42k tokens; one block a row fills 65 % of 2 waves) take it. The split rule stays where it measured
  // slower or tied: B 32 4k and B 16 8k (shares of ~2.6k tokens), B 128 at 4k and 8k (one block a row fills 86 % of
  // 3 waves), B 48 8k (97 % of a wave; a share of ~8k tokens).
  using gear::kernels::split_rule::stream_k_pays;
  auto share_plan = [&](long long B, long long M) { return stream_k_plan(B * 8, M / 32, 4, 396, 1LL << 30, 8); };
  CHECK(stream_k_pays(share_plan(64, 8128), 32, 396));
  CHECK(stream_k_pays(share_plan(64, 32704), 32, 396));
  CHECK_FALSE(stream_k_pays(share_plan(32, 4032), 32, 396));
  CHECK_FALSE(stream_k_pays(share_plan(16, 8128), 32, 396));
  CHECK_FALSE(stream_k_pays(share_plan(128, 4032), 32, 396));
  CHECK_FALSE(stream_k_pays(share_plan(128, 8128), 32, 396));
  CHECK_FALSE(stream_k_pays(share_plan(48, 8128), 32, 396));
  CHECK_FALSE(stream_k_pays(StreamK{}, 32, 396));  // no plan
}

// KIVI's GQA-4 kernel at 2 blocks an SM (run KB: Llama-3-8B KIVI-2 heads, 8 kv heads a row, on 132 SMs: 264 slots of
// the 2-block kernel). Faster at B 16-64 4k and B 16 / 32 8k (shares of 1-2.1M tokens a grid: at most 8192 a slot),
// slower at B 64 / 128 8k and every 32k grid (4.2M tokens and more); the choice is the automatic one, then the split rule
// and the stream-K plan are sized for its slots (B 64 8k: 512 rows fill 97 % of 2 waves of 264 slots, so stream-K
// would not pay there, where it runs on 396).
TEST_CASE("split_rule: KIVI's GQA-4 kernel takes 2 blocks an SM where each slot's share is at most 8192 tokens",
          "[kernels][ref]") {
  using gear::kernels::split_rule::lean_two_blocks_pay;
  const long long slots = 2 * 132;
  for (const auto& [B, M] : {std::pair{16LL, 4032LL}, {16, 8128}, {32, 4032}, {32, 8128}, {64, 4032}, {1, 32704}, {8, 32704}}) {
    INFO("B " << B << " M " << M);
    CHECK(lean_two_blocks_pay(B * 8, M, slots));
  }
  for (const auto& [B, M] : {std::pair{64LL, 8128LL}, {128, 8128}, {128, 4032}, {16, 32704}, {32, 32704}, {64, 32704}, {128, 32704}}) {
    INFO("B " << B << " M " << M);
    CHECK_FALSE(lean_two_blocks_pay(B * 8, M, slots));
  }
  // The boundary: a share of exactly 8192 tokens a slot takes it, one token more does not; no rows or no slots (the
  // occupancy query failed) never.
  CHECK(lean_two_blocks_pay(264, 8192, slots));
  CHECK_FALSE(lean_two_blocks_pay(264, 8193, slots));
  CHECK_FALSE(lean_two_blocks_pay(0, 8192, slots));
  CHECK_FALSE(lean_two_blocks_pay(8, 8192, 0));
  // On a GPU of fewer SMs (an H100 PCIe's 114) the same grid's share grows: B 64 4k no longer takes it.
  CHECK_FALSE(lean_two_blocks_pay(64 * 8, 4032, 2 * 114));
}
