#!/usr/bin/env bash
# Regenerates the live figures of docs/BENCHMARKS.md sections 7 and 8 (real processes on this
# machine; about 20 minutes on 2 cores). The llama.cpp profile (7.4) needs two llama.cpp
# servers: see examples/llamacpp.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
CATO=${CATO:-.venv/bin/cato}
OUT=docs/results
mkdir -p "$OUT/live"
"$CATO" bench gateway --rate 100 --duration 15 --rounds 5 --pin --json "$OUT/gateway_overhead_pinned.json"
"$CATO" bench gateway --rate 100 --duration 15 --rounds 5 --json "$OUT/gateway_overhead.json"
for seed in 0 1 2; do
  for p in cato cato-plus round_robin least_outstanding; do
    "$CATO" demo --rate 27 --duration 30 --seed "$seed" --policy "$p" \
      --json "$OUT/live/demo-$p-s$seed.json" > /dev/null
  done
done
"$CATO" bench surge --png docs/img/live_vs_sim_surge.png --json "$OUT/live_vs_sim_surge.json"
