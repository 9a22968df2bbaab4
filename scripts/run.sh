#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install, build (cpu preset), and generate a story
# with stories260K (or the model given as $1), printing the text and the decode tokens/s.
# Usage: scripts/run.sh [MODEL] [extra gearlab generate flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset cpu >/dev/null
cmake --build --preset cpu --target gearlab
model="${1:-../shared/models/stories260K/stories260K.bin}"
shift || true
exec ./build/cpu/app/gearlab generate --model "$model" --prompt "Once upon a time" --max-tokens 256 \
  --temperature 0.8 --seed 42 "$@"
