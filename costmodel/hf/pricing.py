"""`costs` of an HFModel: costmodel.costs of its ModelConfig, with what the architecture adds put back.

Parameters outside ModelConfig (costmodel.hf.model.Arch) join params_total, the non-embedding count, M_infer and
the training-memory estimate; the router's matmul adds 2 FLOPs per weight per token to C_infer, prefill and
decode (6 to C_train); unrouted experts are held in memory and read by prefill, never multiplied. Biases, norms
and sink logits are no matmuls and add no FLOPs. The row keeps costs()'s keys and adds `params_active` (mixtures
of experts) and `hf` (the counts and the stated approximations).
"""

from __future__ import annotations

from costlaw.costmodel.costs import costs, dtype_bytes, kv_cache_bytes, params_total
from costlaw.costmodel.hf.model import HFModel


def hf_costs(model: HFModel, T: int, dtype: str = "bf16", generate: int = 0, gpu: str | None = None) -> dict:
    cfg, arch = model.config, model.arch
    row = costs(cfg, T, dtype=dtype, generate=generate)
    extra = arch.extra(cfg)
    unrouted = arch.unrouted(cfg)
    added = sum(extra.values()) + unrouted
    router = 2 * arch.router_weights(cfg)  # FLOPs per token
    b = dtype_bytes(dtype)
    row["params_total"] += added
    row["params_non_embedding"] += added
    if arch.moe:
        row["params_active"] = model.params_active
    row["m_infer_values"] += added
    row["m_infer_bytes"] = row["m_infer_values"] * b
    row["m_train_bytes_estimate"] += 16 * added
    row["c_infer_flops_per_token"] += router
    row["c_train_flops_per_token"] += 3 * router
    row["prefill_flops"] += T * router
    if generate:
        row["decode_flops"] += generate * router
    row["hf"] = {"model_type": arch.model_type, "source": model.source,
                 "params_modelled": params_total(cfg), "params_extra": extra,
                 **({"params_unrouted": unrouted} if arch.moe else {}), "notes": list(model.notes)}
    if gpu is not None:
        from costlaw.costmodel.hardware import roofline_times

        held = row["params_total"] * b
        row.update(roofline_times(gpu, row["prefill_flops"], row["c_infer_flops_per_token"], held,
                                  kv_cache_bytes(cfg, T, dtype), decode_weight_bytes=held - unrouted * b))
    return row
