#!/usr/bin/env bash
# Regenerates the live comparison of docs/BENCHMARKS.md section 9 under BENCHMARK_PROTOCOL.md
# section 4's live rules (pinned roles, late sends discarded, the same calls per engine, CPU per
# request, 5 seeds): CATO+ against the real Ray Serve 2.60 tuned for LLMs and the gateway's
# best SLA-blind router, each started in turn over the same emulated engines replaying the same
# stream (about 75 minutes on 2 cores; run it on a quiet machine). Needs the `ray` extra (make
# test installs it). AUTOSCALED=1 also re-runs the autoscaled comparison (another ~2 hours).
set -euo pipefail
cd "$(dirname "$0")/.."
CATO=${CATO:-.venv/bin/cato}
OUT=docs/results/compare-issue13
mkdir -p "$OUT" docs/img
# 9.1 the paper's setting: 2 models x 6 batch-capped replicas, mix B, Poisson 3.33 req/s
"$CATO" bench compare --systems cato-plus,ray-serve-tuned --scenario paper --rate 3.33 \
  --duration 60 --seeds 0,1,2,3,4 --quiet --out "$OUT/paper"
# 9.2 the Azure code trace on 4 batching A100-like replicas, time-scaled to a mean 4.5 req/s;
# each seed replays its own 120 s window of it
"$CATO" bench compare --systems cato-plus,least-outstanding,ray-serve-tuned --scenario azure \
  --rate 4.5 --duration 120 --seeds 0,1,2,3,4 --quiet --out "$OUT/azure"
# 9.3 what each gateway costs in front of near-instant engines
"$CATO" bench capacity --systems cato,ray-serve-tuned --rates 50,100,200,300,400 --duration 10 \
  --json "$OUT/capacity.json"
cp "$OUT/azure/azure-4.5.png" docs/img/compare_azure.png
if [[ "${AUTOSCALED:-0}" == 1 ]]; then
  # autoscaled: mix A with a x4 surge in the middle third, 1-16 replicas, engines 4x slowed,
  # every system with its own scaler
  "$CATO" bench compare --systems cato-plus,ray-serve-tuned \
    --scenario mixA-autoscaled --rate 3.125 --duration 240 --time-dilation 4 --autoscale \
    --seeds 0,1,2,3,4 --quiet --out "$OUT/autoscaled"
fi
