// Float64 CPU references of the CUDA kernels (see reference.h).
#include "kernels/reference.h"

#include "kernels/small_dense.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

namespace gear::kernels::ref {
namespace {

[[noreturn]] void fail(const char* who, const std::string& what) {
  throw std::runtime_error(std::string("gear::kernels::ref::") + who + ": " + what);
}

// Rounds v to a binary format with `mant` fraction bits, minimum normal exponent `emin` and largest
// finite value `maxv` (ties to even through nearbyint under the default rounding mode).
double round_format(double v, int mant, int emin, double maxv) {
  if (!std::isfinite(v) || v == 0.0) return v;
  int e = std::ilogb(v);  // |v| in [2^e, 2^(e+1))
  if (e < emin) e = emin;  // subnormal range: fixed quantum
  const double quantum = std::ldexp(1.0, e - mant);
  const double r = std::nearbyint(v / quantum) * quantum;  // v / quantum is exact (power-of-two scaling)
  if (std::fabs(r) > maxv) return std::copysign(std::numeric_limits<double>::infinity(), v);
  return r;
}

}  // namespace

double round_to(DType t, double v) {
  switch (t) {
    case DType::F32: return round_format(v, 23, -126, 3.4028234663852886e38);
    case DType::F16: return round_format(v, 10, -14, 65504.0);
    case DType::BF16: return round_format(v, 7, -126, 3.3895313892515355e38);
  }
  fail("round_to", "unknown dtype");
}

void rmsnorm(DType t, const double* x, const double* w, double* out, int rows, int dim, double eps) {
  if (rows < 0 || dim <= 0) fail("rmsnorm", "bad shape rows=" + std::to_string(rows) + " dim=" + std::to_string(dim));
  for (int r = 0; r < rows; ++r) {
    const double* xr = x + static_cast<size_t>(r) * dim;
    double ss = 0.0;
    for (int i = 0; i < dim; ++i) ss += xr[i] * xr[i];
    const double inv = 1.0 / std::sqrt(ss / dim + eps);
    for (int i = 0; i < dim; ++i) {
      const double normed = round_to(t, xr[i] * inv);  // x_normed.to(dtype)
      out[static_cast<size_t>(r) * dim + i] = round_to(t, normed * w[i]);
    }
  }
}

void silu_mul(DType t, const double* gate_up, double* out, int rows, int hidden) {
  if (rows < 0 || hidden <= 0) fail("silu_mul", "bad shape rows=" + std::to_string(rows) + " hidden=" + std::to_string(hidden));
  for (int r = 0; r < rows; ++r) {
    const double* g = gate_up + static_cast<size_t>(r) * 2 * hidden;
    const double* u = g + hidden;
    for (int i = 0; i < hidden; ++i) {
      const double s = round_to(t, g[i] / (1.0 + std::exp(-g[i])));  // act_fn(gate) in the dtype
      out[static_cast<size_t>(r) * hidden + i] = round_to(t, s * u[i]);
    }
  }
}

void rope_qkv_append(DType t, const double* qkv, const int64_t* positions, const float* cos, const float* sin,
                     double* q_out, double* k_cache, double* v_cache, int B, int nh, int nkv, int hd, long long cap,
                     bool half_split, const int32_t* slots, long long table_rows) {
  if (B < 0 || nh <= 0 || nkv <= 0 || hd <= 0 || hd % 2 != 0 || cap <= 0)
    fail("rope_qkv_append", "bad shape B=" + std::to_string(B) + " nh=" + std::to_string(nh) + " nkv=" +
                                std::to_string(nkv) + " hd=" + std::to_string(hd) + " cap=" + std::to_string(cap));
  const int half = hd / 2;
  const size_t row = static_cast<size_t>(nh + 2 * nkv) * hd;
  for (int b = 0; b < B; ++b) {
    const int64_t pos = positions[b], slot = slots ? slots[b] : pos, rows = slots ? table_rows : cap;
    if (pos < 0 || pos >= rows)
      fail("rope_qkv_append", "position " + std::to_string(pos) + " of row " + std::to_string(b) + " outside [0, " +
                                  std::to_string(rows) + ")");
    if (slot < 0 || slot >= cap)
      fail("rope_qkv_append", "slot " + std::to_string(slot) + " of row " + std::to_string(b) + " outside [0, " +
                                  std::to_string(cap) + ")");
    const float* c = cos + static_cast<size_t>(pos) * half;
    const float* s = sin + static_cast<size_t>(pos) * half;
    auto rotate = [&](const double* src, double* dst) {
      for (int i = 0; i < half; ++i) {
        const int ia = half_split ? i : 2 * i;
        const int ib = half_split ? i + half : 2 * i + 1;
        const double a = src[ia], bb = src[ib], cc = c[i], ss = s[i];
        dst[ia] = round_to(t, a * cc - bb * ss);
        dst[ib] = round_to(t, a * ss + bb * cc);
      }
    };
    const double* src = qkv + b * row;
    for (int h = 0; h < nh; ++h) rotate(src + static_cast<size_t>(h) * hd, q_out + (static_cast<size_t>(b) * nh + h) * hd);
    for (int h = 0; h < nkv; ++h) {
      const size_t at = ((static_cast<size_t>(b) * nkv + h) * cap + slot) * hd;
      rotate(src + static_cast<size_t>(nh + h) * hd, k_cache + at);
      std::copy_n(src + static_cast<size_t>(nh + nkv + h) * hd, hd, v_cache + at);
    }
  }
}

void decode_attention(const double* q, const double* k_cache, const double* v_cache, const int64_t* positions,
                      double* out, int B, int nh, int nkv, int hd, long long cap, double scale) {
  if (B < 0 || nh <= 0 || nkv <= 0 || nh % nkv != 0 || hd <= 0 || cap <= 0)
    fail("decode_attention", "bad shape B=" + std::to_string(B) + " nh=" + std::to_string(nh) +
                                 " nkv=" + std::to_string(nkv) + " hd=" + std::to_string(hd));
  const int group = nh / nkv;
  std::vector<double> p;
  for (int b = 0; b < B; ++b) {
    const int64_t pos = positions[b];
    if (pos < 0 || pos >= cap)
      fail("decode_attention", "position " + std::to_string(pos) + " of row " + std::to_string(b) + " outside [0, " +
                                   std::to_string(cap) + ")");
    const int64_t len = pos + 1;
    p.assign(static_cast<size_t>(len), 0.0);
    for (int h = 0; h < nh; ++h) {
      const double* qh = q + (static_cast<size_t>(b) * nh + h) * hd;
      const size_t base = (static_cast<size_t>(b) * nkv + h / group) * cap * hd;
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < len; ++j) {
        const double* k = k_cache + base + j * hd;
        double dot = 0.0;
        for (int d = 0; d < hd; ++d) dot += qh[d] * k[d];
        p[j] = dot * scale;
        m = std::max(m, p[j]);
      }
      double sum = 0.0;
      for (int64_t j = 0; j < len; ++j) sum += (p[j] = std::exp(p[j] - m));
      double* o = out + (static_cast<size_t>(b) * nh + h) * hd;
      std::fill_n(o, hd, 0.0);
      for (int64_t j = 0; j < len; ++j) {
        const double* v = v_cache + base + j * hd;
        const double pj = p[j] / sum;
        for (int d = 0; d < hd; ++d) o[d] += pj * v[d];
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// GEAR / KIVI compressed layout
// ------------------------------------------------------------------------------------------------

uint16_t half_bits(double v) {
  const double r = round_to(DType::F16, v);
  if (std::isnan(r)) return 0x7E00;
  const uint16_t sign = std::signbit(r) ? 0x8000 : 0;
  const double a = std::fabs(r);
  if (std::isinf(a)) return sign | 0x7C00;
  if (a == 0.0) return sign;
  const int e = std::ilogb(a);
  if (e < -14) return sign | static_cast<uint16_t>(std::ldexp(a, 24));  // subnormal: a / 2^-24 < 1024
  const double m = std::ldexp(a, -e) - 1.0;                             // [0, 1), a multiple of 2^-10
  return sign | static_cast<uint16_t>((e + 15) << 10) | static_cast<uint16_t>(std::ldexp(m, 10));
}

namespace {
double half_value_slow(uint16_t h) {
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  const int e = (h >> 10) & 31, m = h & 1023;
  if (e == 31) return m ? std::numeric_limits<double>::quiet_NaN() : sign * std::numeric_limits<double>::infinity();
  if (e == 0) return sign * std::ldexp(static_cast<double>(m), -24);
  return sign * std::ldexp(static_cast<double>(1024 + m), e - 25);
}
}  // namespace

double half_value(uint16_t h) {
  static const std::vector<double> table = [] {
    std::vector<double> t(65536);
    for (int i = 0; i < 65536; ++i) t[i] = half_value_slow(static_cast<uint16_t>(i));
    return t;
  }();
  return table[h];
}

uint16_t half_directed(float v, bool up) {
  const uint16_t h = half_bits(v);
  const double hv = half_value(h);
  const bool wrong = up ? hv < static_cast<double>(v) : hv > static_cast<double>(v);
  if (!wrong) return h;
  // As int16 the pattern of a positive value grows away from zero and that of a negative value shrinks
  // toward -32768 (-0.0): core's step, literally.
  const int b = static_cast<int16_t>(h);
  int stepped;
  if (up)
    stepped = b >= 0 ? b + 1 : (b == -32768 ? 1 : b - 1);
  else
    stepped = b > 0 ? b - 1 : (b == 0 ? -32767 : b + 1);
  return static_cast<uint16_t>(static_cast<int16_t>(stepped));
}

namespace {

void check_layout(const char* who, const CompressedKV& kv, bool attention = false) {
  const std::string p = compressed_kv_problem(kv, attention);
  if (!p.empty()) fail(who, p);
}

struct Ix {  // element offsets of the layout's arrays
  const CompressedKV& c;
  size_t bh(int b, int h) const { return static_cast<size_t>(b) * c.nkv + h; }
  size_t k_row(int b, int h, long long tile, int d) const {  // channel row of a tile (codes: * key_row_bytes; scale: as is)
    return (bh(b, h) * static_cast<size_t>(c.tile_cap) + static_cast<size_t>(tile)) * c.hd + d;
  }
  size_t tok(int b, int h, long long t) const { return bh(b, h) * static_cast<size_t>(c.token_cap()) + static_cast<size_t>(t); }
  size_t lr_b(int b, int h, long long l, int r) const {
    return ((bh(b, h) * static_cast<size_t>(c.lr_cap) + static_cast<size_t>(l)) * c.rank + r) * c.hd;
  }
  size_t sp_off(int b, int h) const { return bh(b, h) * static_cast<size_t>(c.tile_cap + 1); }
  size_t sp(int b, int h) const { return bh(b, h) * static_cast<size_t>(c.sparse_cap); }
  size_t buf(int b, int h, long long i) const { return (bh(b, h) * static_cast<size_t>(c.buf_cap) + static_cast<size_t>(i)) * c.hd; }
};

int levels(int bits) { return (1 << bits) - 1; }

// core's quantize_matrix on one group (float32 arithmetic): scale / zero as fp16 bits.
void quant_params(const float* v, int n, int stride, int bits, uint16_t& scale, uint16_t& zero) {
  float mn = std::numeric_limits<float>::infinity(), mx = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < n; ++i) {
    const float x = v[static_cast<size_t>(i) * stride];
    mn = x < mn ? x : mn;
    mx = x > mx ? x : mx;
  }
  zero = half_directed(mn, /*up=*/false);
  const float z = static_cast<float>(half_value(zero));
  float step = (mx - z) / static_cast<float>(levels(bits));
  const float min_step = 5.9604644775390625e-08f;  // 2^-24, the smallest fp16 subnormal
  if (step < min_step) step = min_step;
  scale = half_directed(step, /*up=*/true);
}

uint8_t quant_code(float x, float scale, float zero, int bits) {
  float c = std::nearbyint((x - zero) / scale);
  if (c < 0.f) c = 0.f;
  if (c > static_cast<float>(levels(bits))) c = static_cast<float>(levels(bits));
  return static_cast<uint8_t>(c);
}

// Packs n codes (n * bits a multiple of 8) little-endian into dst, as core/compression/bitpack.cpp.
void pack(const uint8_t* codes, int n, int bits, uint8_t* dst) {
  const int per = 8 / bits;
  for (int i = 0; i < n / per; ++i) {
    unsigned byte = 0;
    for (int j = 0; j < per; ++j) byte |= static_cast<unsigned>(codes[i * per + j]) << (j * bits);
    dst[i] = static_cast<uint8_t>(byte);
  }
}

int unpack1(const uint8_t* src, int i, int bits) {
  const int per = 8 / bits;
  return (src[i / per] >> ((i % per) * bits)) & levels(bits);
}

// core's dequantize_matrix value: float32 product, then float32 sum.
double dequant(int code, uint16_t scale, uint16_t zero) {
  const float prod = static_cast<float>(code) * static_cast<float>(half_value(scale));
  return static_cast<double>(prod + static_cast<float>(half_value(zero)));
}

// Validates a compression / decompression call; returns the row and first tile of block i.
std::pair<int, long long> block_dst(const char* who, const CompressedKV& kv, int i, int T, const int32_t* row,
                                    const int32_t* tile) {
  const int b = row ? row[i] : i;
  const long long t0 = tile ? tile[i] : 0;
  if (b < 0 || b >= kv.B || t0 < 0 || t0 + T / kv.group > kv.tile_cap)
    fail(who, "block " + std::to_string(i) + " goes to row " + std::to_string(b) + " tiles " + std::to_string(t0) + ".." +
                  std::to_string(t0 + T / kv.group - 1) + ", outside the layout (B=" + std::to_string(kv.B) +
                  ", tile_cap=" + std::to_string(kv.tile_cap) + ")");
  return {b, t0};
}

void check_blocks(const char* who, const CompressedKV& kv, long long cap, int n, int T) {
  check_layout(who, kv);
  if (n < 0 || T <= 0 || T % kv.group != 0 || cap < T)
    fail(who, "bad block shape n=" + std::to_string(n) + " T=" + std::to_string(T) + " cap=" + std::to_string(cap) +
                  " (T a multiple of the key group " + std::to_string(kv.group) + ")");
}

}  // namespace

void quantize_keys(const double* x, long long x_cap, int n, int T, const CompressedKV& kv, const int32_t* dst_row,
                   const int32_t* dst_tile, bool whole_block) {
  const char* who = "quantize_keys";
  check_blocks(who, kv, x_cap, n, T);
  const Ix ix{kv};
  const int G = kv.group, hd = kv.hd;
  std::vector<float> v(static_cast<size_t>(T));  // one channel of the block
  std::vector<uint8_t> codes(static_cast<size_t>(G));
  for (int i = 0; i < n; ++i) {
    const auto [b, t0] = block_dst(who, kv, i, T, dst_row, dst_tile);
    for (int h = 0; h < kv.nkv; ++h)
      for (int d = 0; d < hd; ++d) {
        const double* src = x + (static_cast<size_t>(i) * kv.nkv + h) * x_cap * hd + d;
        for (int t = 0; t < T; ++t) v[t] = static_cast<float>(src[static_cast<size_t>(t) * hd]);
        uint16_t block_scale = 0, block_zero = 0;
        if (whole_block) quant_params(v.data(), T, 1, kv.bits, block_scale, block_zero);
        for (int j = 0; j < T / G; ++j) {
          const float* tile = v.data() + static_cast<size_t>(j) * G;
          const size_t r = ix.k_row(b, h, t0 + j, d);
          if (whole_block) {
            kv.k_scale[r] = block_scale, kv.k_zero[r] = block_zero;
          } else {
            quant_params(tile, G, 1, kv.bits, kv.k_scale[r], kv.k_zero[r]);
          }
          const float s = static_cast<float>(half_value(kv.k_scale[r])), z = static_cast<float>(half_value(kv.k_zero[r]));
          for (int t = 0; t < G; ++t) codes[t] = quant_code(tile[t], s, z, kv.bits);
          pack(codes.data(), G, kv.bits, kv.k_codes + r * kv.key_row_bytes());
        }
      }
  }
}

void quantize_values(const double* x, long long x_cap, int n, int T, const CompressedKV& kv, const int32_t* dst_row,
                     const int32_t* dst_tile) {
  const char* who = "quantize_values";
  check_blocks(who, kv, x_cap, n, T);
  const Ix ix{kv};
  const int hd = kv.hd, VG = kv.v_group, span = kv.v_span;
  std::vector<float> v(static_cast<size_t>(hd) * span);  // the token's channels of the heads of h's span
  std::vector<uint8_t> codes(static_cast<size_t>(hd));
  for (int i = 0; i < n; ++i) {
    const auto [b, t0] = block_dst(who, kv, i, T, dst_row, dst_tile);
    for (int h = 0; h < kv.nkv; ++h)
      for (int t = 0; t < T; ++t) {
        const int h0 = h - h % span, own = (h - h0) * hd;
        for (int hs = 0; hs < span; ++hs) {
          const double* src = x + ((static_cast<size_t>(i) * kv.nkv + h0 + hs) * x_cap + t) * hd;
          for (int d = 0; d < hd; ++d) v[static_cast<size_t>(hs) * hd + d] = static_cast<float>(src[d]);
        }
        const size_t tok = ix.tok(b, h, t0 * kv.group + t);
        for (int g = 0; g < hd / VG; ++g) {
          uint16_t& sc = kv.v_scale[tok * kv.value_groups() + g];
          uint16_t& ze = kv.v_zero[tok * kv.value_groups() + g];
          // v_span > 1: one group over the span's heads (VG == hd), so g == 0 and the range is all of v.
          if (span > 1) quant_params(v.data(), hd * span, 1, kv.bits, sc, ze);
          else quant_params(v.data() + g * VG, VG, 1, kv.bits, sc, ze);
          const float s = static_cast<float>(half_value(sc)), z = static_cast<float>(half_value(ze));
          for (int d = g * VG; d < (g + 1) * VG; ++d) codes[d] = quant_code(v[static_cast<size_t>(own) + d], s, z, kv.bits);
        }
        pack(codes.data(), hd, kv.bits, kv.v_codes + tok * kv.value_row_bytes());
      }
  }
}

void dequantize_keys(const CompressedKV& kv, double* out, long long out_cap, int n, int T, const int32_t* src_row,
                     const int32_t* src_tile) {
  const char* who = "dequantize_keys";
  check_blocks(who, kv, out_cap, n, T);
  const Ix ix{kv};
  const int G = kv.group, hd = kv.hd;
  for (int i = 0; i < n; ++i) {
    const auto [b, t0] = block_dst(who, kv, i, T, src_row, src_tile);
    for (int h = 0; h < kv.nkv; ++h)
      for (int t = 0; t < T; ++t)
        for (int d = 0; d < hd; ++d) {
          const size_t r = ix.k_row(b, h, t0 + t / G, d);
          const int code = unpack1(kv.k_codes + r * kv.key_row_bytes(), t % G, kv.bits);
          out[((static_cast<size_t>(i) * kv.nkv + h) * out_cap + t) * hd + d] = dequant(code, kv.k_scale[r], kv.k_zero[r]);
        }
  }
}

void dequantize_values(const CompressedKV& kv, double* out, long long out_cap, int n, int T, const int32_t* src_row,
                       const int32_t* src_tile) {
  const char* who = "dequantize_values";
  check_blocks(who, kv, out_cap, n, T);
  const Ix ix{kv};
  const int hd = kv.hd;
  for (int i = 0; i < n; ++i) {
    const auto [b, t0] = block_dst(who, kv, i, T, src_row, src_tile);
    for (int h = 0; h < kv.nkv; ++h)
      for (int t = 0; t < T; ++t) {
        const size_t tok = ix.tok(b, h, t0 * kv.group + t);
        for (int d = 0; d < hd; ++d) {
          const size_t g = tok * kv.value_groups() + d / kv.v_group;
          const int code = unpack1(kv.v_codes + tok * kv.value_row_bytes(), d, kv.bits);
          out[((static_cast<size_t>(i) * kv.nkv + h) * out_cap + t) * hd + d] = dequant(code, kv.v_scale[g], kv.v_zero[g]);
        }
      }
  }
}

void extract_outliers(const double* x, long long x_cap, int n, int T, int nkv, int hd, bool per_channel, int k,
                      uint16_t* values, int32_t* index, double* inliers) {
  const char* who = "extract_outliers";
  if (n < 0 || T <= 0 || nkv <= 0 || hd <= 0 || x_cap < T)
    fail(who, "bad shape n=" + std::to_string(n) + " T=" + std::to_string(T) + " nkv=" + std::to_string(nkv) +
                  " hd=" + std::to_string(hd) + " x_cap=" + std::to_string(x_cap));
  const long long rows = per_channel ? static_cast<long long>(nkv) * hd : T;
  const long long cols = per_channel ? T : static_cast<long long>(nkv) * hd;
  if (k < 0 || k > 2048 || (k > 0 && 2LL * k >= cols))
    fail(who, "k = " + std::to_string(k) + " outliers per side do not fit rows of " + std::to_string(cols) + " (1 <= 2k < cols, k <= 2048)");
  // Element (row, col) of block i.
  auto at = [&](int i, long long r, long long c) -> size_t {
    const long long h = per_channel ? r / hd : c / hd, d = per_channel ? r % hd : c % hd, t = per_channel ? c : r;
    return ((static_cast<size_t>(i) * nkv + h) * x_cap + t) * hd + d;
  };
  auto in_at = [&](int i, long long r, long long c) -> size_t {
    const long long h = per_channel ? r / hd : c / hd, d = per_channel ? r % hd : c % hd, t = per_channel ? c : r;
    return ((static_cast<size_t>(i) * nkv + h) * T + t) * hd + d;
  };
  std::vector<float> v(static_cast<size_t>(cols));
  std::vector<int32_t> order(static_cast<size_t>(cols));
  std::vector<char> picked(static_cast<size_t>(cols));
  for (int i = 0; i < n; ++i)
    for (long long r = 0; r < rows; ++r) {
      for (long long c = 0; c < cols; ++c) v[c] = static_cast<float>(x[at(i, r, c)]);
      std::fill(picked.begin(), picked.end(), 0);
      uint16_t* vals = values ? values + (static_cast<size_t>(i) * rows + r) * 2 * k : nullptr;
      int32_t* idx = index ? index + (static_cast<size_t>(i) * rows + r) * 2 * k : nullptr;
      if (k > 0) {
        std::iota(order.begin(), order.end(), 0);
        // Largest first, ties by the lower column (float compare: -0 == +0).
        std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return v[a] > v[b]; });
        for (int e = 0; e < k; ++e) {
          picked[order[e]] = 1;
          if (vals) vals[e] = half_bits(v[order[e]]);
          if (idx) idx[e] = order[e];
        }
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return v[a] < v[b]; });
        int e = 0;
        for (long long j = 0; j < cols && e < k; ++j) {
          if (picked[order[j]]) continue;
          picked[order[j]] = 2;
          if (vals) vals[k + e] = half_bits(v[order[j]]);
          if (idx) idx[k + e] = order[j];
          ++e;
        }
      }
      if (!inliers) continue;
      double sum = 0.0;
      for (long long c = 0; c < cols; ++c)
        if (!picked[c]) sum += static_cast<double>(v[c]);
      const float mean = static_cast<float>(sum / static_cast<double>(cols - 2LL * k));
      for (long long c = 0; c < cols; ++c) inliers[in_at(i, r, c)] = picked[c] ? mean : v[c];
    }
}

