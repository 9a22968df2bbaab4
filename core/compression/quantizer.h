#pragma once
// GEAR's backbone quantizer (the D in D + L + S): asymmetric min/max uniform quantization of a K
// or V block, with the layout (which entries share a range) chosen by QuantAxis and optional
// grouping along each row. Codes are bit-packed (bitpack.h); scale and zero point are fp16.
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace gear {

// How a K or V block [n_kv_heads, T, hd] is laid out as a matrix whose ROWS are the vectors that
// share quantization ranges / outlier selection, and whose groups are `group` contiguous entries
// of a row:
//  Tensor : [1, nkv*T*hd]   (one range for the whole block)
//  Head   : [nkv, T*hd]     (one range per head)
//  Token  : [T, nkv*hd]     (per token across the whole hidden vector, all heads; value-style)
//  Channel: [nkv*hd, T]     (per channel across tokens; key-style, KIVI/KCVT keys)
enum class QuantAxis { Tensor, Head, Token, Channel };
const char* axis_name(QuantAxis a);  // "tensor", "head", "token", "channel"

struct QuantSpec {
  int bits = 4;
  QuantAxis axis = QuantAxis::Token;
  int64_t group = 0;  // entries per group along a row; 0 = the whole row
};

at::Tensor to_matrix(const at::Tensor& block, QuantAxis axis);  // [nkv,T,hd] -> matrix (contiguous)
at::Tensor from_matrix(const at::Tensor& m, QuantAxis axis, int64_t nkv, int64_t T, int64_t hd);  // inverse
int64_t matrix_cols(QuantAxis axis, int64_t nkv, int64_t T, int64_t hd);  // row length for that layout

// Asymmetric min/max quantization of a [rows, cols] float matrix in groups of g along each row
// (g divides cols). scale = (max - min) / (2^bits - 1), zero point = min; code = round((x - min)/scale).
// scale and zero are stored as fp16: the zero is rounded DOWN and the scale UP to the next fp16
// values, so every value of a group stays within [zero, zero + (2^b-1)*scale] and its error is
// <= scale/2 (+ float32 rounding); a constant group gets a tiny positive scale, never 0/NaN.
// Values must lie within the fp16 range (|x| <= 65504), as KV caches do.
struct QuantizedMatrix {
  int bits = 0;
  int64_t rows = 0, cols = 0, group = 0;
  at::Tensor codes;        // packed uint8 (bitpack.h), rows*cols codes in row-major order
  at::Tensor scale, zero;  // fp16 [rows, cols/group]
  int64_t bytes() const;   // exact: codes + scale + zero storage (numel*element_size)
};
QuantizedMatrix quantize_matrix(const at::Tensor& m, int bits, int64_t group);  // group 0 = cols
at::Tensor dequantize_matrix(const QuantizedMatrix& q);  // float32 [rows, cols], same device
// The step of each group as float32 [rows, cols/group] (what the error bound is relative to).
at::Tensor quant_step(const QuantizedMatrix& q);

// A whole K or V block: layout + quantized matrix.
struct QuantizedBlock {
  QuantSpec spec;
  int64_t nkv = 0, T = 0, hd = 0;
  QuantizedMatrix m;
  int64_t bytes() const { return m.bytes(); }
};

// Validates the spec against the block: bits in {2,3,4,8}; group >= 0 and dividing the row length
// for that axis; every dimension >= 1. Throws gear::Error naming the bad value.
void validate(const QuantSpec& spec, int64_t nkv, int64_t T, int64_t hd);
QuantizedBlock quantize_block(const at::Tensor& block, const QuantSpec& spec);  // block [nkv,T,hd] float
at::Tensor dequantize_block(const QuantizedBlock& q);                          // float32 [nkv,T,hd]
// Closed form of QuantizedBlock::bytes() without quantizing (for byte-accounting tests and planners).
int64_t quantized_bytes(const QuantSpec& spec, int64_t nkv, int64_t T, int64_t hd);

}  // namespace gear
