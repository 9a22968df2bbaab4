#!/usr/bin/env python3
"""Where a decode step's GPU time goes: ncu's kernel durations of whole steps, by kernel, against the step's wall time.

gearlab bench brackets the last N warm-up steps of each method in the profiler's range and an NVTX range named after
the method (GEARLAB_PROFILE_STEPS=N, docs/bench.md), so that on a GPU

  GEARLAB_PROFILE_STEPS=1 ncu --profile-from-start off --nvtx --nvtx-include "gear-kivi-2/" --clock-control none \\
      --metrics gpu__time_duration.sum --csv gearlab bench ... --warmup 2 > step.csv

lists every kernel of one gear-kivi-2 decode step with its duration (at the card's own clocks). Then

  scripts/step_profile.py step.csv --steps 1 --step-ms 12.125

prints the kernels grouped by name (count, total, share), the sum over the step, and that sum as a share of the
step's wall time (ms / step from the same bench's table): near 100 % the step is GPU-bound and the table says which
kernels hold it; well under, the GPU idles for part of each step (launch overhead or waits on the host).

With --json OUT --label NAME (and --gpu / --commit / --config for a new file) the same table is added to OUT as one
profile of its "profiles" list (a file that exists keeps its other profiles; one of the same label is replaced), so
the profiles of one device session go into one results file under bench/results/.

A file without kernel rows, or a row this script cannot read, stops it with a message.
"""
import argparse
import collections
import csv
import json
import os
import re
import sys

UNITS = {'ns': 1e-3, 'nsecond': 1e-3, 'us': 1.0, 'usecond': 1.0, 'ms': 1e3, 'msecond': 1e3, 's': 1e6, 'second': 1e6}


def short_name(name):
    """A kernel's name without its return type, namespaces, template arguments and parameters."""
    n = re.sub(r'^void\s+', '', name.strip())
    depth, out = 0, []
    for ch in n:  # drop <...> and (...) at any depth
        if ch in '<(':
            depth += 1
        elif ch in '>)':
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
    n = ''.join(out).strip()
    return n.split('::')[-1] or name.strip()


def durations(path):
    """(kernel name, µs) for each kernel row of an ncu --csv file with gpu__time_duration.sum."""
    lines = [l for l in open(path, encoding='utf-8', errors='replace') if l.startswith('"')]
    if not lines:
        sys.exit(f'{path}: no CSV rows (was ncu run with --csv, and did the range hold any kernel?)')
    rows = list(csv.reader(lines))
    head = rows[0]
    try:
        i_name, i_metric, i_unit, i_value = (head.index(k) for k in ('Kernel Name', 'Metric Name', 'Metric Unit', 'Metric Value'))
    except ValueError:
        sys.exit(f'{path}: not an ncu metrics CSV (its header is {head[:6]}...)')
    out = []
    for r in rows[1:]:
        if len(r) <= max(i_name, i_metric, i_unit, i_value) or r[i_metric] != 'gpu__time_duration.sum':
            continue
        unit = r[i_unit].strip()
        if unit not in UNITS:
            sys.exit(f'{path}: a duration in a unit this script does not know: {unit!r}')
        try:
            value = float(r[i_value].replace(',', ''))
        except ValueError:
            sys.exit(f'{path}: a duration that is not a number: {r[i_value]!r} ({r[i_name][:80]})')
        out.append((r[i_name], value * UNITS[unit]))
    if not out:
        sys.exit(f'{path}: no gpu__time_duration.sum rows (was ncu run with --metrics gpu__time_duration.sum?)')
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('csv', help="ncu --csv output of the profiled steps")
    ap.add_argument('--steps', type=int, default=1, help='decode steps the range held (GEARLAB_PROFILE_STEPS)')
    ap.add_argument('--step-ms', type=float, help="the step's wall time (ms / step from the bench's table)")
    ap.add_argument('--top', type=int, default=25, help='kernel names listed (the rest summed in one row)')
    ap.add_argument('--json', metavar='OUT', help='add this profile to a results file (see above)')
    ap.add_argument('--label', help='the profile\'s name in --json (e.g. "gear-kivi-2 batch 22")')
    ap.add_argument('--gpu', help='--json, new file: the device')
    ap.add_argument('--commit', help='--json, new file: what was built')
    ap.add_argument('--config', help='--json: how the profile was taken (command, shape)')
    a = ap.parse_args()
    if a.steps < 1:
        sys.exit('--steps must be at least 1')
    if a.json and not a.label:
        sys.exit('--json needs --label')
    ks = durations(a.csv)
    total = sum(us for _, us in ks)
    by = collections.defaultdict(lambda: [0, 0.0])
    for name, us in ks:
        e = by[short_name(name)]
        e[0] += 1
        e[1] += us
    order = sorted(by.items(), key=lambda kv: -kv[1][1])
    print(f'{"kernel":48s} {"launches/step":>13s} {"us/step":>10s} {"share":>7s}')
    for name, (n, us) in order[:a.top]:
        print(f'{name[:48]:48s} {n / a.steps:13.1f} {us / a.steps:10.1f} {100 * us / total:6.1f}%')
    rest = order[a.top:]
    if rest:
        n, us = sum(v[0] for _, v in rest), sum(v[1] for _, v in rest)
        print(f'{f"({len(rest)} other names)":48s} {n / a.steps:13.1f} {us / a.steps:10.1f} {100 * us / total:6.1f}%')
    per_step = total / a.steps / 1e3
    print(f'GPU time a step: {per_step:.3f} ms in {len(ks) / a.steps:.0f} kernels')
    if a.step_ms:
        print(f'wall time a step: {a.step_ms:.3f} ms: the kernels fill {100 * per_step / a.step_ms:.1f} % of it')
    if a.json:
        write_json(a, order, total, len(ks), per_step)


def write_json(a, order, total, n_kernels, per_step):
    """Adds this profile to a.json (created with a.gpu / a.commit if it does not exist)."""
    if os.path.exists(a.json):
        try:
            doc = json.load(open(a.json, encoding='utf-8'))
        except (OSError, ValueError) as e:
            sys.exit(f'{a.json}: not a results file this script can add to ({e})')
        if not isinstance(doc, dict) or not isinstance(doc.get('profiles'), list):
            sys.exit(f'{a.json}: not a step-profile results file (no "profiles" list)')
    else:
        if not a.gpu or not a.commit:
            sys.exit(f'{a.json} does not exist: a new file needs --gpu and --commit')
        doc = {'benchmark': 'decode_step_profile', 'environment': {'gpu': a.gpu, 'commit': a.commit},
               'source': 'ncu gpu__time_duration.sum of every kernel of whole decode steps (GEARLAB_PROFILE_STEPS), '
                         'summed by scripts/step_profile.py', 'profiles': []}
    prof = {'label': a.label, 'config': a.config, 'steps': a.steps, 'kernels_per_step': n_kernels / a.steps,
            'gpu_ms_per_step': per_step, 'wall_ms_per_step': a.step_ms,
            'kernel_fill_pct': 100 * per_step / a.step_ms if a.step_ms else None,
            'by_kernel': [{'name': name, 'launches_per_step': n / a.steps, 'us_per_step': us / a.steps,
                           'share_pct': 100 * us / total} for name, (n, us) in order]}
    doc['profiles'] = [p for p in doc['profiles'] if p.get('label') != a.label] + [prof]
    with open(a.json, 'w', encoding='utf-8') as f:
        json.dump(doc, f, indent=1)
        f.write('\n')


if __name__ == '__main__':
    main()
