#!/bin/bash
# Kernels measurements in one sitting (bench/RESULTS.md, "Kernels" sections).
#   bench/scripts/kernels_run.sh NEW_MOEKIT [OLD_MOEKIT] OUT_DIR
# NEW_MOEKIT / OLD_MOEKIT: paths of two builds of the moekit command-line tool
# (OLD optional: the A/B rows of the same sitting). Writes JSON lines into
# OUT_DIR; bench/scripts/kernels_tables.py OUT_DIR prints the markdown tables.
set -euo pipefail
NEW=$1
if [ $# -ge 3 ]; then OLD=$2; OUT=$3; else OLD=; OUT=$2; fi
mkdir -p "$OUT"
cd "$OUT"
rm -f ./*.json ./*.jsonl
uptime > load_start.txt
"$NEW" roofline --threads 1 --json > roof1.json
"$NEW" roofline --threads 2 --json > roof2.json
if [ -n "$OLD" ]; then  # old and new interleaved, same sitting
  for dt in bf16 int8 int4; do for T in 1 512; do
    "$OLD" bench --shape olmoe --tokens $T --threads 2 --dtype $dt --json >> ab_old.jsonl
    "$NEW" bench --shape olmoe --tokens $T --threads 2 --dtype $dt --json >> ab_new.jsonl
  done; done
fi
for s in olmoe mixtral-s qwen3-30b-a3b deepseek-v2-lite; do
  for dt in f32 bf16 int8 int4; do
    for T in 1 8 64 512; do
      "$NEW" bench --shape $s --tokens $T --threads 2 --dtype $dt --roofline --json >> table2.jsonl
    done
  done
  for dt in f32 bf16; do "$NEW" bench --shape $s --tokens 512 --threads 1 --dtype $dt --roofline --json >> table1.jsonl; done
done
for T in 1 64 512; do
  "$NEW" bench --shape olmoe --tokens $T --threads 2 --dtype bf16 --bf16-math widen --roofline --json >> widen.jsonl
done
"$NEW" roofline --threads 2 --json > roof2_end.json
uptime > load_end.txt
