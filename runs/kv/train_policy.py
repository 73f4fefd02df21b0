"""The training stage of trained KV policies: Locret's retaining heads and KV-Distill's scorer + adapters.

`train_policy_run(cfg, run_dir, ...)` is what `runs.train.train_run` dispatches to when
`cfg.train.trainable == "policy"`. The run starts from a finished dense run (`train.init_from`, recorded as
`base_run_id`), builds the backbone from `cfg.model` (which carries the `kv_policy`), attaches the policy's
module (`model.kv_policy`, `model.policy_parameters()`), loads the base weights and trains only the policy's
parameters (runs.train's `init_from` / `trainable_parameters` / `param_groups`: the backbone is frozen).

Data: each step draws `batch_size` windows of `data.seq_len` tokens from the train split (a seeded draw per
step, so a resumed run sees the same batches), split as the harness splits them (runs/kv/harness.py): context
T = seq_len − G with G = seq_len / 8 (`harness.continuation_len`); the first T − 1 tokens are the prefix read
into the cache and cut, the rest is read after it. Losses:
- locret: labels = causal importance from the frozen backbone's attention (max pre-softmax logit each prefix
  token receives from the tokens after it, max over the query group); SmoothL1 + 0.0025 · smoothness;
- kv_distill: λ·KL(p‖q) + (1−λ)·KL(q‖p) on the predictions after the prefix, teacher = full cache, student =
  the prefix cut to the policy's kept tokens at context T (`kv_policy.kept_tokens(T)`, the cache's capacity)
  with the adapters on the kept positions.
Optimiser and schedule follow the train config (AdamW, warmup-stable-decay, gradient clipping; bf16 autocast on
GPU); no torch.compile (the policy's hooks and masks change per step).

The run directory follows docs/run-directory.md: config.json (base_run_id), metrics.jsonl, checkpoint.pt (the
whole model, policy module under `kv_policy.*`, optimizer, step, RNG), evals.jsonl, summary.json, DONE.
Evaluation at the end: a `policy_val` row (the loss on val windows; for Locret also the top-10% overlap of its
scores with the labels, and that of random scores) and a `kv_policy` row for the run's own policy (the harness
at context seq_len − G). A stop_event ends the run at the next step with a checkpoint and status "preempted";
resuming continues exactly.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from costlaw.costmodel import costs as analytic_costs
from costlaw.costmodel.core.env import env_info
from costlaw.costmodel.core.errors import ConfigError, CostlawError
from costlaw.costmodel.core.files import repair_jsonl
from costlaw.costmodel.core.rundir import CHECKPOINT, RunDir
from costlaw.costmodel.kvpolicy import TRAINED_METHODS
from costlaw.runs.config import RunConfig
from costlaw.runs.kv.harness import continuation_len, evaluate_policies, windows
from costlaw.runs.kv.kv_distill import distill_loss, kept_mask, mixed_kl, prepass, student_logits
from costlaw.runs.kv.locret import capture_qkv, causal_importance, locret_loss, topk_overlap
from costlaw.runs.kv.registry import attach_policy
from costlaw.runs.schedule import lr_at

CKPT_FORMAT = 1
VAL_WINDOWS = 16  # val windows for the policy_val row (at most; bounded by eval.val_tokens)


def train_policy_run(cfg: RunConfig, run_dir: str | Path, device: str = "auto", resume: bool = True,
                     stop_event: threading.Event | None = None, sweep: str | None = None,
                     progress: bool | None = None) -> dict:
    """Train the KV policy's parameters of `cfg` on its base run into `run_dir`; returns the summary."""
    from costlaw.runs.train import resolve_device

    rd = RunDir(run_dir)
    if (done := rd.finished_or_claim(cfg.run_id)) is not None:
        return done
    kv = cfg.model.kv_policy
    if cfg.train.trainable != "policy" or kv is None or kv.method not in TRAINED_METHODS:
        raise ConfigError("train.trainable", f"a policy run needs trainable = \"policy\" and a kv_policy method with "
                                             f"parameters ({', '.join(TRAINED_METHODS)})")
    if not cfg.train.init_from:
        raise ConfigError("train.init_from", "a policy run trains on a finished dense run; set train.init_from to "
                                             "its run directory")
    show = (not sys.stderr.isatty()) and ("PYTEST_CURRENT_TEST" not in os.environ) if progress is None else progress
    return PolicyTrainer(cfg, rd, resolve_device(device), resume, stop_event or threading.Event(), sweep,
                         show).run()


