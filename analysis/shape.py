"""N* -> a concrete ModelConfig: the architecture a fitted law's target size turns into.

The GQA paper (App. B.1) picks depth L and width d from N through a preset aspect ratio d/L and then sets
the head counts from the candidate. Here:

1. **Aspect ratio.** r(N) = d/L is interpolated linearly in log N between anchors (N, L, d). The anchors
   are the candidate's own ladder runs when it has any (its distinct (d, L) shapes, at their measured
   non-embedding N), else the paper's: `costmodel.presets.PAPER_LADDER`, Table 9 up to 1.2B and Table 7
   above it (1.8B L36 d2048 ... 64B L80 d8192). Each paper anchor sits at the non-embedding N of its own
   MHA shape (`paper_config`: d_h 64, d_ff = paper_ffn(d)), not at its nominal label (the "1.2B" shape has
   N = 1.02B). Outside the anchors r is held at the end value.
2. **Continuous depth.** With r* = r(N*), bisection finds the real depth L_c at which the shape
   (L_c, r*·L_c) has exactly N* non-embedding parameters.
3. **Integers.** For L = floor(L_c) and ceil(L_c) (at least 1), d is the smallest multiple of the width
   quantum whose config has N >= N*; of the two, the smaller N wins (ties: the aspect ratio closer to r*).
   So the config is never smaller than N*, and as close above as the d grid allows near the interpolated
   aspect ratio. The quantum is 64, unless the candidate's ladder was trained at widths that are not all
   multiples of 64 (small models): then the greatest common divisor of its widths (at least 8); an explicit
   `d_multiple` (`--d-multiple`) overrides both.
4. **The envelope.** A candidate trained on a ladder has an envelope: the depths and aspect ratios d/L its
   runs were trained at (`Envelope`, min to max of each). Loss depends on shape beyond N (studies/gqa-depth:
   (1,1) one layer deeper at d 192 lost 0.23 nats more than its law in N predicted), and a law in N cannot see
   that, so a config outside the envelope is a guess the runs do not support. When the rule above lands
   outside it, every integer depth inside the envelope's depths is tried with the widths that keep d/L inside
   its ratios, and the smallest N >= N* among them wins (ties: the aspect ratio closer to r*). Only when no
   config inside reaches N* (N* beyond what the envelope's shapes hold) is the config outside, and
   `Shape.outside` says why. Without ladder shapes (the paper's anchors) there is no envelope to check.

Everything else comes from the candidate's template: n_h, n_kv, d_h (64 unless its ladder says
otherwise), d_ff = paper_ffn(d) (or the ladder's d_ff/d ratio, rounded to a multiple of 32, when its runs
did not use the paper's rule), vocabulary, tied embeddings and RoPE θ from the ladder, the hybrid layout
(round(full_fraction·L) full layers centred in the stack, at least one, the rest the ladder's sparse
pattern) and the KV policy of a compressed candidate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from costlaw.costmodel import KVPolicy, ModelConfig, hybrid_layout, paper_ffn, params_non_embedding
from costlaw.costmodel.core.errors import ConfigError, CostlawError
from costlaw.costmodel.core.validate import integer
from costlaw.costmodel.presets import PAPER_LADDER, paper_config


@dataclass(frozen=True)
class Anchor:
    n_params: float  # non-embedding N
    n_layers: int
    d_model: int

    @property
    def ratio(self) -> float:
        return self.d_model / self.n_layers


def paper_anchors() -> list[Anchor]:
    """The paper's (N, L, d) anchors, N computed for each MHA shape of its ladder."""
    return [Anchor(float(params_non_embedding(paper_config(L, d))), L, d) for _, L, d, _ in PAPER_LADDER]


def aspect_ratio(n_params: float, anchors: list[Anchor]) -> float:
    """d/L at N, linear in log N between anchors, held constant beyond the first and last."""
    if not anchors:
        raise CostlawError("aspect ratio: no anchors; give ladder points or use the paper's anchors")
    pts = sorted({(a.n_params, a.ratio) for a in anchors})
    xs = np.log([p[0] for p in pts])
    ys = np.array([p[1] for p in pts])
    # several shapes at one N (e.g. seeds or two depths of one size): average their ratios
    ux, inv = np.unique(xs, return_inverse=True)
    uy = np.bincount(inv, weights=ys) / np.bincount(inv)
    return float(np.interp(math.log(n_params), ux, uy))