void sparse_to_tiles(const CompressedKV& kv, bool keys, const uint16_t* values, const int32_t* index, int n, int T, int k,
                     const int32_t* dst_row, const int32_t* dst_tile) {
  const char* who = "sparse_to_tiles";
  check_blocks(who, kv, T, n, T);
  if (kv.sparse_cap <= 0) fail(who, "the layout has no sparse arrays (sparse_cap 0)");
  if (k < 0) fail(who, "negative k");
  const Ix ix{kv};
  const int G = kv.group, hd = kv.hd;
  const long long rows = keys ? static_cast<long long>(kv.nkv) * hd : T;
  const long long cols = keys ? T : static_cast<long long>(kv.nkv) * hd;
  int32_t* off_all = keys ? kv.k_sp_off : kv.v_sp_off;
  uint16_t* pos_all = keys ? kv.k_sp_pos : kv.v_sp_pos;
  uint16_t* val_all = keys ? kv.k_sp_val : kv.v_sp_val;
  std::vector<std::pair<int, uint16_t>> entries;  // (pos, value)
  for (int i = 0; i < n; ++i) {
    const auto [b, t0] = block_dst(who, kv, i, T, dst_row, dst_tile);
    const uint16_t* vals = values + static_cast<size_t>(i) * rows * 2 * k;
    const int32_t* idx = index + static_cast<size_t>(i) * rows * 2 * k;
    for (int h = 0; h < kv.nkv; ++h) {
      int32_t* off = off_all + ix.sp_off(b, h);
      for (int j = 0; j < T / G; ++j) {
        entries.clear();
        if (keys) {
          for (int d = 0; d < hd; ++d) {
            const long long r = static_cast<long long>(h) * hd + d;
            for (int e = 0; e < 2 * k; ++e) {
              const int32_t t = idx[r * 2 * k + e];
              if (t < 0 || t >= cols) fail(who, "key outlier index " + std::to_string(t) + " outside the block of " + std::to_string(T));
              if (t / G == j) entries.push_back({(t - j * G) * hd + d, vals[r * 2 * k + e]});
            }
          }
        } else {
          for (int t = 0; t < G; ++t) {
            const long long r = static_cast<long long>(j) * G + t;
            for (int e = 0; e < 2 * k; ++e) {
              const int32_t c = idx[r * 2 * k + e];
              if (c < 0 || c >= cols) fail(who, "value outlier index " + std::to_string(c) + " outside the hidden vector");
              if (c / hd == h) entries.push_back({t * hd + c % hd, vals[r * 2 * k + e]});
            }
          }
        }
        std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
        for (size_t e = 1; e < entries.size(); ++e)
          if (entries[e].first == entries[e - 1].first) fail(who, "two outliers at the same position");
        const long long start = off[t0 + j];
        if (start < 0 || start + static_cast<long long>(entries.size()) > kv.sparse_cap)
          fail(who, "row " + std::to_string(b) + " head " + std::to_string(h) + ": " + std::to_string(start + entries.size()) +
                        " entries pass sparse_cap " + std::to_string(kv.sparse_cap));
        for (size_t e = 0; e < entries.size(); ++e) {
          pos_all[ix.sp(b, h) + start + e] = static_cast<uint16_t>(entries[e].first);
          val_all[ix.sp(b, h) + start + e] = entries[e].second;
        }
        off[t0 + j + 1] = static_cast<int32_t>(start + static_cast<long long>(entries.size()));
      }
    }
  }
}

