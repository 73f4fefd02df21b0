"""A ladder's GPU time, today's path against fused same-shape runs (issue 23), in one GPU job.

A fixed subset of a committed study spec (default: studies/gqa-heads-steps, (8,2) at every width d 128-512,
seeds 0-2, at a fixed share of each run's token budget) is submitted twice to the local executor on one GPU,
one submission after the other, through the CLI a user runs:

  old     costlaw sweep submit SPEC --executor local --runs-per-gpu K            (today's path: K runs per GPU)
  new     costlaw sweep submit SPEC --executor local --runs-per-gpu K2 --fuse    (each config's seeds fused)
  graphs  today's path with COSTLAW_COMPILE_MODE=reduce-overhead: each run's compiled step replayed from CUDA
          graphs (issue 23, item 2), to measure what launch overhead costs the small runs

Each gets its own root (so its own compile cache). GPU-seconds are each submission's wall time on the one GPU;
whole-sweep MFU is the ladder's training FLOPs (costmodel's C_train per token × tokens) over GPU-seconds × the
GPU's bf16 peak. Per run: tokens/s, MFU, compile seconds and validation loss from its summary. Validation losses
are compared run by run against the seed spread of the old path (the sd over seeds of each config).

  python benchmarks/ladder_bench_gpu.py --out benchmarks/results/ladder_bench.json   # ~8 min on one H200

Writes the JSON with gpu_seconds_old, gpu_seconds_new, gpu_seconds_ratio (new / old), sweep_mfu_old,
sweep_mfu_new and gpu, plus every run's numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = ROOT / "studies" / "gqa-heads-steps" / "spec.toml"
DEFAULT_WHERE = "model.n_heads == 8 and model.n_kv_heads == 2"
TOKENS_LINE = re.compile(r'^"train\.tokens"\s*=\s*"(?P<expr>[^"]+)"\s*$', re.M)


def subset_spec(spec: Path, share: float, seeds: list[int], name: str) -> str:
    """The spec's text with its token budget scaled by `share`, the given seeds and a sweep name of its own."""
    text = spec.read_text()
    m = TOKENS_LINE.search(text)
    if m is None:
        raise SystemExit(f"--spec: {spec} has no '\"train.tokens\" = \"...\"' line in [derived] to scale")
    text = text[:m.start()] + f'"train.tokens" = "round({share!r} * ({m["expr"]}))"' + text[m.end():]
    text = re.sub(r'^name\s*=\s*".*"$', f'name = "{name}"', text, count=1, flags=re.M)
    return re.sub(r"^seeds\s*=\s*\[[^\]]*\]", f"seeds = {seeds}", text, count=1, flags=re.M)


class PathFailed(Exception):
    pass


def submit(spec_path: Path, root: Path, where: str, runs_per_gpu: int, fuse: bool, log: Path) -> float:
    cmd = [sys.executable, "-m", "costlaw", "sweep", "submit", str(spec_path), "--executor", "local",
           "--root", str(root), "--runs-per-gpu", str(runs_per_gpu), "--where", where]
    if fuse:
        cmd.append("--fuse")
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if rc != 0:
        raise PathFailed(f"{' '.join(cmd)} exited {rc}; see {log}\n{why_failed(root)}")
    return wall


def why_failed(root: Path) -> str:
    """The failed runs' errors and the end of their jobs' stderr: a GPU call returns only what it prints."""
    out = []
    for p in sorted((root / "runs").glob("*/summary.json")):
        s = json.loads(p.read_text())
        if s.get("status") == "failed":
            out.append(f"{s['run_id']}: {s.get('error')}")
    for p in sorted((root / "submitit").rglob("*_log.err"))[:2]:
        out.append(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-40:]))
    return "\n".join(out[:60])


def runs_of(root: Path) -> list[dict]:
    from costlaw.costmodel.core.rundir import RunDir

    out = []
    for d in sorted((root / "runs").iterdir()):
        rd = RunDir(d)
        s, cfg = rd.summary(), rd.config()["config"]
        m = cfg["model"]
        out.append({"run_id": s["run_id"], "d_model": m["d_model"], "n_layers": m["n_layers"],
                    "n_heads": m["n_heads"], "n_kv_heads": m["n_kv_heads"], "seed": cfg["seed"],
                    "status": s["status"], "tokens": s["tokens"], "val_loss": s["val_loss"],
                    "tokens_per_s": s["tokens_per_s"], "mfu": s["mfu"], "compile_s": s["compile_s"],
                    "train_s": s.get("train_s"), "wall_s": s["wall_s"], "setup_s": s.get("setup_s"),
                    "eval_s": s.get("eval_s"),
                    "train_flops": s["costs"]["c_train_flops_per_token"] * s["tokens"]})
    return out


def time_split(runs: list[dict]) -> dict:
    """Mean seconds of a run's wall in compilation, the training steps after it, the trainer's setup (corpus,
    model; `setup_s`), the final evaluation (`eval_s`) and the rest (checkpoints, logs; where the summaries
    predate setup_s and eval_s, those too): fusion shrinks only the steps, so at a small share of the budget the
    rest decides. The process's start (Python, torch, CUDA) comes before the trainer's clock and is in none."""
    n = max(1, len(runs))
    comp = sum(r["compile_s"] or 0 for r in runs) / n
    train = sum(max(0.0, (r["train_s"] or 0) - (r["compile_s"] or 0)) for r in runs) / n
    setup = sum(r.get("setup_s") or 0 for r in runs) / n
    ev = sum(r.get("eval_s") or 0 for r in runs) / n
    rest = sum(r["wall_s"] or 0 for r in runs) / n - comp - train - setup - ev
    return {"compile": comp, "steps": train, "setup": setup, "eval": ev, "other": rest}