class PolicyTrainer:
    def __init__(self, cfg, rd, device, resume, stop_event, sweep, progress):
        self.cfg, self.rd, self.device = cfg, rd, device
        self.resume, self.stop_event, self.sweep, self.progress = resume, stop_event, sweep, progress
        self.method = cfg.model.kv_policy.method
        self.t_start = time.perf_counter()
        self.step = 0
        self.timing = {"wall_s": 0.0, "train_s": 0.0}
        self.final_loss = None
        self.base_run_id = None
        self.corpus = None
        self.seq_len = cfg.data.seq_len
        self.G = continuation_len(self.seq_len)
        self.context = self.seq_len - self.G
        self.prefix = self.context - 1  # tokens read into the cache (and cut) before the rest

    # ---------------------------------------------------------------- run
    def run(self) -> dict:
        try:
            ckpt_path = self.rd.file(CHECKPOINT)
            resuming = self.resume and ckpt_path.exists()
            if not resuming:
                self.rd.reset()
            base = RunDir(Path(os.path.expanduser(self.cfg.train.init_from))).config()
            self.base_run_id = base["run_id"] if base else None
            if not resuming:
                self.rd.write_config(self.cfg, base_run_id=self.base_run_id, sweep=self.sweep)
            self._log(f"policy run {self.cfg.run_id} ({self.method}) on base {self.base_run_id}, {self.device}")
            self._setup()
            if resuming:
                self._restore(torch.load(ckpt_path, map_location="cpu", weights_only=False))
            status = self._loop()
            return self._finish(status)
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            err = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[-1]}"
            with contextlib.suppress(Exception):  # the original error matters more than a failed summary
                self._finish("failed", error=err)
            raise

    def _setup(self):
        from costlaw.runs.data import load_corpus
        from costlaw.runs.models import build_model
        from costlaw.runs.train import init_from, param_groups, precision_dtype, trainable_parameters

        cfg, dev = self.cfg, self.device
        if self.prefix < 1:
            raise ConfigError("data.seq_len", f"{self.seq_len} leaves no context before the {self.G}-token "
                                              "continuation; raise seq_len")
        if dev.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
        d = cfg.data
        self.corpus = load_corpus(d.corpus, d.tokenizer, d.long_docs, progress=self.progress)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, device=dev, dtype=torch.float32)
        self.module = attach_policy(self.model, cfg.model)
        self.base_run_id = init_from(self.model, cfg)
        self.model.eval()  # no dropout anywhere; the backbone is frozen
        self.params = trainable_parameters(self.model, cfg)
        self.opt = torch.optim.AdamW(param_groups(self.model, self.params, cfg.train.weight_decay), lr=cfg.train.lr,
                                     betas=(cfg.train.beta1, cfg.train.beta2), eps=1e-8,
                                     fused=True if dev.type == "cuda" else None)
        self.dtype = precision_dtype(cfg, dev)
        self.kept = cfg.model.kv_policy.kept_tokens(self.context)

    def _restore(self, ck: dict):
        from costlaw.runs.train import set_rng_state

        if ck.get("run_id") != self.cfg.run_id:
            raise CostlawError(f"checkpoint: {self.rd.file(CHECKPOINT)} belongs to run {ck.get('run_id')}; remove it")
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        set_rng_state(ck["rng"], self.device)
        self.step, self.timing, self.final_loss = ck["step"], dict(ck["timing"]), ck.get("final_loss")
        repair_jsonl(self.rd.file("metrics.jsonl"))
        self._log(f"resumed at step {self.step}")

    # ---------------------------------------------------------------- losses
    def batch(self, split, step: int, n: int) -> torch.Tensor:
        rng = np.random.default_rng([self.cfg.seed, 101, step])
        return torch.from_numpy(windows(split, n, self.seq_len, rng)).to(self.device)

    def loss(self, idx: torch.Tensor, step: int) -> torch.Tensor:
        opt = self.cfg.model.kv_policy
        if self.method == "locret":
            with torch.no_grad(), capture_qkv(self.model) as feats:
                self.model(idx)
            labels = [causal_importance(self.cfg.model, layer, f, self.prefix) for layer, f in enumerate(feats)]
            return locret_loss(self.module, feats, labels, self.prefix)
        gen = torch.Generator().manual_seed(int(self.cfg.seed) * 1_000_003 + step)
        return distill_loss(self.model, self.module, idx, self.prefix, self.kept, opt.option("recent"),
                            opt.option("lam"), gen)

    # ---------------------------------------------------------------- the loop
    def _loop(self) -> str:
        from costlaw.runs.train import autocast

        cfg, dev = self.cfg, self.device
        total, log_every, ck_every = cfg.total_steps, cfg.train.log_every, cfg.train.checkpoint_every
        clip = cfg.train.grad_clip if cfg.train.grad_clip > 0 else float("inf")
        session_t0 = t_interval = time.perf_counter()
        loss_sum, grad_sum, n_int = 0.0, 0.0, 0
        while self.step < total:
            if self.stop_event.is_set():
                self._save()
                self._log(f"preempted at step {self.step}; checkpoint written")
                return "preempted"
            step = self.step + 1
            lr = lr_at(cfg, step)
            for g in self.opt.param_groups:
                g["lr"] = lr
            t0 = time.perf_counter()
            for micro in range(cfg.train.grad_accum):
                idx = self.batch(self.corpus.train, step * cfg.train.grad_accum + micro, cfg.train.batch_size)
                with autocast(dev, self.dtype):
                    loss = self.loss(idx, step * cfg.train.grad_accum + micro)
                (loss / cfg.train.grad_accum).backward()
                loss_sum += float(loss.detach()) / cfg.train.grad_accum
            grad_sum += float(torch.nn.utils.clip_grad_norm_(self.params, clip))
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.step, n_int = step, n_int + 1
            self.timing["train_s"] += time.perf_counter() - t0
            if not math.isfinite(loss_sum):
                self.final_loss = loss_sum
                self._log(f"diverged at step {step}: loss {loss_sum}")
                self._save()
                return "diverged"
            if step % log_every == 0 or step == total:
                now = time.perf_counter()
                self.final_loss = loss_sum / n_int
                row = {"step": step, "tokens": step * cfg.tokens_per_step, "loss": self.final_loss, "lr": lr,
                       "grad_norm": grad_sum / n_int, "tokens_per_s": n_int * cfg.tokens_per_step / (now - t_interval),
                       "time_s": now - session_t0}
                self.rd.append_metrics(row)
                self._log(f"step {step}/{total} loss {self.final_loss:.4f} lr {lr:.3g} grad {row['grad_norm']:.3f}")
                loss_sum, grad_sum, n_int, t_interval = 0.0, 0.0, 0, now
            if ck_every and step % ck_every == 0 and step < total:
                self._save()
        self._save()
        return "completed"

    def _save(self):
        from costlaw.runs.train import rng_state, save_checkpoint

        state = {"format": CKPT_FORMAT, "run_id": self.cfg.run_id, "step": self.step,
                 "tokens": self.step * self.cfg.tokens_per_step, "model": self.model.state_dict(),
                 "optimizer": self.opt.state_dict(), "rng": rng_state(self.device),
                 "timing": {**self.timing, "wall_s": self.timing["wall_s"] + time.perf_counter() - self.t_start},
                 "final_loss": self.final_loss}
        save_checkpoint(self.rd.file(CHECKPOINT), state)

    # ---------------------------------------------------------------- evaluation and the end
    @torch.no_grad()
    def evaluate(self) -> dict:
        from costlaw.runs.data import get_tokenizer
        from costlaw.runs.train import autocast

        cfg, model, dev = self.cfg, self.model, self.device
        n = max(1, min(VAL_WINDOWS, cfg.eval.val_tokens // self.seq_len))
        idx = torch.from_numpy(windows(self.corpus.val, n, self.seq_len, np.random.default_rng([cfg.seed, 7]))).to(dev)
        metrics = {}
        with autocast(dev, self.dtype):
            if self.method == "locret":
                with capture_qkv(model) as feats:
                    model(idx)
                labels = [causal_importance(cfg.model, layer, f, self.prefix) for layer, f in enumerate(feats)]
                metrics["loss"] = float(locret_loss(self.module, feats, labels, self.prefix))
                preds = [self.module(layer, f[:, :self.prefix].float()).transpose(1, 2)
                         for layer, f in enumerate(feats)]
                gen = torch.Generator().manual_seed(cfg.seed)
                rand = [torch.rand(p.shape, generator=gen).to(dev) for p in preds]
                metrics["topk_overlap"] = float(np.mean([topk_overlap(p, lab) for p, lab in zip(preds, labels)]))
                metrics["topk_overlap_random"] = float(np.mean([topk_overlap(r, lab) for r, lab in zip(rand, labels)]))
            else:
                teacher = model(idx)[:, self.prefix:-1]
                s = self.module.score_hidden(model, prepass(model, idx[:, :self.prefix], self.module.n_pre))
                keep = kept_mask(s, self.kept, cfg.model.kv_policy.option("recent"))
                metrics["loss"] = float(mixed_kl(teacher, student_logits(model, self.module, idx, self.prefix, keep),
                                                 cfg.model.kv_policy.option("lam")))
        rows = [{"eval": "policy_val", "tags": {"context": self.prefix, "policy": self.method}, "metrics": metrics}]
        kv = cfg.model.kv_policy
        tokenizer = get_tokenizer(cfg.data.tokenizer) if cfg.eval.retrieval_samples else None
        rows += evaluate_policies(model, cfg, self.corpus, tokenizer, dev, [self.method],
                                  [kv.keep] if kv.keep is not None else [], self.context, self.G, samples=n,
                                  batch=cfg.train.batch_size, modules={self.method: self.module.state_dict()},
                                  options={self.method: dict(kv.options)}, budgets=[kv.budget] if kv.budget else [],
                                  retrieval_samples=cfg.eval.retrieval_samples, decode_tokens=cfg.eval.decode_tokens,
                                  log=self._log, seed=cfg.seed)
        for r in rows:
            self.rd.append_eval(r["eval"], r["tags"], r["metrics"])
        self._log("policy_val " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return {"val_loss": metrics["loss"], "kv_bytes_measured": rows[-1]["metrics"]["kv_bytes"]}

    def _finish(self, status: str, error: str | None = None) -> dict:
        extra = {}
        if status == "completed":
            self.rd.file("evals.jsonl").unlink(missing_ok=True)
            self._log("evaluating")
            extra = self.evaluate()
        summary = self._summary(status, error, extra)
        self.rd.write_summary(summary)
        if status != "preempted":
            self.rd.write_done(self.cfg.run_id, status)
        self._log(f"{status}: steps {self.step}, final loss {self.final_loss}, val loss {extra.get('val_loss')}")
        return self.rd.summary()

    def _summary(self, status, error, extra) -> dict:
        from costlaw.runs.train import peak_memory

        cfg, dev = self.cfg, self.device
        wall = self.timing["wall_s"] + time.perf_counter() - self.t_start
        tokens = self.step * cfg.tokens_per_step
        train_s = self.timing["train_s"]
        peak, peak_kind = peak_memory(dev)
        corpus = self.corpus
        model, module = getattr(self, "model", None), getattr(self, "module", None)
        return {"run_id": cfg.run_id, "status": status, "steps": self.step, "total_steps": cfg.total_steps,
                "tokens": tokens, "final_loss": self.final_loss, "val_loss": extra.get("val_loss"),
                "tokens_per_s": tokens / train_s if train_s > 0 else None, "mfu": None,
                "peak_memory_bytes": peak, "peak_memory_kind": peak_kind, "wall_s": wall, "train_s": train_s,
                "kv_bytes_measured": extra.get("kv_bytes_measured"), "error": error,
                "base_run_id": self.base_run_id, "seed": cfg.seed, "policy": self.method,
                "params_measured": sum(p.numel() for p in model.parameters()) if model is not None else None,
                "params_trained": sum(p.numel() for p in module.parameters()) if module is not None else None,
                "costs": analytic_costs(cfg.model, cfg.data.seq_len),
                "data": {"corpus_id": corpus.corpus_id if corpus else None, "corpus": cfg.data.corpus,
                         "tokenizer": cfg.data.tokenizer, "train_tokens": corpus.train.tokens if corpus else None,
                         "val_tokens": corpus.val.tokens if corpus else None,
                         "epochs": tokens / corpus.train.tokens if corpus and corpus.train.tokens else None},
                "env": env_info(str(dev) if dev.type == "cuda" else "cpu")}

    def _log(self, line: str):
        self.rd.log(line)
        if self.progress:
            print(line, file=sys.stderr, flush=True)
