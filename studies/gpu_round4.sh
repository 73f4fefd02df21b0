#!/usr/bin/env bash
# Round 4 of the reference study on one GPU (issue 8): one slice of the GQA ladder's d 512 row, packed on the
# GPU, after timing the chunked sink+window BlockMask builder (issue 4) on the same machine.
#   OUT=/tmp/out WHERE="model.d_model == 512 and model.n_heads == 1" PER_GPU=2 bash studies/gpu_round4.sh
# SPEC picks another study (default studies/gqa-heads/spec.toml), e.g. SPEC=studies/gqa-lr/spec.toml WHERE="seed == 0".
set -u
OUT=${OUT:?set OUT}; WHERE=${WHERE:?set WHERE}; PER_GPU=${PER_GPU:-2}; BUDGET=${BUDGET:-520}
SPEC=${SPEC:-studies/gqa-heads/spec.toml}
export PYTHONUNBUFFERED=1 COSTLAW_CACHE=${COSTLAW_CACHE:-/tmp/clc}
t0=$(date +%s)
if [ -n "${MASKS:-}" ]; then
    timeout 60 python benchmarks/block_mask_setup_gpu.py --builders chunked --T "$MASKS" \
        --out "$OUT/block_mask_chunked.json" > "$OUT/block_mask_chunked.log" 2>&1
    echo "block masks rc=$? at $(( $(date +%s) - t0 )) s"
fi
timeout "$BUDGET" python -m costlaw sweep submit "$SPEC" --executor local --root /tmp/sw \
    --runs-per-gpu "$PER_GPU" --where "$WHERE" > "$OUT/sweep.log" 2>&1
echo "sweep rc=$? at $(( $(date +%s) - t0 )) s"
tar czf "$OUT/runs.tgz" -C /tmp/sw --exclude=checkpoint.pt runs sweep.json
nvidia-smi --query-gpu=name,utilization.gpu --format=csv,noheader
python - <<'PY'
import json, pathlib
for s in sorted(pathlib.Path("/tmp/sw/runs").glob("*/summary.json")):
    d = json.loads(s.read_text())
    print(s.parent.name, d["status"], d["costs"]["params_non_embedding"], d["val_loss"], round(d["tokens_per_s"] or 0),
          d["mfu"], "train_s", d["train_s"], "compile_s", d["compile_s"], "wall_s", d["wall_s"])
PY
