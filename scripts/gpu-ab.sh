#!/usr/bin/env bash
# A kernel change against its base on one lent GPU: the working tree ("new") and a base tree built side by side,
# then the v7 tests, the decode-attention bench interleaved base / new, instruction counts, the cache tests, the
# memory checker and the end-to-end bench. Prepare the base on this side first, since the device's copy of the tree
# has no git history:
#   rm -rf .data/base && mkdir -p .data/base && git archive BASE | tar -x -C .data/base --exclude=docs --exclude=bench/results
#   git rev-parse --short HEAD > .data/COMMIT
# and carry .data (debs, shared copies: scripts/gpu-env.sh). The base is built under /tmp/gearlab-base, outside
# .data, so that a later call on the same warm machine (which replaces .data) keeps it.
#   STAGES="build test bench ncu cache memcheck e2e" (default: all; also digest and ncusrc, below), ROUNDS=2 (bench
#   rounds), FROM=1 (first round's number), NEW_TARGETS (default "test_kernels test_cache gearlab"), NEW_CUDA_FLAGS (the new build's extra nvcc flags,
#   e.g. -DGEARLAB_LEAN_RANK_BLOCKS=4 to time a compile-time knob against the same tree as base), OUT (logs;
#   default /tmp/out).
# Each stage prints a summary line and writes its log under OUT: pipe this script to a file rather than `| tail`,
# so that a call stopped by its time limit still shows what finished.
#   digest: the bench's output hashes (GEARLAB_BENCH_DIGEST) of base and new on the same shapes (DIGEST_ONLY, default
#   the bench's), base twice: whether a change keeps the bits, and whether each build repeats its own.
#   ncusrc: ncu's per-instruction counts (SourceCounters) of new's Llama-3-8B KIVI-2 B 64 8k kernel, as the CSV that
#   scripts/ncu_lines.py reads (OUT/ncusrc_sass.csv; the report itself is ~60 MB, left under /tmp).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}
mkdir -p "$out"
STAGES=${STAGES:-"build test bench ncu cache memcheck e2e"}
has() { [[ " $STAGES " == *" $1 "* ]]; }
# shellcheck source=scripts/gpu-env.sh
source scripts/gpu-env.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
T0=$(date +%s)
stamp() { echo "== $1 at $(($(date +%s) - T0)) s"; }
# nvcc's optimizer on every core and sm_90 only: ~130 s for test_kernels and gearlab on a fresh machine (README, GPU)
build() {  # tree tag targets [extra CUDA flags]
  (cd "$1" && cmake --preset cuda -DCMAKE_PREFIX_PATH="$torch_prefix$extra_prefix" -DGEARLAB_SHARED_DIR="$shared" -DGEARLAB_FUZZ=OFF \
    -DCMAKE_CUDA_ARCHITECTURES=90-real -DCMAKE_CUDA_FLAGS="--split-compile=0 ${4:-}" > "/tmp/configure_$2.log" 2>&1 &&
    cmake --build --preset cuda -j "$(nproc)" --target $3 > "/tmp/build_$2.log" 2>&1) ||
    { echo "BUILD $2 FAILED"; grep -E "error" "/tmp/build_$2.log" | head -30; }
}
NEW=./build/cuda BASE=/tmp/gearlab-base/build/cuda
if has build; then
  if [ -d .data/base ]; then
    [ -d /tmp/gearlab-base ] || cp -r .data/base /tmp/gearlab-base
    build /tmp/gearlab-base base test_kernels &
  fi
  # shellcheck disable=SC2086
  build . new "${NEW_TARGETS:-test_kernels test_cache gearlab}" "${NEW_CUDA_FLAGS:-}"
  wait
  stamp build
fi
if has test; then
  timeout 300 $NEW/tests/test_kernels "[cuda][gear]","mma_map*" > "$out/test.log" 2>&1
  echo "test rc $?: $(tail -3 "$out/test.log" | tr '\n' ' ')"
  stamp test
fi
ONLY='(32q/8kv (kivi-2|gearl-kivi-2|gear-kivi-2) B (1 ctx 32768|16 ctx 4096|64 ctx 8192|64 ctx 32768))|(32x128 (kivi-2|gearl-kivi-2) B (16 ctx 4096|64 ctx 8192))'
timings() {  # build-dir log shapes seconds: v7's decode-timings bench at B 1 / 16 / 64 (the caller's env added)
  GEARLAB_BENCH_KERNELS=v7 GEARLAB_BENCH_BATCHES="1 16 64" GEARLAB_BENCH_ONLY="$3" timeout "$4" \
    "$1/tests/test_kernels" "cuda compressed_attention: decode timings*" > "$2" 2>&1
}
bench() {  # build-dir tag
  timings "$1" "$out/bench_$2.log" "$ONLY" 200
  grep "^compressed_attention" "$out/bench_$2.log" | sed 's/^compressed_attention //; s/ us, [0-9.]* MB = .*(\([0-9]* %\).*fp16 decode_attention [0-9.]* us -> \([0-9.]*x\).*/ us \1 \2/'
}
if has bench; then
  for r in $(seq "${FROM:-1}" "${ROUNDS:-2}"); do
    [ -x $BASE/tests/test_kernels ] && { echo "-- base, round $r"; bench $BASE "base$r"; }
    echo "-- new, round $r"
    bench $NEW "new$r"
  done
  stamp bench
