"""`costlaw sweep plan|submit|status|resubmit`: a sweep spec (TOML) -> runs -> submitit -> status.

  costlaw sweep plan SPEC [--json] [--gpu H100] [--mfu 0.35] [--root DIR] [--where EXPR]
  costlaw sweep submit SPEC --executor slurm|local|debug --root DIR [--max-parallel N] [--wait] [--where EXPR]
  costlaw sweep status --root DIR [--json] [--lines N]
  costlaw sweep resubmit --root DIR --failed [--executor ...] [--max-parallel N] [--wait]

`plan` never imports torch. `submit` validates the whole spec (and that the executor is reachable) before it
creates anything under --root.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

EXECUTORS = ("slurm", "local", "debug")


def add_arguments(p):
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def common_plan(q):
        q.add_argument("--gpu", default="H100", help="GPU for the GPU-hours estimate (default H100)")
        q.add_argument("--mfu", type=float, default=0.35, help="assumed model FLOPs utilisation (default 0.35)")
        q.add_argument("--where", help="only the runs whose config satisfies this formula (and their parents), "
                                       "e.g. \"model.d_model <= 320\": one round of a study")

    q = sub.add_parser("plan", help="every run the spec would launch, with N, tokens, FLOPs, GPU-hours, "
                                    "C_infer / M_infer at the spec's contexts")
    q.add_argument("spec", help="sweep spec TOML")
    q.add_argument("--json", action="store_true", help="machine-readable: {sweep, totals, runs}")
    q.add_argument("--root", default=".", help="sweep root; later stages' run ids depend on it (default .)")
    common_plan(q)

    q = sub.add_parser("submit", help="submit the runs through submitit (DONE runs are skipped)")
    q.add_argument("spec", help="sweep spec TOML")
    q.add_argument("--executor", required=True, choices=EXECUTORS, help="slurm (job arrays), local (this machine, "
                                                                          "throttled), debug (in-process)")
    q.add_argument("--root", required=True, help="directory for run directories, submitit logs and sweep.json")
    _run_args(q)
    common_plan(q)

    q = sub.add_parser("status", help="counts by state, and failures with the last lines of their logs")
    q.add_argument("--root", required=True, help="the sweep's root (holds sweep.json)")
    q.add_argument("--json", action="store_true")
    q.add_argument("--lines", type=int, default=8, help="log lines shown per failed run (default 8)")
    q.add_argument("--all", action="store_true", help="list every run (a large sweep lists its unfinished runs)")

    q = sub.add_parser("resubmit", help="resubmit failed, preempted-not-running and incomplete runs "
                                        "(same run ids; they resume from their checkpoints)")
    q.add_argument("--root", required=True, help="the sweep's root (holds sweep.json)")
    q.add_argument("--failed", action="store_true", required=True,
                   help="resubmit runs that failed, were preempted and are not running, or never finished")
    q.add_argument("--executor", choices=EXECUTORS, help="default: the executor of the last submission")
    _run_args(q)


def _run_args(q):
    q.add_argument("--max-parallel", type=int, help="local: runs at a time (default CPUs / cpus per run, "
                                                    "or GPUs / gpus per run)")
    q.add_argument("--runs-per-gpu", type=int, default=1,
                   help="local: pack this many runs on each GPU at once (default 1)")
    q.add_argument("--device", default="auto", help="device the trainer uses: auto | cpu | cuda (default auto)")
    q.add_argument("--wait", action="store_true", help="slurm: poll until no run is pending or running")
    q.add_argument("--poll", type=float, default=5.0, help="seconds between polls with --wait (default 5)")


def main(args) -> int:
    return {"plan": _plan, "submit": _submit, "status": _status, "resubmit": _resubmit}[args.action](args)


def _log(msg: str) -> None:
    print(f"[costlaw sweep] {msg}", file=sys.stderr, flush=True)


def _plan(args) -> int:
    from costlaw.sweeps import expand, plan, spec

    s = spec.load(args.spec)
    runs = expand.expand(s, args.root)
    if args.where:
        from costlaw.sweeps.select import select

        chosen = select(runs, args.where)
        runs = [r for r in runs if r.run_id in chosen]
    rows = plan.plan_rows(runs, s.contexts, gpu=args.gpu, mfu=args.mfu)
    tot = plan.totals(rows, args.gpu, args.mfu)
    if args.json:
        print(json.dumps({"sweep": {"name": s.name, "description": s.description, "runs_cap": s.runs_cap,
                                    "contexts": list(s.contexts), "seeds": list(s.seeds),
                                    "stages": [st.name for st in s.stages]},
                          "totals": tot, "runs": rows}, indent=1))
    else:
        print(plan.render(s, rows, tot))
    return 0


def _check_run_args(args) -> None:
    from costlaw.costmodel import CostlawError

    for flag, v in (("--max-parallel", args.max_parallel), ("--runs-per-gpu", args.runs_per_gpu)):
        if v is not None and v < 1:
            raise CostlawError(f"{flag}: must be >= 1, got {v}")


def _submit(args) -> int:
    from costlaw.sweeps import submit

    _check_run_args(args)
    root = Path(args.root).resolve()
    submit.submit_spec(args.spec, root, args.executor, max_parallel=args.max_parallel, device=args.device,
                       gpu=args.gpu, mfu=args.mfu, runs_per_gpu=args.runs_per_gpu, where=args.where)
    return _after(args, root, args.executor)


def _resubmit(args) -> int:
    from costlaw.sweeps import submit

    _check_run_args(args)
    root = Path(args.root).resolve()
    sub = submit.resubmit(root, args.executor, max_parallel=args.max_parallel, device=args.device,
                          runs_per_gpu=args.runs_per_gpu)
    return _after(args, root, sub["executor"])


def _status(args) -> int:
    from costlaw.sweeps import status

    st = status.collect(args.root, n_lines=args.lines)
    if args.json:
        print(json.dumps(st, indent=1))
    else:
        print(status.render(st, all_runs=args.all))
    return 0


def _after(args, root: Path, executor: str) -> int:
    from costlaw.sweeps import status

    if executor == "slurm" and args.wait:
        st = status.wait(root, poll_s=args.poll, echo=_log)
    else:
        st = status.collect(root)
    counts = ", ".join(f"{v} {k}" for k, v in st["counts"].items() if v)
    print(f"sweep {st['name']}: {counts}")
    print("next:")
    print(f"  costlaw sweep status --root {root}")
    print(f"  costlaw ingest --root {root} --db {root / 'results.duckdb'}")
    if st["counts"]["failed"] or st["counts"]["preempted"] or st["counts"]["incomplete"]:
        print(f"  costlaw sweep resubmit --root {root} --failed")
    return 0