@dataclass(frozen=True)
class Envelope:
    """The depths and aspect ratios d/L a candidate was trained at (inclusive ranges)."""

    depth: tuple[int, int]
    ratio: tuple[float, float]

    @classmethod
    def of(cls, anchors) -> Envelope | None:
        if not anchors:
            return None
        return cls((min(a.n_layers for a in anchors), max(a.n_layers for a in anchors)),
                   (min(a.ratio for a in anchors), max(a.ratio for a in anchors)))

    def outside(self, n_layers: int, d_model: int) -> str | None:
        """Why (L, d) lies outside, or None when it is inside."""
        why = []
        if not self.depth[0] <= n_layers <= self.depth[1]:
            why.append(f"depth {n_layers} outside the trained {self.depth[0]}-{self.depth[1]}")
        r = d_model / n_layers
        eps = 1e-9 * r
        if not self.ratio[0] - eps <= r <= self.ratio[1] + eps:
            why.append(f"d/L {r:.3g} outside the trained {self.ratio[0]:.3g}-{self.ratio[1]:.3g}")
        return "; ".join(why) or None

    def to_json(self) -> dict:
        return {"depth": list(self.depth), "ratio": [float(x) for x in self.ratio]}

    def text(self) -> str:
        return f"L {self.depth[0]}-{self.depth[1]}, d/L {self.ratio[0]:.3g}-{self.ratio[1]:.3g}"


