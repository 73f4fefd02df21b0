"""The results database's schema: an ordered list of migrations, one per schema version.

`MIGRATIONS[i]` takes a database at version i to version i + 1 (version 0 is an empty file). Each is
frozen once released: a later change is a new entry, never an edit of an old one, so a database written
by any earlier costlaw is upgraded step by step by `migrate` (which `costlaw ingest` and `write_fits` call
inside their write transaction). The version history is kept in `schema_version`.

v1  runs (flattened config + summary + analytic costs + environment), steps, evals (long format).
v2  evals gain the common tags as columns (context, bucket, depth, policy, keep, budget, batch),
    back-filled from the tags JSON; the `fits` table.
v3  the `recommendations` table (`costlaw recommend --record`), compared with trained runs by `closed_loop`.
v4  runs gain `sparse_params` (the first sparse pattern's parameters as JSON, so a new attention pattern needs no
    column) and the code's provenance (`source_sha256`, `git_diff_sha256`); fits gain `data_fingerprint` (the
    runs and options a fit was made from, so a stored fit is reused only for the same data) and `doc` (the fit
    in the one fits format).
v5  recommendations gain what a prediction interval needs to be checked: `level`, `interval_kind` (what
    predicted_lo/hi cover: "prediction", a new run's loss with fit uncertainty and run-to-run noise, or "mean",
    the law's mean only, which every row recorded before v5 holds: their 95% bootstrap intervals, back-filled
    as level 0.95), the mean's interval (`mean_lo`, `mean_hi`), the noise (`noise_sd`, `noise_df`, of log loss),
    the guards' flags when the user allowed them (`weak_law`, `outside_envelope`) and `fit_run_ids` (the runs
    the law was fitted to, so `closed_loop` tells a held-out run from one of them).
"""

from __future__ import annotations

from collections.abc import Callable

from costlaw.costmodel.core.errors import CostlawError

V1_RUNS = """
CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY,          -- config.json run_id: hash of the canonical run config (no name)
    model_id VARCHAR NOT NULL,           -- ModelConfig.config_id
    name VARCHAR, sweep VARCHAR, stage VARCHAR, seed BIGINT, status VARCHAR NOT NULL, base_run_id VARCHAR,
    created VARCHAR,
    -- ModelConfig, flattened through ModelConfig.from_dict and its derived properties
    d_model BIGINT, n_layers BIGINT, n_heads BIGINT, n_kv_heads BIGINT, head_dim BIGINT, group_size BIGINT,
    ffn_dim BIGINT, vocab_size BIGINT, tied_embeddings BOOLEAN, rope_theta DOUBLE,
    layout VARCHAR,                      -- the canonical run-length list as JSON text, e.g. ["full*6"]
    family VARCHAR, n_full_layers BIGINT, full_layer_ids BIGINT[],
    sparse_patterns VARCHAR,             -- the distinct sparse patterns as JSON text; the first one below
    sparse_kind VARCHAR, sink BIGINT, "window" BIGINT, block BIGINT, local_blocks BIGINT, stride BIGINT,
    kv_method VARCHAR, kv_keep DOUBLE, kv_budget BIGINT, kv_options VARCHAR,
    -- data / train settings (config.data, config.train)
    seq_len BIGINT, corpus VARCHAR, tokenizer VARCHAR, packing VARCHAR, doc_mask BOOLEAN,
    curriculum VARCHAR, retrieval_mix DOUBLE,
    tokens_budget BIGINT, steps_budget BIGINT, batch_size BIGINT, grad_accum BIGINT, tokens_per_step BIGINT,
    lr DOUBLE, min_lr_ratio DOUBLE, warmup_frac DOUBLE, decay_frac DOUBLE, weight_decay DOUBLE,
    grad_clip DOUBLE, precision VARCHAR, init_from VARCHAR, trainable VARCHAR,
    -- summary.json
    steps BIGINT, total_steps BIGINT, tokens BIGINT, final_loss DOUBLE, val_loss DOUBLE, tokens_per_s DOUBLE,
    tokens_per_s_wall DOUBLE, mfu DOUBLE, peak_memory_bytes BIGINT, peak_memory_kind VARCHAR, wall_s DOUBLE,
    train_s DOUBLE, compile_s DOUBLE, kv_bytes_measured BIGINT, params_measured BIGINT, error VARCHAR,
    -- summary.costs: costmodel.costs(model, seq_len), same names as `costlaw cost --json`
    cost_context BIGINT, cost_dtype VARCHAR, params_total BIGINT, params_non_embedding BIGINT,
    params_embedding BIGINT, params_policy BIGINT, kv_tokens BIGINT, kv_tokens_per_layer BIGINT[],
    c_infer_flops_per_token DOUBLE, m_infer_values DOUBLE, m_infer_bytes DOUBLE, kv_cache_bytes DOUBLE,
    c_train_flops_per_token DOUBLE, m_train_bytes_estimate DOUBLE, prefill_flops DOUBLE,
    generate BIGINT, decode_flops DOUBLE, roofline_gpu VARCHAR, prefill_s DOUBLE, decode_s_per_token DOUBLE,
    decode_tokens_per_s DOUBLE, fits_in_memory BOOLEAN,
    -- summary.env
    gpu VARCHAR, device VARCHAR, torch VARCHAR, cuda VARCHAR, python VARCHAR, numpy VARCHAR,
    costlaw_version VARCHAR, platform VARCHAR, git_commit VARCHAR, git_dirty BOOLEAN, hostname VARCHAR,
    cpu_count BIGINT, slurm_job_id VARCHAR, slurm_array_job_id VARCHAR, slurm_array_task_id VARCHAR,
    -- summary.data
    corpus_id VARCHAR, corpus_train_tokens BIGINT, corpus_val_tokens BIGINT, epochs DOUBLE, padding_ratio DOUBLE,
    abr DOUBLE,
    -- the raw documents and the ingest bookkeeping
    config_json JSON, summary_json JSON,
    source_dir VARCHAR,                  -- where the run directory was when ingested
    done_mtime_ns BIGINT,                -- DONE's mtime: a newer DONE (requeued / resubmitted run) replaces the rows
    fingerprint VARCHAR,                 -- sha256 of config.json, summary.json, DONE and the JSONL sizes
    n_steps BIGINT, n_evals BIGINT,      -- rows this run has in steps / evals
    ingested_at TIMESTAMP
);
"""

