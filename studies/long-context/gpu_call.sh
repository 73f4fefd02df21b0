#!/usr/bin/env bash
# One call of a long-context round on a lent GPU machine whose calls last at most 10 minutes. The first call
# starts round.py in the background (it outlives the call while the machine stays held); every call, the first
# included, waits until LIM seconds have passed or the round has ended, then copies what finished (no
# checkpoints) to $OUT/snap.tgz. Make the next call the moment one returns: a machine left idle is handed back,
# and the round's checkpoints and running trainers go with it (studies/long-context/README.md, round 2).
#   OUT=/tmp/out WHERE="seed == 0 and model.d_model <= 192" BUDGET=800 UNTIL=930 bash studies/long-context/gpu_call.sh 570
set -u
LIM=${1:?seconds this call may last}; OUT=${OUT:?set OUT}; WHERE=${WHERE:?set WHERE}
BUDGET=${BUDGET:-1250}; UNTIL=${UNTIL:-1350}; T0=$SECONDS
[ -d /tmp/cl ] || cp -r "$PWD" /tmp/cl  # run from a copy: each call replaces the tree it was given
# WHEELS: a folder of wheels the machine lacks (submitit, cloudpickle, typing_extensions), installed once
[ -n "${WHEELS:-}" ] && [ ! -d /tmp/site ] && pip install --no-deps --target /tmp/site "$WHEELS"/*.whl -q
cd /tmp/cl
export PYTHONPATH=/tmp/site:/tmp/cl${PYTHONPATH:+:$PYTHONPATH}
mkdir -p /tmp/lc
if [ ! -f /tmp/lc/started ]; then
  touch /tmp/lc/started
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt"
  python -m costlaw data prepare --source site-packages+include --tokenizer byte --json > "$OUT/prepare.json" 2>&1
  nohup setsid python studies/long-context/round.py --root /tmp/lc/r2 --runs-per-gpu 8 --budget-s "$BUDGET" \
    --until-s "$UNTIL" --kv-parallel 3 --where "$WHERE" > /tmp/lc/round.out 2>&1 < /dev/null &
fi
# the round has ended when round.py says so and no trainer it left behind at its budget is still running
ended() { grep -q "^sweep rc=" /tmp/lc/round.out 2>/dev/null && ! pgrep -f submitit.local._local > /dev/null; }
while [ $((SECONDS - T0)) -lt "$LIM" ] && ! ended; do sleep 5; done
tar czf "$OUT/snap.tgz" --exclude='*.pt' --exclude='compile-cache' -C /tmp/lc r2 r2-kv r2-round.log round.out 2>/dev/null
echo "at $((SECONDS - T0)) s: $(ls /tmp/lc/r2/runs 2>/dev/null | wc -l) run dirs, $(ls /tmp/lc/r2/runs/*/DONE 2>/dev/null | wc -l) done, $(ls /tmp/lc/r2-kv/runs/*/DONE 2>/dev/null | wc -l) kv-evals done"
tail -3 /tmp/lc/round.out
