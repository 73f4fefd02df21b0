"""End-of-training evaluation, written to evals.jsonl (names and fields: docs/run-directory.md).

- `val_loss`: mean loss over `eval.val_tokens` of the val split at the training length. Rows are whole
  seq_len windows of single val documents (long documents first), topped up with doc-masked packed rows
  when the split has too few long documents.
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
import resource
import statistics
import time

import numpy as np
import torch

from costlaw.costmodel import kv_cache_bytes
from costlaw.costmodel.core.rundir import EVALS
from costlaw.runs.packing import PAD_TARGET, MicroBatch, Packer, materialize, passkey_sequence, passkey_tokens


def _autocast(device, dtype):
    from costlaw.runs.train import autocast

    return autocast(device, dtype)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


# ---------------------------------------------------------------- validation rows
def val_rows(val, T: int, n_rows: int, eot: int):
    """HostBatch of `n_rows` rows: seq_len windows of single documents (longest documents first), then packed
    rows of the remaining documents. Deterministic."""
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
    rows = np.arange(n_full, dtype=np.int64)
    mb = MicroBatch(0, n_rows, T, rows, np.zeros(n_full, np.int64), np.asarray(docs, np.int64),
                    np.asarray(starts, np.int64), np.full(n_full, T, np.int64), np.zeros(n_rows, bool),
                    np.zeros(n_rows, np.int64), np.zeros(n_rows))
    if n_full < n_rows:  # top up with packed rows of whatever is left
        packer = Packer(m, T, n_rows - n_full, 1, mode="greedy", seed=0, window_rows=1)
        extra = packer.next_step()[0]
        mb = MicroBatch(0, n_rows, T, np.concatenate([rows, extra.row + n_full]), np.concatenate([mb.col, extra.col]),
                        np.concatenate([mb.doc, extra.doc]), np.concatenate([mb.start, extra.start]),
                        np.concatenate([mb.length, extra.length]), mb.passkey, mb.keys, mb.depths)
    return materialize(val, mb, eot)


@torch.no_grad()
def val_loss(model, cfg, corpus, device, dtype, batch_size: int) -> tuple[dict, list[dict]]:
    T = cfg.data.seq_len
    n_rows = max(1, -(-cfg.eval.val_tokens // T))
    hb = val_rows(corpus.val, T, n_rows, corpus.eot)
    nb = cfg.eval.position_buckets
    bucket = (np.arange(T) * nb) // T  # equal buckets of the sequence
    loss_by_pos = np.zeros(T)
    count_by_pos = np.zeros(T)
    for i in range(0, n_rows, batch_size):
        sl = slice(i, i + batch_size)
        idx = torch.from_numpy(hb.idx[sl]).to(device)
        tgt = torch.from_numpy(hb.targets[sl]).to(device)
        doc = torch.from_numpy(hb.doc_ids[sl]).to(device) if cfg.data.doc_mask else None
        with _autocast(device, dtype):
            losses = model(idx, targets=tgt, doc_ids=doc, reduction="none")
        losses = losses.float().cpu().numpy()
        mask = hb.targets[sl] != PAD_TARGET
        pos = hb.positions[sl] if cfg.data.doc_mask else np.broadcast_to(np.arange(T), mask.shape)
        np.add.at(loss_by_pos, pos[mask], losses[mask])
        np.add.at(count_by_pos, pos[mask], 1)
    total, count = loss_by_pos.sum(), count_by_pos.sum()
    results = {"eval": "val_loss", "tags": {"context": T}, "metrics": {"loss": total / count, "tokens": int(count)}}
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
    per_batch = max(1, min(S, (cfg.train.batch_size * cfg.data.seq_len) // context))
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
            vl, buckets = val_loss(model, cfg, corpus, device, dtype, cfg.train.batch_size)
            emit(vl)
            emit(buckets)
            log(f"val loss {vl['metrics']['loss']:.4f} over {vl['metrics']['tokens']} tokens")
        kv_measured = None
        if cfg.model.kv_policy is None:
            if cfg.eval.retrieval_samples and tokenizer is not None:
                rows = retrieval(model, cfg, corpus, tokenizer, device, cfg.data.seq_len, cfg.seed)
                emit(rows)
                log("retrieval " + ", ".join(f"{r['tags']['depth']}: {r['metrics']['accuracy']:.2f}" for r in rows))
            infer_model = model
            if device.type == "cuda":
                infer_model = copy.deepcopy(model).to(torch.bfloat16)
            contexts = list(dict.fromkeys([cfg.data.seq_len, *cfg.eval.contexts]))
            if cfg.eval.decode_tokens:
                for c in contexts:
                    r = inference(infer_model, cfg, corpus, device, c, cfg.eval.decode_tokens)
                    emit(r)
                    if kv_measured is None:
                        kv_measured = r["metrics"]["kv_bytes"]
            else:
                kv_measured = infer_model.new_cache(1, cfg.data.seq_len, device=device).nbytes()
            del infer_model
        return {"val_loss": vl["metrics"]["loss"] if vl else None, "kv_bytes_measured": kv_measured,
                "evals": len(results)}
    finally:
        model.train(was_training)
