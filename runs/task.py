"""What a run trains: the task interface the one Trainer (runs/train.py) drives, and the registry of tasks.

The Trainer owns the lifecycle of every run — run directory and lock, ranks, seeds, model, base weights
(`train.init_from`), AdamW and its schedule, gradient clipping, checkpoints and exact resume, divergence checks,
preemption, the summary. A task says what differs between kinds of training:

- what is trainable: `attach(model)` adds the task's own modules before the base weights load, `parameters(model)`
  picks what the optimizer trains (runs.task.trainable_parameters: everything, or a KV policy's parameters);
- the batch: `start(trainer)` opens the batch source at the trainer's step, `next_batch()` returns a
  runs.data.loader.Step (this rank's micro-batches, and `tokens`, the step's loss normaliser over all ranks),
  `stepped(batch)` records a finished step, `close()`; `state_dict()` / `load_state_dict(ck)` carry the data
  position through checkpoints;
- the loss: `loss(micro)`, the summed loss of one micro-batch: the Trainer backpropagates
  loss · world / step tokens, and logs Σ loss / Σ tokens per interval;
- the divergence rule: `loss_bound()`, the interval loss above which a run has diverged (on top of the Trainer's
  finite loss and gradient norm checks), stated by the task because only it knows its loss's scale;
- the evaluation: `evaluate(trainer)` after training completes (rank 0), which writes evals.jsonl and returns
  `val_loss` and `kv_bytes_measured` for the summary; `data_summary()` adds to the summary's `data`,
  `flops_per_token()` prices a trained token for MFU.

Tasks register by name (`@register_task`); `task_for(cfg)` picks one: "lm" for `train.trainable = "all"`
(runs/lm_task.py), the KV policy's method for `"policy"` (runs/kv/tasks.py). A method without a task is a
config error, never another task's loss.
"""

from __future__ import annotations

import importlib

from costlaw.costmodel.core.errors import ConfigError

TASKS: dict[str, type[Task]] = {}
# modules whose import registers tasks; imported on the first lookup, so a run loads the KV policies' code only
# when it asks for a task
PROVIDERS = ("costlaw.runs.lm_task", "costlaw.runs.kv")
DIVERGE_FACTOR = 10.0  # LM-scale losses: ten times a uniform guess (ln V nats) is a run that has blown up


def register_task(cls: type[Task]) -> type[Task]:
    if cls.name in TASKS and TASKS[cls.name] is not cls:
        raise ValueError(f"task {cls.name!r} is registered twice ({TASKS[cls.name].__qualname__}, {cls.__qualname__})")
    TASKS[cls.name] = cls
    return cls


def task_key(cfg) -> str:
    """The registry key of a run's task: "lm" when every parameter trains, else the KV policy's method."""
    if cfg.train.trainable == "all":
        return "lm"
    return cfg.model.kv_policy.method if cfg.model.kv_policy is not None else ""


def task_for(cfg) -> Task:
    """The task that trains `cfg`, checked (config errors here come before the run directory is touched)."""
    for module in PROVIDERS:
        importlib.import_module(module)
    key = task_key(cfg)
    if key not in TASKS:
        trained = ", ".join(k for k in TASKS if k != "lm")
        raise ConfigError("train.trainable", f"\"policy\" but kv_policy method {key or None!r} has no training task "
                                             f"(methods with one: {trained}); use trainable = \"all\" or one of "
                                             "those methods")
    task = TASKS[key](cfg)
    task.check()
    return task


def trainable_parameters(model, cfg) -> list:
    """The parameters `cfg.train.trainable` trains: every one ("all"), or the KV policy's (`policy`: the model's
    `policy_parameters()`; everything else is frozen)."""
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


class Task:
    """The interface (module docstring). Subclasses set `name` and define start, next_batch, loss, loss_bound and
    evaluate; the other methods are hooks with nothing to do by default."""

    name = ""
    compile = False  # the Trainer may torch.compile the model's forward for `loss` (train.compile, CUDA)
    # the loss runs through the model's forward, so DistributedDataParallel can reduce gradients during backward;
    # otherwise the Trainer all-reduces the trainable gradients after a step's micro-batches
    ddp = False

    def __init__(self, cfg):
        self.cfg = cfg

    def check(self) -> None:
        """Config errors the task can find before anything is written."""

    def attach(self, model) -> None:
        """Add the task's own modules to `model` (before the base weights load)."""

    def parameters(self, model) -> list:
        return trainable_parameters(model, self.cfg)

    def setup(self, trainer) -> None:
        """Everything the batches and the loss need, once the model, optimizer and base weights are in place."""

    def start(self, trainer) -> None:
        """Open the batch source at `trainer.step` (after any restore)."""
        raise NotImplementedError(f"task {self.name!r} does not define start")

    def next_batch(self):
        """The next step's batch: a runs.data.loader.Step."""
        raise NotImplementedError(f"task {self.name!r} does not define next_batch")

    def stepped(self, batch) -> None:
        """`batch` finished its optimizer step."""

    def close(self) -> None:
        """Stop the batch source."""

    def loss(self, micro):
        """The summed loss of one micro-batch of `next_batch()` (a scalar tensor with a graph)."""
        raise NotImplementedError(f"task {self.name!r} does not define loss")

    def loss_bound(self) -> float:
        """The interval loss above which the run has diverged; say why it is the bound."""
        raise NotImplementedError(f"task {self.name!r} does not define loss_bound")

    def evaluate(self, trainer) -> dict:
        """Evaluate the trained model into evals.jsonl (rewritten whole); return `val_loss` and
        `kv_bytes_measured`."""
        raise NotImplementedError(f"task {self.name!r} does not define evaluate")

    def state_dict(self) -> dict:
        """Checkpoint entries of the task's own (top-level keys of the checkpoint)."""
        return {}

    def load_state_dict(self, ck: dict) -> None:
        """Restore from a checkpoint (the whole dict; the task reads its own keys)."""

    def data_summary(self) -> dict:
        """Entries for the summary's `data` (the Trainer fills the corpus's)."""
        return {}

    def flops_per_token(self) -> float | None:
        """Training FLOPs per token, for MFU; None where the analytic model does not price this training."""
        return None
