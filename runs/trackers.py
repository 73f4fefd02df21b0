"""Trackers: each row the trainer appends to metrics.jsonl, also sent live to TensorBoard event files and/or a
Weights & Biases run, as the run config's `log` table asks (runs.config.LogConfig; off by default). Both are
optional extras (`pip install costlaw[tensorboard]`, `costlaw[wandb]`), imported only when asked for.

metrics.jsonl stays the record the store reads; a tracker is a view of it. So a tracker that fails mid-run (a full
disk, a lost network) is dropped with a line in train.log and training goes on, while a tracker asked for but not
installed is refused in one line before anything is written (`check`).

Where they write: `<run_dir>/tensorboard/` (one event stream; a resumed run purges the steps after its checkpoint,
as the store keeps the last line per step) and `<run_dir>/wandb/` (W&B's own layout; the W&B run's id is the run
id, so a resumed run continues it; offline mode needs no network and `wandb sync <run_dir>/wandb/offline-run-*`
uploads it later). A run started over removes both.
"""

from __future__ import annotations

import importlib.util
import math
import shutil

from costlaw.costmodel.core.errors import ConfigError

TB_DIR, WANDB_DIR = "tensorboard", "wandb"
SCALARS = ("loss", "lr", "grad_norm", "tokens_per_s", "tokens")  # metrics.jsonl's per-interval numbers


def check(cfg) -> None:
    """Every tracker `cfg.log` asks for is installed; else one line naming the extra to install."""
    if cfg.log.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("log.tensorboard", "needs the tensorboard package; pip install 'costlaw[tensorboard]' or "
                                             "set log.tensorboard = false")
    if cfg.log.wandb and importlib.util.find_spec("wandb") is None:
        raise ConfigError("log.wandb", "needs the wandb package; pip install 'costlaw[wandb]' or set log.wandb = false")


class Trackers:
    """The trackers of one training session on rank 0. `resumed_step`: the checkpoint's step when resuming (the
    event stream drops what a killed session wrote after it), None for a fresh start (old tracker files go)."""

    def __init__(self, cfg, rd, resumed_step: int | None):
        self.rd = rd
        self.active: dict[str, object] = {}
        if resumed_step is None:
            for name in (TB_DIR, WANDB_DIR):
                shutil.rmtree(rd.file(name), ignore_errors=True)
        if cfg.log.tensorboard:
            self._open("tensorboard", lambda: _tensorboard(rd.file(TB_DIR), resumed_step))
        if cfg.log.wandb:
            self._open("wandb", lambda: _wandb(cfg, rd))

    def _open(self, name: str, make) -> None:
        try:
            self.active[name] = make()
        except Exception as e:  # a tracker that cannot start must not stop the run: metrics.jsonl has it all
            self.rd.log(f"tracker {name} did not start ({type(e).__name__}: {e}); training goes on without it")

    def log(self, row: dict) -> None:
        """One metrics.jsonl row (its `step` and the numbers of SCALARS)."""
        step = int(row["step"])
        values = {k: float(row[k]) for k in SCALARS
                  if isinstance(row.get(k), (int, float)) and math.isfinite(row[k])}
        for name, tracker in list(self.active.items()):
            try:
                if name == "tensorboard":
                    for k, v in values.items():
                        tracker.add_scalar(f"train/{k}", v, step)
                    tracker.flush()
                else:
                    tracker.log({f"train/{k}": v for k, v in values.items()}, step=step)
            except Exception as e:
                self._drop(name, e)

    def close(self, summary: dict | None = None) -> None:
        """Record the final status and validation loss (when there is one) and close every tracker."""
        for name, tracker in list(self.active.items()):
            try:
                if name == "tensorboard":
                    if summary and summary.get("val_loss") is not None:
                        tracker.add_scalar("eval/val_loss", float(summary["val_loss"]), int(summary["steps"]))
                    tracker.close()
                else:
                    if summary:
                        tracker.summary.update({k: summary.get(k) for k in ("status", "val_loss", "final_loss",
                                                                             "steps", "tokens")})
                    tracker.finish(exit_code=0 if not summary or summary.get("status") != "failed" else 1)
            except Exception as e:
                self._drop(name, e)
        self.active = {}

    def _drop(self, name: str, e: Exception) -> None:
        self.active.pop(name, None)
        self.rd.log(f"tracker {name} failed ({type(e).__name__}: {e}); training goes on without it")


def _tensorboard(path, resumed_step: int | None):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(path), purge_step=None if resumed_step is None else resumed_step + 1)


def _wandb(cfg, rd):
    import wandb

    rd.file(WANDB_DIR).mkdir(parents=True, exist_ok=True)
    # console off: W&B would otherwise wrap this process's stdout and stderr, which a sweep's job logs are; no
    # system-stats sampler beside the trainer; the run's config and env already say which code ran
    settings = wandb.Settings(console="off", silent=True, save_code=False, disable_git=True, x_disable_stats=True)
    return wandb.init(project=cfg.log.wandb_project, entity=cfg.log.wandb_entity or None, mode=cfg.log.wandb_mode,
                      dir=str(rd.path), id=cfg.run_id, name=cfg.name or cfg.run_id, config=cfg.to_dict(),
                      resume="allow", reinit="create_new", settings=settings)
