// SwiGLU activation: out = round_T(silu(gate)) * up, elementwise, 16-byte vectors when the row allows.
#include "kernels/dtype.cuh"

namespace gear::kernels {
namespace {
using namespace detail;

__device__ __forceinline__ float silu(float g) { return g / (1.f + expf(-g)); }

template <typename T, bool Vec>
__global__ void __launch_bounds__(128) silu_mul_kernel(const T* __restrict__ gate_up, T* __restrict__ out,
                                                       long long rows, int hidden) {
  constexpr int N = Vec ? kVec<T> : 1;
  const long long per_row = hidden / N;
  const long long total = rows * per_row;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long r = i / per_row;
    const long long c = (i - r * per_row) * N;
    const T* g = gate_up + r * 2 * hidden + c;
    T* o = out + r * hidden + c;
    if constexpr (Vec) {
      float gf[N], uf[N];
      load_vec(g, gf);
      load_vec(g + hidden, uf);
#pragma unroll
      for (int j = 0; j < N; ++j) gf[j] = round_f<T>(silu(gf[j])) * uf[j];
      store_vec(o, gf);
    } else {
      *o = from_f<T>(round_f<T>(silu(to_f(g[0]))) * to_f(g[hidden]));
    }
  }
}

}  // namespace

void silu_mul(DType t, const void* gate_up, void* out, int rows, int hidden, void* stream) {
  if (rows < 0 || hidden <= 0)
    fail("silu_mul", "invalid shape rows=" + std::to_string(rows) + " hidden=" + std::to_string(hidden));
  if (rows == 0) return;
  if (!gate_up || !out) fail("silu_mul", "null pointer");
  dispatch(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int N = kVec<T>;
    const bool vec = hidden % N == 0 && aligned16(gate_up) && aligned16(out);
    const long long total = static_cast<long long>(rows) * (vec ? hidden / N : hidden);
    constexpr int threads = 128;  // small blocks: a decode row spreads over more SMs
    const long long blocks = ceil_div(total, threads) < 8192 ? ceil_div(total, threads) : 8192;
    if (vec)
      silu_mul_kernel<T, true><<<static_cast<unsigned>(blocks), threads, 0, as_stream(stream)>>>(
          static_cast<const T*>(gate_up), static_cast<T*>(out), rows, hidden);
    else
      silu_mul_kernel<T, false><<<static_cast<unsigned>(blocks), threads, 0, as_stream(stream)>>>(
          static_cast<const T*>(gate_up), static_cast<T*>(out), rows, hidden);
  });
  check_launch("silu_mul");
}

}  // namespace gear::kernels
