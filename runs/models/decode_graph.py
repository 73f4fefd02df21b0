"""Decode steps replayed from a CUDA graph.

Eager decode launches many small kernels per layer for one token, and on an H100 a step of the 12-layer d 512
models took 10–21 ms whatever their KV size (benchmarks/runs.md): the host, not the GPU, set the pace, so the
hybrid's smaller cache did not show. Here one step is captured once per cache and replayed. What
changes between steps lives on the device: the token, its sequence index and RoPE position, and per layer the
slot it is written to and how many slots are filled. The host still counts the slots (`LayerCache.next_slot`,
the eager fast path's own rule), writes those numbers into one small tensor, and replays.

It runs where the eager fast path runs: no policy hook, every layer full or sink+window holding exactly what
its pattern leaves, no autocast. The graph binds the cache's tensors, so a cache reused for a new sequence
(`KVCache.reset`) keeps it; if a layer's tensors were replaced (a policy's select), the step is captured again.
On CPU the same step runs eagerly (what the tests compare with the eager decode).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from costlaw.runs.models.attention import attend_filled, split_parts
from costlaw.runs.models.kv_cache import KVCache, LayerCache
from costlaw.runs.models.rope import wide_dtype

# One side stream per device for every warm-up and capture: each new stream gets its own cuBLAS workspace,
# which is never freed, and one stream per captured cache showed up as ~32 MiB more peak memory per cache.
_STREAMS: dict = {}


def _side_stream(device: torch.device):
    if device not in _STREAMS:
        _STREAMS[device] = torch.cuda.Stream(device)
    return _STREAMS[device]


def eligible(cache: KVCache, tok: torch.Tensor) -> bool:
    """Whether `GraphDecoder` can take the next decode step of `cache` for tokens tok [B, 1]: the eager fast
    path's conditions, no autocast, and no autograd (a replayed graph records nothing for a backward)."""
    return (tok.shape[0] == cache.batch and all(layer.fast for layer in cache.layers)
            and not torch.is_autocast_enabled(tok.device.type) and not torch.is_grad_enabled())


class _Slot:
    """Stands in for CacheStep in Attention.forward: store the new K/V at the device-side slot, then attend to
    the filled slots."""

    def __init__(self, cache: LayerCache, slot: torch.Tensor, length: torch.Tensor, seq_pos: torch.Tensor):
        self.cache, self.slot, self.length, self.seq_pos = cache, slot, length, seq_pos
        self.parts = split_parts(cache.capacity)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask) -> torch.Tensor:
        c = self.cache
        B, n_kv = k.shape[:2]
        c.k.index_copy_(2, self.slot, k.to(c.k.dtype))
        c.v.index_copy_(2, self.slot, v.to(c.v.dtype))
        c.seq.index_copy_(2, self.slot, self.seq_pos[0].expand(B, n_kv, 1))
        c.pos.index_copy_(2, self.slot, self.seq_pos[1].expand(B, n_kv, 1))
        return attend_filled(q, c.k, c.v, self.length, self.parts)


class GraphDecoder:
    """Decode steps of `model` into `cache` (made by model.new_cache), captured as one CUDA graph. It keeps the
    cache's layers, not the cache, which keeps it (`cache.graph`): no reference cycle, so a dropped cache frees
    its memory and the graph's at once rather than at the next garbage collection.

    `compile_body` (off by default) captures a torch.compile'd step instead of the eager one: fewer, fused
    kernels per step, at the cost of a compilation per model and cache shape."""

    compile_body = False

    def __init__(self, model, cache: KVCache):
        self.model, self.layers = model, list(cache.layers)
        dev = cache.layers[0].k.device
        L = len(cache)
        self.tok = torch.zeros(cache.batch, 1, dtype=torch.long, device=dev)
        # [sequence index, RoPE position, slot per layer..., filled slots per layer...]
        self.meta = torch.zeros(2 + 2 * L, dtype=torch.long, device=dev)
        self.seq_pos = torch.zeros(2, 1, 1, 1, dtype=torch.int32, device=dev)
        self.slots = [_Slot(layer, self.meta[2 + i:3 + i], self.meta[2 + L + i:3 + L + i], self.seq_pos)
                      for i, layer in enumerate(cache.layers)]
        self.graph = None
        self.bound: list = []
        self.logits = None
        # the function, not the bound method: a bound method kept on self would be a reference cycle
        self._compiled = torch.compile(GraphDecoder._body, dynamic=False) if self.compile_body else None

    def _tensors(self) -> list:
        """What the graph reads and writes in place: the cache's tensors and the model's RoPE table."""
        return [self.model.rope_table] + [t for layer in self.layers for t in (layer.k, layer.v, layer.seq, layer.pos)]

    def _body(self) -> None:
        m = self.model
        self.seq_pos.view(2).copy_(self.meta[:2])
        x = m.embed(self.tok)
        # the eager decode's table (bound: the table as it is; `step` grows it first if needed)
        cos, sin = m._rope(self.meta[1:2].view(1, 1), x.dtype, m.rope_table.shape[1])
        for block, slot in zip(m.blocks, self.slots):
            x = block(x, cos, sin, None, slot)
        self.logits = F.linear(m.norm(x), m.output_weight)

    def _run(self) -> None:
        self._body() if self._compiled is None else self._compiled(self)

    def _capture(self) -> None:
        """Warm up on a side stream (allocator, cuBLAS plans), then capture. Both passes write this step's K/V
        into its slot, as the replay that follows does again: the writes are idempotent."""
        side = _side_stream(self.tok.device)
        side.wait_stream(torch.cuda.current_stream(self.tok.device))
        with torch.cuda.stream(side):
            self._run()
        torch.cuda.current_stream(self.tok.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):
            self._run()
        self.graph, self.bound = graph, self._tensors()

    def step(self, cache: KVCache, tok: torch.Tensor) -> torch.Tensor:
        """tok [B, 1] -> logits [B, 1, V], and `cache` (the one this decoder was made for) advanced by one
        token, exactly as model.decode."""
        if cache.layers != self.layers:
            raise ValueError("cache: this GraphDecoder was made for another cache; use decode_graph.decoder")
        self.model._fill_rope(cache.position + 1, wide_dtype(self.model.embed.weight.dtype))
        counters = [(layer.size, layer._ring) for layer in cache.layers]
        try:
            slots = [layer.next_slot() for layer in cache.layers]
            lengths = [layer.size for layer in cache.layers]
            self.meta.copy_(torch.tensor([cache.seen, cache.position, *slots, *lengths]))
            self.tok.copy_(tok)
            if not self.tok.is_cuda:
                self._run()
            else:
                if self.graph is None or any(a is not b for a, b in zip(self.bound, self._tensors())):
                    self._capture()
                self.graph.replay()
        except BaseException:  # a full layer or a failed capture: the host counters stay where they were
            for layer, (size, ring) in zip(cache.layers, counters):
                layer.size, layer._ring = size, ring
            raise
        cache.seen += 1
        cache.position += 1
        return self.logits.clone()


def decoder(model, cache: KVCache) -> GraphDecoder:
    """The cache's graph decoder for `model`, made on first use."""
    if cache.graph is None or cache.graph.model is not model:
        cache.graph = GraphDecoder(model, cache)
    return cache.graph
