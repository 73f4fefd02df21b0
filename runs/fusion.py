"""Fused same-shape runs: runs whose configs differ only in their seed, trained as one model (HFTA, MLSys 2021).

A ladder's small models leave the GPU idle between tiny kernels: one run of d 128 issues the same few hundred
launches per step as one of d 512 for a fraction of the work. Fusing M seeds of one config makes each of those
kernels do M runs' work: the members' parameters are stacked inside one compiled function and the model runs
once under `torch.func.vmap`, so every matmul is one batched kernel for all members.

Only the forward and backward are shared. Each member is a whole `Trainer` (runs/train.py) with its own run
directory, run id (today's: fusion is not part of the config), model, data order (its seed's packer), AdamW
state, clipping, LR schedule, logs, checkpoint and evaluation. The fused loss is the sum of the members' summed
losses, each divided by its own step's target count, so each member's gradient is the one it gets alone (the
members share no parameter, so the sum has no cross terms). A member's checkpoint is an ordinary checkpoint: a
fused run resumes fused or alone. A member that diverges ends "diverged" and the others go on.

Attention inside the fused function runs through SDPA (FlashAttention for causal rows; document masks and
sparse patterns as dense boolean masks, the "sdpa" backend): FlexAttention and FlashAttention's varlen kernel
take no batch of members. Dense masks cost B·T² bytes per member and pattern, so fusion serves short-context
rows (`MAX_SEQ_LEN`); longer stages train unfused.

Torch is imported only where a group trains: the sweep controller groups runs with this module and no torch.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from costlaw.costmodel.core.errors import ConfigError, CostlawError
from costlaw.costmodel.core.rundir import RunDir

MAX_SEQ_LEN = 8192
_UNFUSED = ("seed", "name")  # what may differ between the members of one group


def fuse_key(cfg) -> str:
    """Configs with equal keys train as one fused group: everything but the seed (and the human label)."""
    import json

    d = cfg.to_dict()
    return json.dumps({k: v for k, v in d.items() if k not in _UNFUSED}, sort_keys=True)


def check_fusable(cfgs) -> None:
    """One-line ConfigErrors for a group that cannot train fused; nothing is written before this passes."""
    from costlaw.runs.task import task_key

    if len(cfgs) < 2:
        raise ConfigError("fuse", "a fused group needs at least two runs; train a single run unfused")
    keys = {fuse_key(c) for c in cfgs}
    if len(keys) > 1:
        raise ConfigError("fuse", "the runs of a fused group must differ only in their seed; group runs by "
                                  "`fusion.fuse_key`")
    seeds = [c.seed for c in cfgs]
    if len(set(seeds)) < len(seeds):
        raise ConfigError("fuse", f"seeds {seeds} repeat: each member is its own run; drop the duplicate")
    cfg = cfgs[0]
    if task_key(cfg) != "lm":
        raise ConfigError("train.trainable", f"{cfg.train.trainable!r} trains a KV policy; fusion trains the LM "
                                             "task only, so train these runs unfused")
    if cfg.data.seq_len > MAX_SEQ_LEN:
        raise ConfigError("data.seq_len", f"{cfg.data.seq_len} is above the {MAX_SEQ_LEN} tokens fusion serves "
                                          "(its attention uses dense masks); train long-context stages unfused")
    if cfg.train.init_from:
        raise ConfigError("train.init_from", "a fused group starts from scratch; train later stages unfused")
    if cfg.train.precision == "fp8":
        raise ConfigError("train.precision", "\"fp8\" (torchao's float8 layers) is not built for fused groups; "
                                             "train these runs unfused, or fused in \"bf16\"")
    if cfg.data.packing == "hierarchical":
        raise ConfigError("data.packing", "\"hierarchical\" gives each seed micro-batches of other row lengths, "
                                          "which do not stack; train these runs unfused")
    if cfg.train.recompute_from:
        raise ConfigError("train.recompute_from", "a fused group keeps its activations; set recompute_from = 0 or "
                                                  "train these runs unfused")


class FusedLoss:
    """The members' summed losses [M] of one micro-batch from each, in one (compiled) call.

    The compiled function is tried once, forward and backward, on a batch of the run's shapes before any step
    (`probe`): should torch.compile fail on this backend, the group trains with the same function run eagerly,
    and every member's log says so and why (slower, the same math) rather than failing the runs."""

    def __init__(self, trainers, compile: bool):
        import torch
        from torch.func import functional_call, vmap

        self.trainers = trainers
        self.template = trainers[0].model
        self.names = [n for n, _ in self.template.named_parameters()]
        with self._sdpa():  # the fixed masks of the backend the fused function uses, built outside it
            self.template.attention_masks(trainers[0].cfg.data.seq_len, device=trainers[0].device)

        def loss(params, idx, targets, doc_ids):
            stacked = {n: torch.stack([p[i] for p in params]) for i, n in enumerate(self.names)}

            def one(p, i, t, d):
                return functional_call(self.template, p, (i,), {"targets": t, "doc_ids": d, "reduction": "sum"})[0]

            return vmap(one, in_dims=(0, 0, 0, 0 if doc_ids is not None else None))(stacked, idx, targets, doc_ids)

        self.eager = loss
        self.compile_error: str | None = None
        mode = os.environ.get("COSTLAW_COMPILE_MODE") or None
        self.fn = torch.compile(loss, dynamic=False, mode=mode) if compile else loss
        if self.fn is not loss:
            self.probe()

    def probe(self) -> None:
        """One forward and backward of the compiled function on zeros of the run's shapes (its gradients are
        dropped); on failure, fall back to the eager function (see the class doc)."""
        import torch

        t0 = self.trainers[0]
        cfg, dev, M = t0.cfg, t0.device, len(self.trainers)
        shape = (cfg.train.batch_size, cfg.data.seq_len)
        micro = [_Probe(torch.zeros(shape, dtype=torch.int64, device=dev),
                        torch.zeros(shape, dtype=torch.int64, device=dev),
                        torch.zeros(shape, dtype=torch.int32, device=dev) if cfg.data.doc_mask else None)
                 for _ in range(M)]
        try:
            self(self.trainers, micro).sum().backward()
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as e:  # a compiler failure: the eager function is the same math
            self.compile_error = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[-1][:300]}"
            self.fn = self.eager
            for t in self.trainers:
                t._log(f"fused: torch.compile failed ({self.compile_error}); training this group without it")
            self(self.trainers, micro).sum().backward()  # the eager function must work, else the group fails
        finally:
            for t in self.trainers:
                t.opt.zero_grad(set_to_none=True)

    def __call__(self, members, micro):
        import torch

        from costlaw.runs.models import fused
        from costlaw.runs.train import autocast

        t0 = self.trainers[0]
        params = [[p for _, p in t.model.named_parameters()] for t in members]
        idx = torch.stack([m.idx for m in micro])
        targets = torch.stack([m.targets for m in micro])
        docs = None if micro[0].doc_ids is None else torch.stack([m.doc_ids for m in micro])
        eager = self.fn is self.eager
        was, fused.enabled = fused.enabled, fused.enabled and not eager  # no compiled pieces inside eager vmap
        try:
            with autocast(t0.device, t0.dtype), self._sdpa():
                return self.fn(params, idx, targets, docs)
        finally:
            fused.enabled = was

    @contextlib.contextmanager
    def _sdpa(self):
        """The template on the "sdpa" backend (see the module doc), and back: member 0 evaluates on its own.
        SDPA's kernels are FlashAttention, memory-efficient or math, never cuDNN's: on an H200 (torch 2.11) SDPA
        under vmap picked cuDNN attention, which torch.compile could not trace (expected Tensor() for op
        _scaled_dot_product_cudnn_attention) and which, run eagerly, sent every member's loss to nan by step 50."""
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend, self.template.attn_backend = self.template.attn_backend, "sdpa"
        try:
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
                yield
        finally:
            self.template.attn_backend = backend


