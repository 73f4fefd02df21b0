"""The trainer: one RunConfig -> a trained, evaluated model and a complete run directory.

`train_run(cfg, run_dir, ...)` is the one entry point (`costlaw run` and sweep tasks call it; runs with
`train.trainable = "policy"` go to the KV policies' stage, runs.kv.train_policy). It is
idempotent (a run directory with DONE returns its summary), resumable exactly (a checkpoint holds the
model, optimizer, data position, RNG states and running statistics; a resumed run replays bit-identically
on CPU), and preemptible (`stop_event` -> checkpoint + summary "preempted" at the next step boundary).

Recipe: AdamW (β 0.9/0.95, weight decay on 2-D weights only — matrices and embeddings; norms' gains are
not decayed), warmup-stable-decay LR (runs.schedule), bf16 autocast and torch.compile on CUDA, gradient
clipping, Ave-Token loss normalisation across gradient accumulation (the model's summed loss over every
micro-batch of a step divided once by the step's target count). The hot loop never syncs the host with
the GPU except at log intervals and checkpoints: losses accumulate on the device, batches are prefetched
by a thread, copies are non-blocking, AdamW is fused.

Data parallel (WORLD_SIZE > 1, env:// variables as submitit's TorchDistributedEnvironment exports them):
DDP, and the ranks split each step's `grad_accum` micro-batches, so a run trains the same data with the
same math on any number of GPUs (grad_accum must be a multiple of the rank count); rank 0 writes the
run directory and evaluates.

Divergence: at each log interval (and before every checkpoint) the interval's loss and gradient norm must
be finite and the loss below 10·ln(vocab) (ten times a uniform guess; a healthy run never gets there),
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
from costlaw.costmodel.core.files import atomic_file, repair_jsonl
from costlaw.costmodel.core.rundir import CHECKPOINT, METRICS, RunDir
from costlaw.runs.config import RunConfig
from costlaw.runs.schedule import lr_at

CKPT_FORMAT = 1
DIVERGE_FACTOR = 10.0


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


def precision_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32."""
    p = cfg.train.precision
    if p == "bf16" or (p == "auto" and device.type == "cuda"):
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


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_file(path) as f:
        torch.save(state, f)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=False)


def rng_state(device: torch.device) -> dict:
    s = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        s["cuda"] = torch.cuda.get_rng_state(device)
    return s


def set_rng_state(s: dict, device: torch.device) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if device.type == "cuda" and "cuda" in s:
        torch.cuda.set_rng_state(s["cuda"], device)


def model_loss(fwd, batch, dtype, device, model=None):
    """Summed loss of one micro-batch (the model's reduction="sum"). Document masks' block indices are built
    here, eagerly, so a compiled `fwd` gets them as tensors instead of tracing the builder."""
    extra = {}
    with autocast(device, dtype):  # the index depends on the compute dtype (runs/models/varlen.py)
        if batch.doc_ids is not None and hasattr(model, "document_block_index"):
            index = model.document_block_index(batch.doc_ids, batch.cu_seqlens)
            if index is not None:
                extra["block_index"] = index
        out = fwd(batch.idx, targets=batch.targets, doc_ids=batch.doc_ids, reduction="sum", **extra)
    return out[0] if isinstance(out, tuple) else out


def trainable_parameters(model, cfg: RunConfig) -> list:
    if cfg.train.trainable == "all":
        return [p for p in model.parameters() if p.requires_grad]
    if not hasattr(model, "policy_parameters"):
        raise ConfigError("train.trainable", f"\"policy\" but the model for kv_policy method "
                                             f"{cfg.model.kv_policy.method!r} has no trained policy parameters; "
                                             "use trainable = \"all\" or a method with parameters")
    policy = list(model.policy_parameters())
    if not policy:
        raise ConfigError("train.trainable", f"\"policy\" but kv_policy method {cfg.model.kv_policy.method!r} has "
                                             "no parameters; use trainable = \"all\"")
    keep = {id(p) for p in policy}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return policy


