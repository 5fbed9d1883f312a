#!/usr/bin/env bash
# Regenerates every simulator figure of docs/BENCHMARKS.md (JSON in docs/results/, PNG in
# docs/img/). Runs two scenario groups in parallel; about 50 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
CATO=${CATO:-.venv/bin/cato}
OUT=docs/results
IMG=docs/img
SEEDS=${SEEDS:-5}
mkdir -p "$OUT" "$IMG"

run() {  # name, extra args...
  local name=$1; shift
  "$CATO" simulate --scenario "$name" --seeds "$SEEDS" --json "$OUT/$name.json" --plots "$IMG" "$@" \
    > "$OUT/$name.txt" 2>/dev/null
  echo "done $name"
}

group1() {
  run paper
  run reproduction
  run mixA-poisson --rates 25,45,50,55,60 --duration 200
  run mixA-bursty --rates 25,45,50,55,60 --duration 200
  run ablation --duration 600
  run mixB-diurnal --rates 31 --seeds 3
}
group2() {
  run mixB-poisson --rates 31,56,62,65,68 --duration 200
  run mixB-bursty --rates 31,56,62,65,68 --duration 200
  run mixA-autoscaled --rates 12.5,25
  run mixB-autoscaled --rates 15.5,31
  run paper-autoscaled --rates 2.0,3.33
  run cold-start --seeds 3 --duration 600
}
group1 & group2 & wait
.venv/bin/python benchmarks/report.py "$OUT" > docs/results/SUMMARY.md
echo "wrote docs/results/SUMMARY.md"
