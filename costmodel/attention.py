"""Per-layer attention patterns: which keys a query sees, and how many.

Each pattern states its visibility rule once, in `visible(q, k)`, written with operators that work on
Python ints and on torch tensors alike. runs/ builds its FlexAttention masks and its float64 reference
from this very function, so the cost model and the trained model can never disagree about a mask.

Positions are 0-based. A query at position q sees key k only if k <= q (causal) and the pattern allows it.
"A context of T tokens" means the query at position T-1.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from costlaw.costmodel.core.errors import ConfigError


@dataclass(frozen=True)
class Full:
    """Full causal attention."""

    kind = "full"

    def visible(self, q, k):
        return k <= q

    def keys(self, T: int) -> int:
        """Keys seen by the last query of a T-token context (= tokens its KV cache must hold)."""
        return T

    def cache_tokens(self, T: int) -> int:
        """Slots a decoding KV cache needs to serve every context up to T (its peak size)."""
        return T

    def total_keys(self, T: int) -> int:
        """Sum of keys seen over all T query positions (the causal attention work of a T-token pass)."""
        return T * (T + 1) // 2

    def spec(self) -> str:
        return "full"


@dataclass(frozen=True)
class SinkWindow:
    """The first `sink` tokens plus the `window` most recent ones (the query itself included)."""

    sink: int
    window: int
    kind = "sink_window"

    def __post_init__(self):
        _int_at_least("sink", self.sink, 0)
        _int_at_least("window", self.window, 1)

    def visible(self, q, k):
        return (k <= q) & ((k < self.sink) | (q - k < self.window))

    def keys(self, T: int) -> int:
        return min(T, self.sink + self.window)

    def cache_tokens(self, T: int) -> int:
        return self.keys(T)  # a ring buffer of the window behind the sink slots

    def total_keys(self, T: int) -> int:
        w = self.sink + self.window
        if T <= w:
            return T * (T + 1) // 2
        return w * (w + 1) // 2 + (T - w) * w

    def spec(self) -> str:
        return f"sink_window({self.sink},{self.window})"


@dataclass(frozen=True)
class BlockStrided:
    """Blocks of `block` tokens: the query's own block and the `local_blocks`-1 before it, plus every
    block whose index j has (j+1) % stride == 0 (the "vertical stride" blocks of LongGen's kernel
    lineage, one pattern shared by all heads so the KV cache really shrinks)."""

    block: int
    local_blocks: int
    stride: int
    kind = "block_strided"

    def __post_init__(self):
        _int_at_least("block", self.block, 1)
        _int_at_least("local_blocks", self.local_blocks, 1)
        _int_at_least("stride", self.stride, 1)

    def visible(self, q, k):
        qb, kb = q // self.block, k // self.block
        return (k <= q) & ((qb - kb < self.local_blocks) | ((kb + 1) % self.stride == 0))

    def _block_counts(self, qb: int) -> tuple[int, int]:
        """(first local block, number of strided blocks before it) for query block qb."""
        start = max(0, qb - self.local_blocks + 1)
        return start, start // self.stride

    def keys(self, T: int) -> int:
        if T <= 0:
            return 0
        q = T - 1
        qb = q // self.block
        start, strided = self._block_counts(qb)
        return strided * self.block + (qb - start) * self.block + (q - qb * self.block + 1)

    def cache_tokens(self, T: int) -> int:
        """keys() dips when a new block starts and an old local block leaves, so the cache's peak is the
        larger of keys(T) and keys at the end of the previous block."""
        prev_end = ((T - 1) // self.block) * self.block
        return max(self.keys(T), self.keys(prev_end) if prev_end > 0 else 0)

    def total_keys(self, T: int) -> int:
        total, B = 0, self.block
        for qb in range((T + B - 1) // B):
            n = min(B, T - qb * B)  # query positions in this block
            start, strided = self._block_counts(qb)
            before = strided * B + (qb - start) * B  # keys in whole blocks before the query's own
            total += n * before + n * (n + 1) // 2
        return total

    def spec(self) -> str:
        return f"block_strided({self.block},{self.local_blocks},{self.stride})"


def pattern_params(spec) -> dict:
    """A pattern's parameters by name, e.g. {"sink": 4, "window": 1024} (empty for full attention)."""
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}


AttentionSpec = Full | SinkWindow | BlockStrided
FULL = Full()

_SPEC_RE = re.compile(r"^\s*(full|sink_window|block_strided)\s*(?:\(([^)]*)\))?\s*$")
_ARITY = {"full": 0, "sink_window": 2, "block_strided": 3}
_CLASSES = {"full": Full, "sink_window": SinkWindow, "block_strided": BlockStrided}


def parse_spec(text: str, field: str = "layout") -> AttentionSpec:
    """`full`, `sink_window(SINK,WINDOW)` or `block_strided(BLOCK,LOCAL_BLOCKS,STRIDE)`."""
    if isinstance(text, (Full, SinkWindow, BlockStrided)):
        return text
    m = _SPEC_RE.match(str(text))
    if not m:
        raise ConfigError(field, f"unknown attention pattern {text!r}; use full, sink_window(S,W) "
                                 "or block_strided(B,LOCAL,STRIDE)")
    kind, args = m.group(1), m.group(2)
    parts = [a.strip() for a in args.split(",")] if args and args.strip() else []
    if len(parts) != _ARITY[kind]:
        raise ConfigError(field, f"{kind} takes {_ARITY[kind]} integer arguments, got {text!r}")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(field, f"{text!r} has a non-integer argument; write e.g. sink_window(4,1024)") from None
    try:
        return FULL if kind == "full" else _CLASSES[kind](*values)
    except ConfigError as e:
        raise e.under(field) from None


def _int_at_least(field: str, value, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field, f"must be an integer, got {value!r}")
    if value < lo:
        raise ConfigError(field, f"must be >= {lo}, got {value}")


def encode_layout(layers: tuple[AttentionSpec, ...]) -> list[str]:
    """Canonical run-length form: maximal runs of one pattern, e.g. ["sink_window(4,4092)*10", "full*11", ...]."""
    out: list[str] = []
    i = 0
    while i < len(layers):
        j = i
        while j < len(layers) and layers[j] == layers[i]:
            j += 1
        out.append(f"{layers[i].spec()}*{j - i}")
        i = j
    return out


def decode_layout(items, field: str = "layout") -> tuple[AttentionSpec, ...]:
    """Inverse of `encode_layout`; also takes plain per-layer items without `*N`."""
    if isinstance(items, str):
        items = [items]
    layers: list[AttentionSpec] = []
    for item in items:
        if isinstance(item, (Full, SinkWindow, BlockStrided)):
            layers.append(item)
            continue
        text, _, count = str(item).rpartition("*") if "*" in str(item) else (str(item), "", "1")
        try:
            n = int(count)
        except ValueError:
            raise ConfigError(field, f"bad repeat count in {item!r}; write e.g. full*4") from None
        if n < 1:
            raise ConfigError(field, f"repeat count must be >= 1 in {item!r}")
        layers.extend([parse_spec(text, field)] * n)
    return tuple(layers)
