"""End-of-training evaluation, written to evals.jsonl (names and fields: docs/run-directory.md).

Everything is scored at the training length, or at `eval.seq_len` when it is set (ProLong trains longer than it
evaluates); the val_loss row then carries that length as `seq_len`.

- `val_loss`: mean loss over `eval.val_tokens` of the val split at the training length, with its standard
  errors. `eval.val_sample = "longest"`: rows are whole seq_len windows of single val documents (long documents
  first), topped up with doc-masked packed rows when the split has too few long documents. `"spread"`: one
  window at a seeded offset in each of n_rows equal stretches of the whole split (the same for every run), so
  the loss is the split's up to a sampling error that `loss_se` measures.
- `position_loss`: the same tokens' loss by position *within their document*, in `eval.position_buckets`
  equal buckets of the sequence (does the model use long context?).
- `retrieval`: passkey accuracy at each `eval.retrieval_depths`, greedy-decoding the key through the KV
  cache (prefill the prompt, then decode token by token); a sample counts when every key token is right.
- `inference`: batch-1 prefill latency and decode tokens/s with the layout's KV cache at seq_len and every
  `eval.contexts` (prefill context − decode_tokens tokens, then decode the rest, so the cache is exactly
  the context's), and measured KV bytes (`cache.nbytes()`) next to costmodel's `kv_cache_bytes`. On CUDA
  this runs a bf16 copy of the model (the serving dtype, which costmodel's bytes assume); on CPU fp32.
  `peak_bytes` is torch.cuda.max_memory_allocated on GPU and the process's ru_maxrss on CPU.

Runs with a KV policy (the compressed family) skip `retrieval` and `inference` here: their cache is cut
below the context and needs the policy's hook, which `costlaw kv-eval` supplies.
"""

from __future__ import annotations

import copy
import dataclasses
import resource
import statistics
import time

import numpy as np
import torch

from costlaw.costmodel import kv_cache_bytes
from costlaw.costmodel.core.rundir import EVALS
from costlaw.runs.packing import (
    PAD_TARGET,
    MicroBatch,
    Packer,
    materialize,
    passkey_sequence,
    passkey_tokens,
    stream_pieces,
)

# An evaluation forward holds at least a training step's rows and up to this many tokens: a 16K extension trains
# on one row a step, and its val set and passkey probe ran as 1,024 and 300 forwards of one row each. (Logits
# need no bound here: without autograd lm_loss scores rows in chunks, and the probe keeps the last position's.)
EVAL_TOKENS = 1 << 16


