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
--stalls adds each line's largest stall reasons (ncu's stall_* sample columns) and the listed instructions' totals
by reason; --excess lists the instructions with the most excess shared-memory wavefronts and L2 sectors (bank
conflicts, uncoalesced loads) with their source lines.
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
    ap.add_argument("--stalls", type=int, default=0, metavar="K", help="each line's K largest stall reasons, and the totals")
    ap.add_argument("--excess", type=int, default=0, metavar="K", help="the K instructions with the most excess wavefronts / sectors")
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
    def num(r, name):
        v = r[col[name]].replace(",", "") if name in col else ""
        try:
            return float(v)
        except ValueError:
            return 0.0

    dev = [(r[col["Source"]].strip().rstrip(";"), int(num(r, "Instructions Executed")),
            int(num(r, "Warp Stall Sampling (All Samples)"))) for r in body]
    reasons = [h for h in header if h.startswith("stall_") and "(Not Issued)" not in h]
    if a.stalls and not reasons:
        sys.exit(f"{a.csv}: no stall_* columns for --stalls (profile with --section SourceCounters --section WarpStateStats)")
    loc = local_sass(a.sass, a.kernel)
    sm = difflib.SequenceMatcher(None, [norm(x[0]) for x in loc], [norm(x[0]) for x in dev], autojunk=False)
    to_local = {}
    for blk in sm.get_matching_blocks():
        for k in range(blk.size):
            to_local[blk.b + k] = blk.a + k
    top = max(n for _, n, _ in dev)
    least = a.min or int(0.9 * top)
    count, samples = collections.Counter(), collections.Counter()
    why = collections.defaultdict(collections.Counter)  # line -> stall reason -> samples
    line_of = lambda j: loc[to_local[j]][1] if j in to_local else ("(unmatched)", 0)
    for j, (_, n, s) in enumerate(dev):
        if n >= least:
            key = line_of(j)
            count[key] += n
            samples[key] += s
            for rname in reasons:
                why[key][rname[len("stall_"):]] += num(body[j], rname)
    print(f"{len(to_local)} of {len(dev)} device instructions matched; counts per {top} executions "
          f"(instructions executed >= {least} times)")
    print(f"{'a pass':>8} {'samples':>8}  line")
    for key in sorted(count, key=lambda k: (k[0], k[1])):
        extra = ""
        if a.stalls:
            extra = "  " + ", ".join(f"{r} {int(v)}" for r, v in why[key].most_common(a.stalls) if v > 0)
        print(f"{count[key] / top:8.1f} {samples[key]:8d}  {key[0]}:{key[1]}{extra}")
    print(f"{sum(count.values()) / top:8.1f} {sum(samples.values()):8d}  total")
    if a.stalls:
        total = collections.Counter()
        for c in why.values():
            total.update(c)
        all_s = sum(total.values()) or 1
        print("stall samples by reason: " + ", ".join(f"{r} {int(v)} ({100 * v / all_s:.1f} %)" for r, v in total.most_common() if v > 0))
    if a.excess:
        for name in ("L1 Wavefronts Shared Excessive", "L2 Theoretical Sectors Global Excessive"):
            if name not in col:
                continue
            print(f"-- {name}: {int(sum(num(r, name) for r in body))} in all; the largest:")
            for j in sorted(range(len(body)), key=lambda j: -num(body[j], name))[:a.excess]:
                if num(body[j], name) <= 0:
                    break
                where = line_of(j)
                print(f"{int(num(body[j], name)):10d} over {dev[j][1]} executions  {dev[j][0][:60]}  ({where[0]}:{where[1]})")


if __name__ == "__main__":
    main()
