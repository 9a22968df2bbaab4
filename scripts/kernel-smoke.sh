#!/usr/bin/env bash
# A GPU check of the low-rank and RoPE kernels that needs no LibTorch and builds in seconds
# (tests/kernels/standalone/smoke.cu): for a device session whose time does not cover the full build
# (scripts/gpu-check.sh). Builds into $1 (default /tmp/smoke) and runs it; exit 1 on a failed check.
#   scripts/kernel-smoke.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
o=${1:-/tmp/smoke}; mkdir -p $o
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
F="-std=c++17 -O2 -arch=sm_90 -I. --expt-relaxed-constexpr"
rm -f $o/*.o
pids=""
g++ -std=c++17 -O2 -ffp-contract=off -I. -c kernels/reference.cpp -o $o/reference.o & pids="$pids $!"
for f in rope_append small_dense power_iteration; do $NVCC $F -c kernels/$f.cu -o $o/$f.o & pids="$pids $!"; done
$NVCC $F -c tests/kernels/standalone/smoke.cu -o $o/smoke.o & pids="$pids $!"
for p in $pids; do wait $p; done  # a failed compile stops here (set -e)
$NVCC -arch=sm_90 $o/*.o -o $o/smoke
$o/smoke
