"""KV cache for decoding: one `LayerCache` per layer, sized from the layout exactly as costmodel prices it.

Slots. A layer holds `capacity` slots per sequence and KV head, `costmodel.kv_tokens_per_layer(cfg, context)`,
so `KVCache.nbytes() == costmodel.kv_cache_bytes(cfg, context, dtype, batch)`. Per slot it keeps the key
after RoPE, the value, the RoPE position the key was rotated with (`pos`) and the token's index in the
sequence (`seq`, -1 for an empty slot). `pos` and `seq` are per KV head because policies keep different
tokens per head.

Layout. The layer's pattern decides what stays, through `spec.visible` applied to `seq` (never to `pos`):
when tokens arrive, every key that the newest of them cannot see leaves (for every pattern a key that query
q cannot see stays hidden from every later query), and new tokens take free slots. So a full layer fills
up to its context; a sink_window layer is a ring buffer of sink + window slots whose sink slots never move
(the key leaving the window frees exactly the slot the next token takes); a block_strided layer keeps its
local blocks plus the strided ones, freeing a local block when it falls out of reach. Any other registered
pattern works the same way from its rule alone; only full and sink_window layers have a decode fast path.
Storing into a layer with no free slot is an error (`CacheFullError`) unless a policy hook is running; a ring
buffer always has one.

Policies (runs/kv) act through `select` (keep some slots per head, compacted to the front), `reposition`
(new RoPE positions for stored keys: K <- R(new - old)·K), `attention` (the model's own attention weights
over the slots, for scoring) and `KVCache.position` (the RoPE position the next token gets). A layer whose
capacity a KV policy cut below its pattern's need may overflow while a hook runs: its storage grows by the
new tokens, and the hook must `select` it back to `capacity` before the step ends.
"""

from __future__ import annotations

import math

import torch

from costlaw.costmodel import CostlawError, Full, SinkWindow
from costlaw.runs.models.rope import apply_rope, rope_angles, wide_dtype


