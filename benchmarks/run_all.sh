#!/usr/bin/env bash
# Regenerates every simulator figure of docs/BENCHMARKS.md (JSON in docs/results/, PNG in
# docs/img/). Runs two scenario groups in parallel; about an hour on 2 cores.
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
  run multistep --rates 31,62,65 --duration 200 \
    --policies cato,cato-plus,least_outstanding,ray-tuned,edf,oracle
  run h100-mixA --rates 117,130,143 --duration 120 --seeds 3 \
    --policies cato,cato-plus,least_outstanding,ray-tuned,oracle
  run azure --rates 8,12,16,20 --seeds 3 \
    --policies cato,cato-plus,round_robin,least_outstanding,ray-tuned,oracle
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
# control-plane cost, alone on the machine
"$CATO" bench routing --replicas 10,100,1000,5000 --decisions 3000 --repeat 5 \
  --json "$OUT/routing.json" > "$OUT/routing.txt" 2>&1
/usr/bin/time -v "$CATO" simulate --scenario scale --seeds 1 --json "$OUT/scale.json" \
  > "$OUT/scale.txt" 2> "$OUT/scale.time.txt" || "$CATO" simulate --scenario scale --seeds 1 \
  --json "$OUT/scale.json" > "$OUT/scale.txt"
.venv/bin/python benchmarks/report.py "$OUT" > docs/results/SUMMARY.md
echo "wrote docs/results/SUMMARY.md"
