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
  qt6-base-dev libqt6opengl6-dev     # ui/: Qt 6 Widgets + QOpenGLWidget, the canvas's host
  libimgui-dev libgl-dev             # ui/: Dear ImGui 1.86 (static, OpenGL3 backend inside), GL headers
  fonts-dejavu-core                  # ui/: the canvas font (DejaVu Sans)
  xvfb xauth libgl1-mesa-dri         # ui/ test: a virtual X server with Mesa's llvmpipe OpenGL
  qt6-svg-dev                        # gearlab report --pdf: QSvgRenderer (QPdfWriter, QTextDocument: qt6-base-dev)
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
