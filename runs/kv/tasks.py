"""The training tasks of the trained KV policies (runs/task.py): Locret's retaining heads and KV-Distill's scorer
+ adapters, registered under their methods' names, beside the policies (runs/kv/registry.py) they train.

A policy run (`train.trainable = "policy"`) starts from a finished dense run (`train.init_from`, recorded as
`base_run_id`): the Trainer builds the backbone from `cfg.model` (which carries the `kv_policy`), the task attaches
the policy's module (`model.kv_policy`, `model.policy_parameters()`), the base weights load, and only the policy's
parameters train (the backbone is frozen and in eval mode). No torch.compile: the policy's hooks and masks change
per step.

Data: each step draws `batch_size` windows of `data.seq_len` tokens from the train split per micro-batch (a seeded
draw per global micro-batch index, so a resumed run and any number of ranks see the same batches), split as the
harness splits them (runs/kv/harness.py): context T = seq_len − G with G = seq_len / 8 (`continuation_len`); the
first T − 1 tokens are the prefix read into the cache and cut, the rest is read after it. The Trainer's normaliser
is the step's micro-batch count, so a step's loss is the mean of its micro-batches' mean losses. Losses:
- locret: labels = causal importance from the frozen backbone's attention (max pre-softmax logit each prefix
  token receives from the tokens after it, max over the query group); SmoothL1 + 0.0025 · smoothness;
- kv_distill: λ·KL(p‖q) + (1−λ)·KL(q‖p) on the predictions after the prefix, teacher = full cache, student =
  the prefix cut to the policy's kept tokens at context T (`kv_policy.kept_tokens(T)`, the cache's capacity)
  with the adapters on the kept positions.

Evaluation at the end: a `policy_val` row (the loss on val windows; for Locret also the top-10% overlap of its
scores with the labels, and that of random scores) and a `kv_policy` row for the run's own policy (the harness
at context seq_len − G).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from costlaw.costmodel.core.errors import ConfigError
from costlaw.costmodel.core.rundir import EVALS
from costlaw.runs.data.loader import Step
from costlaw.runs.kv.harness import continuation_len, evaluate_policies, windows
from costlaw.runs.kv.kv_distill import distill_loss, kept_mask, mixed_kl, prepass, student_logits
from costlaw.runs.kv.locret import capture_qkv, causal_importance, locret_loss, topk_overlap
from costlaw.runs.kv.registry import attach_policy
from costlaw.runs.task import DIVERGE_FACTOR, Task, register_task
from costlaw.runs.train import autocast

VAL_WINDOWS = 16  # val windows for the policy_val row (at most; bounded by eval.val_tokens)


@dataclass
class Window:
    idx: torch.Tensor  # [batch_size, seq_len] token ids
    index: int  # the global micro-batch index: seeds the window draw and KV-Distill's Gumbel sample


class PolicyTask(Task):
    """What the trained policies share: windows, the harness's split, the run's own policy evaluated."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.seq_len = cfg.data.seq_len
        self.G = continuation_len(self.seq_len)
        self.context = self.seq_len - self.G
        self.prefix = self.context - 1  # tokens read into the cache (and cut) before the rest
        self.module = None

    def check(self) -> None:
        if not self.cfg.train.init_from:
            raise ConfigError("train.init_from", "a policy run trains on a finished dense run; set train.init_from "
                                                 "to its run directory")
        if self.prefix < 1:
            raise ConfigError("data.seq_len", f"{self.seq_len} leaves no context before the {self.G}-token "
                                              "continuation; raise seq_len")

    def attach(self, model) -> None:
        self.module = attach_policy(model, self.cfg.model)

    def setup(self, trainer) -> None:
        self.trainer = trainer
        trainer.model.eval()  # no dropout anywhere; the backbone is frozen
        self.kept = self.cfg.model.kv_policy.kept_tokens(self.context)

    # ---- batches
    def start(self, trainer) -> None:
        self.step = trainer.step

    def next_batch(self) -> Step:
        t, ga = self.trainer, self.cfg.train.grad_accum
        self.step += 1
        indices = [self.step * ga + m for m in range(t.rank, ga, t.world)]  # this rank's share of the step
        micro = [Window(self._windows(t.corpus.train, i, self.cfg.train.batch_size), i) for i in indices]
        return Step(micro, [], ga, None)

    def _windows(self, split, index: int, n: int) -> torch.Tensor:
        rng = np.random.default_rng([self.cfg.seed, 101, index])
        return torch.from_numpy(windows(split, n, self.seq_len, rng)).to(self.trainer.device)

    def val_windows(self) -> torch.Tensor:
        t = self.trainer
        n = max(1, min(VAL_WINDOWS, self.cfg.eval.val_tokens // self.seq_len))
        idx = windows(t.corpus.val, n, self.seq_len, np.random.default_rng([self.cfg.seed, 7]))
        return torch.from_numpy(idx).to(t.device)

    # ---- loss
    def loss(self, micro: Window) -> torch.Tensor:
        with autocast(self.trainer.device, self.trainer.dtype):
            return self.window_loss(micro)

    def window_loss(self, w: Window) -> torch.Tensor:
        raise NotImplementedError(f"task {self.name!r} does not define window_loss")

    def val_metrics(self, idx: torch.Tensor) -> dict:
        raise NotImplementedError(f"task {self.name!r} does not define val_metrics")

    # ---- evaluation
    @torch.no_grad()
    def evaluate(self, trainer) -> dict:
        from costlaw.runs.data import get_tokenizer

        cfg, dev = self.cfg, trainer.device
        trainer.rd.file(EVALS).unlink(missing_ok=True)
        idx = self.val_windows()
        with autocast(dev, trainer.dtype):
            metrics = self.val_metrics(idx)
        rows = [{"eval": "policy_val", "tags": {"context": self.prefix, "policy": self.name}, "metrics": metrics}]
        kv = cfg.model.kv_policy
        tokenizer = get_tokenizer(cfg.data.tokenizer) if cfg.eval.retrieval_samples else None
        rows += evaluate_policies(trainer.model, cfg, trainer.corpus, tokenizer, dev, [self.name],
                                  [kv.keep] if kv.keep is not None else [], self.context, self.G, samples=len(idx),
                                  batch=cfg.train.batch_size, modules={self.name: self.module.state_dict()},
                                  options={self.name: dict(kv.options)}, budgets=[kv.budget] if kv.budget else [],
                                  retrieval_samples=cfg.eval.retrieval_samples, decode_tokens=cfg.eval.decode_tokens,
                                  log=trainer._log, seed=cfg.seed)
        for r in rows:
            trainer.rd.append_eval(r["eval"], r["tags"], r["metrics"])
        trainer._log("policy_val " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return {"val_loss": metrics["loss"], "kv_bytes_measured": rows[-1]["metrics"]["kv_bytes"]}


@register_task
class LocretTask(PolicyTask):
    name = "locret"

    def setup(self, trainer) -> None:
        super().setup(trainer)
        # The bound: SmoothL1 to the backbone's attention logits has the labels' scale, unknown before the run.
        # Heads that predict 0 everywhere score at most mean |label| (no smoothness term), measured here on the
        # val windows (no RNG drawn, so training is unchanged); heads ten times worse than predicting nothing have
        # blown up. The floor of 1 is SmoothL1's quadratic zone (errors under one logit), where a tiny label
        # scale would otherwise flag the random initial heads.
        model = trainer.model
        with torch.no_grad(), capture_qkv(model) as feats:
            idx = self.val_windows()
            model(idx)
            zero = np.mean([float(F.smooth_l1_loss(torch.zeros_like(lab), lab))
                            for lab in self._labels(feats)])
        self.bound = DIVERGE_FACTOR * max(1.0, zero)

    def loss_bound(self) -> float:
        return self.bound

    def _labels(self, feats) -> list:
        return [causal_importance(self.cfg.model, layer, f, self.prefix) for layer, f in enumerate(feats)]

    def window_loss(self, w: Window) -> torch.Tensor:
        model = self.trainer.model
        with torch.no_grad(), capture_qkv(model) as feats:
            model(w.idx)
        return locret_loss(self.module, feats, self._labels(feats), self.prefix)

    def val_metrics(self, idx: torch.Tensor) -> dict:
        model, dev = self.trainer.model, self.trainer.device
        with capture_qkv(model) as feats:
            model(idx)
        labels = self._labels(feats)
        metrics = {"loss": float(locret_loss(self.module, feats, labels, self.prefix))}
        preds = [self.module(layer, f[:, :self.prefix].float()).transpose(1, 2) for layer, f in enumerate(feats)]
        gen = torch.Generator().manual_seed(self.cfg.seed)
        rand = [torch.rand(p.shape, generator=gen).to(dev) for p in preds]
        metrics["topk_overlap"] = float(np.mean([topk_overlap(p, lab) for p, lab in zip(preds, labels)]))
        metrics["topk_overlap_random"] = float(np.mean([topk_overlap(r, lab) for r, lab in zip(rand, labels)]))
        return metrics


@register_task
class KVDistillTask(PolicyTask):
    name = "kv_distill"

    def loss_bound(self) -> float:
        # The loss is a KL mix in nats over the vocabulary. A student that predicted uniformly would be at most
        # ln V from the teacher in forward KL, and the LoRA adapters start at zero, so a student starts near the
        # teacher: a mix ten times a uniform guess means the student's predictions have collapsed.
        return DIVERGE_FACTOR * math.log(self.cfg.model.vocab_size)

    def window_loss(self, w: Window) -> torch.Tensor:
        kv = self.cfg.model.kv_policy
        gen = torch.Generator().manual_seed(int(self.cfg.seed) * 1_000_003 + w.index)
        return distill_loss(self.trainer.model, self.module, w.idx, self.prefix, self.kept, kv.option("recent"),
                            kv.option("lam"), gen)

    def val_metrics(self, idx: torch.Tensor) -> dict:
        model, kv = self.trainer.model, self.cfg.model.kv_policy
        teacher = model(idx)[:, self.prefix:-1]
        s = self.module.score_hidden(model, prepass(model, idx[:, :self.prefix], self.module.n_pre))
        keep = kept_mask(s, self.kept, kv.option("recent"))
        return {"loss": float(mixed_kl(teacher, student_logits(model, self.module, idx, self.prefix, keep),
                                       kv.option("lam")))}