class CacheFullError(CostlawError):
    """A layer's cache cannot hold what it was asked to."""


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`. To CUDA through pinned memory without blocking: a plain copy from pageable
    memory makes the host wait for the GPU, and a prompt's store took one to three such waits per layer (a
    batch-1 prefill of the 5 M-parameter hybrid-extend models spent 64-76% of its wall time outside kernels)."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


class LayerCache:
    def __init__(self, spec, capacity: int, batch: int, n_kv_heads: int, head_dim: int, rope_theta: float,
                 device=None, dtype: torch.dtype = torch.float32):
        self.spec, self.capacity, self.rope_theta = spec, capacity, rope_theta
        self._allocate(batch, n_kv_heads, head_dim, device, dtype)
        self._count_from_empty()

    def _allocate(self, batch: int, n_kv_heads: int, head_dim: int, device, dtype: torch.dtype) -> None:
        shape = (batch, n_kv_heads, self.capacity)
        self.k = torch.zeros(*shape, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros(*shape, head_dim, device=device, dtype=dtype)
        self.pos = torch.zeros(shape, device=device, dtype=torch.int32)
        self.seq = torch.full(shape, -1, device=device, dtype=torch.int32)

    def _count_from_empty(self) -> None:
        self.size = 0  # filled slots (the most over sequences and heads)
        # True while the layer holds exactly what its pattern leaves (no policy has selected): then `size`
        # follows from spec.keys without reading the device.
        self._exact = True
        # Decode fast path. While exact, a full layer holds token j in slot j and a sink+window layer fills its
        # slots in order and then turns as a ring (the window's oldest token leaves the slot the next one
        # takes): `_ring` counts the turns since it filled, so a decode step's slot is known on the host and
        # the query attends to the first `size` slots with no mask. None where the layout is not known (a
        # block_strided layer, or after a chunk was stored into a ring that had already turned).
        self._ring = 0 if isinstance(self.spec, (Full, SinkWindow)) else None

    @property
    def slots(self) -> int:
        """Slots allocated now: `capacity`, or more while a policy hook handles an overflow."""
        return self.k.shape[2]

    @property
    def valid(self) -> torch.Tensor:
        return self.seq >= 0

    def nbytes(self) -> int:
        """Bytes allocated for K and V."""
        return self.k.numel() * self.k.element_size() + self.v.numel() * self.v.element_size()

    def visible(self, q_seq: torch.Tensor) -> torch.Tensor:
        """[B, n_kv, n, slots]: the filled slots that queries at sequence indices q_seq [n] may attend to."""
        seq = self.seq[:, :, None, :]
        return (seq >= 0) & self.spec.visible(q_seq[:, None].to(seq.device), seq)

    def decode_slots(self, q_seq: torch.Tensor):
        """(k, v, visible) for one new query at q_seq [1], just stored: on the fast path the first `size`
        slots with visible None (all seen), else every slot with the visibility mask."""
        if self.fast:
            return self.k[:, :, :self.size], self.v[:, :, :self.size], None
        return self.k, self.v, self.visible(q_seq)

    def attention(self, q: torch.Tensor, q_seq: torch.Tensor) -> torch.Tensor:
        """Softmax attention weights [B, n_heads, n, slots] of queries q [B, n_heads, n, d_h] (after RoPE) at
        sequence indices q_seq [n] over the slots, masked as the model masks them (0 on hidden slots)."""
        B, n_heads, n, d = q.shape
        n_kv = self.k.shape[1]
        q = q.reshape(B, n_kv, n_heads // n_kv, n, d)
        scores = torch.einsum("bhgnd,bhsd->bhgns", q, self.k.to(q.dtype)) / math.sqrt(d)
        scores = scores.masked_fill(~self.visible(q_seq)[:, :, None], float("-inf"))
        return scores.softmax(dim=-1).reshape(B, n_heads, n, -1)

    def append(self, k: torch.Tensor, v: torch.Tensor, seq0: int, pos0: int, overflow: bool = False) -> None:
        """Store n new tokens (k after RoPE and v, [B, n_kv, n, d_h]) at sequence indices seq0.. and RoPE
        positions pos0... Keys the last new token cannot see leave first, and new tokens it cannot see are not
        stored. With `overflow` the storage grows when full (a policy hook must then `select`)."""
        n = k.shape[2]
        last = seq0 + n - 1
        if n == 1 and not overflow and self.fast:
            return self._append_one(k, v, seq0, pos0)
        if isinstance(self.spec, SinkWindow) and self.size > 0 and last >= self.capacity:
            self._ring = None  # evicting off the fast path (a chunk, or a hook's step): ring order is not tracked
        device = self.seq.device
        keep = self.spec.visible(last, torch.arange(seq0, last + 1))  # on the host: no device round trip
        if bool(keep.all()):
            offsets = torch.arange(n, device=device, dtype=torch.int32)
        else:
            offsets = _to_device(keep.nonzero()[:, 0].to(torch.int32), device)
            k, v = k.index_select(2, offsets), v.index_select(2, offsets)
        m = len(offsets)
        held = self.size
        if not isinstance(self.spec, Full):  # a full layer's keys stay visible forever
            self.seq.masked_fill_(~self.spec.visible(last, self.seq), -1)  # in place: a decode graph holds it
            held = self.spec.keys(last + 1) - m if self._exact else int(self.valid.sum(-1).max())
        if held + m > self.slots:
            if not overflow:
                raise self._full(m, held)
            self._grow(held + m - self.slots)
        B, H, _, d = self.k.shape
        if held == 0:  # every slot is empty (a prompt into a fresh cache): the first m, as the sort would give
            slots = torch.arange(m, device=device).expand(B, H, m)
        elif m == 1:
            slots = (~self.valid).int().argmax(dim=-1, keepdim=True)
        else:
            slots = torch.argsort(self.valid.int(), dim=-1, stable=True)[..., :m]
        self.k.scatter_(2, slots[..., None].expand(B, H, m, d), k.to(self.k.dtype))
        self.v.scatter_(2, slots[..., None].expand(B, H, m, d), v.to(self.v.dtype))
        offsets = offsets.expand(B, H, m)
        self.seq.scatter_(2, slots, seq0 + offsets)
        self.pos.scatter_(2, slots, pos0 + offsets)
        self.size = held + m

    @property
    def fast(self) -> bool:
        """Whether a decode token takes the fast path (its slot counted on the host, see `next_slot`)."""
        return self._exact and self._ring is not None

    def next_slot(self) -> int:
        """On the fast path, take the slot the next decode token goes to (the slot the general path would pick)
        and count it: slot j for token j, then, for a full sink+window ring, the window's oldest slot."""
        if self.size < self.capacity:
            slot = self.size
            self.size += 1
        elif isinstance(self.spec, SinkWindow) and self.capacity == self.spec.sink + self.spec.window:
            slot = self.spec.sink + self._ring % self.spec.window
            self._ring += 1
        else:
            raise self._full(1, self.size)
        return slot

    def _append_one(self, k: torch.Tensor, v: torch.Tensor, seq: int, pos: int) -> None:
        """One decode token on the fast path: the same slot and contents as the general path, without
        computing them on the device (no visibility pass over the slots, no argmax)."""
        slot = self.next_slot()
        self.k[:, :, slot] = k[:, :, 0].to(self.k.dtype)
        self.v[:, :, slot] = v[:, :, 0].to(self.v.dtype)
        self.seq[:, :, slot] = seq
        self.pos[:, :, slot] = pos

    def reset(self) -> None:
        """Empty the layer in place, as new (storage back to `capacity` slots): a decode graph bound to these
        tensors stays valid for the next sequence."""
        if self.slots != self.capacity:
            B, H, _, d = self.k.shape
            self._allocate(B, H, d, self.k.device, self.k.dtype)
        else:
            self.k.zero_()
            self.v.zero_()
            self.pos.zero_()
            self.seq.fill_(-1)
        self._count_from_empty()

    def _full(self, m: int, held: int) -> CacheFullError:
        return CacheFullError(
            f"kv_cache: layer with {self.spec.spec()} cannot store {m} more token(s) beside {held} in "
            f"{self.capacity} slots; make the cache for a longer context, or pass a KV policy hook that "
            "evicts (layer_cache.select)")

    def _grow(self, extra: int) -> None:
        B, H, _, d = self.k.shape
        self.k = torch.cat([self.k, self.k.new_zeros(B, H, extra, d)], dim=2)
        self.v = torch.cat([self.v, self.v.new_zeros(B, H, extra, d)], dim=2)
        self.pos = torch.cat([self.pos, self.pos.new_zeros(B, H, extra)], dim=2)
        self.seq = torch.cat([self.seq, self.seq.new_full((B, H, extra), -1)], dim=2)

    def select(self, indices: torch.Tensor) -> None:
        """Keep only slots `indices` [B, n_kv, k] (k <= capacity, per sequence and KV head), moved to the
        front; every other slot becomes empty and the storage is `capacity` slots again."""
        B, H, kept = indices.shape
        if kept > self.capacity:
            raise CacheFullError(f"kv_cache: select keeps {kept} slots but the layer has {self.capacity}; "
                                 "keep at most capacity slots")
        indices = indices.long()

        def gather(t: torch.Tensor, fill) -> torch.Tensor:
            out = t.new_full((B, H, self.capacity, *t.shape[3:]), fill)
            index = indices.view(B, H, kept, *([1] * (t.dim() - 3))).expand(B, H, kept, *t.shape[3:])
            out[:, :, :kept] = t.gather(2, index)
            return out

        self.k, self.v = gather(self.k, 0), gather(self.v, 0)
        self.pos, self.seq = gather(self.pos, 0), gather(self.seq, -1)
        self.size = int(self.valid.sum(-1).max())
        self._exact = False

    def reposition(self, positions: torch.Tensor) -> None:
        """Give the stored keys new RoPE positions [B, n_kv, slots]: K <- R(new - old)·K on filled slots."""
        positions = positions.to(device=self.pos.device, dtype=self.pos.dtype)
        delta = torch.where(self.valid, positions - self.pos, 0)
        cos, sin = rope_angles(delta, self.k.shape[-1], self.rope_theta, wide_dtype(self.k.dtype))
        self.k = apply_rope(self.k, cos, sin)
        self.pos = torch.where(self.valid, positions, self.pos)

    def check(self, layer: int) -> None:
        """At the end of a step (after the hook): the layer must fit its capacity again."""
        if self.size > self.capacity or self.slots > self.capacity:
            raise CacheFullError(f"kv_cache: layer {layer} holds {self.size} tokens in {self.capacity} slots after "
                                 "the policy hook; the hook must select at most capacity slots")


class KVCache:
    """The layers' caches plus two counters shared by all layers: `seen`, the tokens processed so far (the
    next token's index in the sequence), and `position`, the RoPE position the next token gets (equal to
    `seen` unless a policy re-assigned positions, e.g. InfiniPot or StreamingLLM with positions in the cache).
    Rows of a batch advance together."""

    def __init__(self, layers: list[LayerCache]):
        self.layers = layers
        self.seen = 0
        self.position = 0
        self.graph = None  # the CUDA-graph decoder bound to these tensors (runs/models/decode_graph.py), if any

    def reset(self) -> None:
        """Empty every layer in place, for a new sequence of the same batch (a decode graph stays bound)."""
        for layer in self.layers:
            layer.reset()
        self.seen = 0
        self.position = 0

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> LayerCache:
        return self.layers[i]

    @property
    def batch(self) -> int:
        return self.layers[0].k.shape[0]

    def nbytes(self) -> int:
        """Bytes allocated for K and V over all layers."""
        return sum(layer.nbytes() for layer in self.layers)
