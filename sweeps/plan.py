"""What a sweep would launch, priced by costmodel: parameters, tokens, training FLOPs, evaluation FLOPs, GPU-hours
at an assumed MFU, and C_infer / M_infer / KV bytes at the spec's contexts. Pure Python: never imports torch.

Evaluation is each run's val rows (val_tokens / the eval length) and passkey probes (samples × depths), each row a
forward pass over the eval length (costmodel's prefill FLOPs); at long context it can cost as much as the training
(1,024 val rows of 16K on a 2-4 M-parameter model). GPU-hours count both.
"""

from __future__ import annotations

from costlaw.costmodel import (
    ConfigError,
    c_infer,
    c_train,
    kv_cache_bytes,
    m_infer,
    params_non_embedding,
    params_total,
    prefill_flops,
)
from costlaw.costmodel.hardware import gpu as gpu_lookup

DEFAULT_MFU = 0.35
DEFAULT_GPU = "H100"


def plan_rows(runs, contexts=(), gpu: str = DEFAULT_GPU, mfu: float = DEFAULT_MFU, dtype: str = "bf16") -> list[dict]:
    """One row per planned run (sweeps.expand.PlannedRun), in submission order."""
    if not 0 < mfu <= 1:
        raise ConfigError("--mfu", f"must be in (0, 1], got {mfu}")
    g = gpu_lookup(gpu)
    rows = []
    for r in runs:
        cfg = r.config
        m = cfg.model
        T = cfg.data.seq_len
        flops = c_train(m, T) * cfg.total_tokens
        evals = eval_flops(cfg)
        gpu_hours = (flops + evals) / (g.peak_bf16_flops * mfu) / 3600
        ctx = []
        for c in contexts or (T,):
            ctx.append({"context": c, "c_infer_flops_per_token": c_infer(m, c), "m_infer_values": m_infer(m, c),
                        "kv_cache_bytes": kv_cache_bytes(m, c, dtype)})
        res = r.resources
        rows.append({
            "run_id": r.run_id, "stage": r.stage, "point": r.point, "seed": r.seed, "label": r.label,
            "parent_id": r.parent_id, "family": m.family, "model_id": m.config_id,
            "params_total": params_total(m), "params_non_embedding": params_non_embedding(m),
            "seq_len": T, "steps": cfg.total_steps, "tokens": cfg.total_tokens,
            "c_train_flops_per_token": c_train(m, T), "train_flops": flops, "eval_flops": evals,
            "gpu_hours": gpu_hours,
            # wall hours if the run gets its GPUs (1 on CPU-only resources) at the assumed MFU
            "est_hours": gpu_hours / max(1, res.gpus), "time_min": res.time_min, "gpus": res.gpus,
            "contexts": ctx,
        })
    return rows


def eval_flops(cfg) -> float:
    """Forward FLOPs of a run's evaluation: its val rows and passkey probes at the eval length."""
    T = cfg.eval.seq_len or cfg.data.seq_len
    rows = cfg.eval.val_tokens // T + cfg.eval.retrieval_samples * len(cfg.eval.retrieval_depths)
    return float(rows * prefill_flops(cfg.model, T))


def totals(rows: list[dict], gpu: str, mfu: float) -> dict:
    by_stage: dict[str, int] = {}
    for r in rows:
        by_stage[r["stage"]] = by_stage.get(r["stage"], 0) + 1
    return {"runs": len(rows), "by_stage": by_stage, "train_flops": sum(r["train_flops"] for r in rows),
            "eval_flops": sum(r["eval_flops"] for r in rows),
            "gpu_hours": sum(r["gpu_hours"] for r in rows), "tokens": sum(r["tokens"] for r in rows),
            "gpu": gpu_lookup(gpu).name, "mfu": mfu,
            "over_time_limit": [r["run_id"] for r in rows if r["est_hours"] * 60 > r["time_min"]]}


def render(spec, rows: list[dict], tot: dict) -> str:
    """The human table of `costlaw sweep plan`."""
    from costlaw.costmodel.core.units import binary_bytes, si, table

    out = [f"sweep {spec.name}: {tot['runs']} runs ("
           + ", ".join(f"{n} {s}" for s, n in tot["by_stage"].items()) + f"), runs_cap {spec.runs_cap}"]
    if spec.description:
        out.append(spec.description)
    table_rows = []
    for r in rows:
        row = {"run_id": r["run_id"], "stage": r["stage"], "point": r["label"] or "-",
               "N": si(r["params_non_embedding"]), "N total": si(r["params_total"]), "T": r["seq_len"],
               "tokens": si(r["tokens"]), "C_train": si(r["train_flops"]), "C_eval": si(r["eval_flops"]),
               "GPU-h": f"{r['gpu_hours']:.3g}"}
        for c in r["contexts"]:
            T = _ctx(c["context"])
            row[f"C_infer@{T}"] = si(c["c_infer_flops_per_token"])
            row[f"M_infer@{T}"] = si(c["m_infer_values"])
            row[f"KV@{T}"] = binary_bytes(c["kv_cache_bytes"])
        table_rows.append(row)
    out.append(table(table_rows))
    out.append(f"total: {si(tot['tokens'])} tokens, {si(tot['train_flops'])}FLOP training, "
               f"{si(tot['eval_flops'])}FLOP evaluation, "
               f"{tot['gpu_hours']:.3g} GPU-hours on {tot['gpu']} at MFU {tot['mfu']:g} "
               "(C_infer in FLOP/token, M_infer in values, KV cache in bf16 bytes per sequence)")
    if tot["over_time_limit"]:
        out.append(f"note: {len(tot['over_time_limit'])} runs are estimated to take longer than their time_min; "
                   "they will be requeued from their checkpoints up to max_num_timeout times")
    return "\n".join(out)


def _ctx(T: int) -> str:
    if T >= 1024 and T % 1024 == 0:
        return f"{T // 1024}K"
    return str(T)