V1_STEPS = """
CREATE TABLE steps (
    run_id VARCHAR NOT NULL, step BIGINT NOT NULL, tokens BIGINT, loss DOUBLE, lr DOUBLE, grad_norm DOUBLE,
    tokens_per_s DOUBLE, time_s DOUBLE,
    PRIMARY KEY (run_id, step)           -- after a resume the last line for a step wins
);
"""

V1_EVALS = """
CREATE TABLE evals (
    run_id VARCHAR NOT NULL, eval VARCHAR NOT NULL,
    tags VARCHAR NOT NULL,               -- canonical JSON (sorted keys, no spaces) of the result's tags
    metric VARCHAR NOT NULL, value DOUBLE,
    PRIMARY KEY (run_id, eval, tags, metric)
);
"""

V2_EVAL_TAGS = (("context", "BIGINT"), ("bucket", "BIGINT"), ("depth", "DOUBLE"), ("policy", "VARCHAR"),
                ("keep", "DOUBLE"), ("budget", "BIGINT"), ("batch", "BIGINT"))

V2_FITS = """
CREATE TABLE fits (
    fit_id VARCHAR PRIMARY KEY,          -- given, or the hash of (law, group keys, source query)
    created TIMESTAMP NOT NULL,
    law VARCHAR NOT NULL,
    group_keys JSON,                     -- e.g. {"n_heads": 8, "n_kv_heads": 2}
    params JSON NOT NULL,                -- {name: value}
    objective DOUBLE, r2 DOUBLE, n_points BIGINT,
    stderr JSON, ci95 JSON,              -- {name: value} / {name: [lo, hi]}
    source_query VARCHAR,                -- the SQL that selected the points
    extra JSON                           -- anything else the fitter reports (gradient norm, starts, holdout error)
);
"""

V3_RECOMMENDATIONS = """
CREATE TABLE recommendations (
    rec_id VARCHAR PRIMARY KEY,          -- hash of the row but recorded_at and source: re-recording adds nothing
    recorded_at TIMESTAMP NOT NULL,
    model_id VARCHAR NOT NULL,           -- the winner's ModelConfig.config_id, as in runs.model_id
    candidate VARCHAR NOT NULL,          -- the winning candidate's label, e.g. "8,1"
    family VARCHAR,
    context BIGINT NOT NULL,             -- the --context this config won at
    target_loss DOUBLE NOT NULL,
    predicted_loss DOUBLE NOT NULL,      -- at the rounded config's N
    predicted_lo DOUBLE, predicted_hi DOUBLE,  -- bootstrap 95% interval; NULL without bootstrap
    extrapolation DOUBLE,                -- N* / the candidate's largest trained N
    params_non_embedding BIGINT, n_star DOUBLE,
    m_infer_bytes DOUBLE, c_infer_flops_per_token DOUBLE, dtype VARCHAR,
    memory_budget DOUBLE, flops_budget DOUBLE, latency_target_ms DOUBLE, gpu VARCHAR,  -- NULL: not given
    train_context BIGINT,                -- the seq_len the laws were fitted at: train the config there
    source VARCHAR,                      -- the results file or fits file the laws came from
    sweep VARCHAR,                       -- recommend --sweep, if any
    model_json JSON NOT NULL             -- the winner's ModelConfig.to_dict()
);
"""