namespace {

struct RowLen {
  long long comp, buf;
};
RowLen row_lengths(const char* who, const CompressedKV& kv, int b) {
  const long long c = kv.n_comp[b], nb = kv.n_buf[b];
  if (c < 0 || c % kv.group != 0 || c > kv.token_cap() || nb < 0 || nb > kv.buf_cap || c + nb < 1)
    fail(who, "row " + std::to_string(b) + " has invalid lengths n_comp=" + std::to_string(c) + " n_buf=" + std::to_string(nb));
  return {c, nb};
}

// One side (K or V) of one (row, kv head) as the kernels read it.
struct Side {
  const CompressedKV& kv;
  bool key;
  int b, h;
  Ix ix{kv};
  double deq(long long t, int d) const {
    const int G = kv.group;
    if (key) {
      const size_t r = ix.k_row(b, h, t / G, d);
      return dequant(unpack1(kv.k_codes + r * kv.key_row_bytes(), static_cast<int>(t % G), kv.bits), kv.k_scale[r], kv.k_zero[r]);
    }
    const size_t tok = ix.tok(b, h, t);
    const size_t g = tok * kv.value_groups() + d / kv.v_group;
    return dequant(unpack1(kv.v_codes + tok * kv.value_row_bytes(), d, kv.bits), kv.v_scale[g], kv.v_zero[g]);
  }
  int lr(long long tile) const { return kv.rank > 0 ? kv.lr_block[static_cast<size_t>(b) * kv.tile_cap + tile] : 0; }
  double a(long long t, int r) const { return half_value((key ? kv.k_lr_a : kv.v_lr_a)[ix.tok(b, h, t) * kv.rank + r]); }
  double bf(long long l, int r, int d) const { return half_value((key ? kv.k_lr_b : kv.v_lr_b)[ix.lr_b(b, h, l, r) + d]); }
  double lowrank(long long t, int d) const {
    double s = 0;
    const long long l = lr(t / kv.group);
    for (int r = 0; r < kv.rank; ++r) s += a(t, r) * bf(l, r, d);
    return s;
  }
  // Entries [first, last) of a tile.
  std::pair<long long, long long> entries(long long tile) const {
    if (kv.sparse_cap <= 0) return {0, 0};
    const int32_t* off = (key ? kv.k_sp_off : kv.v_sp_off) + ix.sp_off(b, h);
    const long long e0 = off[tile], e1 = off[tile + 1];
    if (e0 < 0 || e1 < e0 || e1 > kv.sparse_cap) fail("compressed layout", "bad sparse offsets");
    return {e0, e1};
  }
  int pos(long long e) const { return (key ? kv.k_sp_pos : kv.v_sp_pos)[ix.sp(b, h) + e]; }
  double val(long long e) const { return half_value((key ? kv.k_sp_val : kv.v_sp_val)[ix.sp(b, h) + e]); }
  // Entry e's correction at (t, d), as the attention adds it: the layout's fp16 correction where it carries them
  // (what the kernels read then), else outlier - dequant - lowrank.
  double delta(long long e, long long t, int d) const {
    const uint16_t* corr = key ? kv.k_sp_corr : kv.v_sp_corr;
    if (corr) return half_value(corr[ix.sp(b, h) + e]);
    return val(e) - deq(t, d) - lowrank(t, d);
  }
  double buf(long long i, int d) const { return half_value((key ? kv.k_buf : kv.v_buf)[ix.buf(b, h, i) + d]); }
};

}  // namespace

