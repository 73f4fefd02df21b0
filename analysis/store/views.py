"""Named views over `runs`, `steps`, `evals` and `recommendations`: the questions users ask most, as plain SQL.

Views hold no data: `costlaw ingest` recreates them (CREATE OR REPLACE) after migrating, so a changed
definition reaches old databases on their next ingest. `costlaw query --help` lists them from `VIEWS`.
"""

from __future__ import annotations

# run configuration columns repeated in the per-result views, so they group without a join
_CONFIG = ("r.family, r.d_model, r.n_layers, r.n_heads, r.n_kv_heads, r.head_dim, r.seq_len, "
           "r.params_non_embedding")

VIEWS: dict[str, tuple[str, str]] = {
    "run_summary": (
        "one row per completed run: config, N, tokens, final/val loss, analytic costs, throughput, GPU",
        """
        SELECT run_id, name, sweep, stage, seed, model_id, family, d_model, n_layers, n_heads, n_kv_heads,
               head_dim, group_size, ffn_dim, vocab_size, tied_embeddings, layout, n_full_layers, sparse_kind,
               sink, "window", block, local_blocks, stride, kv_method, kv_keep, kv_budget, seq_len,
               params_total, params_non_embedding AS n_params, params_non_embedding, params_measured, tokens, steps,
               final_loss, val_loss,
               c_train_flops_per_token, c_train_flops_per_token * tokens AS train_flops,
               c_infer_flops_per_token, m_infer_values, kv_cache_bytes, kv_bytes_measured,
               tokens_per_s, mfu, peak_memory_bytes, wall_s, gpu, git_commit, base_run_id
        FROM runs WHERE status = 'completed'
        """),
    "final_loss_by_heads": (
        "completed runs grouped by head configuration and size (seeds pooled): mean/std/min final loss",
        """
        SELECT family, n_heads, n_kv_heads, head_dim, d_model, n_layers, seq_len,
               params_non_embedding AS n_params, tokens,
               count(*) AS n_runs, avg(final_loss) AS final_loss, stddev_samp(final_loss) AS final_loss_std,
               min(final_loss) AS final_loss_min, avg(val_loss) AS val_loss,
               any_value(c_infer_flops_per_token) AS c_infer_flops_per_token,
               any_value(m_infer_values) AS m_infer_values, any_value(kv_cache_bytes) AS kv_cache_bytes
        FROM runs WHERE status = 'completed'
        GROUP BY ALL
        """),
    "kv_policy_evals": (
        "the compressed-cache harness, one row per (run, context, policy, keep|budget), metrics as columns",
        f"""
        SELECT e.run_id, {_CONFIG}, e.context, e.policy, e.keep, e.budget,
               max(value) FILTER (WHERE metric = 'nll') AS nll,
               max(value) FILTER (WHERE metric = 'nll_full') AS nll_full,
               max(value) FILTER (WHERE metric = 'delta_nll') AS delta_nll,
               max(value) FILTER (WHERE metric = 'kl') AS kl,
               max(value) FILTER (WHERE metric = 'retrieval_accuracy') AS retrieval_accuracy,
               max(value) FILTER (WHERE metric = 'kv_bytes') AS kv_bytes,
               max(value) FILTER (WHERE metric = 'kv_bytes_analytic') AS kv_bytes_analytic,
               max(value) FILTER (WHERE metric = 'peak_bytes') AS peak_bytes,
               max(value) FILTER (WHERE metric = 'prefill_s') AS prefill_s,
               max(value) FILTER (WHERE metric = 'decode_tokens_per_s') AS decode_tokens_per_s
        FROM evals e JOIN runs r USING (run_id)
        WHERE e.eval = 'kv_policy'
        GROUP BY ALL
        """),
    "position_loss": (
        "loss by position bucket: one row per (run, context, bucket) with its token span",
        f"""
        SELECT e.run_id, {_CONFIG}, e.context, e.bucket,
               TRY_CAST(json_extract_string(e.tags, '$.start') AS BIGINT) AS start_pos,
               TRY_CAST(json_extract_string(e.tags, '$.end') AS BIGINT) AS end_pos,
               max(value) FILTER (WHERE metric = 'loss') AS loss,
               max(value) FILTER (WHERE metric = 'tokens') AS tokens
        FROM evals e JOIN runs r USING (run_id)
        WHERE e.eval = 'position_loss'
        GROUP BY ALL
        """),
    "retrieval": (
        "passkey retrieval accuracy by (run, context, depth)",
        f"""
        SELECT e.run_id, {_CONFIG}, e.context, e.depth,
               max(value) FILTER (WHERE metric = 'accuracy') AS accuracy,
               max(value) FILTER (WHERE metric = 'samples') AS samples
        FROM evals e JOIN runs r USING (run_id)
        WHERE e.eval = 'retrieval'
        GROUP BY ALL
        """),
    "inference": (
        "measured vs analytic KV bytes, prefill seconds and decode tokens/s by (run, context, batch)",
        f"""
        SELECT run_id, family, d_model, n_layers, n_heads, n_kv_heads, head_dim, seq_len, params_non_embedding,
               context, batch, gpu, kv_bytes, kv_bytes_analytic,
               kv_bytes / nullif(kv_bytes_analytic, 0) AS kv_bytes_ratio, peak_bytes, prefill_tokens, prefill_s,
               decode_tokens_per_s
        FROM (
            SELECT e.run_id, {_CONFIG}, r.gpu, e.context, e.batch,
                   max(value) FILTER (WHERE metric = 'kv_bytes') AS kv_bytes,
                   max(value) FILTER (WHERE metric = 'kv_bytes_analytic') AS kv_bytes_analytic,
                   max(value) FILTER (WHERE metric = 'peak_bytes') AS peak_bytes,
                   max(value) FILTER (WHERE metric = 'prefill_tokens') AS prefill_tokens,
                   max(value) FILTER (WHERE metric = 'prefill_s') AS prefill_s,
                   max(value) FILTER (WHERE metric = 'decode_tokens_per_s') AS decode_tokens_per_s
            FROM evals e JOIN runs r USING (run_id)
            WHERE e.eval = 'inference'
            GROUP BY ALL
        )
        """),
    "closed_loop": (
        "recorded recommendations with the completed runs of their model_id trained at the context their laws were "
        "fitted at: predicted vs measured loss, inside the interval, held out",
        """
        SELECT rec.rec_id, rec.recorded_at, rec.candidate, rec.model_id, rec.context, rec.target_loss,
               rec.predicted_loss AS predicted, rec.predicted_lo AS lower, rec.predicted_hi AS upper,
               r.loss AS measured,
               r.loss BETWEEN rec.predicted_lo AND rec.predicted_hi AS inside,
               rec.level, rec.interval_kind, rec.mean_lo, rec.mean_hi,
               r.loss BETWEEN rec.mean_lo AND rec.mean_hi AS inside_mean,
               CASE WHEN r.run_id IS NULL OR rec.fit_run_ids IS NULL THEN NULL
                    ELSE NOT list_contains(rec.fit_run_ids, r.run_id) END AS held_out,
               r.run_id, r.sweep, r.seed, r.seq_len, r.tokens, r.val_loss, r.final_loss, r.loss,
               rec.predicted_loss, rec.predicted_lo, rec.predicted_hi, rec.noise_sd, rec.weak_law,
               rec.outside_envelope,
               r.loss - rec.predicted_loss AS error,
               (r.loss - rec.predicted_loss) / nullif(rec.predicted_loss, 0) AS rel_error
        FROM recommendations rec
        LEFT JOIN (
            -- the loss the laws were fitted to: val_loss, else final_loss (analysis/recommend/fromstore.py)
            SELECT run_id, model_id, sweep, seed, seq_len, tokens, val_loss, final_loss,
                   coalesce(val_loss, final_loss) AS loss
            FROM runs WHERE status = 'completed'
        ) r ON r.model_id = rec.model_id
            -- a staged ladder's laws are fitted on extensions: the winner's pretraining run (the same model when
            -- the extension changes no model field) is not the run the prediction is about
            AND (rec.train_context IS NULL OR r.seq_len = rec.train_context)
        """),
}


def create_views(con) -> None:
    for name, (_, sql) in VIEWS.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")


def describe() -> str:
    """The views, one per line, for `costlaw query --help` and the package docstring."""
    width = max(map(len, VIEWS))
    return "\n".join(f"  {name:<{width}}  {doc}" for name, (doc, _) in VIEWS.items())
