"""`costlaw cost`: price one model config at one or more context lengths.

A Hugging Face config.json (`--hf-config`, or a preset generated from one) is priced through costmodel.hf: its
ModelConfig by the cost model's formulas, plus the parameters its architecture adds (biases, extra norms, experts),
with every approximation stated in the output."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

from costlaw.costmodel.core.units import MAX_TOKENS, binary_bytes, parse_tokens, si, table, terminal_width

# the short flags some ModelConfig fields have always had; every other field's flag is --FIELD-NAME
SHORT_FLAGS = {"n_layers": "--layers", "n_heads": "--heads", "n_kv_heads": "--kv-heads", "vocab_size": "--vocab"}
BOOL_FLAGS = {"tied_embeddings": ("--tied", "--untied")}  # (on, off); other true/false fields: --F / --no-F


def model_flags() -> dict[str, tuple[str, type]]:
    """ModelConfig's numbers and flags -> (flag, type), from its type hints."""
    from costlaw.costmodel.config import SCALAR_FIELDS, ModelConfig

    hints = typing.get_type_hints(ModelConfig)
    return {n: (SHORT_FLAGS.get(n, "--" + n.replace("_", "-")), hints[n]) for n in SCALAR_FIELDS}


def sparse_patterns() -> dict[str, type]:
    """`--sparse` choice (the kind, dashed) -> pattern class: every registered pattern but full attention."""
    from costlaw.costmodel.attention import PATTERNS, Full

    return {kind.replace("_", "-"): cls for kind, cls in PATTERNS.items() if cls is not Full}


def pattern_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(p):
    from costlaw import options
    from costlaw.costmodel.hardware import GPUS
    from costlaw.costmodel.hf.families import FAMILIES, TEXT_MODEL_TYPES

    src = p.add_argument_group("model (a preset, a TOML file, a Hugging Face config.json, and/or explicit fields; "
                               "flags override)")
    src.add_argument("--preset", help="a named config (see --list-presets)")
    src.add_argument("--config", help="a model config TOML, or a run config whose [model] table is used")
    src.add_argument("--hf-config", metavar="CONFIG_JSON",
                     help="a Hugging Face config.json of model_type " + ", ".join(FAMILIES) + " (or "
                          + ", ".join(TEXT_MODEL_TYPES) + ": its text_config). params_total counts "
                          "every parameter the checkpoint holds; for a mixture of experts FLOPs price the routed "
                          "experts and params_active counts them (params_total adds the unrouted ones). Sliding "
                          "windows price as sink_window(0,W) layers; what the cost model does not price is listed "
                          "under notes. Multi-head latent attention (kv_lora_rank) and non-softmax layers are refused")
    src.add_argument("--list-presets", action="store_true", help="print the preset names and exit")
    for name, (flag, typ) in model_flags().items():
        if typ is bool:
            on, off = BOOL_FLAGS.get(name, (flag, "--no-" + flag[2:]))
            group = src.add_mutually_exclusive_group()
            group.add_argument(on, dest=name, action="store_true", default=None)
            group.add_argument(off, dest=name, action="store_false")
        else:
            src.add_argument(flag, dest=name, type=typ)
    hyb = p.add_argument_group("hybrid layout (the rest of the layers are sparse)")
    full = hyb.add_mutually_exclusive_group()
    full.add_argument("--full-layers", type=int, help="K full layers centred in the stack")
    full.add_argument("--full-layer-ids", help="comma-separated full layer ids, e.g. 3,4,5")
    patterns = sparse_patterns()
    hyb.add_argument("--sparse", choices=list(patterns), help="pattern of the sparse layers")
    used_by: dict[str, list[str]] = {}  # one flag per parameter name, shared by the patterns that have it
    for cls in patterns.values():
        for f in dataclasses.fields(cls):
            default = "" if f.default is dataclasses.MISSING else f" (default {f.default})"
            used_by.setdefault(f.name, []).append(f"{cls.kind}{default}")
    for name, users in used_by.items():
        hyb.add_argument(pattern_flag(name), dest=f"pattern_{name}", type=int, metavar=name.upper(),
                         help=f"{name} of {', '.join(users)}")
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
    out.add_argument("--gpu", help=f"roofline prefill/decode times on this GPU ({', '.join(GPUS)})")
    out.add_argument("--json", action="store_true", help="one JSON object (a list for several contexts; with "
                                                         "--list-presets, the names)")
    out.add_argument("--toml", action="store_true", help="print the resolved model config as TOML and exit")
    options.add_wide(out)


