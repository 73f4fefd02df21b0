"""`RunConfig`: one training run = a ModelConfig + data + train + eval settings + seed + stage.

Pure Python (no torch), so sweeps can build and validate thousands of these quickly. The run's id is
a hash of its canonical dict (everything but the free-form `name`), so the same run always lands in
the same directory and a resubmitted sweep finds its finished runs.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from costlaw.costmodel import ConfigError, ModelConfig
from costlaw.costmodel.core.rundir import run_id_of
from costlaw.costmodel.tomlw import dumps as toml_dumps

# tokenizer -> vocabulary size the model must at least have (byte: 256 bytes + <|endoftext|>)
TOKENIZER_VOCAB = {"byte": 257, "gpt2": 50257}
STAGES = ("pretrain", "extend", "compress")


@dataclass(frozen=True)
class DataConfig:
    corpus: str = "stdlib"  # stdlib | site-packages | a directory | a glob | a prepared corpus dir | synthetic
    tokenizer: str = "byte"  # byte | gpt2
    seq_len: int = 256
    packing: str = "balanced"  # balanced (HBP-style attention balance) | greedy | none (one document per row)
    doc_mask: bool = True  # packed documents do not attend to each other
    curriculum: str = "none"  # none | short-first
    curriculum_frac: float = 0.1  # share of steps that see short documents first
    retrieval_mix: float = 0.0  # share of training rows with a synthetic passkey inserted
    long_docs: bool = True  # ProLong-style: the files of one directory concatenated in order

    def validate(self):
        _choice("tokenizer", self.tokenizer, TOKENIZER_VOCAB)
        _choice("packing", self.packing, ("balanced", "greedy", "none"))
        _choice("curriculum", self.curriculum, ("none", "short-first"))
        _at_least("seq_len", self.seq_len, 8)
        _fraction("curriculum_frac", self.curriculum_frac)
        _fraction("retrieval_mix", self.retrieval_mix)
        if not self.corpus:
            raise ConfigError("corpus", "empty; use stdlib, site-packages, a directory or a glob")


@dataclass(frozen=True)
class TrainConfig:
    tokens: int = 0  # token budget; give this or steps
    steps: int = 0
    batch_size: int = 8  # sequences per micro-batch
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_frac: float = 0.1  # the GQA paper's WSD: 10% warmup, 20% cosine decay to lr/10
    decay_frac: float = 0.2
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    precision: str = "auto"  # auto (bf16 autocast on GPU, fp32 on CPU) | bf16 | fp32
    compile: str = "auto"  # auto (on for GPU) | on | off
    log_every: int = 10
    checkpoint_every: int = 200  # steps; 0 = only at the end and on preemption
    init_from: str = ""  # a finished run directory whose weights this run starts from
    trainable: str = "all"  # all | policy (only the KV policy's parameters; backbone frozen)

    def validate(self):
        if (self.tokens > 0) == (self.steps > 0):
            raise ConfigError("tokens", "give exactly one of train.tokens or train.steps (> 0)")
        for f in ("tokens", "steps"):
            _at_least(f, getattr(self, f), 0)
        for f in ("batch_size", "grad_accum", "log_every"):
            _at_least(f, getattr(self, f), 1)
        _at_least("checkpoint_every", self.checkpoint_every, 0)
        if not self.lr > 0:
            raise ConfigError("lr", f"must be > 0, got {self.lr}")
        for f in ("min_lr_ratio", "warmup_frac", "decay_frac", "beta1", "beta2"):
            _fraction(f, getattr(self, f))
        if self.warmup_frac + self.decay_frac > 1:
            raise ConfigError("decay_frac", "warmup_frac + decay_frac must be <= 1")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("weight_decay" if self.weight_decay < 0 else "grad_clip", "must be >= 0")
        _choice("precision", self.precision, ("auto", "bf16", "fp32"))
        _choice("compile", self.compile, ("auto", "on", "off"))
        _choice("trainable", self.trainable, ("all", "policy"))


@dataclass(frozen=True)
class EvalConfig:
    val_tokens: int = 65536  # held-out tokens scored at the training length
    position_buckets: int = 8  # loss by position: the sequence split into this many equal buckets
    retrieval_samples: int = 32  # passkey probe samples (0 = off)
    retrieval_depths: tuple[float, ...] = (0.1, 0.5, 0.9)
    decode_tokens: int = 32  # tokens generated when timing decode (0 = skip prefill/decode timing)
    contexts: tuple[int, ...] = ()  # extra contexts for prefill/decode timing and KV bytes (default: seq_len)
    kv_keep: tuple[float, ...] = ()  # compressed harness: keep ratios to evaluate (with policies)
    policies: tuple[str, ...] = ()  # compressed harness: KV policy methods to evaluate
    policy_runs: tuple[str, ...] = ()  # compressed harness: METHOD=RUN_ID of the trained policies evaluated

    def validate(self):
        for f in ("val_tokens", "retrieval_samples", "decode_tokens"):
            _at_least(f, getattr(self, f), 0)
        _at_least("position_buckets", self.position_buckets, 1)
        for d in self.retrieval_depths:
            _fraction("retrieval_depths", d)
        for t in self.contexts:
            _at_least("contexts", t, 1)
        for k in self.kv_keep:
            if not 0 < k <= 1:
                raise ConfigError("kv_keep", f"keep ratios must be in (0, 1], got {k}")


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=100))
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    stage: str = "pretrain"
    name: str = ""  # a label for humans; not part of the run id

    def __post_init__(self):
        for section in ("data", "train", "eval"):
            try:
                getattr(self, section).validate()
            except ConfigError as e:
                raise e.under(section) from None
        _choice("stage", self.stage, STAGES)
        _at_least("seed", self.seed, 0)
        need = TOKENIZER_VOCAB[self.data.tokenizer]
        if self.model.vocab_size < need:
            raise ConfigError("model.vocab_size", f"{self.model.vocab_size} is smaller than the {self.data.tokenizer} "
                                                  f"tokenizer's {need}; set vocab_size >= {need}")
        if self.train.trainable == "policy" and self.model.kv_policy is None:
            raise ConfigError("train.trainable", "\"policy\" needs model.kv_policy with a trained method")
        if self.stage != "pretrain" and not self.train.init_from:
            raise ConfigError("train.init_from", f"stage {self.stage!r} starts from a finished run; "
                                                 "set train.init_from to its run directory")

    # ---- identity and serialisation ----
    def to_dict(self) -> dict:
        return {
            "name": self.name, "seed": self.seed, "stage": self.stage,
            "model": self.model.to_dict(),
            "data": _section_dict(self.data), "train": _section_dict(self.train), "eval": _section_dict(self.eval),
        }

    @property
    def run_id(self) -> str:
        return run_id_of(self.to_dict())

    @property
    def tokens_per_step(self) -> int:
        return self.train.batch_size * self.train.grad_accum * self.data.seq_len

    @property
    def total_steps(self) -> int:
        if self.train.steps:
            return self.train.steps
        return max(1, -(-self.train.tokens // self.tokens_per_step))

    @property
    def total_tokens(self) -> int:
        return self.total_steps * self.tokens_per_step

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        if not isinstance(d, dict):
            raise ConfigError("run", f"must be a table, got {type(d).__name__}")
        known = {"name", "seed", "stage", "model", "data", "train", "eval"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown key; a run config has {', '.join(sorted(known))}")
        if "model" not in d:
            raise ConfigError("model", "missing; add a [model] table (fields or preset = \"...\")")
        try:
            model = ModelConfig.from_dict(d["model"])
        except ConfigError as e:
            raise e.under("model") from None
        kw = {s: _section_from_dict(c, d.get(s, {}), s)
              for s, c in (("data", DataConfig), ("train", TrainConfig), ("eval", EvalConfig))}
        for key, typ in (("name", str), ("seed", int), ("stage", str)):
            if key in d:
                _check_type(key, d[key], typ)
                kw[key] = d[key]
        return cls(model=model, **kw)

    def to_toml(self) -> str:
        return toml_dumps(self.to_dict())

    @classmethod
    def from_toml(cls, text: str) -> RunConfig:
        try:
            return cls.from_dict(tomllib.loads(text))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError("toml", f"not valid TOML ({e})") from None

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("config", f"no such file {str(p)!r}")
        if p.suffix == ".json":
            data = json.loads(p.read_text())
            return cls.from_dict(data.get("config", data))
        return cls.from_toml(p.read_text())


# ---------------------------------------------------------------- helpers
def _section_dict(obj) -> dict:
    return {f.name: list(v) if isinstance(v := getattr(obj, f.name), tuple) else v for f in dataclasses.fields(obj)}


def _section_from_dict(cls, d, prefix: str):
    if not isinstance(d, dict):
        raise ConfigError(prefix, f"must be a table, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kw = {}
    for k, v in d.items():
        if k not in hints:
            raise ConfigError(f"{prefix}.{k}", f"unknown key; {prefix} has {', '.join(names)}")
        kw[k] = _check_type(f"{prefix}.{k}", v, hints[k])
    return cls(**kw)


def _check_type(path: str, v, typ):
    origin = typing.get_origin(typ)
    if origin is tuple:
        if not isinstance(v, (list, tuple)):
            raise ConfigError(path, f"must be a list, got {v!r}")
        inner = typing.get_args(typ)[0]
        return tuple(_check_type(path, x, inner) for x in v)
    if origin in (typing.Union, types.UnionType):
        return v
    if typ is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if typ is int and isinstance(v, float) and v.is_integer():
        return int(v)
    if not isinstance(v, typ) or (typ is not bool and isinstance(v, bool)):
        raise ConfigError(path, f"must be {typ.__name__}, got {type(v).__name__} {v!r}")
    return v


def _choice(f, v, options):
    if v not in options:
        raise ConfigError(f, f"{v!r} is not one of {', '.join(options)}")


def _at_least(f, v, lo):
    if v < lo:
        raise ConfigError(f, f"must be >= {lo}, got {v}")


def _fraction(f, v):
    if not 0 <= v <= 1:
        raise ConfigError(f, f"must be in [0, 1], got {v}")