def eval_rows(cfg, length: int) -> int:
    """Rows of `length` tokens per evaluation forward (val loss, passkey probe)."""
    return max(1, cfg.train.batch_size * cfg.data.seq_len // length, EVAL_TOKENS // length)


def _autocast(device, dtype):
    from costlaw.runs.train import autocast

    return autocast(device, dtype)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


# ---------------------------------------------------------------- validation rows
SPREAD_SEED = 0  # one seed for the spread rows' offsets, not the run's: every run on a corpus scores the same tokens


def _rows_plan(T: int, n_rows: int, rows, cols, docs, starts, lens) -> MicroBatch:
    return MicroBatch(0, n_rows, T, np.asarray(rows, np.int64), np.asarray(cols, np.int64), np.asarray(docs, np.int64),
                      np.asarray(starts, np.int64), np.asarray(lens, np.int64), np.zeros(n_rows, bool),
                      np.zeros(n_rows, np.int64), np.zeros(n_rows))


def longest_plan(val, T: int, n_rows: int) -> MicroBatch:
    """`n_rows` rows: seq_len windows of single documents (longest documents first), then packed rows of the
    remaining documents. Deterministic."""
    m = val.positions
    order = np.argsort(-m, kind="stable")
    full = m[order] // T
    docs, starts = [], []
    for d, k in zip(order.tolist(), full.tolist()):
        for j in range(k):
            if len(docs) == n_rows:
                break
            docs.append(d)
            starts.append(j * T)
        if len(docs) == n_rows:
            break
    n_full = len(docs)
    mb = _rows_plan(T, n_rows, np.arange(n_full), np.zeros(n_full), docs, starts, np.full(n_full, T))
    if n_full < n_rows:  # top up with packed rows of whatever is left
        packer = Packer(m, T, n_rows - n_full, 1, mode="greedy", seed=0, window_rows=1)
        extra = packer.next_step()[0]
        mb = _rows_plan(T, n_rows, np.concatenate([mb.row, extra.row + n_full]), np.concatenate([mb.col, extra.col]),
                        np.concatenate([mb.doc, extra.doc]), np.concatenate([mb.start, extra.start]),
                        np.concatenate([mb.length, extra.length]))
    return mb


def spread_plan(val, T: int, n_rows: int) -> tuple[MicroBatch, float]:
    """Rows spread over the whole val split: its stream (the documents' input positions back to back) cut into
    `n_rows` equal stretches, one seq_len window at a seeded offset inside each (windows never overlap; documents
    meeting inside one are separate segments). A split of at most n_rows * seq_len positions is scored whole, in
    consecutive windows. Returns the plan, in stream order, and the share of the split's positions it scores."""
    end = np.cumsum(val.positions)
    start = end - val.positions
    P = int(end[-1])
    if n_rows * T >= P:
        n_rows = -(-P // T)
        g = np.arange(n_rows, dtype=np.int64) * T
    else:
        width = P / n_rows
        u = np.random.default_rng(SPREAD_SEED).random(n_rows)
        g = np.floor(np.arange(n_rows) * width + u * (width - T)).astype(np.int64)
    parts = [stream_pieces(start, end, int(a), min(int(a) + T, P)) for a in g.tolist()]
    rows = np.repeat(np.arange(n_rows), [len(p[0]) for p in parts])
    docs, starts, lens, cols = (np.concatenate([p[k] for p in parts]) for k in range(4))
    return _rows_plan(T, n_rows, rows, cols, docs, starts, lens), min(1.0, n_rows * T / P)


def val_plan(val, T: int, n_rows: int, sample: str = "longest") -> tuple[MicroBatch, float | None]:
    """The val rows of `eval.val_sample` and, for `spread`, the share of the split they score (None for `longest`,
    whose rows are the longest documents rather than a sample of the split)."""
    if sample == "spread":
        return spread_plan(val, T, n_rows)
    return longest_plan(val, T, n_rows), None


def val_rows(val, T: int, n_rows: int, eot: int, sample: str = "longest"):
    """HostBatch of the val rows (`val_plan`) with their tokens."""
    return materialize(val, val_plan(val, T, n_rows, sample)[0], eot)


def rows_of(mb: MicroBatch, lo: int, hi: int) -> MicroBatch:
    """Rows [lo, hi) of a plan as a plan of their own (rows renumbered from 0)."""
    sel = (mb.row >= lo) & (mb.row < hi)
    return _rows_plan(mb.seq_len, hi - lo, mb.row[sel] - lo, mb.col[sel], mb.doc[sel], mb.start[sel], mb.length[sel])


def doc_map(mb: MicroBatch) -> np.ndarray:
    """[rows, seq_len] int64: the val document of each position's piece (-1 where there is none)."""
    out = np.full((mb.rows, mb.seq_len), -1, dtype=np.int64)
    for r, c, d, n in zip(mb.row.tolist(), mb.col.tolist(), mb.doc.tolist(), mb.length.tolist()):
        out[r, c:c + n] = d
    return out


def se_successive(sums, counts, sampled: float) -> float | None:
    """Standard error of the ratio mean Σ sums / Σ counts over rows that are a stratified sample, one row per
    equal stretch of the split in stream order: the variance comes from differences of neighbouring rows (Wolter's
    successive-difference estimator for a systematic sample), so what neighbours share — a document, a package —
    cancels instead of counting as independent evidence, times the finite-population factor 1 - `sampled`.
    Rows are linearised as (sum - mean * count) / mean count. None for fewer than two rows."""
    s, n = np.asarray(sums, np.float64), np.asarray(counts, np.float64)
    R = len(s)
    if R < 2 or n.sum() == 0:
        return None
    z = (s - s.sum() / n.sum() * n) / (n.sum() / R)
    var = max(0.0, 1.0 - sampled) / R * float(np.sum(np.diff(z) ** 2)) / (2 * (R - 1))
    return float(np.sqrt(var))


def se_clusters(sums, counts) -> float | None:
    """Cluster-robust standard error of the ratio mean Σ sums / Σ counts with clusters (documents) as the sampled
    units, drawn with replacement: sqrt(G / (G - 1) · Σ_g (S_g - mean · n_g)²) / Σ n. None for fewer than two."""
    s, n = np.asarray(sums, np.float64), np.asarray(counts, np.float64)
    keep = n > 0
    s, n = s[keep], n[keep]
    G = len(s)
    if G < 2:
        return None
    N = n.sum()
    return float(np.sqrt(G / (G - 1) * np.sum((s - s.sum() / N * n) ** 2)) / N)


@torch.no_grad()
def val_loss(model, cfg, corpus, device, dtype) -> tuple[dict, list[dict]]:
    """The `val_loss` row — loss, tokens, its standard errors (`loss_se` against the whole val split, for the
    spread rows; `loss_se_docs` with the documents as the sampled units) and the documents scored — and the
    `position_loss` rows."""
    T = cfg.data.seq_len
    n_rows = max(1, -(-cfg.eval.val_tokens // T))
    plan, sampled = val_plan(corpus.val, T, n_rows, cfg.eval.val_sample)
    n_rows = plan.rows
    batch_size = eval_rows(cfg, T)
    nb = cfg.eval.position_buckets
    bucket = (np.arange(T) * nb) // T  # equal buckets of the sequence
    loss_by_pos = np.zeros(T)
    count_by_pos = np.zeros(T)
    row_sum, row_count = np.zeros(n_rows), np.zeros(n_rows)
    doc_sum, doc_count = np.zeros(corpus.val.n_docs), np.zeros(corpus.val.n_docs)
    for i in range(0, n_rows, batch_size):
        part = rows_of(plan, i, min(i + batch_size, n_rows))
        hb = materialize(corpus.val, part, corpus.eot)
        idx = torch.from_numpy(hb.idx).to(device)
        tgt = torch.from_numpy(hb.targets).to(device)
        doc = torch.from_numpy(hb.doc_ids).to(device) if cfg.data.doc_mask else None
        with _autocast(device, dtype):
            losses = model(idx, targets=tgt, doc_ids=doc, reduction="none")
        losses = losses.float().cpu().numpy().astype(np.float64)
        mask = hb.targets != PAD_TARGET
        pos = hb.positions if cfg.data.doc_mask else np.broadcast_to(np.arange(T), mask.shape)
        loss_by_pos += np.bincount(pos[mask], weights=losses[mask], minlength=T)
        count_by_pos += np.bincount(pos[mask], minlength=T)
        row_sum[i:i + part.rows] = np.where(mask, losses, 0.0).sum(1)
        row_count[i:i + part.rows] = mask.sum(1)
        docs = doc_map(part)[mask]
        doc_sum += np.bincount(docs, weights=losses[mask], minlength=len(doc_sum))
        doc_count += np.bincount(docs, minlength=len(doc_count))
    total, count = loss_by_pos.sum(), count_by_pos.sum()
    metrics = {"loss": total / count, "tokens": int(count),
               "loss_se": se_successive(row_sum, row_count, sampled) if sampled is not None else None,
               "loss_se_docs": se_clusters(doc_sum, doc_count), "docs": int((doc_count > 0).sum())}
    # an error the rows cannot measure is left out, not null: evals.jsonl's val_loss metrics are all numbers
    results = {"eval": "val_loss", "tags": {"context": T},
               "metrics": {k: v for k, v in metrics.items() if v is not None}}
    buckets = []
    for b in range(nb):
        sel = bucket == b
        n = count_by_pos[sel].sum()
        start = int(np.flatnonzero(sel)[0])
        end = int(np.flatnonzero(sel)[-1]) + 1
        buckets.append({"eval": "position_loss", "tags": {"context": T, "bucket": b, "start": start, "end": end},
                        "metrics": {"loss": float(loss_by_pos[sel].sum() / n) if n else None, "tokens": int(n)}})
    return results, buckets


# ---------------------------------------------------------------- passkey retrieval
def _haystack_source(val, need: int) -> np.ndarray:
    """At least `need` val tokens, documents concatenated (repeated if the split is small)."""
    parts, got = [], 0
    while got < need:
        for i in range(val.n_docs):
            t = val.doc_tokens(i).astype(np.int64)
            parts.append(t)
            got += len(t)
            if got >= need:
                break
    return np.concatenate(parts)


def greedy_decode(model, prompts: torch.Tensor, n_new: int, context: int) -> torch.Tensor:
    """Greedy continuation [B, n_new] of prompts [B, n] through the model's KV cache."""
    cache = model.new_cache(prompts.shape[0], context, device=prompts.device)
    logits = model.prefill(prompts, cache, last_only=True)
    out = [logits[:, -1].argmax(-1)]
    for _ in range(n_new - 1):
        logits = model.decode(out[-1][:, None], cache)
        out.append(logits[:, -1].argmax(-1))
    return torch.stack(out, 1)


@torch.no_grad()
def retrieval(model, cfg, corpus, tokenizer, device, context: int, seed: int = 0) -> list[dict]:
    S = cfg.eval.retrieval_samples
    rng = np.random.default_rng([seed, 11, context])
    hay_src = _haystack_source(corpus.val, 4 * context)
    per_batch = min(S, eval_rows(cfg, context))
    out = []
    for depth in cfg.eval.retrieval_depths:
        keys = rng.integers(10000, 100000, S)
        offs = rng.integers(0, max(1, len(hay_src) - context), S)
        toks = [passkey_tokens(tokenizer, int(k)) for k in keys]
        n_ans = max(len(a) for _, _, a in toks)
        prompt_len = context - n_ans
        prompts = np.stack([passkey_sequence(hay_src[o:o + context], intro, q, [], depth, prompt_len)
                            for o, (intro, q, _) in zip(offs, toks)])
        correct = 0
        for i in range(0, S, per_batch):
            p = torch.from_numpy(prompts[i:i + per_batch]).to(device)
            gen = greedy_decode(model, p, n_ans, context).cpu().numpy()
            for g, (_, _, a) in zip(gen, toks[i:i + per_batch]):
                correct += int(list(g[:len(a)]) == list(a))
        out.append({"eval": "retrieval", "tags": {"context": context, "depth": float(depth)},
                    "metrics": {"accuracy": correct / S, "samples": S}})
    return out


# ---------------------------------------------------------------- inference speed and KV bytes
@torch.no_grad()
def peak_bytes(device) -> int:
    """torch.cuda.max_memory_allocated on GPU; the process's ru_maxrss on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def timed_generation(runner, prompt: torch.Tensor, context: int, n_decode: int, device, repeats: int = 1):
    """Prefill of `prompt` [B, n] into a fresh cache made for `context` tokens, then `n_decode` greedy
    decode steps. `runner` is a model or a PolicyModel (new_cache / prefill / decode). A warm-up run
    (kernels, masks, allocator, the decode graph) comes first, and peak memory counts from after it. Returns
    (the last cache, prefill seconds, decode seconds, peak bytes); the times are medians over `repeats` runs.
    A model's cache is made once and reset in place between runs, so the timed runs replay the decode graph
    the warm-up captured (runs/models/decode_graph.py); a policy runner gets a new cache per run, which also
    resets the policy's state."""
    reuse = isinstance(runner, torch.nn.Module)
    kept = []

    def run(n):
        if reuse and kept:
            cache = kept[0]
            cache.reset()
        else:
            cache = runner.new_cache(prompt.shape[0], context, device=device)
            kept[:] = [cache]
        _sync(device)
        t0 = time.perf_counter()
        tok = runner.prefill(prompt, cache, last_only=True)[:, -1].argmax(-1)
        _sync(device)
        t1 = time.perf_counter()
        for _ in range(n):
            tok = runner.decode(tok[:, None], cache)[:, -1].argmax(-1)
        _sync(device)
        return cache, t1 - t0, time.perf_counter() - t1

    with torch.inference_mode():
        run(min(2, n_decode))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        runs = [run(n_decode) for _ in range(repeats)]
    return (runs[-1][0], statistics.median(r[1] for r in runs), statistics.median(r[2] for r in runs),
            peak_bytes(device))


def inference(model, cfg, corpus, device, context: int, decode_tokens: int) -> dict:
    """Prefill context − G tokens, then decode G = decode_tokens more, ending at exactly `context`: the
    cache is made for `context`, so its bytes compare with costmodel's at that context."""
    G = min(decode_tokens, context - 1)
    if device.type == "cuda" and next(model.parameters()).dtype == torch.float32:
        model = copy.deepcopy(model).to(torch.bfloat16)  # serve as deployed: bf16 weights and KV cache
    src = _haystack_source(corpus.val, context + 1)
    prompt = torch.from_numpy(src[:context - G].copy())[None].to(device)

    cache, prefill_s, decode_s, peak = timed_generation(model, prompt, context, G, device)
    dtype = next(model.parameters()).dtype
    return {"eval": "inference", "tags": {"context": context, "batch": 1},
            "metrics": {"prefill_s": prefill_s, "prefill_tokens": context - G,
                        "decode_tokens_per_s": G / decode_s if G and decode_s > 0 else None,
                        "kv_bytes": cache.nbytes(),
                        "kv_bytes_analytic": kv_cache_bytes(cfg.model, context, _dtype_name(dtype)),
                        "peak_bytes": int(peak)}}


# ---------------------------------------------------------------- all of it
def evaluate(model, cfg, corpus, device, rd=None, tokenizer=None, dtype=None, log=None) -> dict:
    """Run every evaluation the config asks for; append results to `rd`'s evals.jsonl (rewritten from
    scratch: evaluation always reruns whole). Returns the summary fields it measured."""
    log = log or (lambda line: None)
    results: list[dict] = []
    trained_at = cfg.data.seq_len
    if cfg.eval.seq_len and cfg.eval.seq_len != trained_at:  # every evaluation below at eval.seq_len
        cfg = cfg.replace(data=dataclasses.replace(cfg.data, seq_len=cfg.eval.seq_len, packing="balanced",
                                                   pack_levels=()))

    def emit(rows):
        for r in rows if isinstance(rows, list) else [rows]:
            results.append(r)
            if rd is not None:
                rd.append_eval(r["eval"], r["tags"], r["metrics"])

    if rd is not None:
        rd.file(EVALS).unlink(missing_ok=True)
    was_training = model.training
    model.eval()
    try:
        vl = None
        if cfg.eval.val_tokens:
            t0 = time.perf_counter()
            vl, buckets = val_loss(model, cfg, corpus, device, dtype)
            if cfg.data.seq_len != trained_at:
                vl["metrics"]["seq_len"] = cfg.data.seq_len
            emit(vl)
            emit(buckets)
            se = vl["metrics"].get("loss_se")
            log(f"val loss {vl['metrics']['loss']:.4f}" + (f" ± {se:.4f}" if se is not None else "")
                + f" over {vl['metrics']['tokens']} tokens of {vl['metrics']['docs']} documents"
                + f" ({time.perf_counter() - t0:.1f} s)")
        kv_measured = None
        if cfg.model.kv_policy is None:
            if cfg.eval.retrieval_samples and tokenizer is not None:
                t0 = time.perf_counter()
                rows = retrieval(model, cfg, corpus, tokenizer, device, cfg.data.seq_len, cfg.seed)
                emit(rows)
                log("retrieval " + ", ".join(f"{r['tags']['depth']}: {r['metrics']['accuracy']:.2f}" for r in rows)
                    + f" ({time.perf_counter() - t0:.1f} s)")
            infer_model = model
            if device.type == "cuda":
                infer_model = copy.deepcopy(model).to(torch.bfloat16)
            contexts = list(dict.fromkeys([cfg.data.seq_len, *cfg.eval.contexts]))
            if cfg.eval.decode_tokens:
                for c in contexts:
                    t0 = time.perf_counter()
                    r = inference(infer_model, cfg, corpus, device, c, cfg.eval.decode_tokens)
                    emit(r)
                    m = r["metrics"]
                    log(f"inference at {c}: prefill {m['prefill_s']:.3f} s, {m['decode_tokens_per_s'] or 0:.0f} "
                        f"decode tokens/s ({time.perf_counter() - t0:.1f} s)")
                    if kv_measured is None:
                        kv_measured = r["metrics"]["kv_bytes"]
            else:
                kv_measured = infer_model.new_cache(1, cfg.data.seq_len, device=device).nbytes()
            del infer_model
        return {"val_loss": vl["metrics"]["loss"] if vl else None, "kv_bytes_measured": kv_measured,
                "evals": len(results)}
    finally:
        model.train(was_training)
