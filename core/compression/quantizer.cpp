#include "core/compression/quantizer.h"

#include <ATen/ATen.h>

#include <string>

#include "core/compression/bitpack.h"
#include "core/util/error.h"

namespace gear {
namespace {

std::string str(int64_t v) { return std::to_string(v); }

void require_bits(int bits) {
  require(bits == 2 || bits == 3 || bits == 4 || bits == 8,
          "quantizer: bits must be 2, 3, 4 or 8, got " + str(bits));
}

// Rounds float32 values to fp16 in a chosen direction (down: largest fp16 <= v; up: smallest fp16
// >= v). Rounding to nearest and, where that went the wrong way, stepping one fp16 ulp by editing
// the bit pattern (half.nextafter is not implemented on every backend/version). As int16, the
// pattern of a positive value grows away from zero and that of a negative value shrinks toward
// -32768 (= -0.0); -32767 is -2^-24 and 1 is +2^-24.
at::Tensor fp16_directed(const at::Tensor& v, bool up) {
  const at::Tensor h = v.to(at::kHalf);
  const at::Tensor b = h.view(at::kShort).to(at::kInt);
  at::Tensor stepped;
  if (up) {
    stepped = at::where(b >= 0, b + 1, at::where(b == -32768, at::ones_like(b), b - 1));
  } else {
    stepped = at::where(b > 0, b - 1, at::where(b == 0, at::full_like(b, -32767), b + 1));
  }
  const at::Tensor wrong = up ? h.to(at::kFloat) < v : h.to(at::kFloat) > v;
  return at::where(wrong, stepped.to(at::kShort).view(at::kHalf), h);
}

constexpr double kMinHalfStep = 5.9604644775390625e-08;  // 2^-24

int64_t levels(int bits) { return (int64_t(1) << bits) - 1; }

void check_group(int64_t group, int64_t cols, const char* what) {
  require(group >= 0, "quantizer: group size must be >= 0, got " + str(group));
  require(group == 0 || cols % group == 0, "quantizer: group size " + str(group) + " does not divide the " +
                                               what + " of " + str(cols) + " entries");
}

}  // namespace

const char* axis_name(QuantAxis a) {
  switch (a) {
    case QuantAxis::Tensor: return "tensor";
    case QuantAxis::Head: return "head";
    case QuantAxis::Token: return "token";
    case QuantAxis::Channel: return "channel";
  }
  return "?";
}

int64_t matrix_cols(QuantAxis axis, int64_t nkv, int64_t T, int64_t hd) {
  switch (axis) {
    case QuantAxis::Tensor: return nkv * T * hd;
    case QuantAxis::Head: return T * hd;
    case QuantAxis::Token: return nkv * hd;
    case QuantAxis::Channel: return T;
  }
  fail("quantizer: unknown axis");
}

at::Tensor to_matrix(const at::Tensor& block, QuantAxis axis) {
  require(block.dim() == 3, "quantizer: block must be [n_kv_heads, T, hd], got " + str(block.dim()) + " dims");
  const int64_t nkv = block.size(0), T = block.size(1), hd = block.size(2);
  switch (axis) {
    case QuantAxis::Tensor: return block.reshape({1, nkv * T * hd}).contiguous();
    case QuantAxis::Head: return block.reshape({nkv, T * hd}).contiguous();
    case QuantAxis::Token: return block.permute({1, 0, 2}).reshape({T, nkv * hd}).contiguous();
    case QuantAxis::Channel: return block.permute({0, 2, 1}).reshape({nkv * hd, T}).contiguous();
  }
  fail("quantizer: unknown axis");
}

at::Tensor from_matrix(const at::Tensor& m, QuantAxis axis, int64_t nkv, int64_t T, int64_t hd) {
  require(m.numel() == nkv * T * hd, "quantizer: matrix of " + str(m.numel()) + " entries is not a block [" +
                                         str(nkv) + ", " + str(T) + ", " + str(hd) + "]");
  switch (axis) {
    case QuantAxis::Tensor:
    case QuantAxis::Head: return m.reshape({nkv, T, hd}).contiguous();
    case QuantAxis::Token: return m.reshape({T, nkv, hd}).permute({1, 0, 2}).contiguous();
    case QuantAxis::Channel: return m.reshape({nkv, hd, T}).permute({0, 2, 1}).contiguous();
  }
  fail("quantizer: unknown axis");
}

int64_t QuantizedMatrix::bytes() const {
  return codes.numel() * codes.element_size() + scale.numel() * scale.element_size() +
         zero.numel() * zero.element_size();
}

QuantizedMatrix quantize_matrix(const at::Tensor& m, int bits, int64_t group) {
  require_bits(bits);
  require(m.dim() == 2, "quantizer: expected a [rows, cols] matrix, got " + str(m.dim()) + " dims");
  require(m.size(1) > 0, "quantizer: matrix has no columns");
  check_group(group, m.size(1), "row");
  QuantizedMatrix q;
  q.bits = bits;
  q.rows = m.size(0);
  q.cols = m.size(1);
  q.group = group == 0 ? q.cols : group;
  const at::Tensor x = m.to(at::kFloat).reshape({q.rows, q.cols / q.group, q.group});
  // Zero down and scale up to fp16 so the stored grid still covers [min, max] of every group.
  q.zero = fp16_directed(x.amin(-1), /*up=*/false);
  const at::Tensor z = q.zero.to(at::kFloat);
  // A constant group has span 0: any positive step reproduces it (code 0), but 0 would give NaN,
  // so the step is at least the smallest fp16 subnormal, 2^-24.
  // The divisor is a tensor on x's device, not a scalar: ATen on CUDA turns a division by a scalar into a product
  // with its float32 reciprocal, which moves a step by an ulp and, in rare groups, its fp16 scale by one step (so a
  // KCVT key channel over a whole block); as a tensor both devices and the kernels divide exactly (IEEE).
  const at::Tensor divisor = at::full({}, double(levels(bits)), x.options());
  const at::Tensor step = at::clamp_min((x.amax(-1) - z) / divisor, kMinHalfStep);
  q.scale = fp16_directed(step, /*up=*/true);
  const at::Tensor s = q.scale.to(at::kFloat).unsqueeze(-1);
  const at::Tensor code = at::round((x - z.unsqueeze(-1)) / s).clamp(0, double(levels(bits)));
  q.codes = pack_codes(code.to(at::kByte), bits);
  return q;
}

at::Tensor dequantize_matrix(const QuantizedMatrix& q) {
  const at::Tensor code = unpack_codes(q.codes, q.rows * q.cols, q.bits).to(at::kFloat);
  const at::Tensor x = code.view({q.rows, q.cols / q.group, q.group}) * q.scale.to(at::kFloat).unsqueeze(-1) +
                       q.zero.to(at::kFloat).unsqueeze(-1);
  return x.view({q.rows, q.cols});
}

at::Tensor quant_step(const QuantizedMatrix& q) { return q.scale.to(at::kFloat); }

void validate(const QuantSpec& spec, int64_t nkv, int64_t T, int64_t hd) {
  require_bits(spec.bits);
  require(nkv > 0 && T > 0 && hd > 0, "quantizer: block [" + str(nkv) + ", " + str(T) + ", " + str(hd) +
                                          "] has an empty dimension");
  const std::string axis = std::string(axis_name(spec.axis)) + " axis";
  check_group(spec.group, matrix_cols(spec.axis, nkv, T, hd), axis.c_str());
}

QuantizedBlock quantize_block(const at::Tensor& block, const QuantSpec& spec) {
  require(block.dim() == 3, "quantizer: block must be [n_kv_heads, T, hd], got " + str(block.dim()) + " dims");
  QuantizedBlock q;
  q.spec = spec;
  q.nkv = block.size(0);
  q.T = block.size(1);
  q.hd = block.size(2);
  validate(spec, q.nkv, q.T, q.hd);
  q.m = quantize_matrix(to_matrix(block, spec.axis), spec.bits, spec.group);
  return q;
}

at::Tensor dequantize_block(const QuantizedBlock& q) {
  return from_matrix(dequantize_matrix(q.m), q.spec.axis, q.nkv, q.T, q.hd);
}

int64_t quantized_bytes(const QuantSpec& spec, int64_t nkv, int64_t T, int64_t hd) {
  validate(spec, nkv, T, hd);
  const int64_t cols = matrix_cols(spec.axis, nkv, T, hd), rows = nkv * T * hd / cols;
  const int64_t groups = rows * (cols / (spec.group == 0 ? cols : spec.group));
  return packed_bytes(rows * cols, spec.bits) + groups * 2 /*scale*/ + groups * 2 /*zero*/;
}

}  // namespace gear
