#!/usr/bin/env bash
# Faults, 10x overload and a soak against real engines and a real gateway (docs/RELIABILITY.md).
# Seed 0 writes the table into docs/RELIABILITY.md; seeds 1 and 2 give the spread.
# About 9 minutes a seed on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
$BIN/cato bench reliability --scale 1 --soak 120 --seed 0 --out docs/results/reliability
for s in 1 2; do
  $BIN/cato bench reliability --scale 1 --soak 120 --seed "$s" \
    --out "docs/results/reliability/seed$s" --doc /dev/null
done
