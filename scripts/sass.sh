#!/usr/bin/env bash
# The SASS of kernels for sm_90, on a machine without a GPU (no device time): nvcc (/usr/local/cuda, 13.0) compiles
# a kernels/*.cu file to a cubin, and nvdisasm disassembles it. CUDA 13 has no nvdisasm here, so it comes from
# Debian's non-free nvidia-cuda-toolkit (11.8), downloaded and unpacked under the cache folder (not installed). 11.8
# reads sm_90 SASS but not CUDA 13's ELF header, so a copy of the cubin gets the old header: ABI version 7, e_flags
# sm_90 (0x005a055a). Then, for each kernel whose mangled name matches the regex: its registers and spills (ptxas),
# its instruction count, and the opcode histogram of each loop of 200 instructions or more (a backward branch's
# span, both arms of the branches inside counted: an attention kernel's tile loop and the loops around it).
#   scripts/sass.sh kernels/gear_attention_lean.cu 'cattn_lean_kernelI6__halfLi128ELi4ELi32ELi0ELi2ELi2ELb0ELb0ELi3E'
# SASS_CACHE (default /tmp/gearlab-sass) keeps the toolkit and the cubins (keyed by the source's hash: the
# lean kernels take ~4 min to compile on 2 cores); the whole SASS is left there as <stem>.sass. SASS_LINES=1 builds
# with -lineinfo (a cubin of its own) and adds, for each loop, its instructions by source line (file:line count).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 kernels/FILE.cu KERNEL_NAME_REGEX" >&2; exit 2; }
src=$1 pattern=$2
[ -f "$src" ] || { echo "$0: no such source file: $src" >&2; exit 2; }
cache=${SASS_CACHE:-/tmp/gearlab-sass}
mkdir -p "$cache"
nvdisasm=$cache/toolkit/usr/bin/nvdisasm
if [ ! -x "$nvdisasm" ]; then
  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    > "$cache/non-free.sources"
  apt=(-o Dir::Etc::sourcelist="$cache/non-free.sources" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$cache/lists")
  mkdir -p "$cache/lists/partial"
  apt-get "${apt[@]}" update > "$cache/apt.log" 2>&1 || { echo "$0: apt-get update (non-free) failed: $cache/apt.log" >&2; exit 1; }
  (cd "$cache" && apt-get "${apt[@]}" download nvidia-cuda-toolkit >> apt.log 2>&1) ||
    { echo "$0: downloading nvidia-cuda-toolkit failed: $cache/apt.log" >&2; exit 1; }
  dpkg-deb -x "$cache"/nvidia-cuda-toolkit_*.deb "$cache/toolkit"
fi
stem=$(basename "$src" .cu)
li=""
lineinfo=()
if [ "${SASS_LINES:-0}" = 1 ]; then li="-li"; lineinfo=(-g); fi
key=$(cat "$src" kernels/*.h kernels/*.cuh | sha1sum | cut -c1-12)$li
cubin=$cache/$stem-$key.cubin
if [ ! -f "$cubin" ]; then
  echo "compiling $src for sm_90 (minutes for the attention kernels)..." >&2
  /usr/local/cuda/bin/nvcc -std=c++17 -arch=sm_90 -I. --expt-relaxed-constexpr ${li:+-lineinfo} -cubin -Xptxas -v -o "$cubin.tmp" "$src" \
    > "$cache/$stem-$key.ptxas" 2>&1 || { tail -20 "$cache/$stem-$key.ptxas" >&2; exit 1; }
  mv "$cubin.tmp" "$cubin"
fi
if [ ! -f "$cache/$stem-$key.sass" ]; then
  python3 - "$cubin" "$cache/$stem-$key.old.cubin" <<'EOF'
import struct, sys
d = bytearray(open(sys.argv[1], 'rb').read())
if d[:4] != b'\x7fELF' or struct.unpack_from('<H', d, 18)[0] != 190:
    sys.exit(f"{sys.argv[1]}: not a CUDA ELF file")
d[8] = 7                                   # EI_ABIVERSION: the format before CUDA 12.8's
struct.pack_into('<I', d, 48, 0x005a055a)  # e_flags: sm_90, virtual sm_90, 64-bit addresses, unified textures
open(sys.argv[2], 'wb').write(d)
EOF
  "$nvdisasm" -c "${lineinfo[@]}" "$cache/$stem-$key.old.cubin" > "$cache/$stem-$key.sass"
  ln -sf "$stem-$key.sass" "$cache/$stem.sass"
fi
python3 - "$cache/$stem-$key.sass" "$cache/$stem-$key.ptxas" "$pattern" <<'EOF'
import collections, re, sys
sass, ptxas, pattern = sys.argv[1], sys.argv[2], re.compile(sys.argv[3])
min_loop = 200  # instructions: the tile loops, not the small ones inside them
usage, name = {}, None
for line in open(ptxas):
    m = re.search(r"Compiling entry function '(\S+)'", line)
    if m: name = m.group(1)
    m = re.search(r'(\d+) bytes spill stores, (\d+) bytes spill loads', line)
    if m and name: usage[name] = [m.group(1), m.group(2)]
    m = re.search(r'Used (\d+) registers', line)
    if m and name in usage: usage[name].insert(0, m.group(1))
kernels, cur = {}, None
for line in open(sass):
    m = re.match(r'\s*\.text\.(\S+):', line)
    if m: cur = m.group(1); kernels[cur] = []; continue
    if cur is not None: kernels[cur].append(line.rstrip('\n'))
found = 0
for k, body in kernels.items():
    if not pattern.search(k): continue
    found += 1
    insts, labels, srcs, src = [], {}, [], None
    for line in body:
        m = re.search(r'//## File "([^"]+)", line (\d+)', line)
        if m: src = f"{m.group(1).split('/')[-1]}:{m.group(2)}"; continue
        m = re.match(r'(\.L_x_\d+):', line)
        if m: labels[m.group(1)] = len(insts); continue
        m = re.match(r'\s+/\*[0-9a-f]+\*/\s+(.*?)\s*;', line)
        if m: insts.append(m.group(1)); srcs.append(src)
    loops = set()
    for i, ins in enumerate(insts):
        m = re.search(r'BRA\S*\s+`?\(?(\.L_x_\d+)', ins)
        if m and m.group(1) in labels and labels[m.group(1)] <= i and i + 1 - labels[m.group(1)] >= min_loop:
            loops.add((labels[m.group(1)], i + 1))
    regs = usage.get(k, ['?', '?', '?'])
    print(f"{k}\n  {regs[0]} registers, spill stores {regs[1]} / loads {regs[2]} bytes; {len(insts)} instructions")
    for a, b in sorted(loops):
        ops = collections.Counter(re.sub(r'^@!?U?P\w+\s+', '', s).split()[0].split('.')[0] for s in insts[a:b])
        print(f"  loop {a}-{b - 1} ({b - a} instructions): " + ', '.join(f'{op} {n}' for op, n in ops.most_common(14)))
        if any(srcs[a:b]):
            by_line = collections.Counter(srcs[a:b])
            print('    by source line: ' + ', '.join(f'{s} {n}' for s, n in sorted(by_line.items(), key=lambda x: -x[1])))
if not found: sys.exit(f"no kernel matches {pattern.pattern!r} ({len(kernels)} in {sass})")
EOF