void outlier_corrections(const CompressedKV& kv, const int32_t* dst_row, const int32_t* dst_tile, int n, int ntiles, double* k_corr,
                         double* v_corr) {
  const char* who = "outlier_corrections";
  check_layout(who, kv);
  if (n < 0 || ntiles < 0) fail(who, "negative n or ntiles");
  if (kv.sparse_cap <= 0) fail(who, "the layout has no sparse arrays (sparse_cap 0)");
  for (int i = 0; i < n; ++i)
    for (int h = 0; h < kv.nkv; ++h)
      for (long long tile = dst_tile[i]; tile < static_cast<long long>(dst_tile[i]) + ntiles; ++tile) {
        const int b = dst_row[i];
        if (b < 0 || b >= kv.B || tile < 0 || tile >= kv.tile_cap) continue;  // as the kernel: skipped
        for (bool key : {true, false}) {
          const Side s{kv, key, b, h};
          const auto [e0, e1] = s.entries(tile);
          double* corr = (key ? k_corr : v_corr) + s.ix.sp(b, h);
          for (long long e = e0; e < e1; ++e) {
            const int p = s.pos(e), lt = p / kv.hd, d = p % kv.hd;
            if (lt >= kv.group) {
              corr[e] = 0;
              continue;
            }
            const long long t = tile * kv.group + lt, l = s.lr(tile);
            corr[e] = kv.rank > 0 && (l < 0 || l >= kv.lr_cap) ? NAN : s.val(e) - s.deq(t, d) - s.lowrank(t, d);
          }
        }
      }
}

