// Float64 CPU references of the CUDA kernels (see reference.h).
#include "kernels/reference.h"

#include <algorithm>
#include <cmath>
#include <limits>
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
                     bool half_split) {
  if (B < 0 || nh <= 0 || nkv <= 0 || hd <= 0 || hd % 2 != 0 || cap <= 0)
    fail("rope_qkv_append", "bad shape B=" + std::to_string(B) + " nh=" + std::to_string(nh) + " nkv=" +
                                std::to_string(nkv) + " hd=" + std::to_string(hd) + " cap=" + std::to_string(cap));
  const int half = hd / 2;
  const size_t row = static_cast<size_t>(nh + 2 * nkv) * hd;
  for (int b = 0; b < B; ++b) {
    const int64_t pos = positions[b];
    if (pos < 0 || pos >= cap)
      fail("rope_qkv_append", "position " + std::to_string(pos) + " of row " + std::to_string(b) + " outside [0, " +
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
      const size_t at = ((static_cast<size_t>(b) * nkv + h) * cap + pos) * hd;
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

}  // namespace gear::kernels::ref
