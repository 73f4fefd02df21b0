"""The compressed-cache evaluation harness (`costlaw kv-eval`): one base checkpoint, each policy and keep ratio.

Protocol. S windows of T + G tokens (context T, continuation G) from the val split, the same for every policy.
Per window and policy: the first T − 1 context tokens are read through the policy's decode path into a cache
made for T (`PolicyModel.prefill`: each policy's own way — at once then cut, in chunks, in a pot); then the last
context token and the continuation are read in one call against the compressed cache (`extend`: each of them
sees the compressed prefix and the tokens of the call before it), whose logits score the G continuation tokens.
The reference is the full cache read the same way (same calls, same shapes), so at keep = 1 every number is the
full cache's, bit for bit. (Opening the scored call with the last context token keeps every policy's prefill
free to return only what it computes anyway.)

Metrics of each `kv_policy` row (docs/run-directory.md; tags context, policy, keep):
- nll, nll_full, delta_nll = nll − nll_full: mean continuation NLL (nats/token), compressed and full;
- kl: mean KL(full ‖ compressed) of the next-token distributions over the continuation;
- retrieval_accuracy: runs.evaluate's passkey probe at context T, through the policy's decode path (prompt
  compressed, key decoded with eviction), mean over the depths;
- kv_bytes: `cache.nbytes()` after the context, next to kv_bytes_analytic = costmodel.kv_cache_bytes(the policy's
  config, T, dtype); peak_kv_bytes: the most K/V bytes held at once (a prompt read before cutting, a chunk, a
  catalyst block);
- peak_bytes: torch.cuda.max_memory_allocated during a batch-1 prefill + decode (CPU: the process's ru_maxrss),
  prefill_s and decode_tokens_per_s of that run (decode evicting as it goes);
- kept_tokens, params_policy, policy_flops_per_token: costmodel's pricing of the policy.
Metrics not measured (the probe off, no tokenizer, past the deadline) are null.
On CUDA the harness runs a bf16 copy of the model (the serving dtype costmodel's bytes assume); on CPU fp32.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import torch

from costlaw.costmodel import KVPolicy, kv_cache_bytes, policy_flops_per_token, policy_params
from costlaw.costmodel import costs as analytic_costs
from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.rundir import CHECKPOINT, RunDir, run_path
from costlaw.costmodel.core.runlock import RunLock
from costlaw.costmodel.kvpolicy import METHODS, TRAINED_METHODS
from costlaw.runs.evaluate import peak_bytes, timed_generation
from costlaw.runs.kv.base import FullCacheModel
from costlaw.runs.kv.registry import POLICIES, module_state, policy_model, policy_module

DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


def continuation_len(seq_len: int) -> int:
    """Tokens after the context that training labels / distils on and the harness scores: 1/8 of the row."""
    return max(1, seq_len // 8)


# ---------------------------------------------------------------- data
def windows(split, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """[n, length] int64 windows of document streams ([EOT] + tokens + [EOT]), a document drawn in proportion
    to the windows it holds; when no document is long enough, windows of the documents' streams joined."""
    L = split.doc_len + 2
    ok = np.flatnonzero(L >= length)
    if len(ok):
        w = (L[ok] - length + 1).astype(np.float64)
        docs = rng.choice(ok, size=n, p=w / w.sum())
        starts = rng.integers(0, L[docs] - length + 1)
        return split.stream(docs, starts, np.full(n, length)).reshape(n, length)
    need = length + n
    order, got = [], 0
    while got < need:
        for i in range(split.n_docs):
            order.append(i)
            got += int(L[i])
            if got >= need:
                break
    joined = split.stream(np.asarray(order), np.zeros(len(order), np.int64), L[order])
    starts = rng.integers(0, len(joined) - length + 1, size=n)
    return np.stack([joined[s:s + length] for s in starts])


