"""A dense and a hybrid extension of the same checkpoint, side by side (LongGen's comparison, from the store).

    costlaw compare-hybrid --db RESULTS.duckdb --out DIR

Pairs. Every completed hybrid run that was started from another run (`base_run_id`) is paired with its dense
twin: the completed run with the same base_run_id, the same seq_len and every layer full (no KV policy), the
same model otherwise. Several twins are narrowed to the hybrid's seed; a hybrid without exactly one twin is
an error, since the comparison only means something when both extensions started from the same weights.

Per pair: validation loss at the training length, loss by position bucket, passkey retrieval by depth, and
speed next to what the cost model says the sparsity should buy, each from this checkout's `costmodel`:
- train: steady-state tokens/s (hybrid / dense) vs c_train(dense, T) / c_train(hybrid, T);
- prefill: dense prefill_s / hybrid prefill_s vs the ratio of prefill_flops over the prompt the eval prefilled
  (`prefill_tokens` = context - decode tokens);
- decode: hybrid tokens/s / dense vs the ratio of c_infer at the context (the FLOP-bound ideal) and vs the
  ratio of bytes a batch-1 step reads, weights + KV cache at bf16 (the bandwidth-bound ideal);
- share of ideal = measured / ideal speedup.
KV cache bytes measured are checked against costmodel.kv_cache_bytes at the cache's dtype (bf16 on a GPU,
fp32 on CPU: docs/run-directory.md).

DIR gets hybrid.json (the numbers), hybrid.md (the tables) and hybrid.png + hybrid.svg (the figure).

| module | holds |
|---|---|
| pairing.py | reading the store; which runs are paired |
| compare.py | one pair's numbers and the ideals; `compare(db)` |
| render.py | the markdown |
| figure.py | the figure |
| outputs.py | `write_outputs`: everything above into one directory |
"""

from costlaw.analysis.hybrid.compare import FORMAT, SERVE_DTYPE, compare
from costlaw.analysis.hybrid.figure import figure
from costlaw.analysis.hybrid.outputs import HybridOutputs, write_outputs
from costlaw.analysis.hybrid.render import render_markdown

__all__ = ["FORMAT", "SERVE_DTYPE", "HybridOutputs", "compare", "figure", "render_markdown", "write_outputs"]
