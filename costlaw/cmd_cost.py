"""`costlaw cost`: price one model config at one or more context lengths."""

from __future__ import annotations

import json
from pathlib import Path

from costlaw.costmodel.core.units import binary_bytes, parse_tokens, si, table


def add_arguments(p):
    src = p.add_argument_group("model (a preset, a TOML file, and/or explicit fields; flags override)")
    src.add_argument("--preset", help="a named config (see --list-presets)")
    src.add_argument("--config", help="a model config TOML, or a run config whose [model] table is used")
    src.add_argument("--list-presets", action="store_true", help="print the preset names and exit")
    for flag, dest in [("--d-model", "d_model"), ("--layers", "n_layers"), ("--heads", "n_heads"),
                       ("--kv-heads", "n_kv_heads"), ("--head-dim", "head_dim"), ("--ffn-dim", "ffn_dim"),
                       ("--vocab", "vocab_size")]:
        src.add_argument(flag, dest=dest, type=int)
    src.add_argument("--rope-theta", type=float, dest="rope_theta")
    tie = src.add_mutually_exclusive_group()
    tie.add_argument("--tied", dest="tied_embeddings", action="store_true", default=None)
    tie.add_argument("--untied", dest="tied_embeddings", action="store_false")
    hyb = p.add_argument_group("hybrid layout (the rest of the layers are sparse)")
    full = hyb.add_mutually_exclusive_group()
    full.add_argument("--full-layers", type=int, help="K full layers centred in the stack")
    full.add_argument("--full-layer-ids", help="comma-separated full layer ids, e.g. 3,4,5")
    hyb.add_argument("--sparse", choices=["sink-window", "block-strided"], help="pattern of the sparse layers")
    hyb.add_argument("--sink", type=int, default=4)
    hyb.add_argument("--window", type=int, default=1024)
    hyb.add_argument("--block", type=int, default=64)
    hyb.add_argument("--local-blocks", type=int, default=16)
    hyb.add_argument("--stride", type=int, default=8)
    kv = p.add_argument_group("KV policy at inference")
    kvx = kv.add_mutually_exclusive_group()
    kvx.add_argument("--kv-keep", type=float, help="keep this fraction of the context (nearest token, halves up)")
    kvx.add_argument("--kv-budget", type=int, help="keep at most this many tokens")
    kv.add_argument("--kv-method", default="snapkv", help="policy method (default snapkv)")
    out = p.add_argument_group("what to price")
    out.add_argument("--context", action="append", default=None,
                     help="context length T in tokens (repeat or comma-separate; default 8192); 128K/1M accepted")
    out.add_argument("--dtype", default="bf16", help="bf16 | fp16 | fp32 | fp8 for weights and KV cache bytes")
    out.add_argument("--generate", type=int, default=0, help="also price G decoded tokens after the prompt")
    out.add_argument("--gpu", help="roofline prefill/decode times on this GPU (H100, H200, A100, A800, RTX-4090)")
    out.add_argument("--json", action="store_true", help="one JSON object (a list for several contexts)")
    out.add_argument("--toml", action="store_true", help="print the resolved model config as TOML and exit")


FIELD_FLAGS = {"d_model": "--d-model", "n_layers": "--layers", "n_heads": "--heads", "n_kv_heads": "--kv-heads",
               "head_dim": "--head-dim", "ffn_dim": "--ffn-dim", "vocab_size": "--vocab", "rope_theta": "--rope-theta"}


def resolve_config(args):
    """The ModelConfig named by --config/--preset and the field and layout flags."""
    from costlaw.costmodel import ConfigError

    try:
        return _resolve(args)
    except ConfigError as e:
        if e.field in FIELD_FLAGS:
            raise ConfigError(FIELD_FLAGS[e.field], e.problem) from None
        raise


