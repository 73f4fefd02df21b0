"""`RunConfig`: one training run = a ModelConfig + data + train + eval settings + seed + stage.

Pure Python (no torch), so sweeps can build and validate thousands of these quickly. The run's id is
a hash of its canonical dict (everything but the free-form `name`), so the same run always lands in
the same directory and a resubmitted sweep finds its finished runs.

Each field states its type and range once, where it is declared (`bounded`); `conform`, the check every
costlaw config shares (costmodel.core.validate), enforces them when the RunConfig is made, and the sections'
`validate` adds the checks that relate fields.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from costlaw.costmodel import ConfigError, ModelConfig
from costlaw.costmodel.core.rundir import run_id_of
from costlaw.costmodel.core.validate import bounded, conform, integer
from costlaw.costmodel.tomlw import dumps as toml_dumps

# tokenizer -> vocabulary size the model must at least have (byte: 256 bytes + <|endoftext|>)
TOKENIZER_VOCAB = {"byte": 257, "gpt2": 50257}
STAGES = ("pretrain", "extend", "compress")

# Upper bounds of what a run may ask for, so an absurd value (a typo, a formula gone wrong) is refused in one line
# before anything is written instead of failing inside torch after minutes, or never. Each is far above any run
# these ladders train, and says why in its comment.
MAX_SEQ_LEN = 2**24  # 16M positions: 16x the longest contexts models train at; one row's activations fill a GPU
MAX_STEPS = 10**9  # at a millisecond a step (a tiny model) 10^9 steps are 11 days; ladder runs take 10^3-10^6
MAX_TOKENS = 10**15  # 30x the largest published pretraining budgets (~3e13 tokens)
MAX_BATCH = 2**20  # sequences per micro-batch, and micro-batches per step: past any memory or any useful batch
MAX_LR = 10.0  # AdamW moves each weight by about lr a step: beyond 10 every weight leaves its scale at step one
MAX_EVAL_TOKENS = 10**10  # held-out tokens: scoring more takes longer than the runs here train
MAX_SAMPLES = 10**6  # passkey probes, each a greedy decode: a million is hours of evaluation on its own
MAX_SEED = 2**63 - 1  # torch.manual_seed takes a 64-bit seed
# the model's sizes for a run this code trains (costmodel prices larger hypothetical models without limit)
MODEL_LIMITS = {
    "d_model": 2**17,  # 8x the widest published dense transformers (16384)
    "n_layers": 2**12,  # 30x the deepest (126 layers)
    "n_heads": 2**12,  # query heads: 30x the most in use (128)
    "head_dim": 2**12,  # 16x the widest heads in use (256)
    "ffn_dim": 2**20,  # twice the usual 4x expansion of the widest d_model allowed (4 * 2^17)
    "vocab_size": 2**24,  # 64x the largest tokenizers (256K)
}


@dataclass(frozen=True)
class DataConfig:
    corpus: str = "stdlib"  # stdlib | site-packages | a directory | a glob | a prepared corpus dir | synthetic
    tokenizer: str = bounded("byte", choices=TOKENIZER_VOCAB)
    seq_len: int = bounded(256, lo=8, hi=MAX_SEQ_LEN)
    # balanced (HBP-style attention balance) | greedy | none (one document per row) | uniform (each row a window of
    # the whole train stream at a random offset: runs.packing.UniformPieces) | hierarchical (HBP's pack groups by
    # length, `pack_levels`: runs.hierarchical)
    packing: str = bounded("balanced", choices=("balanced", "greedy", "none", "uniform", "hierarchical"))
    doc_mask: bool = True  # packed documents do not attend to each other
    curriculum: str = bounded("none", choices=("none", "short-first"))
    curriculum_frac: float = bounded(0.1, lo=0, hi=1)  # share of steps that see short documents first
    retrieval_mix: float = bounded(0.0, lo=0, hi=1)  # share of training rows with a synthetic passkey inserted
    long_docs: bool = True  # ProLong-style: the files of one directory concatenated in order
    # packing "hierarchical": the pack groups' row lengths, ascending, the last = seq_len (e.g. [2048, 8192, 32768])
    pack_levels: tuple[int, ...] = bounded((), lo=8, hi=MAX_SEQ_LEN)
    # ProLong's long/short mix: this share of the trained positions from documents of >= long_min positions
    # (0: seq_len), the rest from shorter ones; unset, documents come as the corpus has them
    long_share: float | None = bounded(None, lo=0, hi=1)
    long_min: int = bounded(0, lo=0, hi=MAX_SEQ_LEN)

    def validate(self):
        conform(self)
        if self.long_share is not None and self.packing in ("uniform", "none"):
            raise ConfigError("long_share", f"mixes documents, and packing {self.packing!r} "
                                            + ("draws windows, not documents" if self.packing == "uniform" else
                                               "puts one document per row unmixed")
                                            + "; use packing \"balanced\", \"greedy\" or \"hierarchical\"")
        if self.long_min and self.long_share is None:
            raise ConfigError("long_min", "applies with long_share; set long_share or drop long_min")
        if self.pack_levels and self.packing != "hierarchical":
            raise ConfigError("pack_levels", f"applies to packing \"hierarchical\", not {self.packing!r}; set "
                                             "packing = \"hierarchical\" or drop pack_levels")
        if not self.corpus:
            raise ConfigError("corpus", "empty; use stdlib, site-packages, a directory or a glob")
        if self.packing == "uniform" and self.curriculum != "none":
            raise ConfigError("curriculum", f"{self.curriculum!r} orders documents, and packing \"uniform\" draws "
                                            "windows, not documents; set curriculum = \"none\" or another packing")


@dataclass(frozen=True)
class TrainConfig:
    tokens: int = bounded(0, lo=0, hi=MAX_TOKENS)  # token budget; give this or steps
    steps: int = bounded(0, lo=0, hi=MAX_STEPS)
    batch_size: int = bounded(8, lo=1, hi=MAX_BATCH)  # sequences per micro-batch
    grad_accum: int = bounded(1, lo=1, hi=MAX_BATCH)
    lr: float = bounded(1e-3, lo=0, hi=MAX_LR, lo_open=True)
    min_lr_ratio: float = bounded(0.1, lo=0, hi=1)
    warmup_frac: float = bounded(0.1, lo=0, hi=1)  # the GQA paper's WSD: 10% warmup, 20% cosine decay to lr/10
    decay_frac: float = bounded(0.2, lo=0, hi=1)
    weight_decay: float = bounded(0.1, lo=0)
    beta1: float = bounded(0.9, lo=0, hi=1)
    beta2: float = bounded(0.95, lo=0, hi=1)
    grad_clip: float = bounded(1.0, lo=0)
    # auto: bf16 autocast on GPU, fp32 on CPU; fp8: bf16 with the blocks' linear layers in float8 (runs/fp8.py)
    precision: str = bounded("auto", choices=("auto", "bf16", "fp32", "fp8"))
    compile: str = bounded("auto", choices=("auto", "on", "off"))  # auto: on for GPU
    log_every: int = bounded(10, lo=1)
    checkpoint_every: int = bounded(200, lo=0)  # steps; 0 = only at the end and on preemption
    init_from: str = ""  # a finished run directory whose weights this run starts from
    # all | policy (only the KV policy's parameters; backbone frozen)
    trainable: str = bounded("all", choices=("all", "policy"))
    # micro-batches whose rows are at least this long recompute their activations in the backward (0: never);
    # with packing "hierarchical" that is HBP's per-group activation checkpointing
    recompute_from: int = bounded(0, lo=0, hi=MAX_SEQ_LEN)

    def validate(self):
        conform(self)
        if (self.tokens > 0) == (self.steps > 0):
            raise ConfigError("tokens", "give exactly one of train.tokens or train.steps (> 0)")
        if self.warmup_frac + self.decay_frac > 1:
            raise ConfigError("decay_frac", "warmup_frac + decay_frac must be <= 1")


@dataclass(frozen=True)
class EvalConfig:
    val_tokens: int = bounded(65536, lo=0, hi=MAX_EVAL_TOKENS)  # held-out tokens scored at the training length
    # loss by position: the sequence split into this many equal buckets
    position_buckets: int = bounded(8, lo=1, hi=MAX_SEQ_LEN)
    retrieval_samples: int = bounded(32, lo=0, hi=MAX_SAMPLES)  # passkey probe samples (0 = off)
    retrieval_depths: tuple[float, ...] = bounded((0.1, 0.5, 0.9), lo=0, hi=1)
    # tokens generated when timing decode (0 = skip prefill/decode timing)
    decode_tokens: int = bounded(32, lo=0, hi=MAX_SEQ_LEN)
    # extra contexts for prefill/decode timing and KV bytes (default: seq_len)
    contexts: tuple[int, ...] = bounded((), lo=1, hi=MAX_SEQ_LEN)
    kv_keep: tuple[float, ...] = bounded((), lo=0, hi=1, lo_open=True)  # compressed harness: keep ratios
    policies: tuple[str, ...] = ()  # compressed harness: KV policy methods to evaluate
    policy_runs: tuple[str, ...] = ()  # compressed harness: METHOD=RUN_ID of the trained policies evaluated
    # which val rows: longest (windows of the longest val documents first) | spread (one window at a seeded offset
    # in each of val_tokens / seq_len equal stretches of the val split: the same rows for every run on the corpus)
    val_sample: str = bounded("longest", choices=("longest", "spread"))
    # the length val loss, loss by position, retrieval and the first inference context are scored at (0: the
    # training length); ProLong trains longer than it evaluates
    seq_len: int = bounded(0, lo=0, hi=MAX_SEQ_LEN)

    def validate(self):
        conform(self)
        if 0 < self.seq_len < 8:
            raise ConfigError("seq_len", f"{self.seq_len} is too short to score; use 0 (the training length) or >= 8")


@dataclass(frozen=True)
class LogConfig:
    """Where the trainer also sends what it appends to metrics.jsonl, live (runs/trackers.py); off by default.
    Not part of what a run is: the run id leaves `log` out (as it does `name`), and to_dict leaves it out while it
    is off, so turning a tracker on neither renames nor retrains a run."""
    tensorboard: bool = False  # TensorBoard event files in <run_dir>/tensorboard (pip install costlaw[tensorboard])
    wandb: bool = False  # a Weights & Biases run with the run's id (pip install costlaw[wandb])
    wandb_project: str = "costlaw"
    wandb_entity: str = ""  # empty: wandb's default entity
    # offline writes <run_dir>/wandb without a network (`wandb sync` uploads it later); online streams to W&B
    wandb_mode: str = bounded("offline", choices=("offline", "online"))

    def validate(self):
        conform(self)
        if not self.wandb_project.strip():
            raise ConfigError("wandb_project", "empty; name the W&B project, e.g. \"costlaw\"")


# Fields added after runs were recorded, as (section, field): to_dict leaves each out while it holds its default, so
# every earlier run's config.json and run id stay what they were (as it does the whole of an unused `log`).
LATER_FIELDS = frozenset({("eval", "val_sample"), ("data", "pack_levels"), ("train", "recompute_from"),
                          ("data", "long_share"), ("data", "long_min"), ("eval", "seq_len")})

SECTIONS = {"data": DataConfig, "train": TrainConfig, "eval": EvalConfig, "log": LogConfig}  # tables besides model


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=100))
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    seed: int = bounded(0, lo=0, hi=MAX_SEED)
    stage: str = bounded("pretrain", choices=STAGES)
    name: str = ""  # a label for humans; not part of the run id

    def __post_init__(self):
        for section in SECTIONS:
            try:
                getattr(self, section).validate()
            except ConfigError as e:
                raise e.under(section) from None
        conform(self)
        for k, hi in MODEL_LIMITS.items():
            integer(f"model.{k}", getattr(self.model, k), 1, hi)
        need = TOKENIZER_VOCAB[self.data.tokenizer]
        if self.model.vocab_size < need:
            raise ConfigError("model.vocab_size", f"{self.model.vocab_size} is smaller than the {self.data.tokenizer} "
                                                  f"tokenizer's {need}; set vocab_size >= {need}")
        if self.train.trainable == "policy" and self.model.kv_policy is None:
            raise ConfigError("train.trainable", "\"policy\" needs model.kv_policy with a trained method")
        if self.data.packing == "hierarchical":
            check_levels(self.data.pack_levels, self.data.seq_len, self.train.batch_size)
        if self.stage != "pretrain" and not self.train.init_from:
            raise ConfigError("train.init_from", f"stage {self.stage!r} starts from a finished run; "
                                                 "set train.init_from to its run directory")

    # ---- identity and serialisation ----
    def to_dict(self) -> dict:
        d = {
            "name": self.name, "seed": self.seed, "stage": self.stage,
            "model": self.model.to_dict(),
            "data": _section_dict(self.data, "data"), "train": _section_dict(self.train, "train"),
            "eval": _section_dict(self.eval, "eval"),
        }
        if self.log != LogConfig():  # off, it is absent: every run's config.json and id stay what they were
            d["log"] = _section_dict(self.log, "log")
        return d

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
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(unknown[0], f"unknown key; a run config has {', '.join(sorted(known))}")
        if "model" not in d:
            raise ConfigError("model", "missing; add a [model] table (fields or preset = \"...\")")
        try:
            model = ModelConfig.from_dict(d["model"])
        except ConfigError as e:
            raise e.under("model") from None
        kw = {s: _section_from_dict(c, d.get(s, {}), s) for s, c in SECTIONS.items()}
        kw.update({k: d[k] for k in known if k in d and k != "model" and k not in SECTIONS})
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


# ---------------------------------------------------------------- memory
def train_memory_bytes(cfg: RunConfig, device_type: str = "cuda") -> int:
    """costmodel's estimate of one rank's training memory for `cfg` (costmodel.m_train_bytes on a micro-batch):
    activations in bf16 where the trainer autocasts (precision auto on a GPU, bf16 or fp8), else fp32. A policy run
    keeps no gradients or AdamW moments for the frozen backbone, so only its fp32 weights count (4 of 16 B)."""
    from costlaw.costmodel import m_train_bytes, params_total

    fp32 = cfg.train.precision == "fp32" or (device_type == "cpu" and cfg.train.precision == "auto")
    est = m_train_bytes(cfg.model, cfg.data.seq_len, batch=cfg.train.batch_size, activation_bytes=4 if fp32 else 2)
    if cfg.train.trainable == "policy":
        est -= 12 * params_total(cfg.model)
    return est


def check_memory(cfg: RunConfig, available: int, where: str, *, device: str = "cuda", share: int = 1,
                 field: str = "train.batch_size") -> None:
    """Refuse `cfg` in one line when its estimated training memory on a `device` ("cuda" or "cpu") exceeds the
    `available` bytes of `where` (shared by `share` runs at once). The estimate leaves out the allocator's and
    the compiler's overheads, so a run it refuses would not fit; one it passes may still run out."""
    from costlaw.costmodel.core.units import binary_bytes

    need = train_memory_bytes(cfg, device)
    if need * share <= available:
        return
    shared = f" shared by {share} runs" if share > 1 else ""
    raise ConfigError(field, f"run {cfg.run_id} ({cfg.name or 'unnamed'}) needs about {binary_bytes(need)} to train "
                             f"(costmodel.m_train_bytes at seq_len {cfg.data.seq_len}, batch_size "
                             f"{cfg.train.batch_size}) but {where} has {binary_bytes(available)}{shared}; lower "
                             "train.batch_size (raise train.grad_accum to keep the batch), shrink the model, or use a "
                             "device with more memory")