fi
if has ncu; then  # warp instructions of the Llama-3-8B KIVI-2 B 64 8k kernel: / 131072 for a 32-token tile's
  for v in base new; do
    d=$NEW
    [ $v = base ] && d=$BASE
    [ -x $d/tests/test_kernels ] || continue
    GEARLAB_BENCH_KERNELS=v7 GEARLAB_BENCH_BATCHES=64 GEARLAB_BENCH_ONLY="32q/8kv kivi-2 B 64 ctx 8192" timeout 240 \
      /usr/local/cuda/bin/ncu --kernel-name regex:cattn_lean --launch-skip 3 --launch-count 1 \
      --metrics smsp__inst_executed.sum,smsp__issue_active.avg.per_cycle_active,gpu__time_duration.sum,launch__registers_per_thread \
      $d/tests/test_kernels "cuda compressed_attention: decode timings*" > "$out/ncu_$v.log" 2>&1
    echo "-- ncu $v: $(grep -E "inst_executed|issue_active|duration|registers" "$out/ncu_$v.log" | awk '{print $1, $NF}' | tr '\n' ' ')"
  done
  stamp ncu
fi
if has digest; then
  digest() {  # build-dir tag
    GEARLAB_BENCH_DIGEST=1 timings "$1" "$out/digest_$2.log" "${DIGEST_ONLY:-$ONLY}" 150
    grep "^compressed_attention" "$out/digest_$2.log" | sed 's/^compressed_attention \(.*\): stream.*digest \([0-9a-f]*\).*$/\1 \2/' | sort > "$out/digest_$2.txt"
  }
  if [ -x $BASE/tests/test_kernels ]; then
    digest $BASE base1; digest $NEW new; digest $BASE base2
    echo "digest: base run to run $(comm -12 "$out/digest_base1.txt" "$out/digest_base2.txt" | wc -l) of $(wc -l < "$out/digest_base1.txt") equal," \
      "base / new $(comm -12 "$out/digest_base1.txt" "$out/digest_new.txt" | wc -l) of $(wc -l < "$out/digest_new.txt") equal"
    diff "$out/digest_base1.txt" "$out/digest_new.txt" | grep "^>" | head -8
  else
    digest $NEW new
    echo "digest: no base build; new's hashes in $out/digest_new.txt"
  fi
  stamp digest
fi
if has ncusrc; then
  GEARLAB_BENCH_KERNELS=v7 GEARLAB_BENCH_BATCHES=64 GEARLAB_BENCH_ONLY="32q/8kv kivi-2 B 64 ctx 8192" timeout 240 \
    /usr/local/cuda/bin/ncu --section SourceCounters --import-source yes --kernel-name regex:cattn_lean --launch-skip 3 --launch-count 1 \
    -f -o /tmp/ncusrc $NEW/tests/test_kernels "cuda compressed_attention: decode timings*" > "$out/ncusrc.log" 2>&1
  /usr/local/cuda/bin/ncu -i /tmp/ncusrc.ncu-rep --page source --print-source sass --csv > "$out/ncusrc_sass.csv" 2>> "$out/ncusrc.log"
  echo "ncusrc rc $?: $(wc -l < "$out/ncusrc_sass.csv") lines (scripts/ncu_lines.py reads them)"
  stamp ncusrc
fi
if has cache; then
  timeout 240 $NEW/tests/test_cache "[cuda]" > "$out/cache.log" 2>&1
  echo "cache rc $?: $(tail -3 "$out/cache.log" | tr '\n' ' ')"
  stamp cache
fi
if has memcheck; then
  GEARLAB_SANITIZER=1 timeout 300 /usr/local/cuda/bin/compute-sanitizer --tool memcheck --print-limit 20 $NEW/tests/test_kernels \
    "cuda compressed_attention matches the reference","cuda compressed_attention: v7's outliers inside are deterministic*" > "$out/memcheck.log" 2>&1
  echo "memcheck rc $?: $(tail -4 "$out/memcheck.log" | tr '\n' ' ')"
  stamp memcheck
fi
if has e2e; then
  timeout 300 $NEW/app/gearlab bench --model gen:llama3-8b --device cuda --dtype f16 --impl cuda --cache kivi-2,gear-kivi-2,gearl-kivi-2 \
    --batches 8,32 --contexts 4000 --steps 16 --warmup 2 --repeats 3 --json "$out/bench_llama3-8b_e2e.json" > "$out/e2e.log" 2>&1
  echo "e2e rc $?"
  grep -E "^(cache|full|kivi|gear)" "$out/e2e.log"
  stamp e2e
fi
