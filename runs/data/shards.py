"""Reading a prepared corpus: memory-mapped uint16 token shards, document tables, the manifest.

On disk (written by runs.data.prepare):
  manifest.json          what the corpus is (files with sha256, tokenizer, corpus id, split sizes)
  {split}-{k:03d}.bin    raw little-endian uint16 tokens, whole documents back to back
  {split}.docs.npy       int64 [n_docs, 3]: (shard, offset in shard, length) per document

A document's *stream* is `[EOT] + tokens + [EOT]`: the leading EOT is the document's BOS, the trailing one
its end. Training positions are windows of a stream: inputs s[a:a+L], targets s[a+1:a+L+1], so a
document of n tokens has n + 1 input positions and no target ever crosses into another document.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from costlaw.costmodel.core.errors import CostlawError

MANIFEST = "manifest.json"
SPLITS = ("train", "val")


class Split:
    def __init__(self, name: str, shards: list[np.ndarray], docs: np.ndarray, eot: int):
        self.name = name
        self.shards = shards
        docs = np.asarray(docs, dtype=np.int64).reshape(-1, 3)
        self.doc_shard, self.doc_off, self.doc_len = docs[:, 0].copy(), docs[:, 1].copy(), docs[:, 2].copy()
        self.eot = eot

    @property
    def n_docs(self) -> int:
        return len(self.doc_len)

    @property
    def tokens(self) -> int:
        return int(self.doc_len.sum())

    @property
    def positions(self) -> np.ndarray:
        """Input positions per document (n tokens -> n + 1)."""
        return self.doc_len + 1

    def doc_tokens(self, i: int) -> np.ndarray:
        s, o, n = int(self.doc_shard[i]), int(self.doc_off[i]), int(self.doc_len[i])
        return np.asarray(self.shards[s][o:o + n])

    def window(self, d: int, a: int, m: int) -> np.ndarray:
        """Stream tokens s[a:a+m] of document d as int64 (one slice copy: the training loader's path)."""
        n, off = int(self.doc_len[d]), int(self.doc_off[d])
        out = np.full(m, self.eot, dtype=np.int64)
        lo, hi = max(a, 1), min(a + m, n + 1)  # stream positions that hold tokens (lo-1 .. hi-2)
        if hi > lo:
            out[lo - a:hi - a] = self.shards[int(self.doc_shard[d])][off + lo - 1:off + hi - 1]
        return out

    def stream(self, docs, starts, lens, shift: int = 0) -> np.ndarray:
        """Concatenated stream tokens s[start+shift : start+shift+len] of each (doc, start, len), as int64.
        shift=0 gives inputs, shift=1 the targets."""
        docs = np.asarray(docs, dtype=np.int64)
        lens = np.asarray(lens, dtype=np.int64)
        total = int(lens.sum())
        if total == 0:
            return np.zeros(0, dtype=np.int64)
        piece = np.repeat(np.arange(len(lens)), lens)
        first = np.cumsum(lens) - lens
        j = np.asarray(starts, dtype=np.int64)[piece] + (np.arange(total) - first[piece]) + shift
        d = docs[piece]
        n = self.doc_len[d]
        out = np.full(total, self.eot, dtype=np.int64)
        inside = (j >= 1) & (j <= n)
        tok = self.doc_off[d] + j - 1
        sh = self.doc_shard[d]
        for s, arr in enumerate(self.shards):
            m = inside & (sh == s)
            if m.any():
                out[m] = arr[tok[m]]
        return out


class Corpus:
    """A prepared corpus (or an in-memory synthetic one for benchmarks and tests)."""

    def __init__(self, manifest: dict, train: Split, val: Split, path: Path | None = None):
        self.manifest, self.train, self.val, self.path = manifest, train, val, path

    @property
    def corpus_id(self) -> str:
        return self.manifest["corpus_id"]

    @property
    def tokenizer(self) -> str:
        return self.manifest["tokenizer"]

    @property
    def eot(self) -> int:
        return self.manifest["eot"]

    @property
    def vocab_size(self) -> int:
        return self.manifest["vocab_size"]

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val}[name]

    @classmethod
    def open(cls, path: str | Path) -> Corpus:
        path = Path(path)
        mpath = path / MANIFEST
        if not mpath.is_file():
            raise CostlawError(f"corpus: {str(path)!r} is not a prepared corpus (no {MANIFEST}); "
                               "run `costlaw data prepare` into it")
        manifest = json.loads(mpath.read_text())
        splits = {}
        for name in SPLITS:
            info = manifest["splits"][name]
            shards = [np.memmap(path / f, dtype=np.uint16, mode="r") if n else np.zeros(0, np.uint16)
                      for f, n in zip(info["shards"], info["shard_tokens"])]
            splits[name] = Split(name, shards, np.load(path / info["docs"]), manifest["eot"])
        return cls(manifest, splits["train"], splits["val"], path)

    @classmethod
    def synthetic(cls, n_docs: int = 2000, mean_len: int = 2000, vocab: int = 50257, seed: int = 0,
                  max_len: int | None = None, val_docs: int = 50) -> Corpus:
        """Random tokens with log-normal document lengths: the packer and loader run exactly as on a real
        corpus, without one (benchmarks, tests)."""
        rng = np.random.default_rng(seed)
        eot = vocab - 1
        splits = {}
        for name, n in (("train", n_docs), ("val", val_docs)):
            lens = np.maximum(1, rng.lognormal(np.log(mean_len), 1.0, size=n)).astype(np.int64)
            if max_len:
                lens = np.minimum(lens, max_len)
            toks = rng.integers(0, eot, size=int(lens.sum()), dtype=np.uint16)
            docs = np.stack([np.zeros(n, np.int64), np.cumsum(lens) - lens, lens], 1)
            splits[name] = Split(name, [toks], docs, eot)
        manifest = {"format": 1, "corpus_id": f"synthetic-{n_docs}-{mean_len}-{vocab}-{seed}", "source": "synthetic",
                    "tokenizer": "synthetic", "vocab_size": vocab, "eot": eot,
                    "splits": {k: {"docs": v.n_docs, "tokens": v.tokens} for k, v in splits.items()}}
        return cls(manifest, splits["train"], splits["val"])