void reconstruct_row(const CompressedKV& kv, int b, double* k_out, double* v_out) {
  const char* who = "reconstruct_row";
  check_layout(who, kv);
  if (b < 0 || b >= kv.B) fail(who, "row " + std::to_string(b) + " outside the layout");
  const RowLen len = row_lengths(who, kv, b);
  const long long S = len.comp + len.buf;
  const int hd = kv.hd, G = kv.group;
  for (int h = 0; h < kv.nkv; ++h)
    for (bool key : {true, false}) {
      const Side s{kv, key, b, h};
      double* o = (key ? k_out : v_out) + static_cast<size_t>(h) * S * hd;
      for (long long t = 0; t < len.comp; ++t)
        for (int d = 0; d < hd; ++d) o[t * hd + d] = s.deq(t, d) + s.lowrank(t, d);
      for (long long j = 0; j < len.comp / G; ++j) {
        const auto [e0, e1] = s.entries(j);
        for (long long e = e0; e < e1; ++e) {
          const int p = s.pos(e);
          if (p >= G * hd) fail(who, "sparse position " + std::to_string(p) + " outside its tile");
          o[(j * G + p / hd) * hd + p % hd] = s.val(e);
        }
      }
      for (long long i = 0; i < len.buf; ++i)
        for (int d = 0; d < hd; ++d) o[(len.comp + i) * hd + d] = s.buf(i, d);
    }
}

