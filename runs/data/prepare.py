"""Prepare a corpus: source files -> documents -> tokens -> uint16 shards + document tables + manifest.

Two passes. Pass 1 reads and hashes every file (sha256), drops exact duplicates (site-packages vendors the
same modules many times; keeping one copy also keeps copies from straddling the split), groups files into
documents (runs.data.sources) and assigns each document to train or val by its content hash — so the
split is deterministic and the same for every tokenizer. Pass 2 tokenizes documents, in worker processes
for BPE, and appends them to the split's shards in document order.

The corpus id hashes the tokenizer, the document rules and every file's (name, sha256): equal contents
give equal ids on any machine. Prepared corpora are cached under $COSTLAW_CACHE/corpora keyed by source,
tokenizer, long_docs and a fingerprint of the files' names, sizes and mtimes; preparation writes into a
temporary directory and renames it into place under a lock file, so concurrent runs never see (or make)
a half-written corpus.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from costlaw.costmodel.core.errors import ConfigError, CostlawError
from costlaw.costmodel.core.files import write_atomic
from costlaw.costmodel.core.progress import Progress
from costlaw.runs.data import sources
from costlaw.runs.data.shards import MANIFEST, SPLITS, Corpus
from costlaw.runs.data.tokenizers import GPT2Tokenizer, cache_dir, find_gpt2, get_tokenizer

FORMAT = 1
VAL_FRACTION = 0.05  # share of documents (by content hash) held out for validation
SHARD_TOKENS = 1 << 28  # tokens per shard file (512 MiB of uint16); documents never straddle shards
LONG_DOC_MAX_BYTES = 1 << 20  # long documents are cut at a file boundary past this many source bytes
PARALLEL_MIN_BYTES = 4 << 20  # below this, tokenizing in-process beats starting workers


def _val(doc_hash: str) -> bool:
    return int(doc_hash[:8], 16) / 2**32 < VAL_FRACTION


def plan_documents(files: list[dict], long_docs: bool) -> list[dict]:
    """Group non-duplicate, non-empty files (in order) into documents with a content hash and a split."""
    docs: list[dict] = []
    current: dict | None = None
    for i, f in enumerate(files):
        if f["duplicate_of"] is not None or f["bytes"] == 0:
            continue
        if (current is None or not long_docs or f["group"] != current["group"]
                or current["bytes"] + f["bytes"] > LONG_DOC_MAX_BYTES):
            part = sum(1 for d in docs if d["group"] == f["group"]) if long_docs else 0
            current = {"name": f["group"] + (f"#{part}" if part else "") if long_docs else f["name"],
                       "group": f["group"], "files": [], "bytes": 0}
            docs.append(current)
        current["files"].append(i)
        current["bytes"] += f["bytes"]
    if len(docs) == 1 and len(docs[0]["files"]) > 1:  # one long document: split it so val is not empty
        only = docs[0]["files"]
        half = len(only) // 2
        docs = [{**docs[0], "name": docs[0]["name"] + f"#{k}", "files": part,
                 "bytes": sum(files[j]["bytes"] for j in part)} for k, part in enumerate((only[:half], only[half:]))]
    if len(docs) < 2:
        raise ConfigError("corpus", f"has {len(docs)} non-empty distinct file(s); a train/val split needs at least 2")
    for d in docs:
        d["sha256"] = hashlib.sha256("\n".join(files[j]["sha256"] for j in d["files"]).encode()).hexdigest()
        d["split"] = "val" if _val(d["sha256"]) else "train"
    for want in SPLITS:  # never leave a split empty: move the document whose hash is nearest the boundary
        if not any(d["split"] == want for d in docs):
            other = sorted(docs, key=lambda d: int(d["sha256"][:8], 16))
            (other[0] if want == "val" else other[-1])["split"] = want
    return docs


# ---------------------------------------------------------------- workers
_TOK = None


def _init_worker(tokenizer: str, gpt2_path: str | None):
    global _TOK
    _TOK = GPT2Tokenizer(Path(gpt2_path)) if gpt2_path else get_tokenizer(tokenizer)


def _tokenize_doc(paths: list[str]) -> np.ndarray:
    parts = []
    for k, p in enumerate(paths):
        if k:
            parts.append(np.array([_TOK.eot], dtype=np.uint16))
        parts.append(_TOK.encode_bytes(Path(p).read_bytes()))
    return np.concatenate(parts) if parts else np.zeros(0, np.uint16)


class _ShardWriter:
    def __init__(self, out: Path, split: str):
        self.out, self.split = out, split
        self.shards: list[str] = []
        self.shard_tokens: list[int] = []
        self.docs: list[tuple[int, int, int]] = []
        self._f = None

    def add(self, tokens: np.ndarray) -> None:
        n = len(tokens)
        if self._f is None or (self.shard_tokens[-1] and self.shard_tokens[-1] + n > SHARD_TOKENS):
            self._roll()
        self.docs.append((len(self.shards) - 1, self.shard_tokens[-1], n))
        self._f.write(tokens.astype("<u2", copy=False).tobytes())
        self.shard_tokens[-1] += n

    def _roll(self):
        if self._f is not None:
            self._f.close()
        name = f"{self.split}-{len(self.shards):03d}.bin"
        self.shards.append(name)
        self.shard_tokens.append(0)
        self._f = open(self.out / name, "wb")  # noqa: SIM115 (closed on roll-over and in close())

    def close(self) -> dict:
        if self._f is None:
            self._roll()
        self._f.close()
        docs_name = f"{self.split}.docs.npy"
        np.save(self.out / docs_name, np.asarray(self.docs, dtype=np.int64).reshape(-1, 3))
        return {"shards": self.shards, "shard_tokens": self.shard_tokens, "docs": docs_name,
                "n_docs": len(self.docs), "tokens": int(sum(self.shard_tokens))}


# ---------------------------------------------------------------- prepare
def prepare_into(out: Path, source: sources.Source, tokenizer: str, long_docs: bool = True,
                 workers: int | None = None, progress: bool = True) -> dict:
    """Write a prepared corpus into the (new or empty) directory `out`. Returns the manifest."""
    t0 = time.perf_counter()
    tok = get_tokenizer(tokenizer)  # fails fast, with the fix, when gpt2.tiktoken is missing
    out.mkdir(parents=True, exist_ok=True)
    files: list[dict] = []
    seen: dict[str, int] = {}
    with Progress(source.total_bytes, f"hash {source.spec}", "bytes", enabled=progress) as bar:
        for f in source.files:
            data = f.path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            dup = seen.get(digest)
            if dup is None and data:
                seen[digest] = len(files)
            files.append({"name": f.name, "group": f.group, "sha256": digest, "bytes": len(data),
                          "tokens": 0, "duplicate_of": dup, "doc": None})
            bar.update(f.size)
    docs = plan_documents(files, long_docs)
    paths = [[str(source.files[j].path) for j in d["files"]] for d in docs]
    writers = {s: _ShardWriter(out, s) for s in SPLITS}
    total = sum(d["bytes"] for d in docs)
    n_workers = workers if workers is not None else min(16, os.cpu_count() or 1)
    parallel = tokenizer != "byte" and n_workers > 1 and total >= PARALLEL_MIN_BYTES
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(Progress(total, f"tokenize ({tokenizer}, {n_workers if parallel else 1} proc)",
                                           "bytes", enabled=progress))
        if parallel:
            pool = stack.enter_context(ProcessPoolExecutor(
                n_workers, mp_context=get_context("spawn"), initializer=_init_worker,
                initargs=(tokenizer, str(find_gpt2()) if tokenizer == "gpt2" else None)))
            results = pool.map(_tokenize_doc, paths, chunksize=max(1, min(64, len(paths) // (8 * n_workers))))
        else:
            _init_worker(tokenizer, None)
            results = map(_tokenize_doc, paths)
        for d, toks in zip(docs, results):
            w = writers[d["split"]]
            d["index"], d["tokens"] = len(w.docs), int(len(toks))
            w.add(toks)
            bar.update(d["bytes"])
    splits = {s: w.close() for s, w in writers.items()}
    for d in docs:
        for j in d["files"]:
            files[j]["doc"] = [d["split"], d["index"]]
        del d["group"]
    ident = hashlib.sha256(json.dumps({"format": FORMAT, "tokenizer": tokenizer, "long_docs": long_docs,
                                       "long_doc_max_bytes": LONG_DOC_MAX_BYTES, "val_fraction": VAL_FRACTION,
                                       "files": [[f["name"], f["sha256"]] for f in files]}).encode())
    manifest = {
        "format": FORMAT, "corpus_id": ident.hexdigest()[:16], "source": source.spec, "roots": list(source.roots),
        "fingerprint": source.fingerprint(), "tokenizer": tokenizer, "vocab_size": tok.vocab_size, "eot": tok.eot,
        "dtype": "uint16", "long_docs": long_docs, "long_doc_max_bytes": LONG_DOC_MAX_BYTES,
        "val_fraction": VAL_FRACTION, "n_files": len(files),
        "duplicates_skipped": sum(f["duplicate_of"] is not None for f in files),
        "bytes": sum(f["bytes"] for f in files), "tokens": sum(s["tokens"] for s in splits.values()),
        "splits": splits, "documents": docs, "files": files,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "prepare_s": round(time.perf_counter() - t0, 3),
    }
    write_atomic(out / MANIFEST, json.dumps(manifest, separators=(",", ":")))  # last: a directory with one is complete
    return manifest


def cache_key(source: sources.Source, tokenizer: str, long_docs: bool) -> str:
    return f"{source.label}-{tokenizer}-{'long' if long_docs else 'files'}-{source.fingerprint()}"


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare(spec: str, tokenizer: str = "byte", long_docs: bool = True, out: str | Path | None = None,
            workers: int | None = None, progress: bool = True, reused=None) -> Path:
    """Prepare `spec` into `out` (default: the cache, reused when present). Returns the corpus directory.
    reused(path), when given, is called when the cache already held the corpus and nothing was prepared, so a
    caller can say so rather than return at once in silence."""
    if tokenizer not in ("byte", "gpt2"):
        raise ConfigError("tokenizer", f"{tokenizer!r} is not one of byte, gpt2")
    source = sources.resolve(spec)
    # refused before the lock file and the output directory exist, so a bad source leaves nothing behind
    if sum(1 for f in source.files if f.size) < 2:
        raise ConfigError("corpus", f"{spec!r} has {sum(1 for f in source.files if f.size)} non-empty file(s); a "
                                    "train/val split needs at least 2")
    get_tokenizer(tokenizer)  # a missing gpt2.tiktoken fails here, with the fix
    if out is None:
        final = cache_dir() / "corpora" / cache_key(source, tokenizer, long_docs)
    else:
        final = Path(out)
        if final.exists() and any(final.iterdir()) and not (final / MANIFEST).is_file():
            raise CostlawError(f"--out: {str(final)!r} exists and is not a prepared corpus; choose an empty or new "
                               "directory")
    if (final / MANIFEST).is_file() and out is None:
        if reused is not None:
            reused(final)
        return final
    with _locked(final.parent / f".{final.name}.lock"):
        if (final / MANIFEST).is_file() and out is None:
            if reused is not None:  # another process prepared it while we waited
                reused(final)
            return final
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            prepare_into(tmp, source, tokenizer, long_docs, workers, progress)
            if final.exists():
                shutil.rmtree(final)  # an explicit --out being re-prepared
            try:
                os.rename(tmp, final)
            except OSError:  # lost a race on a file system without working locks: theirs is as good
                if not (final / MANIFEST).is_file():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


SYNTHETIC = "synthetic"


def load(spec: str, tokenizer: str = "byte", long_docs: bool = True, progress: bool = True) -> Corpus:
    """The prepared corpus for `spec` (a prepared directory is used as is); prepared on first use.
    `synthetic` is random tokens in log-normal documents (mean 2,000 tokens) for throughput benchmarks:
    nothing to read, nothing to learn."""
    if spec == SYNTHETIC:
        from costlaw.runs.data.tokenizers import ByteTokenizer, GPT2Tokenizer

        vocab = {"byte": ByteTokenizer.vocab_size, "gpt2": GPT2Tokenizer.vocab_size}[tokenizer]
        return Corpus.synthetic(n_docs=4000, mean_len=2000, vocab=vocab, seed=0, val_docs=200)
    p = Path(os.path.expanduser(spec))
    if p.is_dir() and (p / MANIFEST).is_file():
        corpus = Corpus.open(p)
        if corpus.tokenizer != tokenizer:
            raise ConfigError("data.tokenizer", f"{tokenizer!r} but the prepared corpus {spec!r} is "
                                                f"{corpus.tokenizer!r}; use tokenizer = \"{corpus.tokenizer}\"")
        return corpus
    return Corpus.open(prepare(spec, tokenizer, long_docs, progress=progress))
