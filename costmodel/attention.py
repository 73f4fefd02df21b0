"""Per-layer attention patterns: which keys a query sees, and how many.

Each pattern states its visibility rule once, in `visible(q, k)`, written with operators that work on
Python ints and on torch tensors alike. runs/ builds its FlexAttention masks and its float64 reference
from this very function, so the cost model and the trained model can never disagree about a mask.

Positions are 0-based. A query at position q sees key k only if k <= q (causal) and the pattern allows it.
"A context of T tokens" means the query at position T-1.

A pattern is one frozen dataclass: a `kind`, integer parameters declared with `param` (their ranges and the
defaults `costlaw cost` uses), and the four counts below. `register` adds it to `PATTERNS`, the one table
that parsing, layouts, ModelConfig, runs' masks and cache, the store and `costlaw cost` read; nothing else
lists the patterns. A pattern's rule must never show a key again once a query has lost sight of it (the
decoding cache evicts it).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import inspect
import re
import typing
from dataclasses import dataclass
from typing import ClassVar

from costlaw.costmodel.core.errors import ConfigError
from costlaw.costmodel.core.validate import bounded, conform

# kind -> class, in registration order (the order error messages and `costlaw cost --sparse` list them)
PATTERNS: dict[str, type[Pattern]] = {}
_KIND_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_SPEC_RE = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:\(([^)]*)\))?\s*$")


def param(default=dataclasses.MISSING, *, lo: int = 1):
    """A pattern parameter: a whole number >= lo (`default` is what `costlaw cost` uses when not given)."""
    return bounded(default, lo=lo)


@dataclass(frozen=True)
class Pattern(abc.ABC):
    """One layer's attention pattern. Subclasses are frozen dataclasses with int fields made by `param`."""

    kind: ClassVar[str]

    def __post_init__(self):
        conform(self)

    @abc.abstractmethod
    def visible(self, q, k):
        """Whether query position q sees key position k (ints or broadcastable tensors)."""

    @abc.abstractmethod
    def keys(self, T: int) -> int:
        """Keys seen by the last query of a T-token context (= tokens its KV cache must hold)."""

    @abc.abstractmethod
    def cache_tokens(self, T: int) -> int:
        """Slots a decoding KV cache needs to serve every context up to T (the peak of keys(t), t <= T)."""

    def total_keys(self, T: int) -> int:
        """Sum of keys seen over all T query positions (the causal attention work of a T-token pass).
        By definition the sum of keys(t) for t <= T; patterns override it with a closed form."""
        return sum(self.keys(t) for t in range(1, T + 1))

    def spec(self) -> str:
        """The canonical text form, e.g. `sink_window(4,1024)`; `parse_spec` reads it back."""
        values = [getattr(self, f.name) for f in dataclasses.fields(self)]
        return f"{self.kind}({','.join(map(str, values))})" if values else self.kind

    @classmethod
    def form(cls) -> str:
        """How to write it, e.g. `sink_window(SINK,WINDOW)`."""
        names = [f.name.upper() for f in dataclasses.fields(cls)]
        return f"{cls.kind}({','.join(names)})" if names else cls.kind


def register(cls: type[Pattern]) -> type[Pattern]:
    """Add a pattern class to `PATTERNS` (a class decorator). Refuses a kind already taken or a class that is
    not a frozen dataclass of integer parameters implementing every count."""
    if not (isinstance(cls, type) and issubclass(cls, Pattern) and dataclasses.is_dataclass(cls)
            and cls.__dataclass_params__.frozen):
        raise TypeError(f"register: {cls!r} must be a frozen dataclass subclass of Pattern")
    if inspect.isabstract(cls):
        raise TypeError(f"register: {cls.__name__} leaves {', '.join(sorted(cls.__abstractmethods__))} abstract")
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise TypeError(f"register: {cls.__name__}.kind must be a lower-case identifier, got {kind!r}")
    if kind in PATTERNS:
        raise ValueError(f"register: kind {kind!r} is already {PATTERNS[kind].__name__}")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if hints[f.name] is not int:
            raise TypeError(f"register: {cls.__name__}.{f.name} must be an int (layouts write parameters as integers)")
    PATTERNS[kind] = cls
    return cls


