"""The run directory: the files a worker writes and the store reads (docs/run-directory.md is the contract).

This module is the contract's one statement: file names, the format number, the statuses, the run id, the
writers the trainer uses and the readers everything else uses. A worker writes only its own directory:
`config.json` first, `metrics.jsonl` / `evals.jsonl` appended a line at a time, `summary.json`, and `DONE`
last (whole files through core.files' atomic write). Standard library only: the store, the sweep planner
and test fixtures use it without torch.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
from pathlib import Path

from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.files import (
    append_jsonl,
    clean_tmp,
    read_json,
    read_jsonl,
    write_atomic,
    write_json_atomic,
)

FORMAT = 1
TERMINAL = ("completed", "diverged", "failed")
STATUSES = TERMINAL + ("preempted",)

CONFIG, METRICS, EVALS, SUMMARY, DONE = "config.json", "metrics.jsonl", "evals.jsonl", "summary.json", "DONE"
CHECKPOINT, LOG, LOCK = "checkpoint.pt", "train.log", "trainer.lock"
CHECKPOINT_HEADER = "checkpoint.json"  # the run id and step of checkpoint.pt, read before its weights
RUNS = "runs"  # a sweep root keeps run directories in <root>/runs/<run_id>


def run_path(root: str | Path, run_id: str) -> Path:
    """Where run `run_id` lives under a results root: `<root>/runs/<run_id>`."""
    return Path(root) / RUNS / run_id


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


NOT_IDENTITY = ("name", "log")  # a label, and where metrics are also sent: neither changes what is trained


def run_id_of(config: dict) -> str:
    """A run's id: sha256 of its canonical run config (`RunConfig.to_dict()`) without the free-form `name` and the
    trackers of `log`, first 16 hex digits. The same run always lands in the same directory."""
    d = {k: v for k, v in config.items() if k not in NOT_IDENTITY}
    return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


class RunDir:
    """One run directory: the writers a worker uses, and readers for the worker itself (resume, idempotence),
    sweeps and tests. The store reads the same files in bulk (costlaw.analysis.store.rundirs)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    # ---- writers
    def write_config(self, cfg, base_run_id: str | None = None, sweep: str | None = None,
                     extra: dict | None = None) -> dict:
        """config.json: what this run is. `cfg` is a RunConfig (anything with to_dict / run_id / model)."""
        doc = {"format": FORMAT, "run_id": cfg.run_id, "model_id": cfg.model.config_id, "config": cfg.to_dict(),
               "base_run_id": base_run_id, "sweep": sweep, "created": utc_now()}
        return self.write_config_doc({**doc, **(extra or {})})

    def write_config_doc(self, doc: dict) -> dict:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.file(CONFIG), doc)
        return doc

    def append_metrics(self, row: dict) -> None:
        append_jsonl(self.file(METRICS), row)

    def append_eval(self, name: str, tags: dict, metrics: dict) -> None:
        append_jsonl(self.file(EVALS), {"eval": name, "tags": tags, "metrics": metrics})

    def write_summary(self, summary: dict) -> None:
        status = summary.get("status")
        if status not in STATUSES:
            raise ValueError(f"summary status {status!r} is not one of {', '.join(STATUSES)}")
        write_json_atomic(self.file(SUMMARY), {"format": FORMAT, **summary})

    def write_done(self, run_id: str, status: str) -> None:
        """DONE, last of all, and only for a terminal status."""
        if status not in TERMINAL:
            raise ValueError(f"DONE is only written for {', '.join(TERMINAL)}, not {status!r}")
        write_atomic(self.file(DONE), json.dumps({"run_id": run_id, "status": status}) + "\n")

    def log(self, line: str) -> None:
        """train.log: human-readable, timestamped."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.file(LOG), "a") as f:
            f.write(f"{utc_now()} {line}\n")

    def reset(self) -> None:
        """Start over: remove everything a previous attempt wrote (a fresh, non-resumed run)."""
        for name in (DONE, SUMMARY, METRICS, EVALS, CHECKPOINT, CHECKPOINT_HEADER, CONFIG):
            with contextlib.suppress(FileNotFoundError):
                self.file(name).unlink()

    def clean_tmp(self) -> int:
        """Remove temporary files a killed writer left behind. Returns how many."""
        return clean_tmp(self.path)

    # ---- readers
    def exists(self) -> bool:
        return self.file(CONFIG).exists()

    def is_done(self) -> bool:
        return self.file(DONE).exists()

    def done(self) -> dict | None:
        return read_json(self.file(DONE)) if self.is_done() else None

    def finished_or_claim(self, run_id: str) -> dict | None:
        """The summary if this directory holds the finished run `run_id` (training is idempotent), else None;
        a directory that holds another run is refused."""
        if self.is_done():
            return self.summary()
        existing = self.config()
        if existing is not None and existing.get("run_id") != run_id:
            raise CostlawError(f"run_dir: {str(self.path)!r} holds run {existing.get('run_id')}, not {run_id}; "
                               f"use the run's own directory ({run_path('<root>', '<run_id>')})")
        return None

    def config(self) -> dict | None:
        return read_json(self.file(CONFIG)) if self.file(CONFIG).exists() else None

    def summary(self) -> dict | None:
        return read_json(self.file(SUMMARY)) if self.file(SUMMARY).exists() else None

    def metrics(self) -> list[dict]:
        return read_jsonl(self.file(METRICS))

    def evals(self) -> list[dict]:
        return read_jsonl(self.file(EVALS))

    def status(self) -> str:
        """completed | diverged | failed (DONE), preempted (summary without DONE), incomplete, or absent."""
        if self.is_done():
            return self.done()["status"]
        s = self.summary()
        if s is not None:
            return s["status"]
        return "incomplete" if self.exists() else "absent"