class _Probe:
    """A micro-batch of zeros for FusedLoss.probe: the fields the fused function reads."""

    def __init__(self, idx, targets, doc_ids):
        self.idx, self.targets, self.doc_ids = idx, targets, doc_ids


def train_fused(cfgs, run_dirs, device: str = "auto", resume: bool = True,
                stop_event: threading.Event | None = None, sweep: str | None = None,
                progress: bool | None = None) -> list[dict]:
    """Train `cfgs` (runs differing only in seed) as one fused group into `run_dirs`; returns each run's summary
    in order. Runs already finished return their summaries and train no more; the rest must stand at one step
    (as a fused group leaves them), else they train one after another, unfused."""
    from costlaw.costmodel.core.runlock import RunLock
    from costlaw.runs.config import check_memory
    from costlaw.runs.task import task_for
    from costlaw.runs.train import Trainer, device_memory, resolve_device, train_run, use_compile

    cfgs = list(cfgs)
    if len(cfgs) != len(run_dirs):
        raise CostlawError(f"run_dirs: {len(run_dirs)} directories for {len(cfgs)} configs; give one per run")
    check_fusable(cfgs)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("fuse", "a fused group trains on one GPU; run data-parallel jobs unfused")
    dev = resolve_device(device)
    stop_event = stop_event or threading.Event()
    rds = [RunDir(Path(p)) for p in run_dirs]
    out: list[dict | None] = [rd.finished_or_claim(c.run_id) for c, rd in zip(cfgs, rds)]
    todo = [i for i, o in enumerate(out) if o is None]
    if not todo:
        return out
    total, name = device_memory(dev)
    for i in todo:  # each member's estimate against its share of the device
        check_memory(cfgs[i], total // len(todo), f"{name}, shared by {len(todo)} fused runs", device=dev.type)
    locks, trainers, started, concluded = [], [], [], set()
    try:
        for i in todo:
            locks.append(RunLock(rds[i].path).acquire())
        # the first member speaks for the group on the terminal; every member writes its own run log
        trainers = [Trainer(cfgs[i], rds[i], dev, resume, stop_event, sweep, progress=progress is not False and k == 0,
                            task=task_for(cfgs[i])) for k, i in enumerate(todo)]
        cks = [t.read_checkpoint() for t in trainers]  # every refusal before any directory is touched
        for k, t in enumerate(trainers):
            started.append(t)
            t.prepare(cks[k])
            cks[k] = None  # its model and optimizer hold their copies now
        steps = {t.step for t in trainers}
        if len(steps) > 1:
            trainers[0]._log(f"fused members stand at steps {sorted(steps)}: training them one after another")
            for t in trainers:
                t.close()
            for lock in locks:
                lock.release()
            locks, started = [], []
            for i in todo:
                out[i] = train_run(cfgs[i], rds[i].path, device=str(dev), resume=resume, stop_event=stop_event,
                                   sweep=sweep, progress=progress)
            return out
        statuses = _fused_loop(trainers, lambda: FusedLoss(trainers, use_compile(cfgs[0], dev)))
        for i, t in zip(todo, trainers):
            out[i] = t.conclude(statuses[t.cfg.run_id])
            concluded.add(t.cfg.run_id)
        return out
    except BaseException as e:
        for t in started:
            if t.cfg.run_id not in concluded:
                t.fail(e)
        raise
    finally:
        for t in trainers:
            with contextlib.suppress(Exception):
                t.close()
        for lock in locks:
            lock.release()


def _fused_loop(trainers, make_fused) -> dict[str, str]:
    """Step every live member together; returns each run id's status (completed, preempted, diverged).
    `make_fused` builds the FusedLoss after the sessions begin, so its compilation counts as each member's
    first-step (compile) time, as it does for a run alone."""
    import torch

    from costlaw.runs.train import Diverged

    status: dict[str, str] = {}
    live = list(trainers)
    for t in live:
        t._begin_session()
    pin = live[0].device.type == "cuda"
    try:
        fused = make_fused()
        while live:
            if live[0].stop_event.is_set():
                for t in live:
                    status[t.cfg.run_id] = t._preempt()
                return status
            if live[0].step >= live[0].total_steps:
                for t in live:
                    status[t.cfg.run_id] = t._end_session()
                return status
            batches = [t._start_step() for t in live]
            # each member's Ave-Token normaliser, copied from pinned memory: a pageable copy would make the host
            # wait for the GPU every step
            scales = torch.tensor([1.0 / b.tokens for b in batches])
            scales = (scales.pin_memory() if pin else scales).to(live[0].device, non_blocking=True)
            for i in range(len(batches[0].micro)):
                losses = fused(live, [b.micro[i] for b in batches])
                (losses * scales).sum().backward()
                for t, loss in zip(live, losses.detach().float()):
                    t.loss_acc += loss
            for t, b in zip(list(live), batches):
                try:
                    t._end_step(b)
                except Diverged:
                    status[t.cfg.run_id] = "diverged"
                    live.remove(t)  # the others go on; the fused function retraces for the smaller group
        return status
    finally:
        for t in trainers:
            t._bar.close()
