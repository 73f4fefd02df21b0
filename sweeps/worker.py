"""The callable a sweep task runs: one run, checkpointable, so preemption and timeouts requeue and resume.

`RunTask` is a `submitit.helpers.Checkpointable`. Its `__call__` trains in a thread (`runs.train.train_run`)
with a stop event; the main thread only waits, so submitit's signal handler (USR2, sent `signal_delay_s`
before Slurm kills a preempted or timed-out job) runs promptly. `checkpoint()` sets the stop event, waits
(bounded) for the trainer to write its checkpoint at the next step boundary, and returns a fresh
`DelayedSubmission` of the same task: the requeued job resumes from the run directory's checkpoint, never
from pickled state (the pickle holds only the config and paths).

Multi-GPU runs (resources.gpus > 1) get `tasks_per_node = gpus`: Slurm starts one task per GPU (srun, not
torchrun) and each calls `TorchDistributedEnvironment().export()` (MASTER_ADDR/PORT, RANK, WORLD_SIZE,
LOCAL_RANK) before the trainer, which initialises the process group from those variables and trains on
cuda:LOCAL_RANK. Only rank 0 checkpoints on a signal (submitit's rule); the trainer all-reduces the stop flag
at log intervals so every rank stops together.

Under the local executor a SIGTERM (what an interrupted `costlaw sweep submit` sends each job's process group,
sweeps/local.py) is a stop request too: the trainer checkpoints at its next step, writes a "preempted" summary,
and the task ends without requeueing, for a resubmit to continue. (On Slurm, submitit's handling stands: SIGTERM is
logged and USR2 checkpoints and requeues.)

`FusedRunTask` is the same contract for a fused group (`sweep submit --fuse`, runs/fusion.py): one job trains
several runs that differ only in their seed, each into its own run directory. Every task points inductor's
compile cache at the sweep root (`COMPILE_CACHE`, unless the user set TORCHINDUCTOR_CACHE_DIR), so runs of one
shape, their requeues and other nodes on a shared filesystem reuse compiled kernels.

Only this module imports torch (through runs.train), and only inside the job.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import submitit

from costlaw.costmodel.core.rundir import DONE, run_path
from costlaw.sweeps.legacy import new_name

TRAIN_FN = "costlaw.runs.train:train_run"  # "module:function" a task calls
COMPILE_CACHE = "compile-cache"  # under the sweep root


class ParentNotCompleted(RuntimeError):
    """A later-stage run whose parent run did not finish with status completed."""


class RunTask(submitit.helpers.Checkpointable):
    def __init__(self, root: str, config: dict, run_id: str, sweep: str | None = None, parent_id: str | None = None,
                 threads: int = 0, device: str = "auto", gpus: int = 0, checkpoint_wait_s: float = 60.0,
                 train_fn: str = TRAIN_FN):
        self.root = str(root)
        self.config = config
        self.run_id = run_id
        self.sweep = sweep
        self.parent_id = parent_id
        self.threads = threads
        self.device = device
        self.gpus = gpus
        self.checkpoint_wait_s = checkpoint_wait_s
        self.train_fn = train_fn  # "module:function"; tests point it at small trainers of the same signature
        self._runtime()

    def _runtime(self):
        self._stop = threading.Event()
        self._stop_asked = False  # set by signal handlers, which must take no lock; the waiting loop passes it on
        self._thread: threading.Thread | None = None
        self._result: dict | None = None
        self._error: BaseException | None = None

    # the pickle (first submission and every requeue) carries only the arguments, never threads or results
    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state):
        module, _, fn = state.get("train_fn", TRAIN_FN).partition(":")  # a task pickled before the namespace
        state["train_fn"] = f"{new_name(module)}:{fn}"
        self.__dict__.update(state)
        self._runtime()

    @property
    def run_dir(self) -> Path:
        return run_path(self.root, self.run_id)

    def __repr__(self) -> str:
        return f"RunTask({self.run_id}, sweep={self.sweep!r})"

    def __call__(self) -> dict:
        # one compile cache per sweep root: runs of one shape (seeds, stages, requeues, other nodes on a shared
        # filesystem) reuse inductor's compiled kernels instead of compiling each anew; a user's own setting stands
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(self.root) / COMPILE_CACHE))
        work = self._work()
        dist = distributed_env(self.gpus)
        if self.threads:  # the trainer's torch uses the CPUs the job was given, not every core of the node
            os.environ["OMP_NUM_THREADS"] = str(self.threads)
            if "torch" in sys.modules:
                sys.modules["torch"].set_num_threads(self.threads)
        if os.environ.get("SUBMITIT_EXECUTOR") == "local" and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda signum, frame: self.request_stop())
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # whoever started the job may block it
        kwargs = {"device": self.device, "resume": True, "stop_event": self._stop, "sweep": self.sweep}
        if dist is not None:
            kwargs["distributed"] = dist
        self._thread = threading.Thread(target=self._train, args=(work, kwargs), name=f"train-{self.run_id}",
                                        daemon=True)
        self._thread.start()
        while self._thread.is_alive():  # join in slices: signal handlers run between them
            self._thread.join(0.25)
            if self._stop_asked and not self._stop.is_set():
                self._stop.set()
        if self._error is not None:
            raise self._error
        return self._check_result(self._result or {})

    def _work(self):
        """The training call, once the config is checked: kwargs -> the run's summary."""

        cfg = planned_config(self.config, self.run_id)
        if self.parent_id is not None:
            self._check_parent()
        train = _resolve(self.train_fn)
        return lambda kwargs: train(cfg, self.run_dir, **kwargs)

    def _check_result(self, summary: dict) -> dict:
        status = summary.get("status")
        if status == "failed":
            raise RuntimeError(f"run {summary.get('run_id', self.run_id)} failed: {summary.get('error')}")
        if status == "preempted" and not (self._stop.is_set() or self._stop_asked):
            raise RuntimeError(f"run {summary.get('run_id', self.run_id)} stopped as preempted without a stop "
                               "request")
        return summary

    def _train(self, work, kwargs):
        try:
            self._result = work(kwargs)
        except BaseException as e:  # re-raised in the main thread, where submitit records it
            self._error = e

    def request_stop(self) -> None:
        """Stop at the next step boundary: the trainer checkpoints and writes a "preempted" summary. Safe in a
        signal handler: it only sets a flag, which the loop waiting for the trainer passes on (an Event's set()
        takes a lock that a second signal, arriving inside the first handler, would wait on forever)."""
        self._stop_asked = True

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on preemption or timeout: stop at the next step boundary (the trainer writes
        its checkpoint and a "preempted" summary), then requeue a clean copy of this task."""
        self._stop.set()
        t0 = time.monotonic()
        if self._thread is not None:
            self._thread.join(self.checkpoint_wait_s)
        waited = time.monotonic() - t0
        alive = self._thread is not None and self._thread.is_alive()
        print(f"[costlaw sweep] run {self.run_id}: checkpoint requested; trainer "
              f"{'still busy after' if alive else 'stopped in'} {waited:.1f} s; requeueing", flush=True)
        return submitit.helpers.DelayedSubmission(self._fresh(), *args, **kwargs)

    def _fresh(self) -> RunTask:
        return RunTask(self.root, self.config, self.run_id, self.sweep, self.parent_id, self.threads, self.device,
                       self.gpus, self.checkpoint_wait_s, self.train_fn)

    def _check_parent(self):
        import json

        done = run_path(self.root, self.parent_id) / DONE
        if not done.exists():
            raise ParentNotCompleted(f"run {self.run_id} starts from run {self.parent_id}, which has not finished "
                                     f"(no {done}); resubmit the sweep once the parent completes")
        status = json.loads(done.read_text()).get("status")
        if status != "completed":
            raise ParentNotCompleted(f"run {self.run_id} starts from run {self.parent_id}, which ended {status}; "
                                     "it will not be continued")


class FusedRunTask(RunTask):
    """A fused group (runs/fusion.py: runs that differ only in their seed) as one job: the same stop, checkpoint
    and requeue contract as RunTask, for every member at once. `run_id` is the first member's (for logs); each
    member trains into its own run directory under its own id. A failed member fails the job."""

    def __init__(self, root: str, configs: list[dict], run_ids: list[str], sweep: str | None = None,
                 threads: int = 0, device: str = "auto", checkpoint_wait_s: float = 60.0):
        self.configs, self.run_ids = configs, run_ids
        super().__init__(root, configs[0], run_ids[0], sweep, None, threads, device, 1, checkpoint_wait_s)

    def __repr__(self) -> str:
        return f"FusedRunTask({', '.join(self.run_ids)}, sweep={self.sweep!r})"

    def _work(self):
        from costlaw.runs.fusion import train_fused

        cfgs = [planned_config(c, rid) for c, rid in zip(self.configs, self.run_ids)]
        dirs = [run_path(self.root, rid) for rid in self.run_ids]
        return lambda kwargs: {"run_id": self.run_id, "members": train_fused(cfgs, dirs, **kwargs)}

    def _check_result(self, summary: dict) -> dict:
        for s in summary.get("members", []):
            super()._check_result(s)
        return summary

    def _fresh(self) -> FusedRunTask:
        return FusedRunTask(self.root, self.configs, self.run_ids, self.sweep, self.threads, self.device,
                            self.checkpoint_wait_s)


def planned_config(config: dict, run_id: str):
    """The RunConfig a sweep planned as `run_id`; refused when today's code hashes it to another id."""
    from costlaw.runs.config import RunConfig

    cfg = RunConfig.from_dict(config)
    if cfg.run_id != run_id:
        raise RuntimeError(f"run {run_id}: the config now hashes to {cfg.run_id}; the code that defines "
                           "RunConfig changed since the sweep was planned. Plan and submit it again.")
    return cfg


def distributed_env(gpus: int):
    """For a multi-GPU run inside a submitit job: export torch.distributed's env:// variables for this task
    (one task per GPU) and return the TorchDistributedEnvironment; None for a single-process run."""
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job (called directly)
        return None
    if env.num_tasks <= 1 and gpus <= 1:
        return None
    dist = submitit.helpers.TorchDistributedEnvironment()
    # every task keeps all of the job's GPUs visible (the trainer takes cuda:LOCAL_RANK); a requeued or re-run
    # task may find the variables of its previous attempt, hence overwrite
    dist.export(set_cuda_visible_devices=False, overwrite=True)
    os.environ.setdefault("TORCH_DISTRIBUTED_BACKEND", "nccl" if gpus > 0 else "gloo")
    return dist


def _resolve(spec: str):
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)
