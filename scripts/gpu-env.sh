# Sourced by the GPU scripts (gpu-check.sh, gpu-ab.sh): the build environment of a lent GPU machine.
# Without system Catch2 / nlohmann-json / sentencepiece it unpacks the Debian packages kept in .data/debs
# (git-ignored; docs/bench.md), and without ../shared it reads .data/shared. Sets extra_prefix (";deps" for
# CMAKE_PREFIX_PATH), shared, torch_prefix, CUDACXX and GEARLAB_COMMIT (from .data/COMMIT: the device's copy of
# the tree does not carry this checkout's git state).
extra_prefix=""
if [ ! -f /usr/include/catch2/catch.hpp ] && [ -d .data/debs ]; then
  deps=/tmp/gearlab-deps
  pc="$deps/usr/lib/x86_64-linux-gnu/pkgconfig"
  # Unpacked once a machine: a second script sourcing this while a first one builds must not rewrite its headers.
  if [ ! -f "$deps/.unpacked" ]; then
    mkdir -p "$deps"
    for f in .data/debs/*.deb; do dpkg -x "$f" "$deps"; done
    sed -i "s#^prefix=.*#prefix=$deps/usr#" "$pc"/*.pc
    touch "$deps/.unpacked"
  fi
  export PKG_CONFIG_PATH="$pc" LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  extra_prefix=";$deps/usr"
fi
[ -f .data/COMMIT ] && export GEARLAB_COMMIT="$(cat .data/COMMIT)"
shared="${GEARLAB_SHARED_DIR:-$PWD/../shared}"
[ -d "$shared/models" ] || shared="$PWD/.data/shared"
py=python3
[ -x /opt/torch/.venv/bin/python3 ] && ! python3 -c 'import torch' 2>/dev/null && py=/opt/torch/.venv/bin/python3
torch_prefix=$($py -c 'import torch; print(torch.utils.cmake_prefix_path)')
export CUDACXX=${CUDACXX:-/usr/local/cuda/bin/nvcc}
