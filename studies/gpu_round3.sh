#!/usr/bin/env bash
# Round 3 of the reference study on one GPU (issue 8): the hybrid study alone on the GPU (pretrain, then the
# dense and hybrid 16K extensions one at a time, so their speeds compare), with the submitit logs kept.
#   OUT=/tmp/out bash studies/gpu_round3.sh
set -u
OUT=${OUT:?set OUT}
export PYTHONUNBUFFERED=1 COSTLAW_CACHE=${COSTLAW_CACHE:-/tmp/clc}
t0=$(date +%s)
timeout 540 python -m costlaw sweep submit studies/hybrid-extend/spec.toml --executor local --root /tmp/hy \
    > "$OUT/hybrid.log" 2>&1
echo "hybrid rc=$? at $(( $(date +%s) - t0 )) s"
tar czf "$OUT/hybrid.tgz" -C /tmp/hy --exclude=checkpoint.pt runs sweep.json submitit