def init_from(model, cfg: RunConfig) -> str:
    """Load a finished run's weights (model only). Returns its run id."""
    src = RunDir(Path(os.path.expanduser(cfg.train.init_from)))
    if not src.is_done() or src.done()["status"] != "completed":
        raise ConfigError("train.init_from", f"{str(src.path)!r} is not a completed run directory (needs DONE with "
                                             "status completed); point it at a finished run")
    if not src.file(CHECKPOINT).exists():
        raise ConfigError("train.init_from", f"{str(src.path)!r} has no {CHECKPOINT}; rerun that run to completion")
    state = load_checkpoint(src.file(CHECKPOINT))["model"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    policy = {n for n, p in model.named_parameters()
              if hasattr(model, "policy_parameters") and any(p is q for q in model.policy_parameters())}
    bad = [k for k in missing if k not in policy] + list(unexpected)
    if bad:
        raise ConfigError("train.init_from", f"weights of {str(src.path)!r} do not fit this model ({bad[0]}); "
                                             "start from a run with the same backbone shape")
    return src.config()["run_id"]


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


# ---------------------------------------------------------------- entry point
def train_run(cfg: RunConfig, run_dir: str | Path, device: str = "auto", resume: bool = True,
              stop_event: threading.Event | None = None, sweep: str | None = None, distributed=None,
              progress: bool | None = None) -> dict:
    """Train and evaluate `cfg` into `run_dir`; returns the summary. See the module docstring.

    `distributed` (a submitit TorchDistributedEnvironment, or anything) only signals that the env://
    variables are set; the process group is initialised from them. `progress`: None or True = a progress
    bar on a terminal, else one line per log interval on stderr (rank 0 only); False = silent.
    """
    if cfg.train.trainable == "policy":  # the KV policies' own stage: backbone frozen, policy losses
        from costlaw.runs.kv.train_policy import train_policy_run

        return train_policy_run(cfg, run_dir, device=device, resume=resume, stop_event=stop_event, sweep=sweep,
                                progress=progress)
    rd = RunDir(run_dir)
    if (done := rd.finished_or_claim(cfg.run_id)) is not None:
        return done
    rank, world, local_rank, owned = _distributed()
    try:
        if world > 1 and cfg.train.grad_accum % world:
            raise ConfigError("train.grad_accum", f"{cfg.train.grad_accum} is not a multiple of the {world} "
                                                  "data-parallel ranks; the ranks split a step's micro-batches, so "
                                                  "use a multiple")
        dev = resolve_device(device)
        if world > 1 and dev.type == "cuda":
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        trainer = Trainer(cfg, rd, dev, resume, stop_event, sweep, rank, world,
                          progress=(rank == 0) if progress is None else (progress and rank == 0))
        return trainer.run()
    finally:
        if owned:  # a gloo group left to interpreter exit once aborted a finished rank ("terminate called ...")
            import torch.distributed as dist

            dist.destroy_process_group()


class Diverged(Exception):
    pass


class Trainer:
    def __init__(self, cfg, rd, device, resume, stop_event, sweep, rank=0, world=1, progress=True):
        self.cfg, self.rd, self.device = cfg, rd, device
        self.resume, self.stop_event, self.sweep = resume, stop_event or threading.Event(), sweep
        self.rank, self.world = rank, world
        self.main = rank == 0
        self.progress_on = progress
        self.t_start = time.perf_counter()
        self.loader = None
        self.corpus = None
        self.base_run_id = None
        self.step = 0
        self.timing = {"wall_s": 0.0, "train_s": 0.0, "timed_s": 0.0, "timed_tokens": 0, "compile_s": None}
        self.final_loss = None
        self.interval = {"loss_sum": 0.0, "grad_sum": 0.0, "targets": 0, "steps": 0}
        self.last_metrics: dict = {}

    # ---- run
    def run(self) -> dict:
        from costlaw.runs.packing import PackStats

        self.pack = PackStats()
        try:
            resuming = self.resume and self.rd.file(CHECKPOINT).exists()
            self._barrier()  # every rank has looked before rank 0 touches the directory
            if self.cfg.train.init_from:
                base = RunDir(Path(os.path.expanduser(self.cfg.train.init_from))).config()
                self.base_run_id = base["run_id"] if base else None
            if self.main:
                self.rd.clean_tmp()
            if self.main and not resuming:
                self.rd.reset()
                self.rd.write_config(self.cfg, base_run_id=self.base_run_id, sweep=self.sweep)
            self._log(f"run {self.cfg.run_id} ({self.cfg.name or 'unnamed'}) on {self.device}"
                      + (f", rank 0 of {self.world}" if self.world > 1 else ""))
            self._setup()
            if resuming:
                self._restore(load_checkpoint(self.rd.file(CHECKPOINT)))
            self._start_loader()
            status = self._train_loop()
            if status == "preempted":
                return self._finish("preempted")
            if status == "diverged":
                return self._finish("diverged")
            return self._finish("completed", evaluate=True)
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt) and self.main:
                raise
            last = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            err = f"{type(e).__name__}: {last}"
            if self.main:
                with contextlib.suppress(Exception):
                    self._finish("failed", error=err)
            raise
        finally:
            if self.loader is not None:
                self.loader.close()

    # ---- setup
    def _setup(self):
        from costlaw.runs.data import get_tokenizer, load_corpus
        from costlaw.runs.models import build_model
        from costlaw.runs.packing import Packer, passkey_min_len

        cfg, dev = self.cfg, self.device
        d = cfg.data
        if dev.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.corpus = load_corpus(d.corpus, d.tokenizer, d.long_docs, progress=self.progress_on)
        self.tokenizer = get_tokenizer(d.tokenizer) if d.retrieval_mix > 0 or cfg.eval.retrieval_samples else None
        need = passkey_min_len(self.tokenizer) + 32 if self.tokenizer is not None else 0
        if d.retrieval_mix > 0 and d.seq_len < need:
            raise ConfigError("data.retrieval_mix", f"passkey rows need seq_len >= {need} with the {d.tokenizer} "
                                                    "tokenizer; raise data.seq_len or set retrieval_mix = 0")
        if self.tokenizer is not None and d.seq_len < need:
            self._log(f"retrieval probe skipped: it needs seq_len >= {need} with the {d.tokenizer} tokenizer")
            self.tokenizer = None
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        random.seed(cfg.seed)
        self.model = build_model(cfg.model, device=dev, dtype=torch.float32)
        if cfg.train.init_from:
            self.base_run_id = init_from(self.model, cfg)
        self.params = trainable_parameters(self.model, cfg)
        fused = dev.type == "cuda"
        self.opt = torch.optim.AdamW(param_groups(self.model, self.params, cfg.train.weight_decay), lr=cfg.train.lr,
                                     betas=(cfg.train.beta1, cfg.train.beta2), eps=1e-8, fused=fused or None)
        self.dtype = precision_dtype(cfg, dev)
        net = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            net = DDP(self.model, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.net = net
        # fixed masks and the RoPE table are built here, outside the compiled graph
        self.model.attention_masks(d.seq_len, device=dev)
        # COSTLAW_COMPILE_MODE (e.g. max-autotune-no-cudagraphs) lets benchmarks try inductor's modes
        mode = os.environ.get("COSTLAW_COMPILE_MODE") or None
        self.fwd = torch.compile(net, dynamic=False, mode=mode) if use_compile(cfg, dev) else net
        curriculum_steps = round(d.curriculum_frac * cfg.total_steps) if d.curriculum == "short-first" else 0
        self.packer = Packer(self.corpus.train.positions, d.seq_len, cfg.train.batch_size,
                             cfg.train.grad_accum, mode=d.packing, seed=cfg.seed,
                             curriculum_steps=curriculum_steps, retrieval_mix=d.retrieval_mix)
        self.total_steps = cfg.total_steps
        self.vocab_log = math.log(self.corpus.vocab_size)

    def _restore(self, ck: dict):
        from costlaw.runs.packing import PackStats

        if ck.get("run_id") != self.cfg.run_id:
            raise CostlawError(f"checkpoint: {self.rd.file(CHECKPOINT)} belongs to run {ck.get('run_id')}; remove it")
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.packer.load_state_dict(ck["data"])
        self.data_state = ck["data"]
        set_rng_state(ck["rng"], self.device)
        self.step = ck["step"]
        self.pack = PackStats(ck["pack_stats"])
        self.interval = dict(ck["interval"])
        self.timing = dict(ck["timing"])
        self.final_loss = ck.get("final_loss")
        self.last_metrics = ck.get("last_metrics", {})
        if self.main:
            repair_jsonl(self.rd.file(METRICS))
        self._log(f"resumed at step {self.step}")

    def _start_loader(self):
        from costlaw.runs.data.loader import StepLoader

        if getattr(self, "data_state", None) is None:
            self.data_state = self.packer.state_dict()  # the position before any step (the thread runs ahead)
        self.loader = StepLoader(self.corpus.train, self.packer, self.corpus.eot, self.device, self.tokenizer,
                                 doc_mask=self.cfg.data.doc_mask, rank=self.rank, world=self.world)

    # ---- the loop
    def _train_loop(self) -> str:
        from costlaw.costmodel.core.progress import Progress

        cfg, dev = self.cfg, self.device
        total, log_every, ck_every = self.total_steps, cfg.train.log_every, cfg.train.checkpoint_every
        tps = cfg.tokens_per_step
        clip = cfg.train.grad_clip if cfg.train.grad_clip > 0 else float("inf")
        session_t0 = time.perf_counter()
        # a resumed interval's partial sums (already reduced over ranks) live on rank 0 only
        keep = 1.0 if self.main else 0.0
        loss_acc = torch.tensor(self.interval["loss_sum"] * keep, dtype=torch.float32, device=dev)
        grad_acc = torch.tensor(self.interval["grad_sum"] * keep, dtype=torch.float32, device=dev)
        first_step = self.step + 1
        self._mark = None  # steady-state timing runs from the end of this session's first step
        self._steady_tokens = 0
        t_interval = time.perf_counter()
        interval_tokens = 0
        bar = Progress(total, f"train {cfg.run_id}", "steps", every_s=None, enabled=self.progress_on)
        bar.set(self.step)
        try:
            while self.step < total:
                if self.world == 1 and self.stop_event.is_set():
                    return self._preempt(loss_acc, grad_acc)
                step = self.step + 1
                lr = lr_at(cfg, step)
                for g in self.opt.param_groups:
                    g["lr"] = lr
                batch = self.loader.next()
                scale = self.world / batch.tokens
                n_micro = len(batch.micro)
                for i, mb in enumerate(batch.micro):
                    no_sync = self.world > 1 and i < n_micro - 1
                    with self.net.no_sync() if no_sync else contextlib.nullcontext():
                        loss_sum = model_loss(self.fwd, mb, self.dtype, dev, self.model)
                        (loss_sum * scale).backward()
                    loss_acc += loss_sum.detach().float()
                grad_acc += torch.nn.utils.clip_grad_norm_(self.params, clip).detach().float()
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                self.pack.add_step(batch.plans)
                self.data_state = batch.state
                self.step = step
                self.interval["targets"] += batch.tokens
                self.interval["steps"] += 1
                interval_tokens += tps
                if step == first_step:
                    self._sync()
                    now = time.perf_counter()
                    if self.timing["compile_s"] is None:
                        self.timing["compile_s"] = now - session_t0
                    self.timing["train_s"] += now - session_t0
                    self._mark = now
                else:
                    self._steady_tokens += tps
                log_now = step % log_every == 0 or step == total
                ck_now = bool(ck_every) and step % ck_every == 0 and step < total
                stop_now = self.world > 1 and log_now and self._any_stop()
                if log_now or ck_now or stop_now:
                    self._sync_interval(loss_acc, grad_acc)
                    self._account()
                    self._check_divergence()
                    if log_now:
                        now = time.perf_counter()
                        self._log_metrics(step, lr, now - t_interval, now - session_t0, interval_tokens, bar)
                        t_interval, interval_tokens = now, 0
                        loss_acc.zero_()
                        grad_acc.zero_()
                    if stop_now:
                        return self._preempt(loss_acc, grad_acc)
                    if ck_now:
                        self._save()
                        self._mark = time.perf_counter()  # checkpoint time is not training time
                bar.set(step, info=f"loss {self.final_loss:.3f}" if self.final_loss is not None else "")
            self._sync()
            self._account()
            self._sync_interval(loss_acc, grad_acc)
            self._save()
            return "completed"
        except Diverged:
            return "diverged"
        finally:
            bar.close()

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

    def _preempt(self, loss_acc, grad_acc) -> str:
        self._sync()
        self._account()
        self._sync_interval(loss_acc, grad_acc)
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

    def _sync_interval(self, loss_acc, grad_acc):
        """Bring the device accumulators to the host (the only host-device syncs of the loop)."""
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
        if not (math.isfinite(loss) and math.isfinite(grad)) or loss > DIVERGE_FACTOR * self.vocab_log:
            self.final_loss = loss
            self.diverged_at = (self.step, loss, grad)
            self._log(f"diverged at step {self.step}: loss {loss}, grad norm {grad}")
            raise Diverged()

    def _log_metrics(self, step, lr, dt, session_s, tokens, bar):
        iv = self.interval
        loss = iv["loss_sum"] / max(1, iv["targets"])
        row = {"step": step, "tokens": step * self.cfg.tokens_per_step, "loss": loss, "lr": lr,
               "grad_norm": iv["grad_sum"] / max(1, iv["steps"]), "tokens_per_s": tokens / dt if dt > 0 else None,
               "time_s": session_s}
        self.final_loss = loss
        self.last_metrics = row
        self.interval = {"loss_sum": 0.0, "grad_sum": 0.0, "targets": 0, "steps": 0}
        if self.main:
            self.rd.append_metrics(row)
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
                 "optimizer": self.opt.state_dict(), "data": self.data_state, "rng": rng_state(self.device),
                 "pack_stats": self.pack.state_dict(),
                 "interval": dict(self.interval),
                 "timing": {**self.timing, "wall_s": self.timing["wall_s"] + time.perf_counter() - self.t_start},
                 "final_loss": self.final_loss, "last_metrics": self.last_metrics}
        save_checkpoint(self.rd.file(CHECKPOINT), state)

    # ---- the end
    def _finish(self, status: str, evaluate: bool = False, error: str | None = None) -> dict:
        summary_extra = {}
        if evaluate and self.main:
            from costlaw.runs.evaluate import evaluate as run_eval

            self._log("evaluating")
            summary_extra = run_eval(self.model, self.cfg, self.corpus, self.device, self.rd, self.tokenizer,
                                     dtype=self.dtype, log=self._log)
        if not self.main:  # rank 0 writes the run directory; the others report how they ended
            return {"run_id": self.cfg.run_id, "status": status, "steps": self.step, "rank": self.rank}
        summary = self._summary(status, error, summary_extra)
        self.rd.write_summary(summary)
        if status != "preempted":
            self.rd.write_done(self.cfg.run_id, status)
        self._log(f"{status}: steps {summary['steps']}, final loss {summary['final_loss']}, "
                  f"val loss {summary.get('val_loss')}, {summary.get('tokens_per_s') or 0:,.0f} tok/s")
        return self.rd.summary()

    def _summary(self, status, error, extra) -> dict:
        cfg, dev = self.cfg, self.device
        t = self.timing
        wall = t["wall_s"] + time.perf_counter() - self.t_start
        tok_s = t["timed_tokens"] / t["timed_s"] if t["timed_s"] > 0 else None
        cost = analytic_costs(cfg.model, cfg.data.seq_len)
        mfu = None
        if dev.type == "cuda" and tok_s:
            from costlaw.costmodel.hardware import gpu

            try:
                peak = gpu(torch.cuda.get_device_name(dev)).peak_bf16_flops * self.world
                mfu = tok_s * cost["c_train_flops_per_token"] / peak
            except CostlawError:
                mfu = None
        peak_bytes, peak_kind = peak_memory(dev)
        corpus = self.corpus
        train_tokens = corpus.train.tokens if corpus is not None else None
        tokens = self.step * cfg.tokens_per_step
        data = {"corpus_id": corpus.corpus_id if corpus else None, "corpus": cfg.data.corpus,
                "tokenizer": cfg.data.tokenizer, "train_tokens": train_tokens,
                "val_tokens": corpus.val.tokens if corpus else None,
                "epochs": tokens / train_tokens if train_tokens else None,
                "padding_ratio": self.pack.padding_ratio, "abr": self.pack.abr, "abr_step": self.pack.abr_step,
                "packing": cfg.data.packing,
                "doc_mask": cfg.data.doc_mask, "micro_batches": self.pack.n}
        params = sum(p.numel() for p in self.model.parameters()) if hasattr(self, "model") else None
        return {"run_id": cfg.run_id, "status": status, "steps": self.step, "total_steps": self.total_steps
                if hasattr(self, "total_steps") else cfg.total_steps, "tokens": tokens,
                "final_loss": self.final_loss, "val_loss": extra.get("val_loss"),
                "tokens_per_s": tok_s, "tokens_per_s_wall": tokens / wall if wall > 0 else None, "mfu": mfu,
                "peak_memory_bytes": peak_bytes, "peak_memory_kind": peak_kind, "wall_s": wall,
                "train_s": t["train_s"], "compile_s": t["compile_s"],
                "kv_bytes_measured": extra.get("kv_bytes_measured"), "error": error,
                "base_run_id": self.base_run_id, "seed": cfg.seed, "params_measured": params,
                "costs": cost, "data": data, "env": env_info(str(dev) if dev.type == "cuda" else "cpu")}

    def _log(self, line: str):
        if self.main:
            self.rd.log(line)
        if self.progress_on and self.main and not sys.stderr.isatty():
            print(line, file=sys.stderr, flush=True)