# ---------------------------------------------------------------- measuring
def continuation_logits(pm, idx: torch.Tensor, T: int):
    """Logits [B, N − T, V] predicting idx[:, T:] (N = idx.shape[1]): the first T − 1 tokens are read through `pm`
    (a PolicyModel or FullCacheModel) into a cache made for T, then the rest in one `extend` call; and the
    cache's bytes after the prefill."""
    cache = pm.new_cache(idx.shape[0], T, device=idx.device)
    pm.prefill(idx[:, :T - 1], cache, last_only=True)
    kv_bytes = cache.nbytes()
    return pm.extend(idx[:, T - 1:-1], cache).float(), kv_bytes


def _nll_kl(logits, ref_logp, targets):
    logp = torch.log_softmax(logits, -1)
    nll = -logp.gather(-1, targets[..., None]).squeeze(-1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
    return nll, kl


def policy_config(model_cfg, method: str, keep: float | None = None, budget: int | None = None,
                  options: dict | None = None):
    return model_cfg.replace(kv_policy=KVPolicy(method, keep=keep, budget=budget,
                                                options=tuple(sorted((options or {}).items()))))


@dataclasses.dataclass
class Combo:
    method: str
    keep: float | None
    budget: int | None
    cfg: object  # the ModelConfig with this kv_policy
    module: torch.nn.Module | None
    nll: float = 0.0
    kl: float = 0.0
    tokens: int = 0
    kv_bytes: int | None = None
    peak_kv_bytes: int = 0


@torch.no_grad()
def evaluate_policies(model, run_cfg, corpus, tokenizer, device, methods, keeps, context: int, continuation: int,
                      samples: int = 16, batch: int = 8, modules: dict | None = None, options: dict | None = None,
                      budgets=(), retrieval_samples: int = 0, decode_tokens: int = 32, deadline: float | None = None,
                      log=None, seed: int = 0) -> list[dict]:
    """`kv_policy` rows for every (method, keep) and (method, budget). `model` is the backbone (fp32; a bf16
    copy runs on CUDA); `modules[method]` a trained method's module state dict; `options[method]` its options.
    Past `deadline` (time.perf_counter()) the remaining retrieval and speed measurements are skipped."""
    from costlaw.runs.evaluate import retrieval

    log = log or (lambda line: None)
    modules, options = modules or {}, options or {}
    device = torch.device(device)
    net = copy.deepcopy(model).to(torch.bfloat16) if device.type == "cuda" else model
    net.eval()
    dtype = next(net.parameters()).dtype
    T, G = context, continuation
    combos = []
    for method in methods:
        for keep, budget in [(k, None) for k in keeps] + [(None, b) for b in budgets]:
            pcfg = policy_config(model.cfg, method, keep=keep, budget=budget, options=options.get(method))
            module = None
            if method in TRAINED_METHODS:
                if method not in modules:
                    raise CostlawError(f"--policies: {method} needs a trained policy run; pass --policy-run "
                                       f"{method}=RUN_DIR (a run with train.trainable = \"policy\")")
                module = policy_module(pcfg)
                module.load_state_dict(modules[method])
                module = module.to(device=device, dtype=dtype).eval()
            combos.append(Combo(method, keep, budget, pcfg, module))
    rng = np.random.default_rng([seed, 17, T, G])
    data = torch.from_numpy(windows(corpus.val, samples, T + G, rng)).to(device)
    full_sum, full_tokens = 0.0, 0
    for i in range(0, samples, batch):
        idx = data[i:i + batch]
        targets = idx[:, T:]
        ref, _ = continuation_logits(FullCacheModel(net), idx, T)
        ref_logp = torch.log_softmax(ref, -1)
        nll_full = -ref_logp.gather(-1, targets[..., None]).squeeze(-1)
        full_sum, full_tokens = full_sum + float(nll_full.sum()), full_tokens + targets.numel()
        for c in combos:
            pm = policy_model(net, c.cfg, c.module, tokenizer)
            logits, kv_bytes = continuation_logits(pm, idx, T)
            nll, kl = _nll_kl(logits, ref_logp, targets)
            c.nll += float(nll.sum() - nll_full.sum())
            c.kl += float(kl.sum())
            c.tokens += targets.numel()
            c.kv_bytes = kv_bytes // idx.shape[0]
            c.peak_kv_bytes = max(c.peak_kv_bytes, pm.policy.peak_kv_bytes // idx.shape[0])
    nll_full_mean = full_sum / full_tokens
    prompt = data[:1, :T]
    rows = []
    for c in combos:
        delta = c.nll / c.tokens
        m = {"nll": nll_full_mean + delta, "nll_full": nll_full_mean, "delta_nll": delta, "kl": c.kl / c.tokens,
             "kv_bytes": c.kv_bytes, "kv_bytes_analytic": kv_cache_bytes(c.cfg, T, DTYPE_NAMES[dtype]),
             "peak_kv_bytes": c.peak_kv_bytes, "kept_tokens": c.cfg.kv_policy.kept_tokens(T),
             "params_policy": policy_params(c.cfg), "policy_flops_per_token": policy_flops_per_token(c.cfg),
             "samples": samples, "continuation": G,
             "retrieval_accuracy": None, "prefill_s": None, "decode_tokens_per_s": None, "peak_bytes": None}
        late = deadline is not None and time.perf_counter() > deadline
        if retrieval_samples and tokenizer is not None and not late:
            pm = policy_model(net, c.cfg, c.module, tokenizer)
            rcfg = run_cfg.replace(eval=dataclasses.replace(run_cfg.eval, retrieval_samples=retrieval_samples))
            got = retrieval(pm, rcfg, corpus, tokenizer, device, T, seed)
            m["retrieval_accuracy"] = float(np.mean([r["metrics"]["accuracy"] for r in got]))
        if decode_tokens and not late:
            m.update(speed(net, c.cfg, c.module, tokenizer, prompt, decode_tokens, device))
        tags = {"context": T, "policy": c.method, **({"keep": c.keep} if c.keep is not None else {"budget": c.budget})}
        rows.append({"eval": "kv_policy", "tags": tags, "metrics": m})
        size = f"keep {c.keep:g}" if c.keep is not None else f"budget {c.budget}"
        log(f"{c.method:>10} {size:<12} ΔNLL {delta:+.4f}  KL {m['kl']:.4f}  kv {c.kv_bytes} B"
            + (f"  retrieval {m['retrieval_accuracy']:.2f}" if m["retrieval_accuracy"] is not None else ""))
    return rows


def speed(net, pcfg, module, tokenizer, prompt: torch.Tensor, decode_tokens: int, device) -> dict:
    """Batch-1 prefill seconds, decode tokens/s (greedy, evicting as it goes) and the device's peak memory."""
    pm = policy_model(net, pcfg, module, tokenizer)
    _, prefill_s, decode_s, peak = timed_generation(pm, prompt, prompt.shape[1], decode_tokens, device)
    return {"prefill_s": prefill_s, "decode_tokens_per_s": decode_tokens / decode_s if decode_s > 0 else None,
            "peak_bytes": peak}


# ---------------------------------------------------------------- the run directory
def load_policy_run(path: str | Path, method: str, base_run_id: str) -> tuple[dict, dict, str]:
    """(module state, options, run id) of a finished policy run trained on the base run. Its checkpoint is read
    safely, and only once its header names that run (runs/checkpoint.py)."""
    from costlaw.runs.checkpoint import load_checkpoint

    rd = RunDir(Path(os.path.expanduser(str(path))))
    flag = f"--policy-run {method}"
    if not rd.is_done() or rd.done()["status"] != "completed":
        raise CostlawError(f"{flag}: {str(rd.path)!r} is not a completed run directory; point it at a finished "
                           "policy run")
    doc = rd.config()
    kv = (doc["config"].get("model") or {}).get("kv_policy") or {}
    if kv.get("method") != method:
        raise CostlawError(f"{flag}: {str(rd.path)!r} trained kv_policy method {kv.get('method')!r}, not {method!r}")
    if doc.get("base_run_id") != base_run_id:
        raise CostlawError(f"{flag}: {str(rd.path)!r} was trained on base run {doc.get('base_run_id')}, not "
                           f"{base_run_id}; evaluate it on its own base")
    if not rd.file(CHECKPOINT).exists():
        raise CostlawError(f"{flag}: {str(rd.path)!r} has no {CHECKPOINT}")
    state = module_state(load_checkpoint(rd.file(CHECKPOINT), doc["run_id"], field=flag)["model"])
    opts = {k: v for k, v in kv.items() if k in METHODS[method]}
    return state, opts, doc["run_id"]


def parse_policy_runs(items) -> dict[str, str]:
    out = {}
    for item in items or []:
        method, sep, path = item.partition("=")
        if not sep or not path or method not in TRAINED_METHODS:
            raise CostlawError(f"--policy-run: {item!r} is not METHOD=RUN_DIR with METHOD one of "
                               f"{', '.join(TRAINED_METHODS)}")
        out[method] = path
    return out


def kv_eval_run(base_dir, out_root, methods, keeps, policy_runs: dict | None = None, context: int | None = None,
                continuation: int | None = None, samples: int = 16, batch: int = 8, retrieval_samples: int = 16,
                decode_tokens: int = 32, device: str = "auto", deadline: float | None = None, log=None) -> dict:
    """Evaluate `methods` × `keeps` on the finished dense run `base_dir` into a new run directory
    OUT_ROOT/runs/<run_id> (stage "compress", base_run_id recorded): `kv_policy` rows in evals.jsonl,
    summary.json, DONE. Returns the summary (with the rows under "rows")."""
    from costlaw.runs.config import RunConfig
    from costlaw.runs.data import get_tokenizer, load_corpus
    from costlaw.runs.models import build_model
    from costlaw.runs.train import init_from, resolve_device

    t_start = time.perf_counter()
    log = log or (lambda line: None)
    methods, keeps = list(dict.fromkeys(methods)), list(dict.fromkeys(float(k) for k in keeps))
    bad = [m for m in methods if m not in POLICIES]
    if bad or not methods:
        raise CostlawError(f"--policies: {bad[0] if bad else 'none'!r} is not a policy; choose from "
                           f"{', '.join(POLICIES)}")
    for k in keeps:
        if not 0 < k <= 1:
            raise CostlawError(f"--keep: keep ratios must be in (0, 1], got {k:g}")
    base_rd = RunDir(Path(os.path.expanduser(str(base_dir))))
    doc = base_rd.config()
    if doc is None:
        raise CostlawError(f"BASE_RUN_DIR: {str(base_rd.path)!r} is not a run directory (no config.json)")
    base_cfg = RunConfig.from_dict(doc["config"])
    if base_cfg.model.kv_policy is not None:
        raise CostlawError("BASE_RUN_DIR: its model already has a kv_policy; evaluate a dense base run")
    policy_runs = policy_runs or {}
    missing = [m for m in methods if m in TRAINED_METHODS and m not in policy_runs]
    if missing:
        raise CostlawError(f"--policies: {missing[0]} needs a trained policy run; pass --policy-run "
                           f"{missing[0]}=RUN_DIR (a run with train.trainable = \"policy\" on this base)")
    seq_len = base_cfg.data.seq_len
    G = continuation or continuation_len(seq_len)
    T = context or seq_len - G
    if T < 2 or G < 1:
        raise CostlawError(f"--context: {T} + continuation {G} leaves nothing to score; use a longer context")
    dev = resolve_device(device)
    modules, options, run_ids = {}, {}, {}
    for m in methods:
        if m in TRAINED_METHODS:
            modules[m], options[m], run_ids[m] = load_policy_run(policy_runs[m], m, doc["run_id"])
    # the trained policies evaluated are part of the run's identity: other policy runs, another run id
    ev = dataclasses.replace(base_cfg.eval, policies=tuple(methods), kv_keep=tuple(keeps), contexts=(T,),
                             retrieval_samples=retrieval_samples, decode_tokens=decode_tokens,
                             policy_runs=tuple(f"{m}={r}" for m, r in sorted(run_ids.items())))
    tr = dataclasses.replace(base_cfg.train, init_from=str(base_rd.path.resolve()), trainable="all")
    cfg = base_cfg.replace(stage="compress", train=tr, eval=ev, name=base_cfg.name)
    # the base checkpoint is input like the flags: refused (safely, in one line) before anything is written
    model = build_model(base_cfg.model, device=dev, dtype=torch.float32)
    base_id = init_from(model, cfg, field="BASE_RUN_DIR")
    model.eval()
    rd = RunDir(run_path(out_root, cfg.run_id))
    lock = RunLock(rd.path, role="kv-eval").acquire()  # one writer per run directory, as for training
    try:
        rd.reset()
        rd.write_config(cfg, base_run_id=doc["run_id"], extra={"policy_runs": run_ids})
        rd.log(f"kv-eval of base {doc['run_id']} at context {T} + {G}: {', '.join(methods)} × keep "
               f"{', '.join(f'{k:g}' for k in keeps)} on {dev}")
        corpus = None
        try:
            d = base_cfg.data
            corpus = load_corpus(d.corpus, d.tokenizer, d.long_docs, progress=False)
            tokenizer = get_tokenizer(d.tokenizer) if retrieval_samples else None

            def both(line):
                rd.log(line)
                log(line)

            rows = evaluate_policies(model, cfg, corpus, tokenizer, dev, methods, keeps, T, G, samples=samples,
                                     batch=batch, modules=modules, options=options,
                                     retrieval_samples=retrieval_samples, decode_tokens=decode_tokens,
                                     deadline=deadline, log=both, seed=cfg.seed)
            for r in rows:
                rd.append_eval(r["eval"], r["tags"], r["metrics"])
            summary = _summary(cfg, "completed", None, base_id, run_ids, T, G, samples, corpus, dev, t_start)
            rd.write_summary(summary)
            rd.write_done(cfg.run_id, "completed")
            return {**rd.summary(), "rows": rows, "run_dir": str(rd.path)}
        except BaseException as e:
            if not isinstance(e, KeyboardInterrupt):
                err = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[-1]}"
                rd.write_summary(_summary(cfg, "failed", err, doc["run_id"], run_ids, T, G, samples, corpus, dev,
                                          t_start))
                rd.write_done(cfg.run_id, "failed")
            raise
    finally:
        lock.release()


def _summary(cfg, status, error, base_id, run_ids, T, G, samples, corpus, dev, t_start) -> dict:
    from costlaw.costmodel.core.env import env_info

    d = cfg.data
    return {"run_id": cfg.run_id, "status": status, "steps": 0, "tokens": 0, "final_loss": None, "val_loss": None,
            "wall_s": time.perf_counter() - t_start, "peak_memory_bytes": peak_bytes(dev), "error": error,
            "base_run_id": base_id, "policy_runs": run_ids, "seed": cfg.seed,
            "kv_eval": {"context": T, "continuation": G, "samples": samples, "policies": list(cfg.eval.policies),
                        "keep": list(cfg.eval.kv_keep)},
            "costs": analytic_costs(cfg.model, T),
            "data": {"corpus_id": corpus.corpus_id if corpus else None, "corpus": d.corpus, "tokenizer": d.tokenizer,
                     "val_tokens": corpus.val.tokens if corpus else None},
            "env": env_info(str(dev) if dev.type == "cuda" else "cpu")}
