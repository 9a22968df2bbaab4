#!/usr/bin/env python3
"""The decode-attention bench's lines as a results JSON (bench/results/compressed_attention_*.json).

The bench is a hidden Catch2 case, `test_kernels "cuda compressed_attention: decode timings*"` (tests/kernels/
test_compressed_kernels.cpp), run on a GPU by scripts/gpu-ab.sh or a .data/run*.sh script; it prints one line per
timed kernel and shape. This turns the logs of one device session into the file the docs cite: one record per line
(shape, kernel, stream and graph us, bytes, % of the measured copy bandwidth, the FP16 kernel's and SDPA's times
and ratios, the output hash), tagged with its run, round, build and commit.

  scripts/attention_bench_json.py OUT.json --gpu "NVIDIA H200" --driver 580.159.04 --commit "run PB: ..." \\
      --log PB 1 base "8f8ee72 (base)" /tmp/runPB/d_base1.log --log PB 1 new "cf5c0b1" /tmp/runPB/d_new1.log ...

A log without bench lines is an error (a run that failed or a wrong path), as is a line the pattern does not read.
"""
import argparse
import json
import re
import sys

LINE = re.compile(
    r'^compressed_attention (\S+) (\S+) (\S+) (\S+) B (\d+) ctx (\d+)( stream-K| split \d+)?( key tiles \d+)?( blocks (\d+))?: '
    r'stream ([\d.]+) us, graph ([\d.]+) us, ([\d.]+) MB = ([\d.]+) TB/s \((\d+) % of ([\d.]+) TB/s\); '
    r'fp16 decode_attention ([\d.]+) us -> ([\d.]+)x'
    r'(?:; LibTorch SDPA \(stream\) ([\d.]+) us -> ([\d.]+)x \(stream\))?'
    r'(?:; digest ([0-9a-f]+))?'
    r'(?:; outliers (inside|by the passes))?$')


def records(path, run, rnd, build, commit):
    out, copy_tbs = [], None
    for raw in open(path, encoding='utf-8', errors='replace'):
        line = raw.strip()
        if not line.startswith('compressed_attention '):
            continue
        m = LINE.match(line)
        if not m:
            sys.exit(f'{path}: a bench line this script cannot read (the bench changed its format?):\n  {line}')
        g = m.groups()
        split = (g[6] or '').strip()
        r = dict(model=g[0], heads=g[1], method=g[2], kernel=g[3], batch=int(g[4]), context=int(g[5]),
                 split_tokens='stream-K' if split == 'stream-K' else (int(split.split()[1]) if split else 'rule'))
        if g[7]:
            r['key_tiles'] = int(g[7].split()[-1])
        if g[9]:
            r['kivi_gqa_blocks_per_sm'] = int(g[9])
        r.update(stream_us=float(g[10]), graph_us=float(g[11]), bytes_mb=float(g[12]), tb_per_s=float(g[13]),
                 pct_of_copy_bw=int(g[14]), fp16_decode_attention_us=float(g[16]), speedup_vs_fp16=float(g[17]))
        if g[18]:
            r.update(libtorch_sdpa_stream_us=float(g[18]), speedup_vs_sdpa_stream=float(g[19]))
        if g[20]:
            r['output_digest'] = g[20]
        if g[21]:
            r['outliers'] = g[21]
        r.update(commit=commit, run=run, round=rnd, build=build)
        copy_tbs = float(g[15])
        out.append(r)
    if not out:
        sys.exit(f'{path}: no bench lines (did the run fail? its log says why)')
    return out, copy_tbs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('out')
    ap.add_argument('--gpu', required=True)
    ap.add_argument('--driver', required=True)
    ap.add_argument('--cuda', default='13.0')
    ap.add_argument('--libtorch', default='2.11.0')
    ap.add_argument('--commit', required=True, help='what was built: commits, diffs, how the trees relate')
    ap.add_argument('--source', default='test_kernels "cuda compressed_attention: decode timings*" (GEARLAB_BENCH_* as in the script that ran it)')
    ap.add_argument('--note', action='append', default=[], metavar='RUN=TEXT', help="a run's outcome in words (tests, what was kept)")
    ap.add_argument('--log', action='append', nargs=5, required=True, metavar=('RUN', 'ROUND', 'BUILD', 'COMMIT', 'PATH'))
    a = ap.parse_args()
    runs, copies = {}, []
    for run, rnd, build, commit, path in a.log:
        recs, copy_tbs = records(path, run, int(rnd), build, commit)
        runs.setdefault(run, []).extend(recs)
        copies.append(copy_tbs)
    doc = {
        'benchmark': 'compressed_attention',
        'environment': {'gpu': a.gpu, 'driver': a.driver, 'cuda': a.cuda, 'libtorch': a.libtorch, 'commit': a.commit},
        'config': {
            'hd': 128,
            'graph': 'per call inside a CUDA graph of up to 200 calls',
            'copy_bandwidth_tb_s_measured': round(sorted(copies)[len(copies) // 2], 2),
            'copy_bandwidth_note': 'device-to-device copy of 2 GiB (read + write), measured in each pass (the median '
                                   'over the logs); pct_of_copy_bw is against each pass\'s own',
            'baselines': 'fp16_decode_attention_us: our FP16 decode kernel (graph); libtorch_sdpa_stream_us: '
                         'at::scaled_dot_product_attention (enable_gqa) on the same FP16 K/V, timed from ATen\'s stream',
            'source': a.source,
            'runs': dict(n.split('=', 1) for n in a.note),
        },
    }
    for run, recs in runs.items():
        doc[f'results_run_{run}'] = recs
    with open(a.out, 'w', encoding='utf-8') as f:
        json.dump(doc, f, indent=1)
    print(f'{a.out}: ' + ', '.join(f'run {k} {len(v)} records' for k, v in runs.items()))


if __name__ == '__main__':
    main()
