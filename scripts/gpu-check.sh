#!/usr/bin/env bash
# On a Linux machine with an NVIDIA GPU and a CUDA build of LibTorch (e.g. PyTorch's wheel):
# configure the `cuda` preset, build, run the whole suite on the GPU, then the decode benchmark.
# GEARLAB_SKIP_BENCH=1 skips the benchmarks; GEARLAB_CTEST_REGEX selects tests.
#   scripts/gpu-check.sh [OUTDIR]     (OUTDIR receives logs and bench JSON; default build/cuda/out)
# The environment (Debian packages from .data/debs, ../shared or .data/shared, LibTorch): scripts/gpu-env.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-build/cuda/out}"
mkdir -p "$out"
# shellcheck source=scripts/gpu-env.sh
source scripts/gpu-env.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
# GEARLAB_CMAKE_ARGS: more configure arguments, e.g. a quick check's "-DCMAKE_CUDA_ARCHITECTURES=90-real
# -DCMAKE_CUDA_FLAGS=--split-compile=0" (sm_90 only, nvcc's optimizer on every core: gear_attention.cu is the
# build's longest step).
# shellcheck disable=SC2086
cmake --preset cuda -DCMAKE_PREFIX_PATH="$torch_prefix$extra_prefix" -DGEARLAB_SHARED_DIR="$shared" \
  -DGEARLAB_FUZZ=OFF ${GEARLAB_CMAKE_ARGS:-} > "$out/configure.log" 2>&1 || { tail -40 "$out/configure.log"; exit 1; }
# GEARLAB_BUILD_TARGETS="a b" builds only those targets (a quick device check).
cmake --build --preset cuda -j "$(nproc)" ${GEARLAB_BUILD_TARGETS:+--target $GEARLAB_BUILD_TARGETS} > "$out/build.log" 2>&1 || { grep -E "error|Error" "$out/build.log" | head -40; exit 1; }
echo "== build ok"
set +e
# GEARLAB_CTEST_REGEX narrows the run (e.g. "CUDA|cuda|dtype" for the device tests only).
ctest --preset cuda -j 4 --output-on-failure ${GEARLAB_CTEST_REGEX:+-R "$GEARLAB_CTEST_REGEX"} > "$out/ctest.log" 2>&1
status=$?
set -e
tail -15 "$out/ctest.log"
[ "${GEARLAB_SKIP_BENCH:-0}" = 1 ] && exit $status
./build/cuda/tests/test_kernels "[.bench]" 2>&1 | grep -E "us|TB/s" | tee "$out/kernel_timings.txt" || true
./build/cuda/bench/bench_decode --model gen:llama2-7b --device cuda --dtype f16 \
  --batches 1,8,32 --out "$out/decode_llama2-7b_h100.json" 2>&1 | tee "$out/bench.log"
exit $status