def resolve_model(args):
    """(ModelConfig, HFModel or None) named by --config/--preset/--hf-config and the field and layout flags; the
    HFModel (a Hugging Face config or a preset made from one) carries the same ModelConfig."""
    from costlaw.costmodel import ConfigError

    try:
        cfg, hf = _resolve(args)
        if hf is not None:
            hf = hf.with_config(cfg)
            hf.arch.unrouted(cfg)  # an override the experts cannot split is refused here, under its flag
        return cfg, hf
    except ConfigError as e:
        flags = model_flags()
        if e.field in flags:
            raise ConfigError(flags[e.field][0], e.problem) from None
        raise


def _read_config(path: Path):
    """A model TOML; a Hugging Face config.json given here is named as one instead of failing as TOML."""
    from costlaw.costmodel import ConfigError, ModelConfig

    text = path.read_text()
    try:
        return ModelConfig.from_toml(text)
    except ConfigError as e:
        if e.field != "toml":
            raise
        try:
            doc = json.loads(text)
        except ValueError:
            raise e from None
        if isinstance(doc, dict) and ("model_type" in doc or "architectures" in doc):
            raise ConfigError("--config", f"{str(path)!r} is a Hugging Face config.json, not a costlaw TOML; pass it "
                                          "as --hf-config") from None
        raise


def _read_hf(path: str):
    from costlaw.costmodel import ConfigError
    from costlaw.costmodel.hf import read_hf_config

    try:
        return read_hf_config(path)
    except ConfigError as e:
        raise (ConfigError("--hf-config", e.problem) if e.field == "hf_config" else e.under("--hf-config")) from None


def _sparse_pattern(args):
    """The --sparse pattern, its parameters from their flags or the pattern's defaults."""
    from costlaw.costmodel import ConfigError

    patterns = sparse_patterns()
    if args.sparse is None:
        raise ConfigError("--sparse", f"give the sparse pattern: --sparse {' or '.join(patterns)}")
    cls = patterns[args.sparse]
    values = {}
    for f in dataclasses.fields(cls):
        v = getattr(args, f"pattern_{f.name}")
        if v is None and f.default is dataclasses.MISSING:
            raise ConfigError(pattern_flag(f.name), f"missing; {cls.kind} is {cls.form()}")
        values[f.name] = f.default if v is None else v
    try:
        return cls(**values)
    except ConfigError as e:
        raise ConfigError(pattern_flag(e.field), e.problem) from None


