#!/usr/bin/env python3
"""Executed instructions and stall samples of a profiled kernel by source line, with no line info on the device.

ncu's source page (`ncu -i REPORT --page source --print-source sass --csv`, from a run with `--section
SourceCounters`) gives each SASS instruction's executed count and stall samples, but a build without -lineinfo
cannot say which source line an instruction came from. scripts/sass.sh builds the same source with -lineinfo here
(SASS_LINES=1), and the same nvcc gives the same instructions, so aligning the two instruction sequences (difflib,
branch targets and .reuse flags ignored) hands each executed instruction its line.

  scripts/ncu_lines.py src_sass.csv /tmp/gearlab-sass/gear_attention_lean-<key>-li.sass KERNEL_REGEX [--min N]

Prints, for the instructions executed at least N times a launch (default: 90 % of the most executed one's count:
a tile loop's body), their count per execution of the hottest instruction and their stall samples, by source line.
"""
import argparse
import collections
import csv
import difflib
import re
import sys


def norm(ins):
    ins = re.sub(r"\.reuse", "", ins)
    ins = re.sub(r"0x7f[0-9a-f]+|`\([^)]*\)", "L", ins)  # branch targets: absolute on the device, labels here
    return ins.replace(" ", "")


def local_sass(path, pattern):
    """(instruction, (file, line)) of the first kernel whose .text section name matches `pattern`."""
    lines = open(path).read().split("\n")
    starts = [i for i, l in enumerate(lines) if l.startswith(".text.") and re.search(pattern, l)]
    if not starts:
        sys.exit(f"{path}: no kernel matches {pattern!r}")
    out, where = [], ("?", 0)
    for l in lines[starts[0] + 1:]:
        if l.startswith(".text.") or (l.startswith("//----") and out):
            break
        m = re.search(r'## File "([^"]+)", line (\d+)', l)
        if m:
            where = (m.group(1).split("/")[-1], int(m.group(2)))
            continue
        m = re.match(r"\s+/\*[0-9a-f]{4,}\*/\s+(.*?);", l)
        if m:
            out.append((m.group(1).strip(), where))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv", help="ncu --page source --print-source sass --csv output")
    ap.add_argument("sass", help="scripts/sass.sh's line-info SASS (SASS_LINES=1) of the same source")
    ap.add_argument("kernel", help="regex on the kernel's mangled name in the SASS")
    ap.add_argument("--min", type=int, default=0, help="least executed count an instruction needs to be listed")
    a = ap.parse_args()
    rows = list(csv.reader(open(a.csv)))
    header = next((r for r in rows if r and r[0] == "Address"), None)
    if header is None:
        sys.exit(f"{a.csv}: no 'Address' header row (an ncu source-page CSV?)")
    col = {h: i for i, h in enumerate(header)}
    for need in ("Source", "Instructions Executed", "Warp Stall Sampling (All Samples)"):
        if need not in col:
            sys.exit(f"{a.csv}: no column {need!r} (profile with --section SourceCounters)")
    body = rows[rows.index(header) + 1:]
    dev = [(r[col["Source"]].strip().rstrip(";"), int(r[col["Instructions Executed"]] or 0),
            int(r[col["Warp Stall Sampling (All Samples)"]] or 0)) for r in body]
    loc = local_sass(a.sass, a.kernel)
    sm = difflib.SequenceMatcher(None, [norm(x[0]) for x in loc], [norm(x[0]) for x in dev], autojunk=False)
    to_local = {}
    for blk in sm.get_matching_blocks():
        for k in range(blk.size):
            to_local[blk.b + k] = blk.a + k
    top = max(n for _, n, _ in dev)
    least = a.min or int(0.9 * top)
    count, samples = collections.Counter(), collections.Counter()
    for j, (_, n, s) in enumerate(dev):
        if n >= least:
            key = loc[to_local[j]][1] if j in to_local else ("(unmatched)", 0)
            count[key] += n
            samples[key] += s
    print(f"{len(to_local)} of {len(dev)} device instructions matched; counts per {top} executions "
          f"(instructions executed >= {least} times)")
    print(f"{'a pass':>8} {'samples':>8}  line")
    for key in sorted(count, key=lambda k: (k[0], k[1])):
        print(f"{count[key] / top:8.1f} {samples[key]:8d}  {key[0]}:{key[1]}")
    print(f"{sum(count.values()) / top:8.1f} {sum(samples.values()):8d}  total")


if __name__ == "__main__":
    main()
