// RoPE on q and k of fused qkv rows, plus the append of k and v to the caches (decode); RoPE on a prompt's rows
// (prefill). One thread per pair, the same arithmetic in both.
#include "kernels/dtype.cuh"

#include <cmath>

namespace gear::kernels {
namespace {
using namespace detail;

// grid (ceil((nh + 2*nkv) * hd/2 / blockDim.x), B). Thread t of row b handles pair t % (hd/2) of head
// t / (hd/2): q heads rotate into q_out, k heads rotate into k_cache, v heads copy two adjacent
// elements into v_cache.
template <typename T, bool HalfSplit>
__global__ void __launch_bounds__(256) rope_qkv_append_kernel(const T* __restrict__ qkv, const int64_t* __restrict__ positions,
                                                              const float* __restrict__ cos, const float* __restrict__ sin,
                                                              T* __restrict__ q_out, T* __restrict__ k_cache, T* __restrict__ v_cache,
                                                              int nh, int nkv, int hd, long long cap,
                                                              const int32_t* __restrict__ slots, long long table_rows) {
  const int half = hd / 2;
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= (nh + 2 * nkv) * half) return;
  const int b = blockIdx.y;
  const int head = t / half, i = t - head * half;
  const long long pos = positions[b];
  // The cache row written: the position itself, or the row's slot (e.g. a streaming buffer's fill level).
  const long long at = slots ? slots[b] : pos;
  const bool valid = pos >= 0 && pos < (slots ? table_rows : cap) && at >= 0 && at < cap;
  const T* src = qkv + (static_cast<size_t>(b) * (nh + 2 * nkv) + head) * hd;

  if (head >= nh + nkv) {  // v: raw copy of elements 2i, 2i+1
    if (!valid) return;
    T* dst = v_cache + ((static_cast<size_t>(b) * nkv + (head - nh - nkv)) * cap + at) * hd;
    dst[2 * i] = src[2 * i];
    dst[2 * i + 1] = src[2 * i + 1];
    return;
  }
  const int ia = HalfSplit ? i : 2 * i;
  const int ib = HalfSplit ? i + half : 2 * i + 1;
  T* dst;
  if (head < nh) {
    dst = q_out + (static_cast<size_t>(b) * nh + head) * hd;
    if (!valid) {  // a caller bug: make it visible downstream
      dst[ia] = dst[ib] = from_f<T>(NAN);
      return;
    }
  } else {
    if (!valid) return;
    dst = k_cache + ((static_cast<size_t>(b) * nkv + (head - nh)) * cap + at) * hd;
  }
  const float a = to_f(src[ia]), c = to_f(src[ib]);
  const float co = __ldg(cos + pos * half + i), si = __ldg(sin + pos * half + i);
  dst[ia] = from_f<T>(fmaf(a, co, -c * si));
  dst[ib] = from_f<T>(fmaf(a, si, c * co));
}

// grid (T, ceil(H * hd/2 / blockDim.x)): thread t of row blockIdx.x rotates pair t % (hd/2) of head t / (hd/2).
template <typename T, bool HalfSplit>
__global__ void __launch_bounds__(128) rope_rows_kernel(const T* __restrict__ x, long long x_row, T* __restrict__ out, int H, int hd,
                                                        const float* __restrict__ cos, const float* __restrict__ sin) {
  const int half = hd / 2;
  const int t = blockIdx.y * blockDim.x + threadIdx.x;
  if (t >= H * half) return;
  const long long row = blockIdx.x;
  const int head = t / half, i = t - head * half;
  const int ia = HalfSplit ? i : 2 * i;
  const int ib = HalfSplit ? i + half : 2 * i + 1;
  const T* src = x + row * x_row + static_cast<size_t>(head) * hd;
  T* dst = out + (static_cast<size_t>(row) * H + head) * hd;
  const float a = to_f(src[ia]), c = to_f(src[ib]);
  const float co = __ldg(cos + row * half + i), si = __ldg(sin + row * half + i);
  dst[ia] = from_f<T>(fmaf(a, co, -c * si));  // as rope_qkv_append_kernel
  dst[ib] = from_f<T>(fmaf(a, si, c * co));
}

}  // namespace

void rope_rows(DType t, const void* x, long long x_row, void* out, int T, int H, int hd, const float* cos, const float* sin,
               bool half_split, void* stream) {
  if (T <= 0 || H <= 0 || hd <= 0 || hd % 2 != 0 || x_row < static_cast<long long>(H) * hd)
    fail("rope_rows", "invalid shape T=" + std::to_string(T) + " H=" + std::to_string(H) + " hd=" + std::to_string(hd) +
                          " row stride " + std::to_string(x_row));
  if (!x || !out || !cos || !sin) fail("rope_rows", "null pointer");
  constexpr int threads = 128;
  const long long pairs = static_cast<long long>(H) * (hd / 2);
  if (pairs > 65535LL * threads) fail("rope_rows", "H * hd too large");
  const dim3 grid(static_cast<unsigned>(T), static_cast<unsigned>((pairs + threads - 1) / threads));
  dispatch(t, [&](auto tag) {
    using TT = typename decltype(tag)::type;
    auto launch = [&](auto kernel) {
      kernel<<<grid, threads, 0, as_stream(stream)>>>(static_cast<const TT*>(x), x_row, static_cast<TT*>(out), H, hd, cos, sin);
    };
    if (half_split)
      launch(rope_rows_kernel<TT, true>);
    else
      launch(rope_rows_kernel<TT, false>);
  });
  check_launch("rope_rows");
}

void rope_qkv_append(DType t, const void* qkv, const int64_t* positions, const float* cos, const float* sin,
                     void* q_out, void* k_cache, void* v_cache, int B, int nh, int nkv, int hd, long long cap,
                     bool half_split, void* stream, const int32_t* slots, long long table_rows) {
  if (slots && table_rows <= 0) fail("rope_qkv_append", "slots need the RoPE tables' row count");
  if (B < 0 || nh <= 0 || nkv <= 0 || hd <= 0 || hd % 2 != 0 || cap <= 0)
    fail("rope_qkv_append", "invalid shape B=" + std::to_string(B) + " nh=" + std::to_string(nh) + " nkv=" +
                                std::to_string(nkv) + " hd=" + std::to_string(hd) + " cap=" + std::to_string(cap));
  if (B == 0) return;
  if (B > 65535) fail("rope_qkv_append", "B=" + std::to_string(B) + " exceeds 65535");
  if (static_cast<long long>(nh + 2LL * nkv) * hd > 0x7fffffffLL) fail("rope_qkv_append", "row too long");
  if (!qkv || !positions || !cos || !sin || !q_out || !k_cache || !v_cache) fail("rope_qkv_append", "null pointer");
  const int pairs = (nh + 2 * nkv) * (hd / 2);
  constexpr int threads = 128;
  const dim3 grid(static_cast<unsigned>((pairs + threads - 1) / threads), static_cast<unsigned>(B));
  dispatch(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    auto launch = [&](auto kernel) {
      kernel<<<grid, threads, 0, as_stream(stream)>>>(static_cast<const T*>(qkv), positions, cos, sin, static_cast<T*>(q_out),
                                                       static_cast<T*>(k_cache), static_cast<T*>(v_cache), nh, nkv, hd, cap,
                                                       slots, table_rows);
    };
    if (half_split)
      launch(rope_qkv_append_kernel<T, true>);
    else
      launch(rope_qkv_append_kernel<T, false>);
  });
  check_launch("rope_qkv_append");
}

}  // namespace gear::kernels
