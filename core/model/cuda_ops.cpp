#include "core/model/cuda_ops.h"

#include <ATen/ATen.h>

#include "core/util/error.h"

#ifdef GEARLAB_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAFunctions.h>

#include "kernels/kernels.h"
#endif

namespace gear::cuda_ops {

#ifdef GEARLAB_WITH_CUDA
namespace {

kernels::DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return kernels::DType::F32;
    case at::kHalf: return kernels::DType::F16;
    case at::kBFloat16: return kernels::DType::BF16;
    default: fail("cuda kernels: unsupported dtype " + std::string(c10::toString(t.scalar_type())));
  }
}

void* stream() { return static_cast<void*>(at::cuda::getCurrentCUDAStream().stream()); }

}  // namespace

bool applies(const at::Tensor& t) { return t.is_cuda(); }

void* current_stream() { return stream(); }

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor xc = x.contiguous();
  at::Tensor out = at::empty_like(xc);
  kernels::rmsnorm(dtype_of(xc), xc.data_ptr(), weight.data_ptr(), out.data_ptr(), int(xc.size(0)), int(xc.size(1)),
                   float(eps), stream());
  return out;
}

at::Tensor silu_mul(const at::Tensor& gate_up) {
  at::Tensor g = gate_up.contiguous();
  const int64_t hidden = g.size(1) / 2;
  at::Tensor out = at::empty({g.size(0), hidden}, g.options());
  kernels::silu_mul(dtype_of(g), g.data_ptr(), out.data_ptr(), int(g.size(0)), int(hidden), stream());
  return out;
}

at::Tensor rope_qkv_append(const at::Tensor& qkv, const at::Tensor& positions, const at::Tensor& cos,
                           const at::Tensor& sin, at::Tensor& k_cache, at::Tensor& v_cache, int n_heads,
                           int n_kv_heads, RopeLayout layout, const at::Tensor& slots) {
  at::Tensor in = qkv.contiguous();
  const int B = int(in.size(0)), hd = int(k_cache.size(3));
  at::Tensor q = at::empty({B, n_heads, hd}, in.options());
  kernels::rope_qkv_append(dtype_of(in), in.data_ptr(), positions.data_ptr<int64_t>(), cos.data_ptr<float>(),
                           sin.data_ptr<float>(), q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), B, n_heads,
                           n_kv_heads, hd, k_cache.size(2), layout == RopeLayout::HalfSplit, stream(),
                           slots.defined() ? slots.data_ptr<int32_t>() : nullptr, cos.size(0));
  return q;
}

at::Tensor rope_rows(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, RopeLayout layout) {
  if (x.dim() != 3 || x.size(0) == 0 || x.stride(2) != 1 || x.stride(1) != x.size(2)) return at::Tensor();
  const int64_t T = x.size(0), half = x.size(2) / 2;
  auto table = [&](const at::Tensor& c) {
    return c.scalar_type() == at::kFloat && c.device() == x.device() && c.numel() == T * half && c.is_contiguous();
  };
  if (x.size(2) % 2 != 0 || !table(cos) || !table(sin)) return at::Tensor();
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  kernels::rope_rows(dtype_of(x), x.data_ptr(), x.stride(0), out.data_ptr(), int(T), int(x.size(1)), int(x.size(2)), cos.data_ptr<float>(),
                     sin.data_ptr<float>(), layout == RopeLayout::HalfSplit, stream());
  return out;
}

bool decode_attention_supports(int64_t head_dim) { return head_dim == 64 || head_dim == 128; }

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                            const at::Tensor& positions, int64_t max_len, at::Tensor& workspace) {
  at::Tensor qc = q.contiguous();
  const int B = int(qc.size(0)), nh = int(qc.size(1)), hd = int(qc.size(2));
  const size_t need = kernels::decode_attention_workspace_bytes(B, nh, hd, max_len);
  if (!workspace.defined() || size_t(workspace.numel()) < need) {
    // Grow geometrically so a growing context reallocates O(log n) times, not every step.
    const int64_t bytes = std::max<int64_t>(int64_t(need), workspace.defined() ? 2 * workspace.numel() : 0);
    workspace = at::empty({std::max<int64_t>(bytes, 16)}, qc.options().dtype(at::kByte));
  }
  at::Tensor out = at::empty_like(qc);
  kernels::decode_attention(dtype_of(qc), qc.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(),
                            positions.data_ptr<int64_t>(), out.data_ptr(), B, nh, int(k_cache.size(1)), hd,
                            k_cache.size(2), max_len, float(1.0 / std::sqrt(double(hd))), workspace.data_ptr(),
                            size_t(workspace.numel()), stream());
  return out;
}

SyncCheck::SyncCheck() : previous_(int(c10::cuda::warning_state().get_sync_debug_mode())) {
  c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_ERROR);
}

SyncCheck::~SyncCheck() {
  c10::cuda::warning_state().set_sync_debug_mode(static_cast<c10::cuda::SyncDebugMode>(previous_));
}

#else  // CPU-only build: the fused path never applies.

SyncCheck::SyncCheck() = default;
SyncCheck::~SyncCheck() = default;

bool applies(const at::Tensor&) { return false; }
void* current_stream() { return nullptr; }
at::Tensor rope_rows(const at::Tensor&, const at::Tensor&, const at::Tensor&, RopeLayout) { return at::Tensor(); }
bool decode_attention_supports(int64_t) { return false; }
at::Tensor rms_norm(const at::Tensor&, const at::Tensor&, double) { fail("cuda kernels: not in this build"); }
at::Tensor silu_mul(const at::Tensor&) { fail("cuda kernels: not in this build"); }
at::Tensor rope_qkv_append(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&,
                           at::Tensor&, int, int, RopeLayout, const at::Tensor&) {
  fail("cuda kernels: not in this build");
}
at::Tensor decode_attention(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                            at::Tensor&) {
  fail("cuda kernels: not in this build");
}

#endif

}  // namespace gear::cuda_ops
