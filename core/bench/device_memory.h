#pragma once
// Peak device memory through the CUDA caching allocator, behind a tiny wrapper so the rest of the
// benchmark compiles unchanged on CPU-only builds and against both LibTorch 1.13 and 2.x (whose
// DeviceStats moved to c10::CachingDeviceAllocator but keep the same field names).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <exception>

namespace gear::bench {

// Waits for the device, returns cached blocks to the driver and restarts the peak counter, so the
// next peak_allocated() covers only what runs after this call. No-op on the CPU.
void reset_peak(at::Device device);
// Peak bytes held by tensors (allocated_bytes, aggregate pool) since reset_peak(); 0 on the CPU.
// Block sizes are rounded up to the allocator's 512-byte granularity, as in torch.cuda.max_memory_allocated.
int64_t peak_allocated(at::Device device);
// Waits for queued work (timing).
void synchronize(at::Device device);
// With GEARLAB_TRACE_MEMORY=1 in the environment: one line on stderr, "memory <label>: allocated A MiB, peak P
// MiB" (the caching allocator's current and peak tensor bytes, no sync), so a developer can see which phase of a
// prefill sets a budget's peak (the peak column also covers what ran in between, e.g. the MLP's chunks). Otherwise
// (and on the CPU) it costs one cached flag test.
void trace_memory(at::Device device, const char* label, int layer = -1);
// Whether `e` is a device out-of-memory error (c10::OutOfMemoryError, or a c10::Error saying so).
bool is_out_of_memory(const std::exception& e);

}  // namespace gear::bench
