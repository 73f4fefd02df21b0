"""Named model configs in one table, and overrides on top of them.

Public models are generated from the Hugging Face configs shipped as data (costmodel/data/hf, read by
costmodel.hf): one preset per config.json, named as in its published.toml, whose `HF_MODELS` entry keeps what the
architecture adds beyond ModelConfig (biases, extra norms, experts) for `costlaw cost`. The GQA paper's MHA ladder
is stated once here, in `PAPER_LADDER`: its Table 9 shapes are the `gqa-*` presets, and analysis/shape.py takes its
aspect-ratio anchors from the whole ladder (Table 9, then App. B.1's Table 7 above 1.2B). Every ladder
shape has d_h = 64, V = 50,304, tied embeddings, RoPE θ = 5e5, d_ff = 8d/3 rounded to the nearest multiple
of 32, and MHA heads n_h = n_kv = d / 64 as trained there.
"""

from __future__ import annotations

from costlaw.costmodel.config import ModelConfig
from costlaw.costmodel.core.errors import ConfigError
from costlaw.costmodel.hf import HFModel, shipped

# (label, L, d, table) of the GQA paper's ladder; "1.2b" is the nominal label (its N is 1.02B)
PAPER_LADDER: tuple[tuple[str, int, int, str], ...] = (
    ("3m", 4, 256, "Table 9"), ("19m", 6, 512, "Table 9"), ("85m", 12, 768, "Table 9"),
    ("150m", 12, 1024, "Table 9"), ("200m", 16, 1024, "Table 9"), ("470m", 24, 1280, "Table 9"),
    ("680m", 24, 1536, "Table 9"), ("1.2b", 36, 1536, "Table 9"),
    ("1.8b", 36, 2048, "Table 7"), ("4b", 48, 2560, "Table 7"), ("6b", 54, 3072, "Table 7"),
    ("13b", 64, 4096, "Table 7"), ("33b", 72, 6144, "Table 7"), ("64b", 80, 8192, "Table 7"),
)


def paper_ffn(d_model: int) -> int:
    """The GQA paper's d_ff: 8d/3 rounded to the nearest multiple of 32."""
    return 32 * round(8 * d_model / 3 / 32)


def paper_config(n_layers: int, d_model: int) -> ModelConfig:
    """The paper's MHA model of depth L and width d."""
    h = d_model // 64
    return ModelConfig(d_model=d_model, n_layers=n_layers, n_heads=h, n_kv_heads=h, head_dim=64,
                       ffn_dim=paper_ffn(d_model), vocab_size=50304, tied_embeddings=True, rope_theta=5e5)


# name -> the shipped Hugging Face model (its ModelConfig is the preset; the rest prices what ModelConfig lacks)
HF_MODELS: dict[str, HFModel] = {s.name: s.model for s in shipped()}

# name -> (config, source)
PRESETS: dict[str, tuple[ModelConfig, str]] = {
    **{name: (m.config, m.source) for name, m in HF_MODELS.items()},
    **{f"gqa-{label}": (paper_config(L, d), f"Chen et al. 2025, {table} ({label}: L={L}, d={d})")
       for label, L, d, table in PAPER_LADDER if table == "Table 9"},
}


def preset_names() -> list[str]:
    return list(PRESETS)


def preset(name: str, **overrides) -> ModelConfig:
    """A named config, with field overrides applied on top (e.g. `n_heads=8, n_kv_heads=1`)."""
    try:
        cfg = PRESETS[name][0]
    except KeyError:
        raise ConfigError("preset", f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    return cfg.replace(**overrides) if overrides else cfg
