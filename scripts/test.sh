#!/usr/bin/env bash
# The whole test suite: configure and build the cpu preset, then ctest (unit, golden traces,
# CLI, and the libFuzzer targets for GEARLAB_FUZZ_SECONDS each).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset cpu "$@"
cmake --build --preset cpu
ctest --preset cpu --output-on-failure -j2