def _resolve(args):
    from costlaw.costmodel import ConfigError, KVPolicy, ModelConfig, hybrid_layout, preset

    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise ConfigError("--config", f"no such file {args.config!r}")
        cfg = ModelConfig.from_toml(path.read_text())
        if args.preset:
            raise ConfigError("--preset", "give --preset or --config, not both")
    elif args.preset:
        cfg = preset(args.preset)
    else:
        cfg = None
    fields = {k: getattr(args, k) for k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                                             "ffn_dim", "vocab_size", "rope_theta", "tied_embeddings")}
    fields = {k: v for k, v in fields.items() if v is not None}
    hybrid = args.full_layers is not None or args.full_layer_ids is not None or args.sparse is not None
    if cfg is None:
        need = ["d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "vocab_size"]
        missing = [k for k in need if k not in fields]
        if missing:
            raise ConfigError(missing[0], "missing; give --preset NAME, --config FILE or every model field")
        cfg = ModelConfig(**fields)
    elif fields:
        if "n_layers" in fields and hybrid:
            fields["layout"] = ()
        if "n_heads" in fields and "n_kv_heads" not in fields and fields["n_heads"] % cfg.n_kv_heads:
            raise ConfigError("--kv-heads", f"the preset's {cfg.n_kv_heads} KV heads do not divide --heads "
                                            f"{fields['n_heads']}; give --kv-heads too")
        cfg = cfg.replace(**fields)
    if hybrid:
        if args.sparse is None:
            raise ConfigError("--sparse", "give the sparse pattern: --sparse sink-window or block-strided")
        if args.full_layers is None and args.full_layer_ids is None:
            raise ConfigError("--full-layers", "give --full-layers K or --full-layer-ids I,J,...")
        spec = (f"sink_window({args.sink},{args.window})" if args.sparse == "sink-window"
                else f"block_strided({args.block},{args.local_blocks},{args.stride})")
        ids = None
        if args.full_layer_ids is not None:
            try:
                ids = [int(x) for x in args.full_layer_ids.split(",") if x.strip()]
            except ValueError:
                raise ConfigError("--full-layer-ids", f"{args.full_layer_ids!r} is not a comma-separated "
                                                      "list of layer ids") from None
        try:
            layout = hybrid_layout(cfg.n_layers, spec, args.full_layers, ids)
        except ConfigError as e:
            flag = e.field.removeprefix("sparse.")  # sparse.window -> --window
            raise ConfigError("--" + flag.replace("_", "-"), e.problem) from None
        cfg = cfg.replace(layout=layout)
    if args.kv_keep is not None or args.kv_budget is not None:
        try:
            cfg = cfg.replace(kv_policy=KVPolicy(args.kv_method, keep=args.kv_keep, budget=args.kv_budget))
        except ConfigError as e:
            flag = {"kv_policy.keep": "--kv-keep", "kv_policy.budget": "--kv-budget",
                    "kv_policy.method": "--kv-method"}.get(e.field, e.field)
            raise ConfigError(flag, e.problem) from None
    return cfg


def main(args) -> int:
    from costlaw.costmodel import costs, preset_names
    from costlaw.costmodel.core.errors import ConfigError

    if args.list_presets:
        print("\n".join(preset_names()))
        return 0
    cfg = resolve_config(args)
    if args.toml:
        print(cfg.to_toml(), end="")
        return 0
    contexts = [parse_tokens(c) for arg in (args.context or ["8192"]) for c in arg.split(",") if c.strip()]
    if args.generate < 0:
        raise ConfigError("--generate", f"must be >= 0, got {args.generate}")
    rows = [costs(cfg, T, dtype=args.dtype, generate=args.generate, gpu=args.gpu) for T in contexts]
    if args.json:
        for r in rows:
            r["config"] = cfg.to_dict()
        print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
        return 0
    r0 = rows[0]
    print(f"config {r0['config_id']}  family {r0['family']}  layers {cfg.n_layers}  d {cfg.d_model}  "
          f"heads {cfg.n_heads}/{cfg.n_kv_heads}x{cfg.head_dim}  ffn {cfg.ffn_dim}  vocab {cfg.vocab_size}"
          f"{'  tied' if cfg.tied_embeddings else ''}")
    if cfg.family == "hybrid":
        print(f"layout {', '.join(cfg.to_dict()['layout'])}")
    if cfg.kv_policy is not None:
        print(f"kv policy {cfg.kv_policy.to_dict()}")
    print(f"params total {r0['params_total']:,}  non-embedding {r0['params_non_embedding']:,}"
          + (f"  policy {r0['params_policy']:,}" if r0["params_policy"] else ""))
    out = []
    for r in rows:
        row = {"context": r["context"], "C_infer FLOP/tok": si(r["c_infer_flops_per_token"]),
               "M_infer values": si(r["m_infer_values"]), f"M_infer {args.dtype}": binary_bytes(r["m_infer_bytes"]),
               f"KV cache {args.dtype}": binary_bytes(r["kv_cache_bytes"]),
               "C_train FLOP/tok": si(r["c_train_flops_per_token"]), "prefill FLOP": si(r["prefill_flops"])}
        if args.generate:
            row[f"decode {args.generate} FLOP"] = si(r["decode_flops"])
        if args.gpu:
            row[f"prefill s ({r['gpu']})"] = f"{r['prefill_s']:.3g}"
            row["decode tok/s"] = f"{r['decode_tokens_per_s']:.4g}"
        out.append(row)
    print(table(out))
    return 0
