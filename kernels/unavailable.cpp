// The kernels of kernels.h in a build without CUDA: every entry point throws, so that core/ code which
// calls the kernels (behind a device check) still compiles and links in the CPU build, and a call that
// slips through fails with a clear message instead of a link error or a crash. cuda_available() is
// simply false. Compiled into gearlab_kernels_unavailable only when gearlab_kernels (the .cu files) is
// not built; never together with it.
#include <stdexcept>
#include <string>

#include "kernels/kernels.h"

namespace gear::kernels {
namespace {

[[noreturn]] void unavailable(const char* function) {
  throw std::runtime_error(std::string("gearlab was built without CUDA: ") + function);
}

}  // namespace

void rmsnorm(DType, const void*, const void*, void*, int, int, float, void*) { unavailable("rmsnorm"); }

void silu_mul(DType, const void*, void*, int, int, void*) { unavailable("silu_mul"); }

void rope_rows(DType, const void*, long long, void*, int, int, int, const float*, const float*, bool, void*) { unavailable("rope_rows"); }
void rope_qkv_append(DType, const void*, const int64_t*, const float*, const float*, void*, void*, void*, int, int, int, int,
                     long long, bool, void*, const int32_t*, long long) {
  unavailable("rope_qkv_append");
}

std::size_t decode_attention_workspace_bytes(int, int, int, long long) { unavailable("decode_attention_workspace_bytes"); }

void decode_attention(DType, const void*, const void*, const void*, const int64_t*, void*, int, int, int, int, long long,
                      long long, float, void*, std::size_t, void*) {
  unavailable("decode_attention");
}

void quantize_keys(DType, const void*, long long, int, int, const CompressedKV&, const int32_t*, const int32_t*, void*, bool) {
  unavailable("quantize_keys");
}

void quantize_values(DType, const void*, long long, int, int, const CompressedKV&, const int32_t*, const int32_t*, void*) {
  unavailable("quantize_values");
}

void dequantize_keys(const CompressedKV&, DType, void*, long long, int, int, const int32_t*, const int32_t*, void*) {
  unavailable("dequantize_keys");
}

void dequantize_values(const CompressedKV&, DType, void*, long long, int, int, const int32_t*, const int32_t*, void*) {
  unavailable("dequantize_values");
}

void extract_outliers(DType, const void*, long long, int, int, int, int, bool, int, uint16_t*, int32_t*, float*, void*) {
  unavailable("extract_outliers");
}

void sparse_to_tiles(const CompressedKV&, bool, const uint16_t*, const int32_t*, int, int, int, const int32_t*,
                     const int32_t*, int32_t*, void*) {
  unavailable("sparse_to_tiles");
}

void outlier_corrections(const CompressedKV&, const int32_t*, const int32_t*, int, int, void*) { unavailable("outlier_corrections"); }
void scatter_outliers(const uint16_t*, const int32_t*, int, int, int, int, bool, int, float*, void*) { unavailable("scatter_outliers"); }

void profiler_range_begin(const char*) { unavailable("profiler_range_begin"); }
void profiler_range_end() { unavailable("profiler_range_end"); }
AsyncRead* async_read_create(int) { unavailable("async_read_create"); }
void async_read_start(AsyncRead*, const int32_t*, void*) { unavailable("async_read_start"); }
const int32_t* async_read_wait(AsyncRead*) { unavailable("async_read_wait"); }
void async_read_free(AsyncRead*) {}

std::size_t compressed_attention_workspace_bytes(int, int, int, long long, bool) {
  unavailable("compressed_attention_workspace_bytes");
}

void compressed_attention(DType, const void*, const CompressedKV&, void*, int, long long, float, void*, std::size_t,
                          void*) {
  unavailable("compressed_attention");
}

void set_compressed_attention_kernel(AttentionKernel) { unavailable("set_compressed_attention_kernel"); }
AttentionKernel compressed_attention_kernel() { unavailable("compressed_attention_kernel"); }
void set_attention_split_tokens(int) { unavailable("set_attention_split_tokens"); }
void set_key_pass_tiles_per_warp(int) { unavailable("set_key_pass_tiles_per_warp"); }
bool tensor_core_attention_supported(const CompressedKV&) { unavailable("tensor_core_attention_supported"); }
bool compressed_attention_uses_tensor_cores(const CompressedKV&) { unavailable("compressed_attention_uses_tensor_cores"); }
bool compressed_attention_uses_outlier_passes(const CompressedKV&) { unavailable("compressed_attention_uses_outlier_passes"); }
bool lean_attention_supported(const CompressedKV&, int) { unavailable("lean_attention_supported"); }
bool compressed_attention_uses_lean(const CompressedKV&, int) { unavailable("compressed_attention_uses_lean"); }
bool compressed_attention_outliers_inside(const CompressedKV&, int) { unavailable("compressed_attention_outliers_inside"); }

void cholesky_orthonormalizer(double*, int, int, float*, void*) { unavailable("cholesky_orthonormalizer"); }

void symmetric_eigen(double*, int, int, double*, double*, void*) { unavailable("symmetric_eigen"); }

void uniform_start(const unsigned long long*, int, long long, float*, void*) { unavailable("uniform_start"); }

void orthonormalize(const float*, float*, int, long long, int, void*) { unavailable("orthonormalize"); }

bool fused_power_iteration_fits(long long, long long, int) { unavailable("fused_power_iteration_fits"); }

void fused_power_iteration(const float*, const float*, int, int, int, int, int, int, void*, void*, void*) {
  unavailable("fused_power_iteration");
}

bool cuda_available() { return false; }

}  // namespace gear::kernels
