#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# A/B of two builds of the `moekit` tool on the same cases, interleaved in one
# sitting (old, new, new, old, ...) so that the host's drift hits both alike.
#   bench/scripts/ab_run.py OLD_MOEKIT NEW_MOEKIT REPEATS CASE [CASE ...]
# CASE: the arguments of one `moekit bench` run in quotes, e.g.
#   "--shape deepseek-v2-lite --tokens 1 --dtype int4 --threads 2"
# OLD / NEW may add arguments of their own to every case after the tool's
# path, e.g. one build, two kinds of arithmetic:
#   ab_run.py "build/tools/moekit --bf16-math dot" "build/tools/moekit --bf16-math int8_dot" 5 ...
# Prints a markdown table: the median over REPEATS of each build's ms_median,
# and old / new (> 1: the new build is faster).
import json
import statistics
import subprocess
import sys


def run(tool, args):
    path, *extra = tool.split()
    out = subprocess.run([path, "bench", *args.split(), *extra, "--json"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)["ms_median"]


def main():
    if len(sys.argv) < 5:
        sys.exit("usage: ab_run.py OLD_MOEKIT NEW_MOEKIT REPEATS CASE [CASE ...]")
    old, new, repeats, cases = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    print("| case | old ms | new ms | old / new | runs (old; new) |")
    print("|---|---:|---:|---:|---|")
    for case in cases:
        a, b = [], []
        for i in range(repeats):  # the order alternates: a host that slows the
            if i % 2 == 0:        # second run of a pair would favour one build
                a.append(run(old, case))
                b.append(run(new, case))
            else:
                b.append(run(new, case))
                a.append(run(old, case))
        ma, mb = statistics.median(a), statistics.median(b)
        print("| `%s` | %.3f | %.3f | %.2f× | %s; %s |" % (
            case, ma, mb, ma / mb, " ".join("%.2f" % v for v in a), " ".join("%.2f" % v for v in b)),
            flush=True)


if __name__ == "__main__":
    main()
