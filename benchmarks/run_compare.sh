#!/usr/bin/env bash
# Regenerates the live comparison of docs/BENCHMARKS.md section 9: CATO vs the real Ray Serve
# 2.60 vs round robin, each started in turn over the same emulated engines and replaying the
# same stream (about an hour on 2 cores). Needs the `ray` extra (make test installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
CATO=${CATO:-.venv/bin/cato}
OUT=docs/results/compare
SYSTEMS=cato,round-robin,ray-serve,ray-serve-tuned,ray-serve-cato
mkdir -p "$OUT" docs/img
# 9.1 the paper's setting at its knee: 2 models x 6 batch-capped replicas, mix B, Poisson
"$CATO" bench compare --systems "$SYSTEMS" --scenario paper --rate 3.33 --duration 60 \
  --seeds 0,1,2,3,4 --quiet --out "$OUT/paper"
# 9.2 the Azure code trace replayed on 4 batching A100-like replicas: the trace time-scaled to a
# mean 6 req/s over its 30 min, past its quiet first 64 s (its first two minutes unscaled), 60 s
"$CATO" bench compare --systems "$SYSTEMS" --scenario azure --rate 6 \
  --duration 60 --seeds 0,1,2,3,4 --quiet --out "$OUT/azure"
# 9.3 what each gateway costs in front of instant engines
"$CATO" bench capacity --systems cato,ray-serve-tuned --rates 50,100,200,300,400 --duration 10 \
  --json "$OUT/capacity.json"
# 9.4 autoscaled: mix A with a x4 surge in the middle third, 1-16 replicas, engines 4x slowed
# (3.125 req/s base on them is the simulator's 12.5 req/s), every system with its own scaler
"$CATO" bench compare --systems cato-plus,cato,ray-serve,ray-serve-tuned,ray-serve-cato \
  --scenario mixA-autoscaled --rate 3.125 --duration 240 --time-dilation 4 --autoscale \
  --seeds 0,1,2,3,4 --quiet --out "$OUT/autoscaled"
cp "$OUT/paper/paper-3.33.png" docs/img/compare_paper.png
cp "$OUT/azure/azure-6.png" docs/img/compare_azure.png
cp "$OUT/autoscaled/mixA-autoscaled-3.125.png" docs/img/compare_autoscaled.png
