#include "core/bench/device_memory.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#ifdef GEARLAB_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace gear::bench {

#ifdef GEARLAB_WITH_CUDA
namespace {

// The caching allocator refuses statistics requests ("Invalid device argument") until CUDA is
// initialized, which happens lazily at the first allocation: make one (portable across 1.13 and 2.x,
// whose lazy-init calls differ).
c10::DeviceIndex index_of(at::Device device) {
  (void)at::empty({1}, at::TensorOptions().device(device).dtype(at::kByte));
  return device.has_index() ? device.index() : c10::cuda::current_device();
}

}  // namespace

void reset_peak(at::Device device) {
  if (!device.is_cuda()) return;
  c10::cuda::device_synchronize();
  c10::cuda::CUDACachingAllocator::emptyCache();
  c10::cuda::CUDACachingAllocator::resetPeakStats(index_of(device));
}

int64_t peak_allocated(at::Device device) {
  if (!device.is_cuda()) return 0;
  c10::cuda::device_synchronize();
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index_of(device));
  return stats.allocated_bytes[0].peak;  // [0]: StatType::AGGREGATE (small + large pools)
}

void synchronize(at::Device device) {
  if (device.is_cuda()) c10::cuda::device_synchronize();
}

void trace_memory(at::Device device, const char* label, int layer) {
  static const bool on = [] {
    const char* v = std::getenv("GEARLAB_TRACE_MEMORY");
    return v && *v && std::string(v) != "0";
  }();
  if (!on || !device.is_cuda()) return;
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index_of(device));
  constexpr double kMiB = 1024.0 * 1024.0;
  std::fprintf(stderr, "memory %s (layer %d): allocated %.1f MiB, peak %.1f MiB\n", label, layer,
               double(stats.allocated_bytes[0].current) / kMiB, double(stats.allocated_bytes[0].peak) / kMiB);
}

#else

void reset_peak(at::Device) {}
int64_t peak_allocated(at::Device) { return 0; }
void synchronize(at::Device) {}
void trace_memory(at::Device, const char*, int) {}

#endif

bool is_out_of_memory(const std::exception& e) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e)) return true;
  return dynamic_cast<const c10::Error*>(&e) && std::string(e.what()).find("out of memory") != std::string::npos;
}

}  // namespace gear::bench
