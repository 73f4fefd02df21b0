"""Learning-rate schedule: warmup-stable-decay (the GQA paper's: 10% linear warmup, constant, then the
last 20% of steps cosine-decayed to min_lr_ratio · lr). Steps are 1-based optimizer steps."""

from __future__ import annotations

import math


def wsd_lr(step: int, total: int, lr: float, warmup_frac: float = 0.1, decay_frac: float = 0.2,
           min_lr_ratio: float = 0.1) -> float:
    warmup = int(round(warmup_frac * total))
    decay = int(round(decay_frac * total))
    stable_end = total - decay
    if warmup and step <= warmup:
        return lr * step / warmup
    if decay and step > stable_end:
        t = (step - stable_end) / decay  # (0, 1]
        return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
    return lr


def lr_at(cfg, step: int) -> float:
    """The learning rate of optimizer step `step` for a RunConfig."""
    t = cfg.train
    return wsd_lr(step, cfg.total_steps, t.lr, t.warmup_frac, t.decay_frac, t.min_lr_ratio)
