#!/usr/bin/env python3
"""Run bench_block case by case on a shared machine, and turn the results into tables.

  bench/scripts/baseline.py run   [--bench build-bench/bench/bench_block] [--out build-bench/results]
                                  [--path eigen|packed] [--shapes a,b] [--tokens 1,8,64,512] [--threads 1,2]
                                  [--quiet-cores 0.2] [--max-wait 900] [--tries 3] [-- extra args]
  bench/scripts/baseline.py peer  [--peer /work/shared/peers/torch_moe.py] [--shapes olmoe,mixtral-s]
                                  [--dtypes fp32,bf16] [--tokens ...] [--threads ...] [--out ...]
  bench/scripts/baseline.py table [--out build-bench/results]   # markdown tables on stdout

The machine is shared, so `run` runs each (shape, T, threads) case as its own process
(3 repetitions; median, mean, stddev and cv reported). Before each it waits until the
other processes use less than --quiet-cores cores (averaged over 10 s; after --max-wait
seconds it runs anyway), and while it runs it samples every second how many cores the
*other* processes use (all busy time in /proc/stat minus the benchmark's own). A run
during which others used more than --quiet-cores on average, or more than 0.5 core in
any sample, is repeated, up to --tries times; the quietest run is kept. Each case's
JSON goes to <out>/<shape>/T<T>_t<n>.json (cases that have one are skipped unless
--redo, or --redo-noisy and the kept run was not quiet), every attempt's load record to
<out>/load.jsonl; `table` reads them. Only the
standard library is used.

`peer` runs the PyTorch peer (shared/peers/torch_moe.py, with Debian's /usr/bin/python3
and torch 1.13) the same way, one (dtype, threads, shape, T) per process, with the same
quiet gate, retries and load record, into <out>/peer/. fp32 runs with
LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp (OpenBLAS instead of the
reference BLAS), bf16 without (oneDNN). `table` then adds moekit/PyTorch ratios.
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


def wait_quiet(a, label):
    waited = 0.0
    while True:
        fc, _ = foreign_cores(10)
        waited += 10
        if fc < a.quiet_cores or waited >= a.max_wait:
            return fc, waited
        print(f"# {label}: others use {fc:.2f} cores, waiting ({waited:.0f} s)", file=sys.stderr)


def run_case(a, extra, shape, T, n, path):
    cmd = [a.bench, f"--benchmark_filter=^block_f32/{shape}/T:{T}/threads:{n}/{a.path}",
           "--benchmark_repetitions=3", "--benchmark_report_aggregates_only=true",
           f"--benchmark_out={path}", "--benchmark_out_format=json"] + extra
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples = []
    while proc.poll() is None:
        samples.append(foreign_cores(1, proc.pid))
    out = proc.stdout.read()
    fcs = [s[0] for s in samples] or [0.0]
    return proc.returncode, out, cmd, {
        "foreign_cores_mean": round(sum(fcs) / len(fcs), 3),
        "foreign_cores_max": round(max(fcs), 3),
        "bench_cores_mean": round(sum(s[1] for s in samples) / max(1, len(samples)), 3),
        "samples": len(fcs)}


def is_quiet(a, load):
    return load["foreign_cores_mean"] < a.quiet_cores and load["foreign_cores_max"] <= 0.5


def run(a, extra):
    os.makedirs(a.out, exist_ok=True)
    log = open(os.path.join(a.out, "load.jsonl"), "a")
    for shape in a.shapes.split(","):
        os.makedirs(os.path.join(a.out, shape), exist_ok=True)
        for T in [int(t) for t in a.tokens.split(",")]:
            for n in [int(t) for t in a.threads.split(",")]:
                label = f"{shape}/T:{T}/threads:{n}"
                final = os.path.join(a.out, shape, f"T{T}_t{n}.json")
                final_load = final.replace(".json", ".load.json")
                best = None
                if os.path.exists(final) and not a.redo:
                    with open(final_load) as f:
                        kept = json.load(f)
                    if not a.redo_noisy or is_quiet(a, kept):
                        continue  # resume: pass --redo (or --redo-noisy) to measure again
                    best = (None, kept)  # a new run replaces it only if quieter
                for attempt in range(1, a.tries + 1):
                    before, waited = wait_quiet(a, label)
                    tmp = os.path.join(a.out, shape, f"T{T}_t{n}.try{attempt}.json")
                    rc, out, cmd, load = run_case(a, extra, shape, T, n, tmp)
                    rec = {"case": label, "shape": shape, "T": T, "threads": n, "attempt": attempt,
                           "time": time.time(), "rc": rc, "loadavg": loadavg(),
                           "foreign_cores_before": round(before, 3), "waited_s": waited, **load,
                           "cmd": " ".join(cmd)}
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    print(f"# {json.dumps(rec)}", file=sys.stderr)
                    if rc != 0 or "error_occurred" in open(tmp).read() or "Could not" in out:
                        print(out, file=sys.stderr)
                        sys.exit(rc or 1)
                    if best is None or load["foreign_cores_mean"] < best[1]["foreign_cores_mean"]:
                        best = (tmp, load)
                    if is_quiet(a, load):
                        break
                if best[0] is not None:
                    os.replace(best[0], final)
                    with open(final_load, "w") as f:
                        json.dump(best[1], f)
                for fn in os.listdir(os.path.join(a.out, shape)):
                    if ".try" in fn:
                        os.remove(os.path.join(a.out, shape, fn))


OPENBLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-openmp"


def run_peer_case(a, dtype, n, shape, T, path, cpu_clock):
    env = dict(os.environ, OMP_NUM_THREADS=str(n))
    env.pop("LD_LIBRARY_PATH", None)
    if dtype == "fp32":
        env["LD_LIBRARY_PATH"] = OPENBLAS_DIR
    args = ["--threads", str(n), "--dtype", dtype, "--shapes", shape, "--Ts", str(T), "--out", path]
    cmd = ["/usr/bin/python3", a.peer] + args
    if cpu_clock:  # the peer as it is, with its clock swapped for the process CPU time
        cmd = ["/usr/bin/python3", "-c",
               "import runpy, sys, time; time.perf_counter = time.process_time; "
               f"sys.argv = {[a.peer] + args!r}; runpy.run_path(sys.argv[0], run_name='__main__')"]
    if os.path.exists(path):
        os.remove(path)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples = []
    while proc.poll() is None:
        samples.append(foreign_cores(1, proc.pid))
    out = proc.stdout.read()
    fcs = [s[0] for s in samples] or [0.0]
    cmd_str = " ".join(["OMP_NUM_THREADS=" + str(n)] +
                       (["LD_LIBRARY_PATH=" + OPENBLAS_DIR] if dtype == "fp32" else []) + cmd)
    return proc.returncode, out, cmd_str, {
        "foreign_cores_mean": round(sum(fcs) / len(fcs), 3),
        "foreign_cores_max": round(max(fcs), 3), "samples": len(fcs)}


def peer(a):
    pdir = os.path.join(a.out, "peer")
    os.makedirs(pdir, exist_ok=True)
    log = open(os.path.join(a.out, "load.jsonl"), "a")
    for shape in a.shapes.split(","):
        for dtype in a.dtypes.split(","):
            for n in [int(t) for t in a.threads.split(",")]:
                for T, cpu_clock in [(int(t), c) for t in a.tokens.split(",")
                                     for c in ([False, True] if n == 1 and a.cpu_clock else [False])]:
                    clock = "_cpu" if cpu_clock else ""
                    label = f"torch/{dtype}/{shape}/T:{T}/threads:{n}{clock}"
                    final = os.path.join(pdir, f"{dtype}_{shape}_T{T}_t{n}{clock}.json")
                    best = None
                    if os.path.exists(final) and not a.redo:
                        with open(final) as f:
                            kept = json.load(f)["load"]
                        if not a.redo_noisy or is_quiet(a, kept):
                            continue
                        best = (None, kept)
                    for attempt in range(1, a.tries + 1):
                        before, waited = wait_quiet(a, label)
                        tmp = final + f".try{attempt}"
                        rc, out, cmd, load = run_peer_case(a, dtype, n, shape, T, tmp, cpu_clock)
                        rec = {"case": label, "attempt": attempt, "time": time.time(), "rc": rc,
                               "loadavg": loadavg(), "foreign_cores_before": round(before, 3),
                               "waited_s": waited, **load, "cmd": cmd}
                        log.write(json.dumps(rec) + "\n")
                        log.flush()
                        print(f"# {json.dumps(rec)}", file=sys.stderr)
                        if rc != 0:
                            print(out, file=sys.stderr)
                            sys.exit(rc)
                        with open(tmp) as f:
                            result = json.loads(f.readline())
                        os.remove(tmp)
                        if best is None or load["foreign_cores_mean"] < best[1]["foreign_cores_mean"]:
                            best = ({"result": result, "load": load, "cmd": cmd}, load)
                        if is_quiet(a, load):
                            break
                    if best[0] is not None:
                        with open(final, "w") as f:
                            json.dump(best[0], f)


def peer_rows(a):
    """{(dtype, shape, T, threads): record} of the peer runs."""
    pdir = os.path.join(a.out, "peer")
    rows = {}
    if os.path.isdir(pdir):
        for fn in os.listdir(pdir):
            m = re.fullmatch(r"(fp32|bf16)_(.+)_T(\d+)_t(\d+)(_cpu)?\.json", fn)
            if m:
                with open(os.path.join(pdir, fn)) as f:
                    rows[(m.group(1), m.group(2), int(m.group(3)), int(m.group(4)),
                          bool(m.group(5)))] = json.load(f)
    return rows


def num(x):
    return f"{x:.0f}" if x >= 1000 else f"{x:.3g}"


def table(a):
    ours = {}
    for shape in SHAPES:
        sources = set()
        sdir = os.path.join(a.out, shape)
        if not os.path.isdir(sdir):
            continue
        rows = {}
        for fn in os.listdir(sdir):
            m = re.fullmatch(r"T(\d+)_t(\d+)\.json", fn)
            if not m:
                continue
            key = (int(m.group(1)), int(m.group(2)))
            with open(os.path.join(sdir, fn)) as f:
                data = json.load(f)
            aggs = {b["aggregate_name"]: b for b in data["benchmarks"]
                    if b.get("run_type") == "aggregate"}
            with open(os.path.join(sdir, fn.replace(".json", ".load.json"))) as f:
                aggs["load"] = json.load(f)
            rows[key] = aggs
        d, f_, E, k = SHAPE_DIMS[shape]
        print(f"\n### {shape} (d {d}, f {f_}, E {E}, k {k})\n")
        print("| T | threads | ms (median) | CPU ms, 1 thread | cv | GFLOP/s | GB/s | experts touched "
              "| 2-thr speedup | others' cores mean / max |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for (T, n) in sorted(rows):
            r = rows[(T, n)]
            med, load = r["median"], r["load"]
            cv = r.get("cv", {}).get("real_time")
            speed = ""
            if n > 1 and (T, 1) in rows:
                speed = f"{rows[(T, 1)]['median']['real_time'] / med['real_time']:.2f}x"
            noisy = ("" if is_quiet(a, load) else " *") + (" †" if "source" in load else "")
            if "source" in load:
                sources.add(load["source"])
            cpu = num(med["cpu_time"]) if n == 1 else ""
            print(f"| {T} | {n} | {num(med['real_time'])}{noisy} | {cpu} | "
                  f"{'' if cv is None else f'{100 * cv:.1f}%'} | {med['GFLOP/s']:.3g} | "
                  f"{med['GB/s']:.3g} | {med['experts_touched']:.3g} | {speed} | "
                  f"{load['foreign_cores_mean']:.2f} / {load['foreign_cores_max']:.2f} |")
            ours[(shape, T, n)] = (med["real_time"], med["cpu_time"], load)
        print("\n\\* others used >= --quiet-cores on average or > 0.5 core at some point "
              "during the run: an upper bound, not a quiet-machine time. CPU ms (1 thread) "
              "leaves out the time the thread waited for a core: closer to the quiet time then.")
        for src in sorted(sources):
            print(f"† from the {src}.")
    peers = peer_rows(a)
    for shape in SHAPES:
        if not any(k[1] == shape for k in peers):
            continue
        print(f"\n### {shape}: moekit (fp32) against PyTorch 1.13, wall time (ms, median; "
              "ratio = moekit / PyTorch, below 1 = moekit faster)\n")
        print("| T | threads | moekit | PyTorch fp32 (OpenBLAS) | ratio | PyTorch bf16 (oneDNN) | ratio "
              "| others' cores mean (moekit / fp32 / bf16) |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for (s_, T, n) in sorted(k for k in ours if k[0] == shape):
            ms, _, load = ours[(s_, T, n)]
            noisy = "" if is_quiet(a, load) else " *"
            cells, loads = [], [f"{load['foreign_cores_mean']:.2f}"]
            for dt in ("fp32", "bf16"):
                p = peers.get((dt, shape, T, n, False))
                if p is None:
                    cells += ["", ""]
                    loads.append("-")
                    continue
                pm = p["result"]["ms_median"]
                pn = "" if is_quiet(a, p["load"]) else " *"
                cells += [num(pm) + pn, f"{ms / pm:.2f}"]
                loads.append(f"{p['load']['foreign_cores_mean']:.2f}")
            print(f"| {T} | {n} | {num(ms)}{noisy} | " + " | ".join(cells) + f" | {' / '.join(loads)} |")
        if not any(k[1] == shape and k[4] for k in peers):
            continue
        print(f"\n### {shape}, 1 thread: CPU time per forward (ms, median; load-robust; "
              "ratio = moekit / PyTorch)\n")
        print("| T | moekit | PyTorch fp32 (OpenBLAS) | ratio | PyTorch bf16 (oneDNN) | ratio |")
        print("|---:|---:|---:|---:|---:|---:|")
        for (s_, T, n) in sorted(k for k in ours if k[0] == shape and k[2] == 1):
            cpu = ours[(s_, T, n)][1]
            cells = []
            for dt in ("fp32", "bf16"):
                p = peers.get((dt, shape, T, 1, True))
                if p is None:
                    cells += ["", ""]
                    continue
                pm = p["result"]["ms_median"]
                cells += [num(pm), f"{cpu / pm:.2f}"]
            print(f"| {T} | {num(cpu)} | " + " | ".join(cells) + " |")


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["run", "peer", "table"])
    ap.add_argument("--peer", default="/work/shared/peers/torch_moe.py")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--cpu-clock", action="store_true",
                    help="peer: for 1 thread, also run it timed by process CPU time (comparable "
                         "with bench_block's 1-thread CPU time on a loaded machine)")
    ap.add_argument("--bench", default="build-bench/bench/bench_block")
    ap.add_argument("--out", default="build-bench/results")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--path", default="", help="expert path, eigen or packed (binaries with both "
                    "paths need it; use a separate --out for each)")
    ap.add_argument("--tokens", default="1,8,64,512")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--quiet-cores", type=float, default=0.2)
    ap.add_argument("--max-wait", type=float, default=900)
    ap.add_argument("--tries", type=int, default=3)
    ap.add_argument("--redo", action="store_true", help="measure cases that already have results")
    ap.add_argument("--redo-noisy", action="store_true",
                    help="measure again the cases whose kept run was not quiet; keep the quieter")
    a = ap.parse_args(argv)
    if a.mode == "run":
        run(a, extra)
    elif a.mode == "peer":
        peer(a)
    else:
        table(a)


if __name__ == "__main__":
    main()
