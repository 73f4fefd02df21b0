"""A finished run as a Hugging Face checkpoint: config.json and model.safetensors that transformers loads and runs
with the same logits as runs/models/transformer.py.

Formats, by the run's layout (the weights are the same in all three):
- every layer full: LlamaForCausalLM, head_dim explicit (costlaw decouples it from hidden_size);
- every layer sink_window(0,W): MistralForCausalLM with sliding_window W (Llama's weights, one window on all
  layers; transformers' window W shows a query its W most recent tokens, itself included, as sink_window(0,W));
- full and sink_window(0,W) layers mixed: Qwen2ForCausalLM with use_sliding_window, sliding_window W and an explicit
  layer_types list (transformers >= 4.55 reads it; older ones read only max_window_layers, written so they agree
  when the sliding layers are the last ones). Qwen2's q/k/v projections always have biases: they are written as
  zeros, which computes exactly the model without them.
Refused, with the reason, before any weight is read: sink tokens (sink > 0: no stock transformers mask keeps the
first tokens visible), block_strided layers, two different windows (a config holds one sliding_window), and a KV
policy (transformers runs no eviction policy, so the export would not be the model the run measured).

Weights: the fused wqkv splits by rows into q_proj, k_proj, v_proj ([n_h·d_h], [n_kv·d_h], [n_kv·d_h]), the fused
w_gate_up into gate_proj then up_proj (silu_mul reads the gate first); norms, wo and w_down keep their shapes. RoPE
needs no permutation: runs/models/rope.py rotates the halves of each head (channel i with i + d_h/2) with
θ^(-2i/d_h), exactly transformers' rotate_half. Tied embeddings write embed_tokens alone (tie_word_embeddings
makes lm_head share it). No tokenizer is written: the run's data.tokenizer names it.

The checkpoint is read only through runs.checkpoint (header names the run, then torch's safe loader). The
safetensors file is written here, streamed tensor by tensor, since runs/ may import only torch, numpy and the
standard library: an 8-byte little-endian header length, the JSON header, then each tensor's bytes.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import torch

from costlaw.costmodel import Full, SinkWindow
from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.files import atomic_file, write_json_atomic
from costlaw.costmodel.core.rundir import CHECKPOINT, RunDir
from costlaw.runs.checkpoint import load_checkpoint
from costlaw.runs.config import RunConfig
from costlaw.runs.models.transformer import build_model

DTYPES = {"fp32": (torch.float32, "F32", "float32"), "bf16": (torch.bfloat16, "BF16", "bfloat16"),
          "fp16": (torch.float16, "F16", "float16")}
WEIGHTS, CONFIG = "model.safetensors", "config.json"


def hf_format(cfg) -> dict:
    """The architecture fields of config.json that hold `cfg`'s attention, or a one-line refusal saying why none
    does. `cfg` is a ModelConfig."""
    if cfg.kv_policy is not None:
        raise CostlawError(f"model.kv_policy: {cfg.kv_policy.method} evicts KV entries at inference and transformers "
                           "runs no such policy, so the export would not be the model this run measured; export the "
                           "run it started from (train.init_from)")
    windows = set()
    for spec in cfg.sparse_patterns:
        if not isinstance(spec, SinkWindow):
            raise CostlawError(f"model.layout: {spec.spec()} layers have no Hugging Face attention that computes "
                               "them; only full and sink_window(0,W) layers export")
        if spec.sink:
            raise CostlawError(f"model.layout: {spec.spec()} keeps the first {spec.sink} tokens visible to every "
                               "query; no stock transformers attention mask holds sink tokens, so the export would "
                               "compute another model; export a run whose windows have sink 0")
        windows.add(spec.window)
    if len(windows) > 1:
        raise CostlawError(f"model.layout: windows {sorted(windows)}; a Hugging Face config holds one sliding_window")
    if not windows:
        return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False,
                "mlp_bias": False}
    (window,) = windows
    if cfg.n_full_layers == 0:
        return {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "sliding_window": window}
    types = ["full_attention" if isinstance(s, Full) else "sliding_attention" for s in cfg.layout]
    first = types.index("sliding_attention")
    tail = all(t == "sliding_attention" for t in types[first:])
    return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "use_sliding_window": True,
            "sliding_window": window, "max_window_layers": first if tail else cfg.n_layers, "layer_types": types}


def hf_config(run: RunConfig, fmt: dict, eps: float, dtype: str) -> dict:
    m = run.model
    return {**fmt, "hidden_size": m.d_model, "intermediate_size": m.ffn_dim, "num_hidden_layers": m.n_layers,
            "num_attention_heads": m.n_heads, "num_key_value_heads": m.n_kv_heads, "head_dim": m.head_dim,
            "vocab_size": m.vocab_size, "tie_word_embeddings": m.tied_embeddings, "rope_theta": m.rope_theta,
            "rope_scaling": None, "rms_norm_eps": eps, "hidden_act": "silu",
            "max_position_embeddings": max((run.data.seq_len, *run.eval.contexts)),
            "initializer_range": 0.02, "torch_dtype": DTYPES[dtype][2], "use_cache": True}


def hf_tensors(state: dict, cfg, qkv_bias: bool) -> dict[str, torch.Tensor]:
    """runs/models/transformer.py's state dict under transformers' Llama names."""
    q, kv, f = cfg.q_dim, cfg.kv_dim, cfg.ffn_dim
    out = {"model.embed_tokens.weight": state["embed.weight"], "model.norm.weight": state["norm.weight"]}
    if not cfg.tied_embeddings:
        out["lm_head.weight"] = state["lm_head.weight"]
    for i in range(cfg.n_layers):
        src, dst = f"blocks.{i}.", f"model.layers.{i}."
        wq, wk, wv = state[src + "attn.wqkv.weight"].split([q, kv, kv])
        gate, up = state[src + "ffn.w_gate_up.weight"].split([f, f])
        out.update({dst + "input_layernorm.weight": state[src + "attn_norm.weight"],
                    dst + "self_attn.q_proj.weight": wq, dst + "self_attn.k_proj.weight": wk,
                    dst + "self_attn.v_proj.weight": wv, dst + "self_attn.o_proj.weight": state[src + "attn.wo.weight"],
                    dst + "post_attention_layernorm.weight": state[src + "ffn_norm.weight"],
                    dst + "mlp.gate_proj.weight": gate, dst + "mlp.up_proj.weight": up,
                    dst + "mlp.down_proj.weight": state[src + "ffn.w_down.weight"]})
        if qkv_bias:
            for name, width in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
                out[dst + f"self_attn.{name}.bias"] = torch.zeros(width, dtype=wq.dtype)
    return out


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], dtype: str, metadata: dict[str, str]) -> int:
    """Stream `tensors` (cast to `dtype`) into a safetensors file, atomically. Returns its size in bytes."""
    if sys.byteorder != "little":
        raise CostlawError("export: safetensors stores little-endian bytes; run the export on a little-endian host")
    torch_dtype, code, _ = DTYPES[dtype]
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name, t in tensors.items():
        n = t.numel() * torch_dtype.itemsize
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned, as safetensors' own writer leaves it
    with atomic_file(path) as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for t in tensors.values():
            f.write(t.detach().to(torch_dtype).contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return 8 + len(blob) + offset


def export_hf(run_dir: str | Path, out: str | Path, dtype: str = "fp32", force: bool = False) -> dict:
    """Write run `run_dir`'s weights as a Hugging Face checkpoint in `out`. Returns what was written."""
    if dtype not in DTYPES:
        raise CostlawError(f"--dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    rd, out = RunDir(run_dir), Path(out)
    doc = rd.config()
    if doc is None or rd.status() != "completed":
        raise CostlawError(f"run_dir: {str(rd.path)!r} is not a completed run directory (config.json and DONE with "
                           f"status completed; it is {rd.status()}); export a finished run")
    if not rd.file(CHECKPOINT).exists():
        raise CostlawError(f"run_dir: {str(rd.path)!r} has no {CHECKPOINT}; rerun the run to completion")
    if not force and any((out / name).exists() for name in (CONFIG, WEIGHTS)):
        raise CostlawError(f"--hf: {str(out)!r} already holds an export; give another directory, or --force")
    run = RunConfig.from_dict(doc["config"])
    fmt = hf_format(run.model)
    state = load_checkpoint(rd.file(CHECKPOINT), doc["run_id"], field="run_dir")["model"]
    skeleton = build_model(run.model, device="meta")  # the shapes and norm eps the weights were trained with
    want = {k: v.shape for k, v in skeleton.state_dict().items()}
    got = {k: v.shape for k, v in state.items()}
    if want != got:
        odd = sorted(set(want) ^ set(got)) or [k for k in want if want[k] != got[k]]
        raise CostlawError(f"run_dir: the checkpoint's weights do not fit the run's model ({odd[0]}); it is no "
                           "checkpoint of this run's model")
    tensors = hf_tensors(state, run.model, qkv_bias=fmt["model_type"] == "qwen2")
    config = hf_config(run, fmt, skeleton.norm.eps, dtype)
    metadata = {"format": "pt", "costlaw_run_id": doc["run_id"], "costlaw_model": run.model.to_json(),
                "costlaw_tokenizer": run.data.tokenizer}
    size = write_safetensors(out / WEIGHTS, tensors, dtype, metadata)
    write_json_atomic(out / CONFIG, config)
    return {"run_id": doc["run_id"], "out": str(out), "architecture": fmt["architectures"][0], "dtype": dtype,
            "tensors": len(tensors), "bytes": size, "tokenizer": run.data.tokenizer}
