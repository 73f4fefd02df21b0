"""The results store: one DuckDB file, written only by `costlaw ingest`, read through checked read-only SQL.

Workers write run directories (docs/run-directory.md); `ingest(root, db)` loads the finished ones
(idempotent: the run id is the primary key, unchanged runs are left alone, a newer DONE replaces a run's
rows in one transaction; incomplete and corrupt directories are reported and skipped).

A new file is made in 64 KiB blocks (analysis/store/lock.py says why); `costlaw ingest --db DB --compact`
rewrites an older or re-ingested one without its free space (analysis/store/compact.py).

Tables (schema version in `schema_version`, migrations in analysis/store/schema.py):
  runs    one row per run: run_id, model_id, name, sweep, stage, seed, status, base_run_id, the flattened
          ModelConfig (d_model ... layout, family, n_full_layers, sparse pattern, kv policy), data/train
          settings (seq_len, tokens_budget, batch_size, lr, ...), summary (steps, tokens, final_loss, val_loss,
          tokens_per_s, mfu, peak_memory_bytes, wall_s, ...), every analytic cost (params_total,
          c_infer_flops_per_token, m_infer_values, kv_cache_bytes, c_train_flops_per_token, ...), environment
          (gpu, torch, git_commit, hostname, slurm_job_id, ...), data (corpus_id, epochs, padding_ratio, abr),
          the raw config/summary JSON and ingest bookkeeping
  steps   (run_id, step) -> tokens, loss, lr, grad_norm, tokens_per_s, time_s
  evals   (run_id, eval, tags, metric) -> value, with the common tags as columns: context, bucket, depth,
          policy, keep, budget, batch
  fits    fitted laws, written by `write_fits(db, rows)`
  recommendations  `costlaw recommend --record`: each context's winner, its predicted loss and 95% interval

Views:
  run_summary          one row per completed run: config, N, tokens, final/val loss, analytic costs, throughput, GPU
  final_loss_by_heads  completed runs grouped by head configuration and size (seeds pooled)
  kv_policy_evals      the compressed-cache harness, one row per (run, context, policy, keep|budget)
  position_loss        loss by position bucket per (run, context, bucket)
  retrieval            passkey retrieval accuracy per (run, context, depth)
  inference            measured vs analytic KV bytes, prefill s, decode tokens/s per (run, context, batch)
  closed_loop          recorded recommendations beside the completed runs of the same model_id (inside the interval?)

Python API: `ingest(root, db) -> IngestReport`, `connect_readonly(db)`, `query_df(db, sql, engine)`,
`table_df(db, name, engine)`, `query_arrow(db, sql)`, `check_sql(sql)`, `write_fits(db, rows)`.
"""

from costlaw.analysis.store.fits import write_fits
from costlaw.analysis.store.frames import query_df, table_df
from costlaw.analysis.store.ingest import IngestReport, ingest
from costlaw.analysis.store.query import check_sql, connect_readonly, list_objects, query_arrow, query_rows
from costlaw.analysis.store.schema import SCHEMA_VERSION
from costlaw.analysis.store.views import VIEWS

# polars is imported only when ingesting or building frames, so `costlaw query` starts fast
__all__ = ["write_fits", "query_df", "table_df", "IngestReport", "ingest", "check_sql", "connect_readonly",
           "list_objects", "query_arrow", "query_rows", "SCHEMA_VERSION", "VIEWS"]