def _v1(con) -> None:
    con.execute("CREATE TABLE schema_version (version BIGINT PRIMARY KEY, applied_at TIMESTAMP NOT NULL, "
                "description VARCHAR)")
    for ddl in (V1_RUNS, V1_STEPS, V1_EVALS):
        con.execute(ddl)


def _v2(con) -> None:
    for name, typ in V2_EVAL_TAGS:
        con.execute(f'ALTER TABLE evals ADD COLUMN "{name}" {typ}')
    sets = ", ".join(f'"{name}" = TRY_CAST(json_extract_string(tags, \'$.{name}\') AS {typ})'
                     for name, typ in V2_EVAL_TAGS)
    con.execute(f"UPDATE evals SET {sets}")
    con.execute(V2_FITS)


def _v3(con) -> None:
    con.execute(V3_RECOMMENDATIONS)


def _v4(con) -> None:
    import json

    from costlaw.costmodel.attention import parse_spec, pattern_params

    for column in ("sparse_params JSON", "source_sha256 VARCHAR", "git_diff_sha256 VARCHAR"):
        con.execute(f"ALTER TABLE runs ADD COLUMN {column}")
    rows = con.execute("SELECT run_id, sparse_patterns FROM runs WHERE sparse_patterns IS NOT NULL").fetchall()
    filled = [(json.dumps(pattern_params(parse_spec(json.loads(p)[0])), sort_keys=True, separators=(",", ":")), rid)
              for rid, p in rows]
    if filled:
        con.executemany("UPDATE runs SET sparse_params = ? WHERE run_id = ?", filled)
    for column in ("data_fingerprint VARCHAR", "doc JSON"):
        con.execute(f"ALTER TABLE fits ADD COLUMN {column}")


V5_RECOMMENDATION_COLUMNS = (("level", "DOUBLE"), ("interval_kind", "VARCHAR"), ("mean_lo", "DOUBLE"),
                             ("mean_hi", "DOUBLE"), ("noise_sd", "DOUBLE"), ("noise_df", "DOUBLE"),
                             ("weak_law", "VARCHAR"), ("outside_envelope", "VARCHAR"), ("fit_run_ids", "VARCHAR[]"))


def _v5(con) -> None:
    for name, typ in V5_RECOMMENDATION_COLUMNS:
        con.execute(f"ALTER TABLE recommendations ADD COLUMN {name} {typ}")
    # rows recorded before v5 hold the law's bootstrap 95% interval (fit uncertainty only) in predicted_lo/hi
    con.execute("UPDATE recommendations SET level = 0.95, interval_kind = 'mean', mean_lo = predicted_lo, "
                "mean_hi = predicted_hi WHERE predicted_lo IS NOT NULL")


# (description, function): entry i upgrades version i to i + 1
MIGRATIONS: list[tuple[str, Callable]] = [
    ("runs, steps, evals", _v1),
    ("evals tag columns (context, bucket, depth, policy, keep, budget, batch); fits", _v2),
    ("recommendations", _v3),
    ("runs: sparse_params, source_sha256, git_diff_sha256; fits: data_fingerprint, doc", _v4),
    ("recommendations: level, interval_kind, mean_lo/hi, noise_sd/df, weak_law, outside_envelope, fit_run_ids",
     _v5),
]
SCHEMA_VERSION = len(MIGRATIONS)


def version(con) -> int:
    """The schema version of an open database (0 for an empty one)."""
    has = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_version' "
                      "AND database_name = current_database() AND schema_name = 'main'").fetchall()[0][0]
    if not has:
        return 0
    v = con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0]
    return int(v or 0)


def check_not_newer(v: int, db) -> None:
    if v > SCHEMA_VERSION:
        raise CostlawError(f"--db: {db} has schema version {v}, newer than this costlaw's {SCHEMA_VERSION}; "
                           "upgrade costlaw to read it")


def migrate(con, db="database", target: int = SCHEMA_VERSION) -> int:
    """Upgrade `con`'s database to `target` inside the caller's transaction; returns the version it had."""
    start = version(con)
    check_not_newer(start, db)
    for v in range(start, target):
        description, step = MIGRATIONS[v]
        step(con)
        con.execute("INSERT INTO schema_version VALUES (?, now()::TIMESTAMP, ?)", [v + 1, description])
    return start
