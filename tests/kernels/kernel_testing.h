#pragma once
// Helpers both kernel test files use: the kernels' dtypes as ATen types, and tensors as host doubles.
#include <ATen/ATen.h>

#include <vector>

#include "kernels/kernels.h"

#ifdef GEARLAB_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace gear::kernels::testing {

constexpr DType kAllTypes[] = {DType::F32, DType::F16, DType::BF16};

inline const char* name(DType t) { return dtype_name(t); }

inline at::ScalarType scalar_type(DType t) {
  switch (t) {
    case DType::F32: return at::kFloat;
    case DType::F16: return at::kHalf;
    case DType::BF16: return at::kBFloat16;
  }
  return at::kFloat;
}

// A tensor's values as doubles (any device, any dtype).
inline std::vector<double> host(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(at::kCPU).to(at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

#ifdef GEARLAB_WITH_CUDA
// The timing benches' clock: two CUDA events around a body that issues `iters` calls on stream st; microseconds
// per call.
class EventTimer {
 public:
  EventTimer() {
    cudaEventCreate(&e0_);
    cudaEventCreate(&e1_);
  }
  ~EventTimer() {
    cudaEventDestroy(e0_);
    cudaEventDestroy(e1_);
  }
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;
  template <typename Body> double us(cudaStream_t st, int iters, Body&& body) {
    cudaEventRecord(e0_, st);
    body();
    cudaEventRecord(e1_, st);
    cudaEventSynchronize(e1_);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0_, e1_);
    return 1000.0 * ms / iters;
  }

 private:
  cudaEvent_t e0_ = nullptr, e1_ = nullptr;
};

// The determinism tests' graph check: captures what issue(s) puts on stream s into a CUDA graph, launches it `launches`
// times and waits; the first CUDA error, or cudaSuccess (the caller then holds the results to a direct call's, bit for
// bit).
template <typename Issue> cudaError_t replay_in_graph(cudaStream_t s, Issue&& issue, int launches = 3) {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cudaError_t e = cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
  if (e != cudaSuccess) return e;
  issue(s);
  e = cudaStreamEndCapture(s, &graph);
  if (e == cudaSuccess) e = cudaGraphInstantiate(&exec, graph, 0);
  for (int i = 0; i < launches && e == cudaSuccess; ++i) e = cudaGraphLaunch(exec, s);
  if (e == cudaSuccess) e = cudaStreamSynchronize(s);
  if (exec) cudaGraphExecDestroy(exec);
  if (graph) cudaGraphDestroy(graph);
  return e;
}
#endif

}  // namespace gear::kernels::testing
