// Small device results read by the host without stalling the stream: the copy is queued behind the work that
// produces the values, and the host waits only when it asks for them (at once if the GPU is already past them).
// GearCudaCache reads its outlier pools' overflow flags this way: the block's compression no longer waits for the
// GPU to drain in the middle of a decode step.
#include "kernels/dtype.cuh"
#include "kernels/kernels.h"

namespace gear::kernels {

struct AsyncRead {
  int32_t* host = nullptr;  // pinned, so the copy is asynchronous
  cudaEvent_t done = nullptr;
  int n = 0;
};

namespace {
void check(const char* who, cudaError_t e) {
  if (e != cudaSuccess) detail::fail(who, std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e));
}
}  // namespace

AsyncRead* async_read_create(int n) {
  if (n <= 0) detail::fail("async_read_create", "n must be positive, got " + std::to_string(n));
  auto* r = new AsyncRead;
  r->n = n;
  const cudaError_t a = cudaMallocHost(reinterpret_cast<void**>(&r->host), sizeof(int32_t) * static_cast<size_t>(n));
  const cudaError_t b = a == cudaSuccess ? cudaEventCreateWithFlags(&r->done, cudaEventDisableTiming) : cudaSuccess;
  if (a != cudaSuccess || b != cudaSuccess) {
    async_read_free(r);
    check("async_read_create", a != cudaSuccess ? a : b);
  }
  for (int i = 0; i < n; ++i) r->host[i] = 0;
  return r;
}

void async_read_start(AsyncRead* r, const int32_t* device, void* stream) {
  if (!r || !device) detail::fail("async_read_start", "null pointer");
  const cudaStream_t s = detail::as_stream(stream);
  check("async_read_start", cudaMemcpyAsync(r->host, device, sizeof(int32_t) * static_cast<size_t>(r->n), cudaMemcpyDeviceToHost, s));
  check("async_read_start", cudaEventRecord(r->done, s));
}

const int32_t* async_read_wait(AsyncRead* r) {
  if (!r) detail::fail("async_read_wait", "null pointer");
  check("async_read_wait", cudaEventSynchronize(r->done));
  return r->host;
}

void async_read_free(AsyncRead* r) {
  if (!r) return;
  if (r->done) cudaEventDestroy(r->done);
  if (r->host) cudaFreeHost(r->host);
  delete r;
}

}  // namespace gear::kernels
