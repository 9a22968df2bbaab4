#!/usr/bin/env bash
# On a Linux machine with an NVIDIA GPU and a CUDA build of LibTorch (e.g. PyTorch's wheel):
# configure the `cuda` preset, build, run the whole suite on the GPU, then the decode benchmark.
# GEARLAB_SKIP_BENCH=1 skips the benchmarks; GEARLAB_CTEST_REGEX selects tests.
#   scripts/gpu-check.sh [OUTDIR]     (OUTDIR receives logs and bench JSON; default build/cuda/out)
# Without system Catch2 / nlohmann-json / sentencepiece it unpacks the Debian packages kept in
# .data/debs (git-ignored; see docs/gpu.md), and without ../shared it reads .data/shared.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-build/cuda/out}"
mkdir -p "$out"
extra_prefix=""
if [ ! -f /usr/include/catch2/catch.hpp ] && [ -d .data/debs ]; then
  deps=/tmp/gearlab-deps
  mkdir -p "$deps"
  for f in .data/debs/*.deb; do dpkg -x "$f" "$deps"; done
  pc="$deps/usr/lib/x86_64-linux-gnu/pkgconfig"
  sed -i "s#^prefix=.*#prefix=$deps/usr#" "$pc"/*.pc
  export PKG_CONFIG_PATH="$pc" LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  extra_prefix=";$deps/usr"
fi
# The device's copy of the tree does not carry this checkout's git state: results name the commit
# written to .data/COMMIT before the run (git rev-parse --short HEAD > .data/COMMIT).
[ -f .data/COMMIT ] && export GEARLAB_COMMIT="$(cat .data/COMMIT)"
shared="${GEARLAB_SHARED_DIR:-$PWD/../shared}"
[ -d "$shared/models" ] || shared="$PWD/.data/shared"
torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
export CUDACXX=${CUDACXX:-/usr/local/cuda/bin/nvcc}
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
