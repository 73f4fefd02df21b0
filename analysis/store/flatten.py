"""One run directory's config.json + summary.json as one `runs` row (see docs/run-directory.md).

The model columns come from `costmodel.ModelConfig.from_dict(config["model"])`: its numbers and flags
(named by its type hints), its derived properties (family, n_full_layers, sparse_patterns), its first sparse
pattern's parameters (`sparse_params`) and its KV policy's fields. Layouts are never re-parsed here, and no
pattern or field is listed by hand: a new attention pattern is recorded without a schema change.
Every value is checked against its column's type; a wrong one (a string for a number, a whole number beyond
64 bits, a number beyond a float's range) makes the run corrupt, with the file and key named, rather than a
silently NULL or mangled cell. NaN and infinities in a float column are null: the writers record a value that
could not be measured (a diverged run's loss) that way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing

from costlaw.analysis.store.reading import Corrupt, OutOfRange
from costlaw.costmodel import KVPolicy, ModelConfig, costs
from costlaw.costmodel.attention import encode_layout, pattern_params
from costlaw.costmodel.config import SCALAR_FIELDS
from costlaw.costmodel.core.errors import ConfigError
from costlaw.costmodel.core.files import clean_json
from costlaw.costmodel.core.rundir import run_id_of
from costlaw.costmodel.core.validate import optional_arm

INT, FLOAT, STR, BOOL, JSON, INTS = "int", "float", "str", "bool", "json", "int[]"

# (column, type, where it comes from) in table order; "derived" columns are computed below
_CONFIG_DOC = [("run_id", STR), ("model_id", STR), ("sweep", STR), ("base_run_id", STR), ("created", STR)]
_RUN = [("name", STR), ("stage", STR), ("seed", INT)]
_SCALAR = {int: INT, float: FLOAT, bool: BOOL, str: STR}
# Schema v1 gave the built-in patterns' parameters columns of their own; they stay filled for any pattern with a
# parameter of that name. Every pattern's parameters go to sparse_params (JSON), so a new one needs no column.
PATTERN_COLUMNS = ("sink", "window", "block", "local_blocks", "stride")
# ModelConfig's numbers and flags under their own names (from its type hints), then what it derives, then the
# KV policy's fields as kv_<field> (its options as JSON text)
_MODEL = (
    [(name, _SCALAR[typing.get_type_hints(ModelConfig)[name]]) for name in SCALAR_FIELDS]
    + [("group_size", INT), ("layout", STR), ("family", STR), ("n_full_layers", INT), ("full_layer_ids", INTS),
       ("sparse_patterns", STR), ("sparse_kind", STR), ("sparse_params", JSON)]
    + [(c, INT) for c in PATTERN_COLUMNS]
    + [(f"kv_{name}", _SCALAR.get(optional_arm(t) or t, STR)) for name, t in typing.get_type_hints(KVPolicy).items()]
)
_DATA = [("seq_len", INT), ("corpus", STR), ("tokenizer", STR), ("packing", STR), ("doc_mask", BOOL),
         ("curriculum", STR), ("retrieval_mix", FLOAT)]
_TRAIN = {"tokens_budget": ("tokens", INT), "steps_budget": ("steps", INT), "batch_size": ("batch_size", INT),
          "grad_accum": ("grad_accum", INT), "lr": ("lr", FLOAT), "min_lr_ratio": ("min_lr_ratio", FLOAT),
          "warmup_frac": ("warmup_frac", FLOAT), "decay_frac": ("decay_frac", FLOAT),
          "weight_decay": ("weight_decay", FLOAT), "grad_clip": ("grad_clip", FLOAT),
          "precision": ("precision", STR), "init_from": ("init_from", STR), "trainable": ("trainable", STR)}
_SUMMARY = [("steps", INT), ("total_steps", INT), ("tokens", INT), ("final_loss", FLOAT), ("val_loss", FLOAT),
            ("tokens_per_s", FLOAT), ("tokens_per_s_wall", FLOAT), ("mfu", FLOAT), ("peak_memory_bytes", INT),
            ("peak_memory_kind", STR), ("wall_s", FLOAT), ("train_s", FLOAT), ("compile_s", FLOAT),
            ("kv_bytes_measured", INT), ("params_measured", INT), ("error", STR)]
# column -> key in summary.costs (the roofline's `gpu` would clash with env's)
_COSTS = {"cost_context": ("context", INT), "cost_dtype": ("dtype", STR), "params_total": ("params_total", INT),
          "params_non_embedding": ("params_non_embedding", INT), "params_embedding": ("params_embedding", INT),
          "params_policy": ("params_policy", INT), "kv_tokens": ("kv_tokens", INT),
          "kv_tokens_per_layer": ("kv_tokens_per_layer", INTS),
          "c_infer_flops_per_token": ("c_infer_flops_per_token", FLOAT),
          "m_infer_values": ("m_infer_values", FLOAT), "m_infer_bytes": ("m_infer_bytes", FLOAT),
          "kv_cache_bytes": ("kv_cache_bytes", FLOAT), "c_train_flops_per_token": ("c_train_flops_per_token", FLOAT),
          "m_train_bytes_estimate": ("m_train_bytes_estimate", FLOAT), "prefill_flops": ("prefill_flops", FLOAT),
          "generate": ("generate", INT), "decode_flops": ("decode_flops", FLOAT), "roofline_gpu": ("gpu", STR),
          "prefill_s": ("prefill_s", FLOAT), "decode_s_per_token": ("decode_s_per_token", FLOAT),
          "decode_tokens_per_s": ("decode_tokens_per_s", FLOAT), "fits_in_memory": ("fits_in_memory", BOOL)}
_ENV = {"gpu": ("gpu", STR), "device": ("device", STR), "torch": ("torch", STR), "cuda": ("cuda", STR),
        "python": ("python", STR), "numpy": ("numpy", STR), "costlaw_version": ("costlaw", STR),
        "platform": ("platform", STR), "git_commit": ("git_commit", STR), "git_dirty": ("git_dirty", BOOL),
        "git_diff_sha256": ("git_diff_sha256", STR), "source_sha256": ("source_sha256", STR),
        "hostname": ("hostname", STR), "cpu_count": ("cpu_count", INT), "slurm_job_id": ("slurm_job_id", STR),
        "slurm_array_job_id": ("slurm_array_job_id", STR), "slurm_array_task_id": ("slurm_array_task_id", STR)}
_DATA_SUMMARY = {"corpus_id": ("corpus_id", STR), "corpus_train_tokens": ("train_tokens", INT),
                 "corpus_val_tokens": ("val_tokens", INT),
                 "epochs": ("epochs", FLOAT), "padding_ratio": ("padding_ratio", FLOAT), "abr": ("abr", FLOAT)}
_BOOKKEEPING = [("config_json", JSON), ("summary_json", JSON), ("source_dir", STR), ("done_mtime_ns", INT),
                ("fingerprint", STR), ("n_steps", INT), ("n_evals", INT)]

RUN_COLUMNS: list[tuple[str, str]] = (
    _CONFIG_DOC + _RUN + [("status", STR)] + _MODEL + _DATA + [(c, t) for c, (_, t) in _TRAIN.items()]
    + [("tokens_per_step", INT)] + _SUMMARY + [(c, t) for c, (_, t) in _COSTS.items()]
    + [(c, t) for c, (_, t) in _ENV.items()] + [(c, t) for c, (_, t) in _DATA_SUMMARY.items()] + _BOOKKEEPING
)  # plus ingested_at, set by the ingest; a test checks these against the table's columns and types


def runs_schema() -> dict:
    """RUN_COLUMNS as a polars schema (polars is imported here, not at import time: `costlaw query` skips it)."""
    import polars as pl

    types = {INT: pl.Int64, FLOAT: pl.Float64, STR: pl.String, BOOL: pl.Boolean, JSON: pl.String,
             INTS: pl.List(pl.Int64)}
    return {c: types[t] for c, t in RUN_COLUMNS}


def coerce(value, typ: str, where: str):
    """`value` as `typ`, or Corrupt naming `where` (file: key)."""
    if value is None:
        return None
    if isinstance(value, OutOfRange):
        raise Corrupt(f"{where}: {value[:40]} is beyond the range of a 64-bit float")
    if typ == INT:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise Corrupt(f"{where}: expected a whole number, got {_short(value)}")
        if not -(2**63) <= value < 2**63:
            raise Corrupt(f"{where}: {_short(value)} does not fit a 64-bit integer")
        return value
    if typ == FLOAT:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Corrupt(f"{where}: expected a number, got {_short(value)}")
        try:
            value = float(value)
        except OverflowError:
            raise Corrupt(f"{where}: {_short(value)} is beyond the range of a 64-bit float") from None
        return value if math.isfinite(value) else None  # NaN / infinity: "no value", as the writers record it
    if typ == STR:
        number = isinstance(value, int) and not isinstance(value, bool)
        if number or (isinstance(value, float) and math.isfinite(value)):
            return str(value)  # e.g. a Slurm job id written as a number
        if not isinstance(value, str):
            raise Corrupt(f"{where}: expected a string, got {_short(value)}")
        return value
    if typ == BOOL:
        if not isinstance(value, bool):
            raise Corrupt(f"{where}: expected true or false, got {value!r}")
        return value
    if typ == JSON:
        return value if isinstance(value, str) else canonical_json(clean_json(value))
    if typ == INTS:
        if not isinstance(value, list):
            raise Corrupt(f"{where}: expected a list of whole numbers, got {_short(value)}")
        return [coerce(v, INT, where) for v in value]
    raise AssertionError(typ)


def _short(value) -> str:
    """`value` for a one-line reason: a 4,000-digit number or a long list is cut to its start."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        digits = str(abs(value))
        return f"{'-' if value < 0 else ''}{digits[:6]}...({len(digits)} digits)"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _section(doc: dict, key: str, where: str) -> dict:
    v = doc.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise Corrupt(f"{where}: {key} must be an object, got {type(v).__name__}")
    return v


