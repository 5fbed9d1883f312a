#!/usr/bin/env bash
# SLO capacity (issue 13, BENCHMARK_PROTOCOL.md section 3-4) of every policy per scenario, the
# best tuned baseline and CATO's ratio to it: JSON and plots in docs/results/capacity/, the
# summary table in docs/results/capacity/SUMMARY.md; then the autoscaled Pareto fronts in
# docs/results/fronts/. Several hours on 2 cores with full durations; DURATION=120 (the
# default here for the mix/trace scenarios) keeps each scenario under ~20 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
CATO=${CATO:-.venv/bin/cato}
OUT=docs/results/capacity
DURATION=${DURATION:-120}
mkdir -p "$OUT"

cap() {  # scenario, extra args...
  local sc=$1; shift
  "$CATO" capacity --scenario "$sc" --seeds 5 --json "$OUT/$sc.json" --plots "$OUT/$sc" "$@" \
    > "$OUT/$sc.txt" 2>&1
  echo "done $sc"
}

cap paper                                   # its own 120 s runs
for sc in mixA-poisson mixB-poisson mixA-bursty mixB-bursty multistep azure; do
  cap "$sc" --duration "$DURATION"
done
.venv/bin/python benchmarks/capacity_table.py "$OUT"/*.json > "$OUT/SUMMARY.md"
.venv/bin/python benchmarks/capacity_table.py --readme "$OUT"/*.json > "$OUT/README_TABLE.md"

# CATO+'s levers one by one at fixed cells (BENCHMARKS §0.2), ~20 minutes
.venv/bin/python benchmarks/ablation.py --seeds 5 --out docs/results/ablation

FRONTS=docs/results/fronts
mkdir -p "$FRONTS"
"$CATO" fronts --scenario paper-autoscaled --rate 2,3.33 --seeds 5 --full \
  --json "$FRONTS/paper-autoscaled.json" --plots docs/img > "$FRONTS/paper-autoscaled.txt" 2>&1
"$CATO" fronts --scenario mixA-autoscaled --rate 12.5 --seeds 5 \
  --ray-grid "max_ongoing=16,32,unbounded;target=4,8,16;up=10,30;down=120,600" \
  --json "$FRONTS/mixA-autoscaled.json" --plots docs/img > "$FRONTS/mixA-autoscaled.txt" 2>&1
echo "done fronts"