void compressed_attention(const double* q, const CompressedKV& kv, double* out, int nh, double scale) {
  const char* who = "compressed_attention";
  check_layout(who, kv);
  if (nh <= 0 || nh % kv.nkv != 0) fail(who, "nh " + std::to_string(nh) + " is not a multiple of nkv " + std::to_string(kv.nkv));
  const int hd = kv.hd, G = kv.group, R = kv.rank, group = nh / kv.nkv;
  std::vector<double> s(static_cast<size_t>(std::max(G, kv.buf_cap))), acc(static_cast<size_t>(hd)), qb(8), u(8);
  for (int b = 0; b < kv.B; ++b) {
    const RowLen len = row_lengths(who, kv, b);
    for (int qh = 0; qh < nh; ++qh) {
      const int h = qh / group;
      const double* qv = q + (static_cast<size_t>(b) * nh + qh) * hd;
      const Side K{kv, true, b, h}, V{kv, false, b, h};
      double m = -std::numeric_limits<double>::infinity(), l = 0.0;
      std::fill(acc.begin(), acc.end(), 0.0);
      // Folds scores s[0..n) (already filled) into the running softmax; returns the rescaled p in s.
      auto fold = [&](int n) {
        double mt = m;
        for (int t = 0; t < n; ++t) mt = std::max(mt, s[t]);
        const double corr = std::exp(m - mt);  // m == -inf: 0, and acc / l are 0 anyway
        for (double& a : acc) a *= corr;
        l *= corr;
        m = mt;
        for (int t = 0; t < n; ++t) l += (s[t] = std::exp(s[t] - m));
      };
      for (long long j = 0; j < len.comp / G; ++j) {
        const long long t0 = j * G, lb = K.lr(j);
        const auto [ke0, ke1] = K.entries(j);
        const auto [ve0, ve1] = V.entries(j);
        for (int r = 0; r < R; ++r) {  // q·B_r
          qb[r] = 0;
          for (int d = 0; d < hd; ++d) qb[r] += qv[d] * K.bf(lb, r, d);
        }
        for (int t = 0; t < G; ++t) {
          double dot = 0;
          for (int d = 0; d < hd; ++d) dot += qv[d] * K.deq(t0 + t, d);
          for (int r = 0; r < R; ++r) dot += qb[r] * K.a(t0 + t, r);
          s[t] = dot;
        }
        for (long long e = ke0; e < ke1; ++e) {
          const int p = K.pos(e), t = p / hd, d = p % hd;
          s[t] += qv[d] * K.delta(e, t0 + t, d);
        }
        for (int t = 0; t < G; ++t) s[t] *= scale;
        fold(G);
        for (int t = 0; t < G; ++t)
          for (int d = 0; d < hd; ++d) acc[d] += s[t] * V.deq(t0 + t, d);
        for (int r = 0; r < R; ++r) {  // (sum_t p_t A_t)·B
          u[r] = 0;
          for (int t = 0; t < G; ++t) u[r] += s[t] * V.a(t0 + t, r);
          for (int d = 0; d < hd; ++d) acc[d] += u[r] * V.bf(lb, r, d);
        }
        for (long long e = ve0; e < ve1; ++e) {
          const int p = V.pos(e), t = p / hd, d = p % hd;
          acc[d] += s[t] * V.delta(e, t0 + t, d);
        }
      }
      if (len.buf > 0) {
        for (long long i = 0; i < len.buf; ++i) {
          double dot = 0;
          for (int d = 0; d < hd; ++d) dot += qv[d] * K.buf(i, d);
          s[i] = dot * scale;
        }
        fold(static_cast<int>(len.buf));
        for (long long i = 0; i < len.buf; ++i)
          for (int d = 0; d < hd; ++d) acc[d] += s[i] * V.buf(i, d);
      }
      double* o = out + (static_cast<size_t>(b) * nh + qh) * hd;
      for (int d = 0; d < hd; ++d) o[d] = acc[d] / l;
    }
  }
}