# ---------------------------------------------------------------- helpers
def check_levels(levels, seq_len: int, batch_size: int, field: str = "data.pack_levels") -> tuple[int, ...]:
    """Hierarchical packing's levels (runs/hierarchical.py), ascending, or a one-line ConfigError naming the fix."""
    lv = tuple(int(x) for x in levels)
    if not lv:
        raise ConfigError(field, "packing \"hierarchical\" needs the pack groups' row lengths, e.g. "
                                 f"[{max(8, seq_len // 16)}, {max(8, seq_len // 4)}, {seq_len}]")
    if list(lv) != sorted(set(lv)):
        raise ConfigError(field, f"{list(lv)} must be strictly ascending")
    if lv[-1] != seq_len:
        raise ConfigError(field, f"the last level {lv[-1]} must equal data.seq_len {seq_len}: it holds the longest "
                                 "pieces")
    positions = batch_size * seq_len
    for x in lv:
        if positions % x:
            raise ConfigError(field, f"level {x} must divide train.batch_size × data.seq_len = {positions}, so its "
                                     "micro-batches hold whole rows; use powers of two")
    return lv


def _section_dict(obj, section: str) -> dict:
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if (section, f.name) in LATER_FIELDS and v == f.default:
            continue
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def _section_from_dict(cls, d, prefix: str):
    """The section's dataclass from its table; RunConfig's __post_init__ checks the values."""
    if not isinstance(d, dict):
        raise ConfigError(prefix, f"must be a table, got {type(d).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    for k in d:
        if k not in names:
            raise ConfigError(f"{prefix}.{k}", f"unknown key; {prefix} has {', '.join(names)}")
    return cls(**d)
