#!/bin/bash
# int8 / int4 experts with bf16 activations (vdpbf16ps, the default) against
# int8 activations (vpdpbusd, --bf16-math int8_dot), bf16 experts alongside,
# interleaved in one sitting (bench/RESULTS.md, "int8 activations through VNNI").
#   bench/scripts/vnni_run.sh MOEKIT OUT_DIR [REPEATS]
# Writes JSON lines into OUT_DIR; bench/scripts/vnni_tables.py OUT_DIR prints the tables.
set -euo pipefail
B=$1
OUT=$2
REPEATS=${3:-2}
mkdir -p "$OUT"
cd "$OUT"
rm -f ./*.json ./*.jsonl
uptime > load_start.txt
"$B" roofline --threads 2 --json > roof2.json
for rep in $(seq "$REPEATS"); do
  for s in olmoe mixtral-s qwen3-30b-a3b deepseek-v2-lite; do
    for T in 1 8 64 512; do
      "$B" bench --shape $s --tokens $T --threads 2 --dtype bf16 --json >> runs.jsonl
      for dt in int8 int4; do
        for m in dot int8_dot; do
          "$B" bench --shape $s --tokens $T --threads 2 --dtype $dt --bf16-math $m --json >> runs.jsonl
        done
      done
    done
  done
done
for dt in int8 int4; do  # 2-thread scaling of the VNNI prefill
  "$B" bench --shape olmoe --tokens 512 --threads 1 --dtype $dt --bf16-math int8_dot --json >> one_thread.jsonl
  "$B" bench --shape olmoe --tokens 512 --threads 2 --dtype $dt --bf16-math int8_dot --json >> one_thread.jsonl
done
"$B" roofline --threads 2 --json > roof2_end.json
uptime > load_end.txt