namespace {
void check_small_dense(const char* who, int n, int w) {
  if (n < 0 || w < 1 || w > kMaxSmallDense)
    throw std::runtime_error(std::string("gear::kernels::ref::") + who + ": invalid sizes n=" + std::to_string(n) +
                             " w=" + std::to_string(w));
}
}  // namespace

void cholesky_orthonormalizer(double* g, int n, int w, double* w_out) {
  check_small_dense("cholesky_orthonormalizer", n, w);
  const long long ww = static_cast<long long>(w) * w;
  for (int i = 0; i < n; ++i) dense::cholesky_orthonormalizer(g + i * ww, w, w_out + i * ww);
}

void symmetric_eigen(double* a, int n, int w, double* evals, double* evecs) {
  check_small_dense("symmetric_eigen", n, w);
  const long long ww = static_cast<long long>(w) * w;
  for (int i = 0; i < n; ++i) dense::symmetric_eigen(a + i * ww, w, evals + static_cast<long long>(i) * w, evecs + i * ww);
}

void uniform_start(const unsigned long long* seeds, int rows, long long per_row, float* out) {
  if (rows < 0 || per_row < 0) throw std::runtime_error("gear::kernels::ref::uniform_start: invalid sizes");
  for (int r = 0; r < rows; ++r)
    for (long long i = 0; i < per_row; ++i) out[r * per_row + i] = dense::uniform01(seeds[r], static_cast<unsigned long long>(i));
}

void orthonormalize(const double* x, double* y, int n, long long m, int w) {
  check_small_dense("orthonormalize", n, w);
  std::vector<double> g(static_cast<size_t>(w) * w), W(g.size()), row(static_cast<size_t>(w));
  for (int b = 0; b < n; ++b) {
    const double* src = x + b * m * w;
    double* dst = y + b * m * w;
    for (int pass = 0; pass < 2; ++pass) {
      const double* in = pass == 0 ? src : dst;
      for (int i = 0; i < w; ++i)
        for (int j = 0; j <= i; ++j) {
          double s = 0;
          for (long long t = 0; t < m; ++t) s += in[t * w + i] * in[t * w + j];
          g[static_cast<size_t>(i) * w + j] = s;
        }
      dense::cholesky_orthonormalizer(g.data(), w, W.data());
      for (long long t = 0; t < m; ++t) {
        for (int k = 0; k < w; ++k) row[size_t(k)] = in[t * w + k];
        for (int c = 0; c < w; ++c) {
          double acc = 0;
          for (int k = 0; k <= c; ++k) acc += row[size_t(k)] * W[static_cast<size_t>(k) * w + c];
          dst[t * w + c] = acc;
        }
      }
    }
  }
}

}  // namespace gear::kernels::ref
