"""Synthetic run directories for the store's tests and benchmark: finished runs without training anything.

Written through the run-directory contract itself (costlaw.costmodel.core.rundir): the caller passes the run
config dict (`RunConfig.to_dict()`); the id, analytic costs and files are the contract's. Losses follow a power
law in steps so the views have something to group.
"""

from __future__ import annotations

import random
from pathlib import Path

from costlaw.costmodel import ModelConfig, costs
from costlaw.costmodel.core.files import dumps, write_atomic
from costlaw.costmodel.core.rundir import EVALS, FORMAT, METRICS, RUNS, RunDir, run_id_of


def metrics_lines(steps: int, tokens_per_step: int, seed: int = 0, every: int = 1) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for s in range(every, steps + 1, every):
        out.append({"step": s, "tokens": s * tokens_per_step,
                    "loss": round(2.0 + 3.0 * s ** -0.3 + rng.random() * 0.01, 6),
                    "lr": round(1e-3 * min(1.0, s / max(1, steps // 10)), 9),
                    "grad_norm": round(0.5 + rng.random(), 6), "tokens_per_s": round(50000 + rng.random() * 100, 3),
                    "time_s": round(s * 0.08, 4)})
    return out


def standard_evals(seq_len: int, buckets: int = 4, seed: int = 0) -> list[dict]:
    """One of each documented eval, with plausible numbers."""
    rng = random.Random(seed)
    ev = [{"eval": "val_loss", "tags": {"context": seq_len}, "metrics": {"loss": 2.5 + rng.random() * 0.1,
                                                                         "tokens": 65536}}]
    span = seq_len // buckets
    for b in range(buckets):
        ev.append({"eval": "position_loss", "tags": {"context": seq_len, "bucket": b, "start": b * span,
                                                     "end": (b + 1) * span},
                   "metrics": {"loss": 3.0 - 0.2 * b + rng.random() * 0.01, "tokens": 4096}})
    for depth in (0.1, 0.5, 0.9):
        ev.append({"eval": "retrieval", "tags": {"context": seq_len, "depth": depth},
                   "metrics": {"accuracy": rng.random(), "samples": 32}})
    ev.append({"eval": "inference", "tags": {"context": seq_len, "batch": 1},
               "metrics": {"prefill_s": 0.01, "prefill_tokens": seq_len - 16, "decode_tokens_per_s": 900.0,
                           "kv_bytes": 1 << 20,
                           "kv_bytes_analytic": 1 << 20, "peak_bytes": 1 << 24}})
    for keep in (0.25, 0.5):
        ev.append({"eval": "kv_policy", "tags": {"context": seq_len, "policy": "snapkv", "keep": keep},
                   "metrics": {"nll": 2.6 + (1 - keep) * 0.2, "nll_full": 2.6, "delta_nll": (1 - keep) * 0.2,
                               "kl": 0.01, "retrieval_accuracy": keep, "kv_bytes": int(keep * (1 << 20)),
                               "kv_bytes_analytic": int(keep * (1 << 20)), "peak_bytes": 1 << 24,
                               "prefill_s": 0.01, "decode_tokens_per_s": 950.0}})
    return ev


def write_run(root, config: dict, *, steps: int | None = None, evals: list[dict] | None = None,
              status: str = "completed", done: bool = True, sweep: str | None = None,
              base_run_id: str | None = None, metrics: list[dict] | None = None, every: int = 1,
              final_loss: float | None = None, env: dict | None = None) -> Path:
    """Write `<root>/runs/<run_id>/` for `config` (a RunConfig.to_dict()); returns the directory.
    `done=False` leaves it as a run still going (no summary, no DONE)."""
    model = ModelConfig.from_dict(config["model"])
    run_id = run_id_of(config)
    seq_len = config["data"]["seq_len"]
    tps = config["train"]["batch_size"] * config["train"].get("grad_accum", 1) * seq_len
    steps = steps if steps is not None else (config["train"]["steps"] or 10)
    rd = RunDir(Path(root) / RUNS / run_id)
    rd.write_config_doc({"format": FORMAT, "run_id": run_id, "model_id": model.config_id, "config": config,
                         "base_run_id": base_run_id, "sweep": sweep, "created": "2026-11-23T18:30:00Z"})
    metrics = metrics if metrics is not None else metrics_lines(steps, tps, config.get("seed", 0), every)
    write_atomic(rd.file(METRICS), "".join(dumps(m) + "\n" for m in metrics))  # bulk: one write, not a line each
    evals = evals if evals is not None else standard_evals(seq_len, seed=config.get("seed", 0))
    write_atomic(rd.file(EVALS), "".join(dumps(e) + "\n" for e in evals))
    if not done:
        return rd.path
    last = metrics[-1] if metrics else {}
    val = next((e["metrics"]["loss"] for e in evals if e["eval"] == "val_loss"), None)
    summary = {"run_id": run_id, "status": status, "steps": last.get("step", 0),
               "tokens": last.get("tokens", 0), "final_loss": last.get("loss") if final_loss is None else final_loss,
               "val_loss": val, "tokens_per_s": 50000.0, "mfu": 0.4, "peak_memory_bytes": 1 << 30,
               "wall_s": 100.0, "train_s": 90.0, "kv_bytes_measured": 1 << 20,
               "error": "RuntimeError: boom" if status == "failed" else None,
               "costs": costs(model, seq_len),
               "data": {"corpus_id": "c0ffee", "corpus": config["data"]["corpus"],
                        "tokenizer": config["data"]["tokenizer"], "train_tokens": 7340032, "epochs": 0.07,
                        "padding_ratio": 0.01, "abr": 0.02},
               "env": env or {"gpu": "NVIDIA H100 80GB HBM3", "device": "cuda", "torch": "2.11.0", "python": "3.12.3",
                              "git_commit": "abc123", "git_dirty": False, "hostname": "node1", "slurm_job_id": "42"}}
    rd.write_summary(summary)
    rd.write_done(run_id, status)
    return rd.path