def sweep_mfu(runs: list[dict], gpu_seconds: float, peak: float) -> float:
    return sum(r["train_flops"] for r in runs) / (gpu_seconds * peak)


def compare(old: list[dict], new: list[dict]) -> dict:
    """Per run, new - old validation loss; per config, the old path's seed sd."""
    by_id = {r["run_id"]: r for r in new}
    diffs = [by_id[r["run_id"]]["val_loss"] - r["val_loss"] for r in old]
    configs: dict[tuple, list[float]] = {}
    for r in old:
        configs.setdefault((r["d_model"], r["n_heads"], r["n_kv_heads"]), []).append(r["val_loss"])
    sds = [statistics.stdev(v) for v in configs.values() if len(v) > 1]
    return {"val_loss_diff_max_abs": max(abs(d) for d in diffs), "val_loss_diff_mean": statistics.fmean(diffs),
            "val_loss_diff_sd": statistics.stdev(diffs) if len(diffs) > 1 else None,
            "seed_sd_old_median": statistics.median(sds) if sds else None,
            "seed_sd_old_max": max(sds) if sds else None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    p.add_argument("--where", default=DEFAULT_WHERE, help=f"runs of the spec to take (default: {DEFAULT_WHERE})")
    p.add_argument("--share", type=float, default=0.1, help="share of each run's token budget (default 0.1)")
    p.add_argument("--seeds", default="0,1,2", help="seeds of every config (default 0,1,2)")
    p.add_argument("--runs-per-gpu", type=int, default=6, help="old path's packing (default 6, the studies')")
    p.add_argument("--groups-per-gpu", type=int, default=3, help="new path's fused groups per GPU (default 3)")
    p.add_argument("--paths", default="old,new,graphs",
                   help="the paths to run, in order (default old,new,graphs); the ratio needs old and new")
    p.add_argument("--out", type=Path, help="write the JSON here (default: print only)")
    p.add_argument("--work", type=Path, help="sweep roots here (default: a temporary directory, removed)")
    a = p.parse_args()
    import torch

    from costlaw.costmodel.hardware import gpu

    name = torch.cuda.get_device_name(0)
    peak = gpu(name).peak_bf16_flops
    work = a.work or Path(tempfile.mkdtemp(prefix="ladder-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in a.seeds.split(",")]
    result: dict = {"gpu": name, "spec": str(a.spec.relative_to(ROOT) if a.spec.is_relative_to(ROOT) else a.spec),
                    "where": a.where, "share": a.share, "seeds": seeds, "runs_per_gpu_old": a.runs_per_gpu,
                    "groups_per_gpu_new": a.groups_per_gpu, "torch": torch.__version__}
    known = {"old": (a.runs_per_gpu, False, None), "new": (a.groups_per_gpu, True, None),
             "graphs": (a.runs_per_gpu, False, "reduce-overhead")}
    chosen = [x.strip() for x in a.paths.split(",") if x.strip()]
    if not chosen or any(x not in known for x in chosen):
        raise SystemExit(f"--paths: {a.paths!r}; choose from {', '.join(known)}")
    try:
        for key in chosen:
            k, fuse, mode = known[key]
            spec = work / f"{key}.toml"
            spec.write_text(subset_spec(a.spec, a.share, seeds, f"ladder-bench-{key}"))
            env_cache = work / f"{key}-root" / "compile-cache"
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(env_cache)  # each path compiles from a cold cache
            os.environ.pop("COSTLAW_COMPILE_MODE", None)
            if mode:
                os.environ["COSTLAW_COMPILE_MODE"] = mode
            try:
                wall = submit(spec, work / f"{key}-root", a.where, k, fuse, work / f"{key}.log")
            except PathFailed as e:  # the other paths still run; the JSON says why this one has no numbers
                result[f"error_{key}"] = str(e)
                print(f"{key}: FAILED\n{e}", flush=True)
                continue
            runs = runs_of(work / f"{key}-root")
            result[f"gpu_seconds_{key}"] = wall
            result[f"sweep_mfu_{key}"] = sweep_mfu(runs, wall, peak)
            result[f"runs_{key}"] = runs
            result[f"compile_s_{key}_sum"] = sum(r["compile_s"] or 0 for r in runs)
            result[f"time_split_{key}"] = split = time_split(runs)
            print(f"{key}: {len(runs)} runs in {wall:.1f} s, sweep MFU {result[f'sweep_mfu_{key}']:.3f}; per run "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in split.items()), flush=True)
        for key in ("new", "graphs"):
            if f"gpu_seconds_{key}" not in result or "gpu_seconds_old" not in result:
                continue
            ratio = "gpu_seconds_ratio" if key == "new" else f"gpu_seconds_ratio_{key}"
            result[ratio] = result[f"gpu_seconds_{key}"] / result["gpu_seconds_old"]
            diff = compare(result["runs_old"], result[f"runs_{key}"])
            result.update(diff if key == "new" else {f"{k}_{key}": v for k, v in diff.items()})
            print(f"ratio {key}/old {result[ratio]:.3f}; val loss |{key}-old| max {diff['val_loss_diff_max_abs']:.4f} "
                  f"(old seed sd median {diff['seed_sd_old_median']:.4f})")
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
