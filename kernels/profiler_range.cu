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

void profiler_range(bool on, const char* name) {
  if (on) nvtxRangePushA(name);
  const cudaError_t e = on ? cudaProfilerStart() : cudaProfilerStop();
  if (!on) nvtxRangePop();
  if (e != cudaSuccess) detail::fail("profiler_range", std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e));
}

}  // namespace gear::kernels