@dataclass(frozen=True)
class Template:
    """What a candidate fixes about a config; shape() adds L, d and d_ff."""

    n_heads: int
    n_kv_heads: int
    head_dim: int = 64
    vocab_size: int = 50304
    tied_embeddings: bool = True
    rope_theta: float = 500_000.0
    ffn_ratio: float | None = None  # None: paper_ffn(d); else d_ff = 32 * round(ratio * d / 32)
    sparse: str | None = None  # hybrid: the sparse layers' pattern, e.g. "sink_window(4,1024)"
    full_fraction: float | None = None  # hybrid: share of layers that are full
    kv_policy: dict | None = None  # compressed: KVPolicy.to_dict()
    anchors: tuple[Anchor, ...] = field(default=())  # the candidate's own ladder shapes

    @property
    def d_quantum(self) -> int:
        """64, or the gcd of the ladder's widths when they are not all multiples of 64 (at least 8)."""
        widths = [a.d_model for a in self.anchors]
        if not widths or all(w % 64 == 0 for w in widths):
            return 64
        return max(8, math.gcd(*widths) // 2 * 2)

    def ffn(self, d: int) -> int:
        if self.ffn_ratio is None:
            return paper_ffn(d)
        return max(32, 32 * round(self.ffn_ratio * d / 32))

    def config(self, n_layers: int, d_model: int) -> ModelConfig:
        layout = ()
        if self.sparse is not None:
            k = max(1, min(n_layers, round((self.full_fraction or 0.0) * n_layers)))
            layout = hybrid_layout(n_layers, self.sparse, full_layers=k)
        policy = KVPolicy.from_dict(self.kv_policy) if self.kv_policy is not None else None
        return ModelConfig(d_model=d_model, n_layers=n_layers, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads,
                           head_dim=self.head_dim, ffn_dim=self.ffn(d_model), vocab_size=self.vocab_size,
                           tied_embeddings=self.tied_embeddings, rope_theta=self.rope_theta, layout=layout,
                           kv_policy=policy)

    @property
    def envelope(self) -> Envelope | None:
        """The shapes of the candidate's own ladder (None: no ladder, the paper's anchors)."""
        return Envelope.of(self.anchors)

    def anchor_set(self) -> tuple[list[Anchor], str]:
        if self.anchors:
            return list(self.anchors), "ladder"
        return paper_anchors(), "paper"


@dataclass(frozen=True)
class Shape:
    config: ModelConfig
    n_params: int  # non-embedding N of the config
    n_target: float  # N*
    ratio_target: float  # interpolated d/L
    anchors: str  # "ladder" or "paper"
    depth_continuous: float
    d_multiple: int = 64
    envelope: Envelope | None = None
    outside: str | None = None  # why the config lies outside the envelope (None: inside, or no envelope)


def _n_of(t: Template, L: int, d: int) -> int:
    return params_non_embedding(t.config(L, d))


def _n_continuous(t: Template, L: float, d: float) -> float:
    """A relaxation of costmodel's count to real-valued depth and width (d_ff = ratio·d unrounded), used only
    to locate the depth; every integer candidate is then priced by costmodel itself."""
    ffn = (8 / 3 if t.ffn_ratio is None else t.ffn_ratio) * d
    return L * (2 * d * t.head_dim * (t.n_heads + t.n_kv_heads) + 3 * d * ffn + 2 * d) + d


def shape(n_target: float, t: Template, d_multiple: int | None = None) -> Shape:
    """The config of template `t` with the fewest non-embedding params >= n_target near the aspect ratio;
    d is a multiple of `d_multiple` (default: the template's quantum, 64 for the paper's widths)."""
    if not (isinstance(n_target, (int, float)) and math.isfinite(n_target) and n_target > 0):
        raise CostlawError(f"N*: {n_target!r} is not a positive finite size; the target loss must be reachable")
    if d_multiple is None:
        d_multiple = t.d_quantum
    d_multiple = integer("--d-multiple", d_multiple, lo=2)
    if d_multiple % 2:
        raise ConfigError("--d-multiple", f"must be even, got {d_multiple}")
    anchors, source = t.anchor_set()
    r = aspect_ratio(n_target, anchors)
    lo, hi = 1e-3, 1.0
    while _n_continuous(t, hi, r * hi) < n_target:
        hi *= 2
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _n_continuous(t, mid, r * mid) < n_target else (lo, mid)
    depth = hi
    best = None
    for L in sorted({max(1, math.floor(depth)), max(1, math.ceil(depth))}):
        k = _smallest_multiple(lambda k, L=L: _n_of(t, L, d_multiple * k) >= n_target)
        d = d_multiple * k
        n = _n_of(t, L, d)
        key = (n, abs(math.log((d / L) / r)))
        if best is None or key < best[0]:
            best = (key, L, d)
    (n, _), L, d = best
    env = t.envelope
    outside = env.outside(L, d) if env else None
    if outside:
        inside = _inside(t, env, n_target, r, d_multiple)
        if inside is not None:
            (n, _), L, d = inside
            outside = None
    return Shape(t.config(L, d), n, float(n_target), r, source, depth, d_multiple, env, outside)


def _inside(t: Template, env: Envelope, n_target: float, r: float, q: int):
    """The config inside `env` with the fewest non-embedding params >= n_target (ties: d/L closer to r), or None
    when no width of the envelope's depths and ratios reaches n_target."""
    best = None
    for L in range(max(1, env.depth[0]), env.depth[1] + 1):
        k_lo = max(1, math.ceil(env.ratio[0] * L / q - 1e-9))
        k_hi = math.floor(env.ratio[1] * L / q + 1e-9)
        if k_hi < k_lo or _n_of(t, L, q * k_hi) < n_target:
            continue
        while k_hi - k_lo > 0:  # smallest k in [k_lo, k_hi] whose config reaches n_target
            mid = (k_lo + k_hi) // 2
            k_lo, k_hi = (k_lo, mid) if _n_of(t, L, q * mid) >= n_target else (mid + 1, k_hi)
        d = q * k_lo
        key = (_n_of(t, L, d), abs(math.log((d / L) / r)))
        if best is None or key < best[0]:
            best = (key, L, d)
    return best


def _smallest_multiple(ok) -> int:
    """Smallest k >= 1 with ok(k), for ok monotone in k."""
    hi = 1
    while not ok(hi):
        hi *= 2
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi
