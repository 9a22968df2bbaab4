#!/usr/bin/env bash
# Installs every Debian 12 package GEAR Lab needs to build, test and run (as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
packages=(
  build-essential cmake ninja-build pkg-config git
  libtorch-dev                       # LibTorch 1.13 (CPU)
  nlohmann-json3-dev                 # safetensors headers, config.json, results JSON
  libsentencepiece-dev               # tokenizer.model
  catch2                             # tests
  clang-14 libclang-rt-14-dev        # libFuzzer targets
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
echo "setup: all packages present"
