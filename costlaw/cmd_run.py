"""`costlaw run RUN.toml --root ROOT`: train and evaluate one run config into ROOT/runs/<run_id>/.

Every kind of run goes through runs.train.train_run: pretraining and later LM stages, and KV policy runs
(`train.trainable = "policy"`, trained by their method's task). The run directory follows
docs/run-directory.md, so `costlaw ingest ROOT` picks it up. SIGTERM, SIGINT and SIGUSR1 stop the run at the
next step boundary with a checkpoint (status "preempted"); `--resume` continues it exactly, from a checkpoint
that names this run and loads safely (runs/checkpoint.py). A finished run (DONE) is not retrained; a run
directory another trainer holds (trainer.lock) is refused, and so is a run whose estimated training memory
exceeds the device's (runs.config.check_memory), before anything is written. Exit codes (costmodel/core/
exitcodes.py): 0 completed, 1 diverged or failed (a failure prints its traceback; the run directory records it as
"failed"), 2 bad input (a refused checkpoint, run directory, device or size included), 3 preempted, 64 usage.
"""

from __future__ import annotations

import json
import os

from costlaw.costmodel.core import exitcodes
from costlaw.costmodel.core.rundir import RunDir, run_path

# a run's status -> the exit code it means
STATUS_CODES = {"completed": exitcodes.OK, "diverged": exitcodes.FAILED, "failed": exitcodes.FAILED,
                "preempted": exitcodes.INTERRUPTED}


def add_arguments(p):
    from costlaw import options

    p.add_argument("config", help="a run config TOML (or a run directory's config.json)")
    options.add_root(p, "results root: the run is written to DIR/runs/<run_id>/")
    p.add_argument("--device", default="auto", help="cuda | cpu | auto (cuda when available); cuda:N picks a GPU")
    p.epilog = ("exit codes: " + "; ".join(f"{c} {what}" for c, what in exitcodes.TABLE))
    p.add_argument("--resume", action="store_true",
                   help="continue from the run directory's checkpoint (default: start the run over)")
    p.add_argument("--sweep", help="sweep name recorded in config.json")
    options.bounded(p.add_argument(
        "--threads", type=int, help="torch CPU threads (default on --device cpu: 1 unless OMP_NUM_THREADS is set, as "
                                    "tiny CPU models run fastest single-threaded and parallel runs do not "
                                    "oversubscribe; 0 = torch's default)"), 0, 4096)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    options.add_json(p, "print the summary as JSON")
    options.add_wide(p)


def load_config(path: str):
    """The RunConfig in a TOML file, or in a run directory's config.json (its "config" object, or the whole
    document); a file that is not text, not JSON or not an object is refused in one line."""
    from costlaw import options
    from costlaw.costmodel.core.errors import CostlawError
    from costlaw.runs.config import RunConfig

    what = "a run config TOML or a run directory's config.json"
    if not path.endswith(".json"):
        options.input_file(path, "config", what)
        return RunConfig.load(path)
    doc = options.json_object(path, "config", what)
    inner = doc.get("config", doc)
    if not isinstance(inner, dict):
        raise CostlawError(f"config: {path!r} has a \"config\" that is a JSON {type(inner).__name__}, not an "
                           f"object; give {what}")
    return RunConfig.from_dict(inner)


def main(args) -> int:
    import signal
    import threading

    from costlaw.costmodel.core.units import binary_bytes, si, table, terminal_width
    from costlaw.options import output_dir

    cfg = load_config(args.config)
    root = output_dir(args.root, "--root", "the results root (the run goes to DIR/runs/<run_id>/)")
    threads = args.threads
    if threads is None and args.device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        threads = 1
    if threads:
        import torch

        torch.set_num_threads(threads)
    run_dir = run_path(root, cfg.run_id)
    rd = RunDir(run_dir)
    if rd.is_done():
        summary = rd.summary()
        print(f"run {cfg.run_id} already finished ({summary['status']}) in {run_dir}; remove it to run again")
    else:
        from costlaw.runs.train import train_run

        stop = threading.Event()

        def on_signal(signum, frame):
            if stop.is_set() and signum == signal.SIGINT:
                raise KeyboardInterrupt
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, on_signal)
        summary = train_run(cfg, run_dir, device=args.device, resume=args.resume, stop_event=stop, sweep=args.sweep,
                            progress=not args.quiet)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"run {cfg.run_id}  {summary['status']}  -> {run_dir}")
        row = {"steps": summary["steps"], "tokens": si(summary["tokens"]), "final loss": summary["final_loss"],
               "val loss": summary.get("val_loss"), "tok/s": si(summary.get("tokens_per_s")),
               "MFU": f"{summary['mfu']:.1%}" if summary.get("mfu") else None,
               "peak mem": binary_bytes(summary.get("peak_memory_bytes")), "wall s": summary.get("wall_s")}
        print(table([row], width=None if args.wide else terminal_width()))
    return STATUS_CODES.get(summary["status"], exitcodes.FAILED)
