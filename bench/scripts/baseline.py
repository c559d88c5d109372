#!/usr/bin/env python3
"""Run bench_block one shape at a time on a shared machine, and turn the results into tables.

  bench/scripts/baseline.py run   [--bench build-bench/bench/bench_block] [--out build-bench/results]
                                  [--shapes a,b] [--quiet-cores 0.3] [--max-wait 900] [-- extra args]
  bench/scripts/baseline.py table [--out build-bench/results]        # markdown tables on stdout

`run` waits before each shape until the other processes on the machine use less than
--quiet-cores cores (averaged over 10 s; it gives up waiting after --max-wait seconds and
runs anyway), then runs that shape with 3 repetitions (median, mean, stddev, cv reported),
and meanwhile samples every 2 s how many cores *other* processes used (all busy time in
/proc/stat minus the benchmark's own). The samples go to <out>/load.jsonl, the benchmark's
JSON to <out>/<shape>.json. Only the standard library is used.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

SHAPES = ["mixtral-s", "olmoe", "qwen3-30b-a3b", "deepseek-v2-lite"]
SHAPE_DIMS = {  # d, f, E, k (shared/conformance/README.md)
    "mixtral-s": (1024, 3584, 8, 2),
    "olmoe": (2048, 1024, 64, 8),
    "qwen3-30b-a3b": (2048, 768, 128, 8),
    "deepseek-v2-lite": (2048, 1408, 64, 6),
}
NCPU = os.cpu_count() or 1
HZ = os.sysconf("SC_CLK_TCK")


def cpu_times():
    """(busy, total) jiffies over all CPUs."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]  # idle + iowait
    total = sum(vals[:8])      # guest time is already counted in user
    return total - idle, total


def proc_jiffies(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime, all threads
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(v) for v in f.read().split()[:3]]


def foreign_cores(seconds, pid=None):
    """Cores used by processes other than `pid` over the next `seconds`."""
    b0, t0 = cpu_times()
    p0 = proc_jiffies(pid) if pid else 0
    time.sleep(seconds)
    b1, t1 = cpu_times()
    p1 = proc_jiffies(pid) if pid else 0
    if p0 is None or p1 is None:
        p0 = p1 = 0
    dt = max(1, t1 - t0)
    return max(0.0, (b1 - b0 - (p1 - p0)) / dt * NCPU), (p1 - p0) / dt * NCPU


def run(a, extra):
    os.makedirs(a.out, exist_ok=True)
    log = open(os.path.join(a.out, "load.jsonl"), "a")
    for shape in a.shapes.split(","):
        waited = 0.0
        while True:
            fc, _ = foreign_cores(10)
            waited += 10
            if fc < a.quiet_cores or waited >= a.max_wait:
                break
            print(f"# {shape}: others use {fc:.2f} cores, waiting ({waited:.0f} s)", file=sys.stderr)
        cmd = [a.bench, f"--benchmark_filter=/{shape}/", "--benchmark_repetitions=3",
               "--benchmark_report_aggregates_only=true",
               f"--benchmark_out={os.path.join(a.out, shape + '.json')}",
               "--benchmark_out_format=json"] + extra
        print("# " + " ".join(cmd), file=sys.stderr)
        start = {"shape": shape, "event": "start", "time": time.time(), "loadavg": loadavg(),
                 "foreign_cores_before": round(fc, 3), "waited_s": waited, "cmd": cmd}
        log.write(json.dumps(start) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd)
        samples = []
        while proc.poll() is None:
            fc, own = foreign_cores(2, proc.pid)
            samples.append((fc, own))
            log.write(json.dumps({"shape": shape, "event": "sample", "time": time.time(),
                                  "foreign_cores": round(fc, 3), "bench_cores": round(own, 3),
                                  "loadavg": loadavg()}) + "\n")
        rc = proc.wait()
        fcs = sorted(s[0] for s in samples) or [0.0]
        end = {"shape": shape, "event": "end", "time": time.time(), "rc": rc, "loadavg": loadavg(),
               "foreign_cores_mean": round(sum(fcs) / len(fcs), 3),
               "foreign_cores_p90": round(fcs[int(0.9 * (len(fcs) - 1))], 3),
               "foreign_cores_max": round(fcs[-1], 3),
               "busy_samples_over_0.5": sum(1 for v in fcs if v > 0.5), "samples": len(fcs)}
        log.write(json.dumps(end) + "\n")
        log.flush()
        print("# " + json.dumps(end), file=sys.stderr)
        if rc != 0:
            sys.exit(rc)


def table(a):
    shapes = [s for s in SHAPES if os.path.exists(os.path.join(a.out, s + ".json"))]
    name_re = re.compile(r"block_f32/([^/]+)/T:(\d+)/threads:(\d+)/")
    for shape in shapes:
        with open(os.path.join(a.out, shape + ".json")) as f:
            data = json.load(f)
        rows = {}
        for b in data["benchmarks"]:
            m = name_re.match(b["name"])
            if not m or b.get("run_type") != "aggregate":
                continue
            key = (int(m.group(2)), int(m.group(3)))
            rows.setdefault(key, {})[b["aggregate_name"]] = b
        d, f_, E, k = SHAPE_DIMS[shape]
        print(f"\n### {shape} (d {d}, f {f_}, E {E}, k {k})\n")
        print("| T | threads | ms (median) | cv | GFLOP/s | GB/s | experts touched | 2-thread speedup |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for T in sorted({t for t, _ in rows}):
            for n in sorted({n for t, n in rows if t == T}):
                r = rows[(T, n)]
                med = r["median"]
                cv = r.get("cv", {}).get("real_time")
                speed = ""
                if n > 1 and (T, 1) in rows:
                    speed = f"{rows[(T, 1)]['median']['real_time'] / med['real_time']:.2f}x"
                print(f"| {T} | {n} | {med['real_time']:.3g} | "
                      f"{'' if cv is None else f'{100 * cv:.1f}%'} | {med['GFLOP/s']:.3g} | "
                      f"{med['GB/s']:.3g} | {med['experts_touched']:.3g} | {speed} |")
    path = os.path.join(a.out, "load.jsonl")
    if os.path.exists(path):
        print("\n### Machine load during the runs (cores used by other processes)\n")
        print("| shape | loadavg at start | others, mean | p90 | max | samples > 0.5 core |")
        print("|---|---|---:|---:|---:|---:|")
        starts = {}
        for line in open(path):
            e = json.loads(line)
            if e["event"] == "start":
                starts[e["shape"]] = e
            elif e["event"] == "end":
                la = starts.get(e["shape"], {}).get("loadavg", [])
                print(f"| {e['shape']} | {' '.join(f'{v:.2f}' for v in la)} | "
                      f"{e['foreign_cores_mean']:.2f} | {e['foreign_cores_p90']:.2f} | "
                      f"{e['foreign_cores_max']:.2f} | "
                      f"{e['busy_samples_over_0.5']}/{e['samples']} |")


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["run", "table"])
    ap.add_argument("--bench", default="build-bench/bench/bench_block")
    ap.add_argument("--out", default="build-bench/results")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--quiet-cores", type=float, default=0.3)
    ap.add_argument("--max-wait", type=float, default=900)
    a = ap.parse_args(argv)
    run(a, extra) if a.mode == "run" else table(a)


if __name__ == "__main__":
    main()