def unregister(kind: str) -> None:
    """Remove a registered pattern (layouts that use it no longer parse)."""
    if kind not in PATTERNS:
        raise KeyError(f"unregister: no pattern {kind!r}")
    del PATTERNS[kind]


@contextlib.contextmanager
def registered(cls: type[Pattern]):
    """`register(cls)` for the duration of a with-block (tests, experiments)."""
    register(cls)
    try:
        yield cls
    finally:
        unregister(cls.kind)


@register
@dataclass(frozen=True)
class Full(Pattern):
    """Full causal attention."""

    kind = "full"

    def visible(self, q, k):
        return k <= q

    def keys(self, T: int) -> int:
        return T

    def cache_tokens(self, T: int) -> int:
        return T

    def total_keys(self, T: int) -> int:
        return T * (T + 1) // 2


@register
@dataclass(frozen=True)
class SinkWindow(Pattern):
    """The first `sink` tokens plus the `window` most recent ones (the query itself included)."""

    sink: int = param(4, lo=0)
    window: int = param(1024)
    kind = "sink_window"

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


@register
@dataclass(frozen=True)
class BlockStrided(Pattern):
    """Blocks of `block` tokens: the query's own block and the `local_blocks`-1 before it, plus every
    block whose index j has (j+1) % stride == 0 (the "vertical stride" blocks of LongGen's kernel
    lineage, one pattern shared by all heads so the KV cache really shrinks)."""

    block: int = param(64)
    local_blocks: int = param(16)
    stride: int = param(8)
    kind = "block_strided"

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


def pattern_params(spec) -> dict:
    """A pattern's parameters by name, e.g. {"sink": 4, "window": 1024} (empty for full attention)."""
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}


FULL = Full()
# far beyond any real model; a larger count is a typo (or a hostile file) and would build a tuple that long
MAX_LAYERS = 100_000


def forms() -> str:
    """The registered patterns as a user writes them: `full, sink_window(SINK,WINDOW) or ...`."""
    names = [c.form() for c in PATTERNS.values()]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def parse_spec(text, field: str = "layout") -> Pattern:
    """A registered pattern's text form, e.g. `full`, `sink_window(4,1024)`; a Pattern is returned as is."""
    if isinstance(text, Pattern):
        return text
    m = _SPEC_RE.match(str(text))
    cls = PATTERNS.get(m.group(1)) if m else None
    if cls is None:
        raise ConfigError(field, f"unknown attention pattern {text!r}; use {forms()}")
    args = m.group(2)
    parts = [a.strip() for a in args.split(",")] if args and args.strip() else []
    arity = len(dataclasses.fields(cls))
    if len(parts) != arity:
        raise ConfigError(field, f"{cls.kind} takes {arity} integer arguments, got {text!r}; write {cls.form()}")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(field, f"{text!r} has a non-integer argument; write {cls.form()} with whole "
                                 "numbers") from None
    try:
        return cls(*values)
    except ConfigError as e:
        raise e.under(field) from None


def encode_layout(layers: tuple[Pattern, ...]) -> list[str]:
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


def decode_layout(items, field: str = "layout") -> tuple[Pattern, ...]:
    """Inverse of `encode_layout`; also takes plain per-layer items without `*N`, and Pattern objects."""
    if isinstance(items, (str, Pattern)):
        items = [items]
    if not isinstance(items, (list, tuple)):
        raise ConfigError(field, f"must be a list of patterns like [\"full*4\"], got {items!r}")
    layers: list[Pattern] = []
    for item in items:
        if isinstance(item, Pattern):
            layers.append(item)
            continue
        text, _, count = str(item).rpartition("*") if "*" in str(item) else (str(item), "", "1")
        try:
            n = int(count)
        except ValueError:
            raise ConfigError(field, f"bad repeat count in {item!r}; write e.g. full*4") from None
        if n < 1:
            raise ConfigError(field, f"repeat count must be >= 1 in {item!r}")
        if len(layers) + n > MAX_LAYERS:
            raise ConfigError(field, f"more than {MAX_LAYERS} layers (at {str(item)[:40]!r}); check the repeat counts")
        layers.extend([parse_spec(text, field)] * n)
    return tuple(layers)
