"""The trainer: one RunConfig -> a trained, evaluated model and a complete run directory.

`train_run(cfg, run_dir, ...)` is the one entry point (`costlaw run` and sweep tasks call it) for every kind of
training: the Trainer owns the lifecycle, and a task (runs/task.py) says what is trained, on which batches, with
which loss, evaluated how — the LM task (runs/lm_task.py) for pretraining and later LM stages, a KV policy's task
(runs/kv/tasks.py) for `train.trainable = "policy"`. A run is idempotent (a run directory with DONE returns its
summary), resumable exactly (a checkpoint holds the model, optimizer, data position, RNG states and running
statistics; a resumed run replays bit-identically on CPU; runs/checkpoint.py reads it safely and only when it
names this run), preemptible (`stop_event` -> checkpoint + summary "preempted" at the next step boundary), and
alone: rank 0 holds the run directory's lock (costmodel/core/runlock.py) for its whole life, so a second
trainer on the same directory is refused before it writes anything.

Recipe: AdamW (β 0.9/0.95, weight decay on 2-D weights only — matrices and embeddings; norms' gains are
not decayed), warmup-stable-decay LR (runs.schedule), bf16 autocast and (for tasks that allow it)
torch.compile on CUDA, gradient clipping, Ave-Token loss normalisation across gradient accumulation (a task's
summed loss over every micro-batch of a step divided once by the step's normaliser: its target count for the
LM task). The hot loop never syncs the host with the GPU except at log intervals and checkpoints: losses
accumulate on the device, the LM task's batches are prefetched by a thread, copies are non-blocking, AdamW is
fused.

Data parallel (WORLD_SIZE > 1, env:// variables as submitit's TorchDistributedEnvironment exports them): the
ranks split each step's `grad_accum` micro-batches, so a run trains the same data with the same math on any
number of GPUs (grad_accum must be a multiple of the rank count); gradients are averaged by DDP (tasks whose
loss runs through the model's forward) or by an all-reduce after the step's micro-batches; rank 0 holds the
lock, writes the run directory and evaluates.

Divergence: at each log interval (and before every checkpoint) the interval's loss and gradient norm must be
finite and the loss at most the task's bound (`Task.loss_bound`: ten times a uniform guess for the LM loss),
else the run ends "diverged".
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import resource
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
from costlaw.costmodel.core.rundir import CHECKPOINT, METRICS, RunDir
from costlaw.costmodel.core.runlock import RunLock
from costlaw.runs import fp8, trackers
from costlaw.runs.checkpoint import FORMAT as CKPT_FORMAT
from costlaw.runs.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from costlaw.runs.config import RunConfig, check_memory
from costlaw.runs.schedule import lr_at
from costlaw.runs.task import Task, task_for

EMPTY_INTERVAL = {"loss_sum": 0.0, "grad_sum": 0.0, "targets": 0, "steps": 0}


# ---------------------------------------------------------------- small helpers
def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CostlawError("--device: cuda requested but torch sees no GPU; use --device cpu or auto")
    if not (device == "cpu" or device.startswith("cuda")):
        raise CostlawError(f"--device: {device!r} is not cuda, cpu or auto")
    return torch.device(device)


def device_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, a name for messages) of the memory a run on `device` trains in: the GPU's, or this machine's RAM."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return int(props.total_memory), f"{device} ({props.name})"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's RAM"


def precision_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32 (fp8 autocasts to bf16 around its float8 layers)."""
    p = cfg.train.precision
    if p in ("bf16", "fp8") or (p == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def use_compile(cfg: RunConfig, device: torch.device) -> bool:
    return cfg.train.compile == "on" or (cfg.train.compile == "auto" and device.type == "cuda")


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def param_groups(model: torch.nn.Module, params: list, weight_decay: float) -> list[dict]:
    """Weight decay on 2-D weights (linear matrices, embeddings), none on gains and other 1-D tensors."""
    ids = {id(p) for p in params}
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if id(p) in ids and p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_memory_allocated"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "ru_maxrss"


def init_from(model, cfg: RunConfig, field: str = "train.init_from") -> str:
    """Load a finished run's weights (model only) from `cfg.train.init_from`. Returns its run id. The checkpoint
    is read safely, and only once its header names that run (runs/checkpoint.py); errors are one line under
    `field`."""
    src = RunDir(Path(os.path.expanduser(cfg.train.init_from)))
    if not src.is_done() or src.done()["status"] != "completed" or src.config() is None:
        raise ConfigError(field, f"{str(src.path)!r} is not a completed run directory (needs config.json and DONE "
                                 "with status completed); point it at a finished run")
    if not src.file(CHECKPOINT).exists():
        raise ConfigError(field, f"{str(src.path)!r} has no {CHECKPOINT}; rerun that run to completion")
    run_id = src.config()["run_id"]
    state = load_checkpoint(src.file(CHECKPOINT), run_id, field=field)["model"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    policy = {n for n, p in model.named_parameters()
              if hasattr(model, "policy_parameters") and any(p is q for q in model.policy_parameters())}
    bad = [k for k in missing if k not in policy] + list(unexpected)
    if bad:
        raise ConfigError(field, f"weights of {str(src.path)!r} do not fit this model ({bad[0]}); start from a run "
                                 "with the same backbone shape")
    return run_id


def _distributed():
    """(rank, world, local_rank, owned) from torch.distributed's env:// variables; (0, 1, 0, False) when absent.
    `owned`: this call created the process group, so the run must destroy it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0, False
    import torch.distributed as dist

    owned = not dist.is_initialized()
    if owned:
        backend = os.environ.get("TORCH_DISTRIBUTED_BACKEND") or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owned


def _lock(rd: RunDir, rank: int, world: int, device: torch.device) -> RunLock | None:
    """Rank 0 takes the run directory's lock; every rank learns whether it did, so all stop together."""
    lock, refused = None, None
    if rank == 0:
        try:
            lock = RunLock(rd.path).acquire()
        except Exception as e:  # re-raised below, after the other ranks have heard
            refused = e
    if world > 1:
        import torch.distributed as dist

        flag = torch.tensor([0.0 if refused is None else 1.0], device=device)
        dist.all_reduce(flag)
        if flag.item() > 0 and refused is None and rank != 0:
            refused = CostlawError(f"run_dir: rank 0 could not lock {str(rd.path)!r}; its error says why")
    if refused is not None:
        raise refused
    return lock


# ---------------------------------------------------------------- entry point
def train_run(cfg: RunConfig, run_dir: str | Path, device: str = "auto", resume: bool = True,
              stop_event: threading.Event | None = None, sweep: str | None = None, distributed=None,
              progress: bool | None = None) -> dict:
    """Train and evaluate `cfg` into `run_dir`; returns the summary. See the module docstring.

    `distributed` (a submitit TorchDistributedEnvironment, or anything) only signals that the env://
    variables are set; the process group is initialised from them. `progress`: None or True = a progress
    bar on a terminal, else one line per log interval on stderr (rank 0 only); False = silent.
    """
    rd = RunDir(run_dir)
    if (done := rd.finished_or_claim(cfg.run_id)) is not None:
        return done
    task = task_for(cfg)  # its config errors come before anything is written
    trackers.check(cfg)
    rank, world, local_rank, owned = _distributed()
    lock = trainer = None
    try:
        if world > 1 and cfg.train.grad_accum % world:
            raise ConfigError("train.grad_accum", f"{cfg.train.grad_accum} is not a multiple of the {world} "
                                                  "data-parallel ranks; the ranks split a step's micro-batches, so "
                                                  "use a multiple")
        dev = resolve_device(device)
        if world > 1 and dev.type == "cuda":
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        check_memory(cfg, *device_memory(dev), device=dev.type)  # before the lock: a refused run writes nothing
        if cfg.train.precision == "fp8":
            fp8.check(dev)
        lock = _lock(rd, rank, world, dev)
        if (done := rd.finished_or_claim(cfg.run_id)) is not None:  # finished by the trainer we waited for
            return done
        trainer = Trainer(cfg, rd, dev, resume, stop_event, sweep, rank, world,
                          progress=(rank == 0) if progress is None else (progress and rank == 0), task=task)
        return trainer.run()
    finally:
        if lock is not None:
            lock.release()
        if owned:
            import gc

            import torch.distributed as dist

            # The trainer holds the DDP wrapper, and it the process group, in a cycle with its task that only the
            # garbage collector frees. Freed at interpreter exit, gloo's threads went down with the interpreter
            # and aborted a finished rank ("terminate called without an active exception", CI).
            trainer = task = None
            gc.collect()
            dist.destroy_process_group()


def compiles() -> int:
    """Frames torch.compile has compiled in this process so far (0 before dynamo is imported)."""
    dynamo_utils = sys.modules.get("torch._dynamo.utils")
    return int(dynamo_utils.counters["frames"]["ok"]) if dynamo_utils is not None else 0


def step_time_stats(timing: dict) -> dict:
    """Mean and coefficient of variation of the steady-state step time (None before two steps were timed)."""
    n, s1, s2 = timing.get("step_n", 0), timing.get("step_sum", 0.0), timing.get("step_sumsq", 0.0)
    if n < 2 or s1 <= 0:
        return {"step_time_s": None, "step_time_cv": None}
    mean = s1 / n
    var = max(0.0, (s2 - n * mean * mean) / (n - 1))
    return {"step_time_s": mean, "step_time_cv": math.sqrt(var) / mean}


class Diverged(Exception):
    pass


class Trainer:
    def __init__(self, cfg, rd, device, resume, stop_event, sweep, rank=0, world=1, progress=True,
                 task: Task | None = None):
        self.cfg, self.rd, self.device = cfg, rd, device
        self.resume, self.stop_event, self.sweep = resume, stop_event or threading.Event(), sweep
        self.task = task or task_for(cfg)
        self.rank, self.world = rank, world
        self.main = rank == 0
        self.progress_on = progress
        self.t_start = time.perf_counter()
        self.corpus = None
        self.base_run_id = None
        self.step = 0
        self.total_steps = cfg.total_steps
        # step_*: count, sum and sum of squares of steady-state step times (the step-time CV of HBP's tables)
        # setup_s: from the trainer's start to each session's first step (corpus, model, checkpoint), summed over
        # sessions; eval_s: the final evaluation. With compile_s and train_s they say where a run's wall went.
        self.timing = {"wall_s": 0.0, "train_s": 0.0, "timed_s": 0.0, "timed_tokens": 0, "compile_s": None,
                       "step_n": 0, "step_sum": 0.0, "step_sumsq": 0.0, "setup_s": 0.0}
        self.final_loss = None
        self.interval = dict(EMPTY_INTERVAL)
        self.last_metrics: dict = {}
        self.trackers: trackers.Trackers | None = None  # rank 0's TensorBoard / W&B views of metrics.jsonl

    # ---- run
    def run(self) -> dict:
        ck = self.read_checkpoint()  # outside the try: a refused checkpoint leaves the directory untouched
        try:
            self.prepare(ck)
            ck = None  # the model and optimizer hold their copies now
            return self.conclude(self._train_loop())
        except BaseException as e:
            self.fail(e)
            raise
        finally:
            self.close()

    # run()'s pieces, which runs/fusion.py calls for each member of a fused group around its shared loop
    def read_checkpoint(self) -> dict | None:
        """The checkpoint to resume from, or None; another run's checkpoint, or a file that is no checkpoint, is
        refused here, before the directory is touched."""
        path = self.rd.file(CHECKPOINT)
        return load_checkpoint(path, self.cfg.run_id) if self.resume and path.exists() else None

    def prepare(self, ck: dict | None) -> None:
        """Write the config (a fresh run), build the model, optimizer and task, restore `ck`, start the batches."""
        resuming = ck is not None
        self._barrier()  # every rank has looked before rank 0 touches the directory
        if self.cfg.train.init_from:
            base = RunDir(Path(os.path.expanduser(self.cfg.train.init_from))).config()
            self.base_run_id = base["run_id"] if base else None
        if self.main:
            self.rd.clean_tmp()
        if self.main and not resuming:
            self.rd.reset()
            self.rd.write_config(self.cfg, base_run_id=self.base_run_id, sweep=self.sweep)
        self._log(f"run {self.cfg.run_id} ({self.cfg.name or 'unnamed'}, task {self.task.name}) on "
                  f"{self.device}" + (f", rank 0 of {self.world}" if self.world > 1 else ""))
        self._setup()
        if ck is not None:
            self._restore(ck)
        if self.main:
            self.trackers = trackers.Trackers(self.cfg, self.rd, self.step if resuming else None)
        self.task.start(self)

    def conclude(self, status: str) -> dict:
        if status in ("preempted", "diverged"):
            return self._finish(status)
        return self._finish("completed", evaluate=True)

    def fail(self, e: BaseException) -> None:
        """Record a run that ended in an exception (rank 0; a Ctrl-C is left to the caller)."""
        if isinstance(e, KeyboardInterrupt) and self.main:
            return
        last = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        if self.main:
            with contextlib.suppress(Exception):
                self._finish("failed", error=f"{type(e).__name__}: {last}")

    def close(self) -> None:
        self.task.close()
        if self.trackers is not None:
            self.trackers.close()  # after an error; _finish closed them with the summary otherwise
            self.trackers = None
        if self.world > 1:  # an error's traceback keeps the trainer alive; its DDP wrapper must not keep the group
            self.net = self.fwd = None

    # ---- setup
    def _setup(self):
        from costlaw.runs.data import load_corpus
        from costlaw.runs.models import build_model

        cfg, dev = self.cfg, self.device
        d = cfg.data
        if dev.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.corpus = load_corpus(d.corpus, d.tokenizer, d.long_docs, progress=self.progress_on)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        random.seed(cfg.seed)
        self.model = build_model(cfg.model, device=dev, dtype=torch.float32)
        self.task.attach(self.model)
        if cfg.train.init_from:
            self.base_run_id = init_from(self.model, cfg)
        if cfg.train.precision == "fp8":
            self._log(f"fp8: {fp8.to_float8(self.model)} linear layers in float8 (torchao"
                      + ("; emulated on this CPU, slowly)" if dev.type == "cpu" else ")"))
        self.params = self.task.parameters(self.model)
        fused = dev.type == "cuda"
        self.opt = torch.optim.AdamW(param_groups(self.model, self.params, cfg.train.weight_decay), lr=cfg.train.lr,
                                     betas=(cfg.train.beta1, cfg.train.beta2), eps=1e-8, fused=fused or None)
        self.dtype = precision_dtype(cfg, dev)
        net = self.model
        if self.world > 1 and self.task.ddp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            net = DDP(self.model, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.net = net
        self.task.setup(self)
        # COSTLAW_COMPILE_MODE (e.g. max-autotune-no-cudagraphs) lets benchmarks try inductor's modes
        mode = os.environ.get("COSTLAW_COMPILE_MODE") or None
        self.fwd = torch.compile(net, dynamic=False, mode=mode) if self.task.compile and use_compile(cfg, dev) \
            else net

    def _restore(self, ck: dict):
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.task.load_state_dict(ck)
        set_rng_state(ck["rng"], self.device)
        self.step = ck["step"]
        # checkpoints of the policy trainer before it became a task lack the interval and the steady-state timing
        self.interval = {**EMPTY_INTERVAL, **ck.get("interval", {})}
        self.timing = {**self.timing, **ck["timing"]}
        self.final_loss = ck.get("final_loss")
        self.last_metrics = ck.get("last_metrics", {})
        if self.main:
            repair_jsonl(self.rd.file(METRICS))
        self._log(f"resumed at step {self.step}")

    # ---- the loop
    def _train_loop(self) -> str:
        self._begin_session()
        try:
            while self.step < self.total_steps:
                if self.world == 1 and self.stop_event.is_set():
                    return self._preempt()
                batch = self._start_step()
                self._backward(batch)
                if (status := self._end_step(batch)) is not None:
                    return status
            return self._end_session()
        except Diverged:
            return "diverged"
        finally:
            self._bar.close()

    # A step in pieces, so runs/fusion.py can drive several trainers through one fused forward and backward:
    # _start_step (LR, batch), _backward (the gradients; fusion computes them for every member at once),
    # _end_step (clip, optimizer, bookkeeping, logs, checkpoints).
    def _begin_session(self) -> None:
        from costlaw.costmodel.core.progress import Progress

        dev = self.device
        self._session_t0 = time.perf_counter()
        self.timing["setup_s"] += self._session_t0 - self.t_start  # 0.0 by default, resumed or not
        # a resumed interval's partial sums (already reduced over ranks) live on rank 0 only
        keep = 1.0 if self.main else 0.0
        self.loss_acc = torch.tensor(self.interval["loss_sum"] * keep, dtype=torch.float32, device=dev)
        self.grad_acc = torch.tensor(self.interval["grad_sum"] * keep, dtype=torch.float32, device=dev)
        self._first_step = self.step + 1
        self._mark = None  # steady-state timing runs from the end of this session's first step
        self._steady_tokens = 0
        self._t_interval = time.perf_counter()
        self._interval_tokens = 0
        self._step_marks: list = []  # (when, frames compiled so far) at each step end since the last log
        self._bar = Progress(self.total_steps, f"train {self.cfg.run_id}", "steps", every_s=None,
                             enabled=self.progress_on)
        self._bar.set(self.step)

    def _start_step(self):
        self._lr = lr_at(self.cfg, self.step + 1)
        for g in self.opt.param_groups:
            g["lr"] = self._lr
        return self.task.next_batch()

    def _backward(self, batch) -> None:
        task = self.task
        scale = self.world / batch.tokens
        n_micro = len(batch.micro)
        for i, mb in enumerate(batch.micro):
            no_sync = self.world > 1 and task.ddp and i < n_micro - 1
            with self.net.no_sync() if no_sync else contextlib.nullcontext():
                loss_sum = task.loss(mb)
                (loss_sum * scale).backward()
            self.loss_acc += loss_sum.detach().float()

    def _end_step(self, batch) -> str | None:
        """Everything after the gradients; "preempted" when the ranks agreed to stop; raises Diverged."""
        cfg, task = self.cfg, self.task
        total, log_every, ck_every = self.total_steps, cfg.train.log_every, cfg.train.checkpoint_every
        tps = cfg.tokens_per_step
        clip = cfg.train.grad_clip if cfg.train.grad_clip > 0 else float("inf")
        step = self.step + 1
        if self.world > 1 and not task.ddp:
            self._average_gradients()
        self.grad_acc += torch.nn.utils.clip_grad_norm_(self.params, clip).detach().float()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        task.stepped(batch)
        self.step = step
        self._mark_step()
        self.interval["targets"] += batch.tokens
        self.interval["steps"] += 1
        self._interval_tokens += tps
        if step == self._first_step:
            self._sync()
            now = time.perf_counter()
            if self.timing["compile_s"] is None:
                self.timing["compile_s"] = now - self._session_t0
            self.timing["train_s"] += now - self._session_t0
            self._mark = now
        else:
            self._steady_tokens += tps
        log_now = step % log_every == 0 or step == total
        ck_now = bool(ck_every) and step % ck_every == 0 and step < total
        stop_now = self.world > 1 and log_now and self._any_stop()
        if log_now or ck_now or stop_now:
            self._sync_interval()
            self._account()
            self._step_times()
            self._check_divergence()
            if log_now:
                now = time.perf_counter()
                self._log_metrics(step, self._lr, now - self._t_interval, now - self._session_t0,
                                  self._interval_tokens, self._bar)
                self._t_interval, self._interval_tokens = now, 0
                self.loss_acc.zero_()
                self.grad_acc.zero_()
            if stop_now:
                return self._preempt()
            if ck_now:
                self._save()
                self._mark = time.perf_counter()  # checkpoint time is not training time
                self._step_marks = []  # nor is it a step's
        self._bar.set(step, info=f"loss {self.final_loss:.3f}" if self.final_loss is not None else "")
        return None

    def _mark_step(self) -> None:
        """Note the end of a step without waiting for the GPU: an event in its stream, or the time on a CPU."""
        if self.device.type == "cuda":
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self._step_marks.append((e, compiles()))
        else:
            self._step_marks.append((time.perf_counter(), compiles()))

    def _step_times(self) -> None:
        """Fold the durations between the marked step ends into the step-time sums (call after a sync)."""
        m = self._step_marks
        if len(m) >= 2:
            if self.device.type == "cuda":
                d = [a.elapsed_time(b) / 1000.0 for (a, _), (b, _) in zip(m, m[1:])]
            else:
                d = [b - a for (a, _), (b, _) in zip(m, m[1:])]
            # a step that compiled (a new shape: hierarchical packing's next level, a last short batch) is
            # compilation, not training: its seconds go to compile_s and out of the steady-state numbers
            compiled = [c1 > c0 for (_, c0), (_, c1) in zip(m, m[1:])]
            again = [dt for dt, c in zip(d, compiled) if c]
            if again:
                t = self.timing
                t["compile_s"] = (t["compile_s"] or 0.0) + sum(again)
                t["recompile_steps"] = t.get("recompile_steps", 0) + len(again)
                t["timed_s"] = max(0.0, t["timed_s"] - sum(again))
                t["timed_tokens"] = max(0, t["timed_tokens"] - len(again) * self.cfg.tokens_per_step)
                d = [dt for dt, c in zip(d, compiled) if not c]
            self.timing["step_n"] += len(d)
            self.timing["step_sum"] += sum(d)
            self.timing["step_sumsq"] += sum(x * x for x in d)
        self._step_marks = m[-1:]

    def _end_session(self) -> str:
        self._sync()
        self._account()
        self._step_times()
        self._sync_interval()
        self._save()
        return "completed"

    def _average_gradients(self):
        """The mean over ranks of the trainable gradients, for tasks whose loss bypasses DDP (it reduces only
        what runs through the wrapped forward). Every rank sends every tensor, zeros where it has no gradient."""
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, g in zip(self.params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def _account(self):
        """Add the steady-state time and tokens since the last mark (call after a sync)."""
        if self._mark is None:
            return
        now = time.perf_counter()
        dt = now - self._mark
        self.timing["train_s"] += dt
        self.timing["timed_s"] += dt
        self.timing["timed_tokens"] += self._steady_tokens
        self._steady_tokens = 0
        self._mark = now

    def _preempt(self) -> str:
        self._sync()
        self._account()
        self._step_times()
        self._sync_interval()
        self._save()
        self._log(f"preempted at step {self.step}; checkpoint written")
        return "preempted"

    def _barrier(self):
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _any_stop(self) -> bool:
        import torch.distributed as dist

        flag = torch.tensor([1.0 if self.stop_event.is_set() else 0.0], device=self.device)
        dist.all_reduce(flag)
        return bool(flag.item() > 0)

    def _sync_interval(self):
        """Bring the device accumulators to the host (the only host-device syncs of the loop)."""
        loss_acc, grad_acc = self.loss_acc, self.grad_acc
        if self.world > 1:
            import torch.distributed as dist

            both = torch.stack([loss_acc, grad_acc])
            dist.all_reduce(both)
            loss_sum, grad_sum = both[0].item(), both[1].item() / self.world
        else:
            loss_sum, grad_sum = loss_acc.item(), grad_acc.item()
        self.interval["loss_sum"], self.interval["grad_sum"] = loss_sum, grad_sum

    def _check_divergence(self):
        iv = self.interval
        loss = iv["loss_sum"] / max(1, iv["targets"])
        grad = iv["grad_sum"] / max(1, iv["steps"])
        if not (math.isfinite(loss) and math.isfinite(grad)) or loss > self.task.loss_bound():
            self.final_loss = loss
            self.diverged_at = (self.step, loss, grad)
            self._log(f"diverged at step {self.step}: loss {loss}, grad norm {grad} (bound "
                      f"{self.task.loss_bound():.4g})")
            raise Diverged()

    def _log_metrics(self, step, lr, dt, session_s, tokens, bar):
        iv = self.interval
        loss = iv["loss_sum"] / max(1, iv["targets"])
        row = {"step": step, "tokens": step * self.cfg.tokens_per_step, "loss": loss, "lr": lr,
               "grad_norm": iv["grad_sum"] / max(1, iv["steps"]), "tokens_per_s": tokens / dt if dt > 0 else None,
               "time_s": session_s}
        self.final_loss = loss
        self.last_metrics = row
        self.interval = dict(EMPTY_INTERVAL)
        if self.main:
            self.rd.append_metrics(row)
            if self.trackers is not None:
                self.trackers.log(row)
            line = (f"step {step}/{self.total_steps} loss {loss:.4f} lr {lr:.3g} grad {row['grad_norm']:.3f} "
                    f"tok/s {row['tokens_per_s'] or 0:,.0f}")
            self.rd.log(line)
            if not bar.interactive:
                bar.log(line)

    def _save(self):
        """Checkpoint (rank 0). Call after _sync_interval: the interval's partial sums are in self.interval."""
        if not self.main:
            return
        state = {"format": CKPT_FORMAT, "run_id": self.cfg.run_id, "step": self.step,
                 "tokens": self.step * self.cfg.tokens_per_step, "model": self.model.state_dict(),
                 "optimizer": self.opt.state_dict(), "rng": rng_state(self.device),
                 "interval": dict(self.interval),
                 "timing": {**self.timing, "wall_s": self.timing["wall_s"] + time.perf_counter() - self.t_start},
                 "final_loss": self.final_loss, "last_metrics": self.last_metrics, **self.task.state_dict()}
        save_checkpoint(self.rd.file(CHECKPOINT), state)

    # ---- the end
    def _finish(self, status: str, evaluate: bool = False, error: str | None = None) -> dict:
        summary_extra, eval_s = {}, None
        # the run's peak is training's: evaluation's inference timing resets CUDA's peak counter
        peak_mem = peak_memory(self.device)
        if evaluate and self.main:
            fp8.to_plain(self.model)  # an fp8 run's weights are scored as every run's are
            self._log("evaluating")
            t0 = time.perf_counter()
            summary_extra = self.task.evaluate(self)
            eval_s = time.perf_counter() - t0
        if not self.main:  # rank 0 writes the run directory; the others report how they ended
            return {"run_id": self.cfg.run_id, "status": status, "steps": self.step, "rank": self.rank}
        summary = self._summary(status, error, summary_extra, peak_mem, eval_s)
        if self.trackers is not None:
            self.trackers.close(summary)
        self.rd.write_summary(summary)
        if status != "preempted":
            self.rd.write_done(self.cfg.run_id, status)
        shown = {k: "-" if summary.get(k) is None else f"{summary[k]:.4f}" for k in ("final_loss", "val_loss")}
        self._log(f"{status}: steps {summary['steps']}, final loss {shown['final_loss']}, "
                  f"val loss {shown['val_loss']}, {summary.get('tokens_per_s') or 0:,.0f} tok/s")
        return self.rd.summary()

    def _summary(self, status, error, extra, peak_mem: tuple[int, str], eval_s: float | None = None) -> dict:
        """peak_mem: (bytes, kind) of peak_memory when training ended; eval_s: the final evaluation's seconds."""
        cfg, dev = self.cfg, self.device
        t = self.timing
        wall = t["wall_s"] + time.perf_counter() - self.t_start
        tok_s = t["timed_tokens"] / t["timed_s"] if t["timed_s"] > 0 else None
        cost = analytic_costs(cfg.model, cfg.data.seq_len)
        mfu = None
        flops = self.task.flops_per_token()
        if dev.type == "cuda" and tok_s and flops:
            from costlaw.costmodel.hardware import gpu

            try:
                peak = gpu(torch.cuda.get_device_name(dev)).peak_bf16_flops * self.world
                mfu = tok_s * flops / peak
            except CostlawError:
                mfu = None
        peak_bytes, peak_kind = peak_mem
        corpus = self.corpus
        train_tokens = corpus.train.tokens if corpus is not None else None
        tokens = self.step * cfg.tokens_per_step
        # one schema for every task: the packing entries are null where a task does not pack
        data = {"corpus_id": corpus.corpus_id if corpus else None, "corpus": cfg.data.corpus,
                "tokenizer": cfg.data.tokenizer, "train_tokens": train_tokens,
                "val_tokens": corpus.val.tokens if corpus else None,
                "epochs": tokens / train_tokens if train_tokens else None,
                "padding_ratio": None, "abr": None, "abr_step": None, "packing": None, "doc_mask": None,
                "micro_batches": None, "ave_t": None, "dbr": None, "cr": None, "level_shares": None,
                **self.task.data_summary()}
        model = getattr(self, "model", None)
        params = sum(p.numel() for p in model.parameters()) if model is not None else None
        trained = sum(p.numel() for p in self.params) if hasattr(self, "params") else None
        return {"run_id": cfg.run_id, "status": status, "task": self.task.name, "steps": self.step,
                "total_steps": self.total_steps, "tokens": tokens,
                "final_loss": self.final_loss, "val_loss": extra.get("val_loss"),
                "tokens_per_s": tok_s, "tokens_per_s_wall": tokens / wall if wall > 0 else None, "mfu": mfu,
                "peak_memory_bytes": peak_bytes, "peak_memory_kind": peak_kind, "wall_s": wall,
                "train_s": t["train_s"], "compile_s": t["compile_s"], "setup_s": t["setup_s"],
                "eval_s": eval_s, **step_time_stats(t),
                "recompile_steps": t.get("recompile_steps", 0),
                "kv_bytes_measured": extra.get("kv_bytes_measured"), "error": error,
                "base_run_id": self.base_run_id, "seed": cfg.seed, "params_measured": params,
                "params_trained": trained, "costs": cost, "data": data,
                "env": env_info(str(dev) if dev.type == "cuda" else "cpu")}

    def _log(self, line: str):
        if self.main:
            self.rd.log(line)
        if self.progress_on and self.main and not sys.stderr.isatty():
            print(line, file=sys.stderr, flush=True)