def model_columns(model: ModelConfig) -> dict:
    """The ModelConfig's columns (`_MODEL`), from its fields, derived properties and first sparse pattern."""
    sparse = model.sparse_patterns
    params = pattern_params(sparse[0]) if sparse else {}
    kv = model.kv_policy
    kv_fields = {f"kv_{f.name}": getattr(kv, f.name) if kv else None for f in dataclasses.fields(KVPolicy)}
    kv_fields["kv_options"] = canonical_json(dict(kv.options)) if kv and kv.options else None
    return {
        **{name: getattr(model, name) for name in SCALAR_FIELDS},
        "group_size": model.group_size, "layout": canonical_json(encode_layout(model.layout)),
        "family": model.family, "n_full_layers": model.n_full_layers, "full_layer_ids": list(model.full_layer_ids),
        "sparse_patterns": canonical_json([s.spec() for s in sparse]) if sparse else None,
        "sparse_kind": sparse[0].kind if sparse else None,
        "sparse_params": canonical_json(params) if sparse else None,
        **{c: params.get(c) for c in PATTERN_COLUMNS},
        **kv_fields,
    }


def run_row(doc: dict, summary: dict, *, source_dir: str, done_mtime_ns: int, fingerprint: str) -> dict:
    """The `runs` row of a complete run (without n_steps / n_evals / ingested_at). Raises Corrupt."""
    config = doc.get("config")
    if not isinstance(config, dict):
        raise Corrupt("config.json: config must be an object (RunConfig.to_dict())")
    if run_id_of(config) != doc["run_id"]:
        raise Corrupt(f"config.json: run_id {doc['run_id']} is not the hash of its config ({run_id_of(config)})")
    try:
        model = ModelConfig.from_dict(config.get("model"))
    except ConfigError as e:
        raise Corrupt(f"config.json: model.{e}") from None
    if doc.get("model_id") != model.config_id:
        raise Corrupt(f"config.json: model_id {doc.get('model_id')} disagrees with its model's id {model.config_id}")
    row: dict = {}
    for col, typ in _CONFIG_DOC:
        row[col] = coerce(doc.get(col), typ, f"config.json: {col}")
    for col, typ in _RUN:
        row[col] = coerce(config.get(col), typ, f"config.json: config.{col}")
    row.update(model_columns(model))
    data = _section(config, "data", "config.json: config")
    for col, typ in _DATA:
        row[col] = coerce(data.get(col), typ, f"config.json: config.data.{col}")
    train = _section(config, "train", "config.json: config")
    for col, (key, typ) in _TRAIN.items():
        row[col] = coerce(train.get(key), typ, f"config.json: config.train.{key}")
    if row["seq_len"] and row["batch_size"]:
        row["tokens_per_step"] = coerce(row["seq_len"] * row["batch_size"] * (row["grad_accum"] or 1), INT,
                                        "config.json: config.data.seq_len x train.batch_size x train.grad_accum")
    row["status"] = coerce(summary.get("status"), STR, "summary.json: status")
    for col, typ in _SUMMARY:
        row[col] = coerce(summary.get(col), typ, f"summary.json: {col}")
    cost = _section(summary, "costs", "summary.json")
    if not cost and row["seq_len"]:
        cost = costs(model, row["seq_len"])  # a run that failed before writing its costs: price it here
    for col, (key, typ) in _COSTS.items():
        row[col] = coerce(cost.get(key), typ, f"summary.json: costs.{key}")
    for section, columns in (("env", _ENV), ("data", _DATA_SUMMARY)):
        values = _section(summary, section, "summary.json")
        for col, (key, typ) in columns.items():
            row[col] = coerce(values.get(key), typ, f"summary.json: {section}.{key}")
    row.update(config_json=canonical_json(clean_json(doc)), summary_json=canonical_json(clean_json(summary)),
               source_dir=source_dir, done_mtime_ns=done_mtime_ns, fingerprint=fingerprint)
    return row

