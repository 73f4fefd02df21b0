"""One round of the long-context ladder (spec-r2.toml) in one job: train the round's runs, then score the KV
policies on what it trained, then print one line per run.

  python studies/long-context/round.py --where "seed == 0" --root /tmp/lc --budget-s 520 --runs-per-gpu 8

1. `costlaw sweep submit SPEC --executor local --where EXPR` for at most --budget-s seconds (a GPU call is
   bounded; a trainer still running when it stops finishes on its own and the next call collects it);
2. beside it, as runs finish, `costlaw kv-eval` (--kv-parallel at a time) on every completed dense extension (stage
   extend, all layers full) not yet scored: the training-free policies (--policies, default snapkv) at --keep; and
   each completed compress-stage run (a trained policy, e.g. KV-Distill) on its own base at its own keep ratio.
   kv-eval runs go to ROOT-kv, one per call; none starts after --until-s;
3. a table of every run (status, N, val loss), and `ROOT/round.json` with the kv-eval calls made; with --out, a
   tarball of both roots and the log without checkpoints (what a GPU call sends back).

Ingest afterwards: `costlaw ingest --root ROOT --db DB` and `costlaw ingest --root ROOT-kv --db DB`.
The same script rehearses a round on a CPU at a small scale (a spec with smaller shapes, --device cpu).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def runs(root: Path) -> list[dict]:
    out = []
    for d in sorted((root / "runs").glob("*")):
        try:
            doc = json.loads((d / "config.json").read_text())
            summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
        except (OSError, json.JSONDecodeError):
            continue
        out.append({"dir": d, "doc": doc, "cfg": doc["config"], "summary": summary, "done": (d / "DONE").exists()})
    return out


def dense(cfg: dict) -> bool:
    return all(str(p).startswith("full") for p in cfg["model"].get("layout") or ["full"])


def kv_calls(root: Path, kv_root: Path, policies: str, keeps: str) -> list[list[str]]:
    """The kv-eval calls this root's finished runs need that kv_root does not hold yet: a kv-eval run names its
    base (base_run_id) and the policy runs it read (policy_runs)."""
    scored, policy_runs = set(), set()
    for k in runs(kv_root) if (kv_root / "runs").exists() else []:
        if k["done"]:
            used = {Path(v).name for v in (k["doc"].get("policy_runs") or {}).values()}
            policy_runs |= used
            if not used:
                scored.add(k["doc"].get("base_run_id"))
    calls = []
    for r in runs(root):
        cfg, rid = r["cfg"], r["dir"].name
        if not r["done"] or r["summary"].get("status") != "completed":
            continue
        if cfg.get("stage") == "extend" and dense(cfg) and rid not in scored:
            calls.append([str(r["dir"]), "--policies", policies, "--keep", keeps])
        policy = cfg["model"].get("kv_policy")
        if cfg.get("stage") == "compress" and policy and rid not in policy_runs:
            base = Path(cfg["train"]["init_from"]).name
            calls.append([str(root / "runs" / base), "--policies", policy["method"], "--keep", str(policy["keep"]),
                          "--policy-run", f"{policy['method']}={r['dir']}"])
    return calls


def _keep(t):
    return None if t.name.endswith(".pt") or "/compile-cache" in f"/{t.name}" else t


def pack(path: Path, items: list[Path]) -> None:
    """A tarball of the round's run directories and log, without checkpoints (*.pt) or the compile cache: a GPU
    call returns files of at most 16 MiB, and the store needs only configs, summaries, metrics and evals."""
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for item in items:
            if item.exists():
                tar.add(item, arcname=item.name, filter=_keep)
    print(f"packed {path} ({path.stat().st_size / 2**20:.1f} MiB)", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", type=Path, default=HERE / "spec-r2.toml")
    p.add_argument("--where", required=True, help="the round's runs (costlaw sweep submit --where)")
    p.add_argument("--root", type=Path, required=True, help="the sweep root; kv-eval runs go to ROOT-kv")
    p.add_argument("--budget-s", type=float, default=520, help="seconds the sweep may train (default 520)")
    p.add_argument("--until-s", type=float, help="seconds after which no kv-eval starts (default: --budget-s + 60)")
    p.add_argument("--runs-per-gpu", default="8")
    p.add_argument("--max-parallel", help="local executor's trainers at a time (default: its own)")
    p.add_argument("--order", default="chains", help="costlaw sweep submit --order (default chains: a round cut "
                                                     "short leaves whole pretrain-extend-compress chains)")
    p.add_argument("--kv-parallel", type=int, default=4, help="kv-eval calls at a time, beside the sweep")
    p.add_argument("--device", default="auto")
    p.add_argument("--policies", default="snapkv", help="training-free policies on each dense extension")
    p.add_argument("--keep", default="0.5,0.25,0.1")
    p.add_argument("--retrieval-samples", default="34",
                   help="passkey samples per depth and keep: 3 depths x 34 put a keep's accuracy within se 0.05")
    p.add_argument("--samples", default="64", help="kv-eval's val windows per policy and keep ratio")
    p.add_argument("--out", type=Path, help="also pack ROOT and ROOT-kv (without checkpoints) and the round's log "
                                            "into OUT/round.tgz: what a GPU call returns")
    a = p.parse_args()
    kv_root = a.root.with_name(a.root.name + "-kv")
    log = a.root.parent / f"{a.root.name}-round.log"
    until = a.until_s if a.until_s is not None else a.budget_s + 60
    t0 = time.monotonic()
    sub = ["sweep", "submit", str(a.spec), "--executor", "local", "--root", str(a.root), "--where", a.where,
           "--runs-per-gpu", a.runs_per_gpu, "--device", a.device, "--order", a.order]
    if a.max_parallel:
        sub += ["--max-parallel", a.max_parallel]
    out = open(log, "a")  # noqa: SIM115 (the sweep and the kv-evals write to it until the round ends)
    sweep = subprocess.Popen([sys.executable, "-m", "costlaw", *sub], stdout=out, stderr=subprocess.STDOUT)
    # kv-evals start as their runs finish, beside the trainers, so the GPU is not idle while the last ones train
    started: dict[tuple, subprocess.Popen] = {}
    # two threads each, as the local executor gives its trainers: torch's default (every core) each would starve them
    kv_env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    done = []
    while True:
        now = time.monotonic() - t0
        if sweep.poll() is None and now > a.budget_s:
            sweep.terminate()  # its trainers go on and finish on their own; the next call collects them
            sweep.wait()
            print(f"sweep stopped at its budget, {now:.0f} s", flush=True)
        for c, proc in list(started.items()):
            if proc.returncode is None and proc.poll() is not None:
                done.append({"args": list(c), "rc": proc.returncode})
                print(f"kv-eval rc={proc.returncode} {Path(c[0]).name} {' '.join(c[1:5])} at {now:.0f} s", flush=True)
        running = sum(proc.returncode is None for proc in started.values())
        todo = [c for c in kv_calls(a.root, kv_root, a.policies, a.keep) if tuple(c) not in started]
        while todo and running < a.kv_parallel and now < until:
            c = todo.pop(0)
            started[tuple(c)] = subprocess.Popen(
                [sys.executable, "-m", "costlaw", "kv-eval", *c, "--root", str(kv_root), "--device", a.device,
                 "--retrieval-samples", a.retrieval_samples, "--samples", a.samples, "--decode-tokens", "0"],
                stdout=out, stderr=subprocess.STDOUT, env=kv_env)
            running += 1
        if sweep.poll() is not None and not running and (not todo or now >= until):
            break
        time.sleep(5)
    print(f"sweep rc={sweep.returncode}, {len(done)} kv-eval calls, at {time.monotonic() - t0:.0f} s (log {log})",
          flush=True)
    a.root.mkdir(parents=True, exist_ok=True)
    (a.root / "round.json").write_text(json.dumps({"where": a.where, "kv_eval": done}, indent=2))
    if a.out:
        pack(a.out / "round.tgz", [a.root, kv_root, log])
    for r in runs(a.root):
        m, s = r["cfg"]["model"], r["summary"]
        pol = m.get("kv_policy") or {}
        print(r["dir"].name, r["cfg"].get("stage"), m["d_model"], m["n_layers"], m["n_heads"], m["n_kv_heads"],
              "dense" if dense(r["cfg"]) else "hybrid", pol.get("method", ""), pol.get("keep", ""),
              r["cfg"].get("seed"), s.get("status", "running"), s.get("val_loss"), round(s.get("wall_s") or 0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
