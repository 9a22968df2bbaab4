#pragma once
// GEARLAB_HOST_DEVICE: __host__ __device__ when nvcc compiles the including file, nothing for a plain C++ compiler,
// so that small index and bit helpers (code_bits.h, mma_map.h, small_dense.h) serve the kernels and their CPU tests alike.
#ifndef GEARLAB_HOST_DEVICE
#ifdef __CUDACC__
#define GEARLAB_HOST_DEVICE __host__ __device__
#else
#define GEARLAB_HOST_DEVICE
#endif
#endif