def _resolve(args):
    from costlaw.costmodel import ConfigError, KVPolicy, ModelConfig, hybrid_layout, preset
    from costlaw.costmodel.config import REQUIRED
    from costlaw.costmodel.presets import HF_MODELS

    given = [flag for flag, v in (("--config", args.config), ("--preset", args.preset),
                                  ("--hf-config", args.hf_config)) if v]
    if len(given) > 1:
        raise ConfigError(given[1], f"give one of --config, --preset or --hf-config, not {' and '.join(given)}")
    hf = None
    from costlaw.options import input_file

    if args.config:
        path = input_file(args.config, "--config", "a model config TOML (or a run config with a [model] table)")
        cfg = _read_config(path)
    elif args.hf_config:
        input_file(args.hf_config, "--hf-config", "a Hugging Face config.json")
        hf = _read_hf(args.hf_config)
        cfg = hf.config
    elif args.preset:
        cfg = preset(args.preset)
        hf = HF_MODELS.get(args.preset)
    else:
        cfg = None
    fields = {k: getattr(args, k) for k in model_flags() if getattr(args, k) is not None}
    hybrid = args.full_layers is not None or args.full_layer_ids is not None or args.sparse is not None
    if cfg is None:
        missing = [k for k in REQUIRED if k not in fields]
        if missing:
            raise ConfigError(missing[0], "missing; give --preset NAME, --config FILE or every model field")
        cfg = ModelConfig(**fields)
    elif fields:
        if "n_layers" in fields and hybrid:
            fields["layout"] = ()
        if "n_heads" in fields and "n_kv_heads" not in fields and fields["n_heads"] % cfg.n_kv_heads:
            raise ConfigError("n_kv_heads", f"the preset's {cfg.n_kv_heads} KV heads do not divide --heads "
                                            f"{fields['n_heads']}; give --kv-heads too")
        cfg = cfg.replace(**fields)
    if hybrid:
        pattern = _sparse_pattern(args)
        if args.full_layers is None and args.full_layer_ids is None:
            raise ConfigError("--full-layers", "give --full-layers K or --full-layer-ids I,J,...")
        ids = None
        if args.full_layer_ids is not None:
            try:
                ids = [int(x) for x in args.full_layer_ids.split(",") if x.strip()]
            except ValueError:
                raise ConfigError("--full-layer-ids", f"{args.full_layer_ids!r} is not a comma-separated "
                                                      "list of layer ids") from None
        try:
            layout = hybrid_layout(cfg.n_layers, pattern, args.full_layers, ids)
        except ConfigError as e:
            raise ConfigError(pattern_flag(e.field), e.problem) from None
        cfg = cfg.replace(layout=layout)
    if args.kv_keep is not None or args.kv_budget is not None:
        try:
            cfg = cfg.replace(kv_policy=KVPolicy(args.kv_method, keep=args.kv_keep, budget=args.kv_budget))
        except ConfigError as e:
            flag = {"kv_policy.keep": "--kv-keep", "kv_policy.budget": "--kv-budget",
                    "kv_policy.method": "--kv-method"}.get(e.field, e.field)
            raise ConfigError(flag, e.problem) from None
    return cfg, hf


def main(args) -> int:
    from costlaw.costmodel import costs, preset_names
    from costlaw.costmodel.core.errors import ConfigError
    from costlaw.costmodel.costs import dtype_bytes
    from costlaw.costmodel.hf import hf_costs

    if args.list_presets:
        print(json.dumps(list(preset_names()), indent=1) if args.json else "\n".join(preset_names()))
        return 0
    cfg, hf = resolve_model(args)
    if args.toml:  # the cost model's config alone: what an HF architecture adds is not a ModelConfig field
        print(cfg.to_toml(), end="")
        return 0
    contexts = [parse_tokens(c, "--context") for arg in (args.context or ["8192"]) for c in arg.split(",")
                if c.strip()]
    if not contexts:
        raise ConfigError("--context", "empty; give a context length such as 8192 or 128K")
    if not 0 <= args.generate <= MAX_TOKENS:
        raise ConfigError("--generate", f"must be 0 to {MAX_TOKENS:,} tokens, got {args.generate}")
    price = hf_costs if hf is not None else costs
    rows = [price(hf if hf is not None else cfg, T, dtype=args.dtype, generate=args.generate, gpu=args.gpu)
            for T in contexts]
    per_token = 2 * cfg.kv_dim * dtype_bytes(args.dtype)  # K and V of one token in one layer
    for r in rows:
        r["kv_bytes_per_layer"] = [t * per_token for t in r["kv_tokens_per_layer"]]
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
          + (f"  active {r0['params_active']:,}" if "params_active" in r0 else "")
          + (f"  policy {r0['params_policy']:,}" if r0["params_policy"] else ""))
    if hf is not None:
        h = r0["hf"]
        added = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in
                          {**h["params_extra"], **({"unrouted experts": h["params_unrouted"]}
                                                   if "params_unrouted" in h else {})}.items())
        print(f"hf {h['model_type']}: {h['source']}; cost model {h['params_modelled']:,}"
              + (f" + {added}" if added else ""))
        for note in h["notes"]:
            print(f"  note: {note}")
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
    print(table(out, width=None if args.wide else terminal_width()))
    return 0
