#!/usr/bin/env python3
"""Markdown tables of a vnni_run.sh sitting: bench/scripts/vnni_tables.py OUT_DIR

Each cell is the median over the sitting's repeats of each run's median; rates
are stated against the 2-thread roofline taken at the start of the sitting."""
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kernels_tables import lines, print_load  # noqa: E402


def main(out):
    roof = json.load(open(os.path.join(out, "roof2.json")))
    end = os.path.join(out, "roof2_end.json")
    print("| roofline, 2 threads | FP32 FMA | BF16 dot | INT8 dot | read bandwidth |")
    print("|---|---:|---:|---:|---:|")
    for name, r in (("start", roof), ("end", json.load(open(end)) if os.path.exists(end) else None)):
        if r:
            print(f"| {name} | {r['fp32_fma_gflops']:.0f} GFLOP/s | {r['bf16_dot_gflops']:.0f} GFLOP/s | "
                  f"{r['int8_dot_gops']:.0f} GOP/s | {r['read_gbps']:.1f} GB/s |")
    print()
    # Without VNNI (AVX2 integer kernels) the probe has no INT8 peak: the FP32 FMA one stands in.
    peak = {"dot": roof["bf16_dot_gflops"] or roof["fp32_fma_gflops"],
            "int8_dot": roof["int8_dot_gops"] or roof["fp32_fma_gflops"]}
    cells = {}
    order = []
    for r in lines(os.path.join(out, "runs.jsonl")):
        key = (r["shape"], r["tokens"], r["dtype"], r["bf16_math"])
        if key not in cells:
            order.append(key)
        cells.setdefault(key, []).append(r)
    def med(s, T, dt, m, field):  # median of one field over a cell's runs
        rs = cells.get((s, T, dt, m), [])
        return statistics.median(r[field] for r in rs) if rs else float("nan")

    shapes = []
    for k in order:
        if k[0] not in shapes:
            shapes.append(k[0])
    for s in shapes:
        print(f"#### {s}, 2 threads (ms: median of {len(cells[order[0]])} runs' medians)\n")
        print("| T | bf16 ms | int8 dot ms | int8 int8_dot ms | int8 speed-up | int4 dot ms | int4 int8_dot ms | int4 speed-up | int4 int8_dot % of INT8 peak | int4 int8_dot GB/s |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for T in sorted({k[1] for k in order if k[0] == s}):
            row = [f"{T}", f"{med(s, T, 'bf16', 'dot', 'ms_median'):.2f}"]
            for dt in ("int8", "int4"):
                a, b = med(s, T, dt, "dot", "ms_median"), med(s, T, dt, "int8_dot", "ms_median")
                row += [f"{a:.2f}", f"{b:.2f}", f"{a / b:.2f}x"]
            row += [f"{100 * med(s, T, 'int4', 'int8_dot', 'gflops') / peak['int8_dot']:.0f}%",
                    f"{med(s, T, 'int4', 'int8_dot', 'gbps'):.1f}"]
            print("| " + " | ".join(row) + " |")
        print()
    # Decode: how much of the read bandwidth each arithmetic streams at T = 1.
    print("#### T = 1: GB/s (median of the runs' values) and % of the read bandwidth "
          f"({roof['read_gbps']:.1f} GB/s, 2 threads)\n")
    kinds = (("bf16", "dot"), ("int8", "dot"), ("int8", "int8_dot"), ("int4", "dot"), ("int4", "int8_dot"))
    print("| shape | " + " | ".join(f"{dt} {m}" for dt, m in kinds) + " |")
    print("|---|" + "---:|" * len(kinds))
    for s in shapes:
        row = [s]
        for dt, m in kinds:
            g = med(s, 1, dt, m, "gbps")
            row.append("" if g != g else f"{g:.1f} ({100 * g / roof['read_gbps']:.0f} %)")  # nan: no runs
        print("| " + " | ".join(row) + " |")
    print()
    one = lines(os.path.join(out, "one_thread.jsonl"))
    if one:
        print("olmoe T = 512, int8_dot: 1 vs 2 threads\n")
        print("| dtype | 1 thread ms | 2 threads ms | speed-up |")
        print("|---|---:|---:|---:|")
        for a, b in zip(one[0::2], one[1::2]):
            print(f"| {a['dtype']} | {a['ms_median']:.2f} | {b['ms_median']:.2f} | {a['ms_median'] / b['ms_median']:.2f}x |")
        print()
    print_load(out)


if __name__ == "__main__":
    main(sys.argv[1])
