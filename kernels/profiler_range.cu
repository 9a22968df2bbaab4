// The profiler's capture range (cudaProfilerStart / cudaProfilerStop) inside an NVTX range of the caller's name, so
// that a program run under `ncu --profile-from-start off --nvtx --nvtx-include "NAME/"` profiles only what it
// brackets for NAME: gearlab bench brackets whole decode steps of each method (GEARLAB_PROFILE_STEPS,
// docs/bench.md), whose every kernel then comes back with its duration. NVTX 3 is header-only: without a tool
// attached its calls do nothing.
#include <cuda_profiler_api.h>
#include <nvtx3/nvToolsExt.h>

#include "kernels/dtype.cuh"
#include "kernels/kernels.h"

namespace gear::kernels {

namespace {
void check(const char* who, cudaError_t e) {
  if (e != cudaSuccess) detail::fail(who, std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e));
}
}  // namespace

void profiler_range_begin(const char* name) {
  nvtxRangePushA(name);
  check("profiler_range_begin", cudaProfilerStart());
}

void profiler_range_end() {
  const cudaError_t e = cudaProfilerStop();
  nvtxRangePop();
  check("profiler_range_end", e);
}

}  // namespace gear::kernels
