"""`ModelConfig`: the one description of a model that costlaw prices, builds, records and recommends.

Llama-style decoder (pre-RMSNorm, SwiGLU FFN, RoPE, no biases) with GQA whose head_dim is decoupled
from d_model (the Cost-Optimal GQA paper's "Change 1"), a per-layer attention layout (one pattern of
costmodel.attention's registry per layer) and an optional inference-time KV policy.

Canonical form: `to_dict()` is the only serialisation; TOML and JSON are renderings of it, and
`config_id` hashes its JSON, so equal configs always share an id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import typing
from dataclasses import dataclass

from costlaw.costmodel.attention import FULL, MAX_LAYERS, Full, Pattern, decode_layout, encode_layout, parse_spec
from costlaw.costmodel.core.errors import ConfigError
from costlaw.costmodel.core.validate import bounded, conform, integer
from costlaw.costmodel.kvpolicy import KVPolicy


@dataclass(frozen=True)
class ModelConfig:
    # every size is a whole number >= 1; `conform` checks each field against its type hint and range
    d_model: int = bounded(lo=1)
    n_layers: int = bounded(lo=1, hi=MAX_LAYERS)
    n_heads: int = bounded(lo=1)
    n_kv_heads: int = bounded(lo=1)
    head_dim: int = bounded(lo=1)
    ffn_dim: int = bounded(lo=1)
    vocab_size: int = bounded(lo=1)
    tied_embeddings: bool = True
    rope_theta: float = bounded(500_000.0, lo=0, lo_open=True)
    layout: tuple[Pattern, ...] = ()  # empty means all layers full
    kv_policy: KVPolicy | None = None

    def __post_init__(self):
        conform(self)
        if self.n_heads % self.n_kv_heads:
            raise ConfigError("n_kv_heads", f"{self.n_kv_heads} does not divide n_heads {self.n_heads}; "
                                            "use a divisor of n_heads")
        if self.head_dim % 2:
            raise ConfigError("head_dim", f"must be even for RoPE, got {self.head_dim}")
        layout = decode_layout(self.layout) or (FULL,) * self.n_layers
        if len(layout) != self.n_layers:
            raise ConfigError("layout", f"describes {len(layout)} layers but n_layers is {self.n_layers}; "
                                        "give one pattern per layer (e.g. [\"full*N\"])")
        object.__setattr__(self, "layout", layout)
        if isinstance(self.kv_policy, dict):
            object.__setattr__(self, "kv_policy", KVPolicy.from_dict(self.kv_policy))
        elif self.kv_policy is not None and not isinstance(self.kv_policy, KVPolicy):
            raise ConfigError("kv_policy", f"must be a table like {{method = \"snapkv\", keep = 0.1}}, "
                                           f"got {self.kv_policy!r}")

    # ---- derived fields (computed, never stored) ----
    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def group_size(self) -> int:
        return self.n_heads // self.n_kv_heads

    @property
    def full_layer_ids(self) -> tuple[int, ...]:
        return tuple(i for i, s in enumerate(self.layout) if isinstance(s, Full))

    @property
    def n_full_layers(self) -> int:
        return len(self.full_layer_ids)

    @property
    def sparse_patterns(self) -> tuple[Pattern, ...]:
        """The distinct sparse patterns in the layout, in layer order."""
        seen: list[Pattern] = []
        for s in self.layout:
            if not isinstance(s, Full) and s not in seen:
                seen.append(s)
        return tuple(seen)

    @property
    def family(self) -> str:
        """`compressed` (a KV policy), `hybrid` (some sparse layers) or `gqa` (all full)."""
        if self.kv_policy is not None:
            return "compressed"
        return "hybrid" if self.n_full_layers < self.n_layers else "gqa"

    # ---- construction helpers ----
    def replace(self, **changes) -> ModelConfig:
        """A new config with fields changed (and re-validated). Changing n_layers resets an all-full layout."""
        if "n_layers" in changes and "layout" not in changes:
            if self.n_full_layers == self.n_layers:
                changes["layout"] = ()
            else:
                raise ConfigError("n_layers", "changing the depth of a hybrid config needs a new layout too")
        return dataclasses.replace(self, **changes)

    def with_layout(self, layout) -> ModelConfig:
        return self.replace(layout=layout)

    # ---- canonical serialisation ----
    def to_dict(self) -> dict:
        d = {name: getattr(self, name) for name in SCALAR_FIELDS}
        d["layout"] = encode_layout(self.layout)
        if self.kv_policy is not None:
            d["kv_policy"] = self.kv_policy.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Accepts the canonical dict plus shorthands: `preset = NAME` (other keys override it) and
        `attention = {sparse = "sink_window(4,1024)", full_layers = K | full_layer_ids = [...]}`."""
        if not isinstance(d, dict):
            raise ConfigError("model", f"must be a table of fields, got {type(d).__name__}")
        d = dict(d)
        base: dict = {}
        if "preset" in d:
            from costlaw.costmodel.presets import preset

            base = preset(d.pop("preset")).to_dict()
            if "n_layers" in d and "layout" not in d and "attention" not in d:
                base.pop("layout")
        attention = d.pop("attention", None)
        unknown = sorted(set(d) - set(FIELDS))
        if unknown:
            raise ConfigError(unknown[0], f"unknown model field; known fields: {', '.join(FIELDS)}, "
                                          "preset, attention")
        merged = {**base, **d}
        missing = [f for f in REQUIRED if f not in merged]
        if missing:
            raise ConfigError(missing[0], "missing; give it or start from a preset (preset = \"gqa-19m\")")
        if attention is not None:
            if "layout" in d:
                raise ConfigError("attention", "give either layout or attention, not both")
            merged["layout"] = layout_from_attention(attention, merged["n_layers"])
        kv = merged.pop("kv_policy", None)
        policy = KVPolicy.from_dict(kv) if kv is not None else None
        return cls(**merged, kv_policy=policy)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def config_id(self) -> str:
        """Stable 12-hex-digit id of the canonical form."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    def to_toml(self, table: str = "model") -> str:
        from costlaw.costmodel.tomlw import dumps

        return dumps({table: self.to_dict()} if table else self.to_dict())

    @classmethod
    def from_toml(cls, text: str) -> ModelConfig:
        """A model config file, or a run config's `[model]` table."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError("toml", f"not valid TOML ({e})") from None
        if "model" in data and isinstance(data["model"], dict):
            data = data["model"]
        return cls.from_dict(data)


FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))
REQUIRED = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.default is dataclasses.MISSING)
# the fields that serialise as themselves (numbers and flags); layout and kv_policy have their own forms
SCALAR_FIELDS = tuple(n for n, t in typing.get_type_hints(ModelConfig).items() if t in (int, float, bool))
# the `attention` shorthand of from_dict: key -> the type a spec file gives it
ATTENTION_KEYS = {"sparse": str, "full_layers": int, "full_layer_ids": list}


def centred_full_layers(n_layers: int, k: int) -> tuple[int, ...]:
    """The ids of k consecutive full layers centred in the stack (LongGen: full layers in the middle)."""
    k = integer("full_layers", k, 0, n_layers)
    start = (n_layers - k) // 2
    return tuple(range(start, start + k))


def hybrid_layout(n_layers: int, sparse, full_layers: int | None = None,
                  full_layer_ids=None) -> tuple[Pattern, ...]:
    """Full layers at `full_layer_ids` (or `full_layers` of them centred), `sparse` everywhere else."""
    pattern = parse_spec(sparse, "sparse")
    if (full_layers is None) == (full_layer_ids is None):
        raise ConfigError("full_layers", "give exactly one of full_layers (a count) or full_layer_ids (a list)")
    if full_layer_ids is None:
        ids = centred_full_layers(n_layers, full_layers)
    else:
        ids = tuple(full_layer_ids)
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_layers:
                raise ConfigError("full_layer_ids", f"layer id {i!r} out of range 0..{n_layers - 1}")
        if len(set(ids)) != len(ids):
            raise ConfigError("full_layer_ids", f"repeats a layer id: {list(ids)}")
    full = set(ids)
    return tuple(FULL if i in full else pattern for i in range(n_layers))


def layout_from_attention(att: dict, n_layers: int) -> tuple[Pattern, ...]:
    if not isinstance(att, dict):
        raise ConfigError("attention", "must be a table: {sparse = \"sink_window(4,1024)\", full_layers = K}")
    unknown = sorted(set(att) - set(ATTENTION_KEYS))
    if unknown:
        raise ConfigError(f"attention.{unknown[0]}", "unknown key; use sparse, full_layers or full_layer_ids")
    if "sparse" not in att:
        raise ConfigError("attention.sparse", "missing; e.g. sparse = \"sink_window(4,1024)\"")
    try:
        return hybrid_layout(n_layers, att["sparse"], att.get("full_layers"), att.get("full_layer_ids"))
    except ConfigError as e:
        raise e.under("attention") from None
