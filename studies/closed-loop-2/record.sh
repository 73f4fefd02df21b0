#!/usr/bin/env bash
# Closed loop 2 (issue 26): ten recommendations over targets, contexts, objectives, budgets and candidates, from
# the gqa-heads-steps + gqa-aspect ladder (91 + 26 runs), each recorded in this study's store with its 90%
# prediction interval for a new run, and written into spec.toml with the ladder's own recipe on seed 3 (the
# ladder used seeds 0-2). Run from the repository root; the store must exist (costlaw ingest creates it).
set -euo pipefail
S=studies/closed-loop-2
k=0
rec() {
  k=$((k + 1))
  costlaw recommend --db "$S/results.duckdb" --db studies/gqa-heads-steps/results.duckdb \
      --db studies/gqa-aspect/results.duckdb --level 0.9 --bootstrap 200 --seed 0 "$@" --record \
      --spec-out "$S/spec.toml" --recipe-from studies/gqa-heads-steps/spec.toml --train-seed 3 \
      --spec-name closed-loop-2 --json > "$S/recommendation-$(printf %02d $k).json"
}
rec --target-loss 0.85 --context 16K
rec --target-loss 0.95 --context 16K
rec --target-loss 0.92 --context 128K --candidates 8,2 --d-multiple 32
rec --target-loss 0.84 --context 64K --candidates 4,4 --d-multiple 32
rec --target-loss 0.90 --context 16K --candidates 8,8 --d-multiple 32
rec --target-loss 0.86 --context 32K --candidates 8,8 --d-multiple 32
rec --target-loss 0.95 --context 8K --candidates 4,4 --d-multiple 32
rec --target-loss 0.90 --context 128K --d-multiple 32 --lambda 0.5
rec --target-loss 0.90 --context 128K --d-multiple 32 --flops-budget 1.3G
rec --target-loss 0.93 --context 64K --d-multiple 32 --flops-budget 600M
