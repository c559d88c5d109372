#!/usr/bin/env python3
"""Markdown tables of a kernels_run.sh sitting: bench/scripts/kernels_tables.py OUT_DIR

Every rate is stated against the roofline of the same sitting (the 2-thread
`moekit roofline` taken at the start; the one at the end is printed too)."""
import json
import os
import sys


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def main(out):
    roof = json.load(open(os.path.join(out, "roof2.json")))
    roof1 = json.load(open(os.path.join(out, "roof1.json")))
    end = os.path.join(out, "roof2_end.json")
    roof_end = json.load(open(end)) if os.path.exists(end) else None
    fp32, bf16, bw = roof["fp32_fma_gflops"], roof["bf16_dot_gflops"], roof["read_gbps"]
    print("| threads | FP32 FMA peak | BF16 dot peak | read bandwidth |")
    print("|---:|---:|---:|---:|")
    print(f"| 1 | {roof1['fp32_fma_gflops']:.1f} GFLOP/s | {roof1['bf16_dot_gflops']:.1f} GFLOP/s | {roof1['read_gbps']:.2f} GB/s |")
    print(f"| 2 | {fp32:.1f} GFLOP/s | {bf16:.1f} GFLOP/s | {bw:.2f} GB/s |")
    if roof_end:
        print(f"| 2 (end of sitting) | {roof_end['fp32_fma_gflops']:.1f} GFLOP/s | {roof_end['bf16_dot_gflops']:.1f} GFLOP/s | {roof_end['read_gbps']:.2f} GB/s |")
    amx = roof.get("amx_bf16_gflops", 0.0)  # 0 where the ISA in use has no tiles
    if amx:
        print(f"\nAMX BF16 tile peak (2 threads): {amx:.1f} GFLOP/s"
              f" (1 thread: {roof1.get('amx_bf16_gflops', 0.0):.1f}); bf16 / int8 / int4 rows on"
              " `avx512_amx` are stated against it.")
    print()

    def peak(r):  # the compute peak a dtype's kernels run against
        if r.get("isa") == "avx512_amx" and r.get("bf16_math") == "dot" and amx:
            return amx  # bf16 / int8 / int4 on the tile unit
        if r.get("bf16_math") == "int8_dot":  # int8 / int4 through vpdpbusd (AVX2: no INT8
            return roof["int8_dot_gops"] or fp32  # probe; the FP32 FMA peak stands in)
        return bf16 if r.get("bf16_math") == "dot" else fp32  # bf16, int8, int4 through vdpbf16ps

    def rbw(r):  # the bandwidth probe taken with the row (--roofline), else the sitting's
        return r.get("read_gbps", bw)

    def roofline_ms(r):  # max(bytes / bandwidth, flops / peak)
        flops = r["gflops"] * r["ms_median"] * 1e6
        return max(r["weight_bytes"] / rbw(r) / 1e6, flops / peak(r) / 1e6)

    old, new = lines(os.path.join(out, "ab_old.jsonl")), lines(os.path.join(out, "ab_new.jsonl"))
    if old:
        print("A/B, olmoe, 2 threads, same sitting (ms median; speed-up = old / new)\n")
        print("| dtype | T | old ms | new ms | speed-up | new GB/s | new GFLOP/s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for o, n in zip(old, new):
            print(f"| {n['dtype']} | {n['tokens']} | {o['ms_median']:.2f} | {n['ms_median']:.2f} | "
                  f"{o['ms_median'] / n['ms_median']:.2f}x | {n['gbps']:.1f} | {n['gflops']:.1f} |")
        print()

    rows = lines(os.path.join(out, "table2.jsonl"))
    one = {(r["shape"], r["dtype"]): r for r in lines(os.path.join(out, "table1.jsonl"))}
    shapes = []
    for r in rows:
        if r["shape"] not in shapes:
            shapes.append(r["shape"])
    for s in shapes:
        print(f"#### {s}, 2 threads\n")
        print("| dtype | T | ms median | ms min | GFLOP/s | % of peak | GB/s | read GB/s (probe) | % of bandwidth | roofline ms | % of roofline | 1-thread ms | 2-thr speed-up |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            if r["shape"] != s:
                continue
            rl = roofline_ms(r)
            o = one.get((s, r["dtype"])) if r["tokens"] == 512 else None
            extra = f"| {o['ms_median']:.1f} | {o['ms_median'] / r['ms_median']:.2f}x |" if o else "| | |"
            print(f"| {r['dtype']}{' (dot)' if r.get('bf16_math') == 'dot' else ''} | {r['tokens']} | {r['ms_median']:.2f} | {r['ms_min']:.2f} | "
                  f"{r['gflops']:.1f} | {100 * r['gflops'] / peak(r):.0f}% | {r['gbps']:.1f} | {rbw(r):.1f} | {100 * r['gbps'] / rbw(r):.0f}% | "
                  f"{rl:.2f} | {100 * rl / r['ms_median']:.0f}% " + extra)
        print()
    widen = lines(os.path.join(out, "widen.jsonl"))
    if widen:
        print("bf16 with --bf16-math widen (f32 activations), olmoe, 2 threads\n")
        print("| T | ms median | GFLOP/s | % of FP32 peak | GB/s | % of bandwidth (probe) |")
        print("|---:|---:|---:|---:|---:|---:|")
        for r in widen:
            print(f"| {r['tokens']} | {r['ms_median']:.2f} | {r['gflops']:.1f} | {100 * r['gflops'] / fp32:.0f}% | {r['gbps']:.1f} | {100 * r['gbps'] / rbw(r):.0f}% |")
        print()
    print_load(out)


def print_load(out):
    """The uptime lines a sitting's script took at its start and end."""
    for f in ("load_start.txt", "load_end.txt"):
        p = os.path.join(out, f)
        if os.path.exists(p):
            print(f"{f}: {open(p).read().strip()}")


if __name__ == "__main__":
    main(sys.argv[1])
