"""GPU benchmark of the compressed family: NLL increase vs keep ratio for every KV policy on one base model.

    python benchmarks/kv_bench_gpu.py --out benchmarks/results/kv            # ~6 min on one H100
    python benchmarks/kv_bench_gpu.py --out OUT --base OUT/runs/<run_id>      # reuse a finished base run

Phases, each under a wall-clock share of `--budget-s` (so the script always finishes and writes results):
1. corpus: `--corpus` (default site-packages) prepared with runs/data (byte tokenizer), cached;
2. base: a dense model shaped like the GQA paper's small ladder with GQA heads (d 512, L 8, 8 query / 2 KV
   heads, d_h 64, SwiGLU 8d/3, T 2048, a passkey mix in training so the probe means something), trained with
   runs.train.train_run; its step count comes from a short calibration run's measured tokens/s;
3. locret, kv_distill: policy runs (runs.train.train_run with their tasks from runs/kv/tasks.py, backbone
   frozen) on the base, steps calibrated the same way;
4. eval: runs.kv.harness.kv_eval_run for every policy at keep 1, 0.5, 0.25, 0.1, 0.05 (context 1792,
   continuation 256; past the deadline, retrieval and speed are skipped, NLL/KL/bytes never are).
Outputs under --out: runs/<run_id>/ (the run directories: ingestible with `costlaw ingest OUT`),
kv_bench.json (everything), kv_bench.md (tables), kv_bench.png (ΔNLL vs keep ratio per policy).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from costlaw.costmodel.core.rundir import RunDir, run_path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KEEPS = (1.0, 0.5, 0.25, 0.1, 0.05)
POLICIES = ("streaming", "snapkv", "h2o", "random", "locret", "kv_distill", "infinipot")
SHARES = {"base": 0.42, "locret": 0.10, "kv_distill": 0.14, "eval": 0.30}  # of the time left after the corpus


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def base_config(args, steps: int):
    from costlaw.costmodel import ModelConfig, paper_ffn
    from costlaw.runs.config import DataConfig, EvalConfig, RunConfig, TrainConfig

    d = args.d_model
    model = ModelConfig(d_model=d, n_layers=args.layers, n_heads=8, n_kv_heads=2, head_dim=d // 8,
                        ffn_dim=paper_ffn(d), vocab_size=257, tied_embeddings=True, rope_theta=5e5)
    return RunConfig(model=model, name="kv-bench-base",
                     data=DataConfig(corpus=args.corpus, tokenizer="byte", seq_len=args.seq_len, retrieval_mix=0.05),
                     train=TrainConfig(steps=steps, batch_size=args.batch, lr=2e-3, log_every=25,
                                       checkpoint_every=0),
                     eval=EvalConfig(val_tokens=32768, retrieval_samples=8, decode_tokens=16))


def policy_config(base_cfg, base_dir: Path, method: str, steps: int, batch: int):
    import dataclasses

    from costlaw.costmodel import KVPolicy
    from costlaw.runs.config import EvalConfig

    opts = {"locret": (("chunk", 256), ("hidden", 256), ("local", 32), ("stabilizers", 64)),
            "kv_distill": (("rank", 8),)}[method]
    train = dataclasses.replace(base_cfg.train, steps=steps, batch_size=batch, lr=1e-3, warmup_frac=0.05,
                                init_from=str(base_dir), trainable="policy", log_every=25)
    return base_cfg.replace(model=base_cfg.model.replace(kv_policy=KVPolicy(method, keep=0.1, options=opts)),
                            stage="compress", train=train, name=f"kv-bench-{method}",
                            eval=EvalConfig(val_tokens=8 * base_cfg.data.seq_len, retrieval_samples=0,
                                            decode_tokens=0))


def calibrated_steps(run, cfg_for, budget_s: float, probe_steps: int, lo: int, hi: int) -> tuple[int, dict]:
    """Steps that fit `budget_s`: time a `probe_steps` run (compile and first-step costs included), then
    spend what is left at its steady rate."""
    import shutil
    import tempfile

    t0 = time.perf_counter()
    probe = cfg_for(probe_steps)
    scratch = Path(tempfile.mkdtemp(prefix="kv-bench-calibration-"))  # not under --out: not a result to ingest
    try:
        s = run(probe, scratch / probe.run_id)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    spent = time.perf_counter() - t0
    rate = s.get("tokens_per_s") or (s["tokens"] / max(s["train_s"], 1e-9))
    per_step = probe.tokens_per_step / rate
    startup = max(0.0, spent - probe_steps * per_step)  # corpus, model, compile, evaluation
    steps = int(0.9 * (budget_s - spent - startup) / per_step)
    return max(lo, min(hi, steps)), {"probe_s": spent, "step_s": per_step, "startup_s": startup}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "kv"))
    p.add_argument("--base", help="a finished base run directory to reuse (skips base training)")
    p.add_argument("--corpus", default="site-packages")
    p.add_argument("--budget-s", type=float, default=360.0, help="wall-clock budget for the whole script")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--d-model", type=int, default=512, help="width (8 query / 2 KV heads of d_model/8)")
    p.add_argument("--batch", type=int, default=16, help="base training rows per step")
    p.add_argument("--samples", type=int, default=16, help="eval windows per policy and keep ratio")
    p.add_argument("--retrieval-samples", type=int, default=8)
    p.add_argument("--decode-tokens", type=int, default=16)
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)

    import torch

    from costlaw.runs.config import RunConfig
    from costlaw.runs.data import load_corpus
    from costlaw.runs.kv.harness import evaluate_policies, kv_eval_run, load_policy_run
    from costlaw.runs.train import train_run

    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"args": vars(args), "phases": {}, "device": None, "gpu": None}
    if torch.cuda.is_available():
        report["device"], report["gpu"] = "cuda", torch.cuda.get_device_name()
        torch.backends.cuda.matmul.allow_tf32 = True

    def phase(name, t0, **extra):
        report["phases"][name] = {"s": round(time.perf_counter() - t0, 2), **extra}
        log(f"{name}: {report['phases'][name]}")
        write(out, report)

    # 1. corpus
    t0 = time.perf_counter()
    corpus = load_corpus(args.corpus, "byte", True, progress=False)
    phase("corpus", t0, corpus_id=corpus.corpus_id, train_tokens=corpus.train.tokens, val_tokens=corpus.val.tokens)
    left = deadline - time.perf_counter()

    # 2. base
    t0 = time.perf_counter()
    if args.base:
        base_dir = Path(args.base)
        base_cfg = RunConfig.from_dict(RunDir(base_dir).config()["config"])
        phase("base", t0, reused=str(base_dir))
    else:
        def run_base(cfg, rd):
            return train_run(cfg, rd, device=args.device, progress=False)

        steps, cal = calibrated_steps(run_base, lambda n: base_config(args, n), SHARES["base"] * left, 12, 50, 20000)
        base_cfg = base_config(args, steps)
        base_dir = run_path(out, base_cfg.run_id)
        s = run_base(base_cfg, base_dir)
        phase("base", t0, steps=steps, calibration=cal, status=s["status"], val_loss=s.get("val_loss"),
              tokens=s["tokens"], tokens_per_s=s.get("tokens_per_s"), mfu=s.get("mfu"), run_id=base_cfg.run_id)
        report["base_summary"] = {k: s.get(k) for k in ("val_loss", "final_loss", "tokens", "tokens_per_s", "mfu",
                                                          "peak_memory_bytes", "wall_s")}
    report["base_run_id"] = base_cfg.run_id
    report["model"] = base_cfg.model.to_dict()

    # 3. trained policies
    policy_runs, policy_states = {}, {}
    for method, batch in (("locret", 8), ("kv_distill", 4)):
        t0 = time.perf_counter()
        budget = SHARES[method] * left
        try:
            def run_policy(cfg, rd):
                return train_run(cfg, rd, device=args.device, progress=False)

            steps, cal = calibrated_steps(run_policy, lambda n, m=method, b=batch: policy_config(base_cfg, base_dir, m,
                                                                                               n, b),
                                          budget, 4, 20, 5000)
            cfg = policy_config(base_cfg, base_dir, method, steps, batch)
            rd = run_path(out, cfg.run_id)
            s = run_policy(cfg, rd)
            evals = RunDir(rd).evals()
            val = next((e["metrics"] for e in evals if e["eval"] == "policy_val"), {})
            policy_runs[method] = str(rd)
            policy_states[method] = load_policy_run(rd, method, base_cfg.run_id)
            phase(method, t0, steps=steps, calibration=cal, status=s["status"], final_loss=s["final_loss"],
                  policy_val=val, run_id=cfg.run_id)
        except Exception as e:  # a failed policy must not cost the other results
            phase(method, t0, error=f"{type(e).__name__}: {e}")

    # 4. evaluation
    t0 = time.perf_counter()
    methods = [m for m in POLICIES if m not in ("locret", "kv_distill") or m in policy_runs]
    eval_deadline = time.perf_counter() + max(30.0, deadline - time.perf_counter() - 20)
    try:
        res = kv_eval_run(base_dir, out, methods, KEEPS, policy_runs, samples=args.samples, batch=8,
                          retrieval_samples=args.retrieval_samples, decode_tokens=args.decode_tokens,
                          device=args.device, deadline=eval_deadline, log=log)
        rows, eval_run = res["rows"], res["run_id"]
    except Exception as e:  # fall back to the Python API (no run directory) so the numbers still come out
        log(f"kv_eval_run failed ({type(e).__name__}: {e}); evaluating without a run directory")
        import dataclasses

        from costlaw.runs.data import get_tokenizer
        from costlaw.runs.models import build_model
        from costlaw.runs.train import init_from

        cfg = base_cfg.replace(stage="compress", train=dataclasses.replace(base_cfg.train, init_from=str(base_dir)))
        model = build_model(base_cfg.model, device=args.device)
        init_from(model, cfg)
        G = max(1, args.seq_len // 8)
        rows = evaluate_policies(model, cfg, corpus, get_tokenizer("byte"), torch.device(args.device), methods, KEEPS,
                                 args.seq_len - G, G, samples=args.samples, batch=8,
                                 modules={m: st[0] for m, st in policy_states.items()},
                                 options={m: st[1] for m, st in policy_states.items()},
                                 retrieval_samples=args.retrieval_samples, decode_tokens=args.decode_tokens,
                                 deadline=eval_deadline, log=log)
        eval_run = None
    phase("eval", t0, run_id=eval_run, rows=len(rows))
    report["rows"] = rows
    report["total_s"] = round(time.perf_counter() - t_start, 2)
    write(out, report)
    write_markdown(out, report)
    figure(out, rows)
    log(f"done in {report['total_s']} s -> {out}")
    return 0


def write(out: Path, report: dict) -> None:
    tmp = out / ".kv_bench.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str, allow_nan=False) if _finite(report) else
                   json.dumps(_nan_to_none(report), indent=2, default=str))
    tmp.replace(out / "kv_bench.json")


def _finite(obj) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_finite(v) for v in obj)
    return True


def _nan_to_none(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def _grid(rows, metric):
    g = {}
    for r in rows:
        g.setdefault(r["tags"]["policy"], {})[r["tags"]["keep"]] = r["metrics"].get(metric)
    return g


def _fmt(v, spec):
    return "–" if v is None else format(v, spec)


def write_markdown(out: Path, report: dict) -> None:
    rows = report.get("rows") or []
    keeps = sorted({r["tags"]["keep"] for r in rows}, reverse=True)
    lines = [f"# KV policies on one base model ({report.get('gpu') or 'cpu'})", ""]
    m = report.get("model", {})
    lines.append(f"Base run {report.get('base_run_id')}: d {m.get('d_model')}, L {m.get('n_layers')}, "
                 f"{m.get('n_heads')}/{m.get('n_kv_heads')} heads, d_h {m.get('head_dim')}, byte tokenizer, "
                 f"corpus {report['args']['corpus']}; val loss {report.get('base_summary', {}).get('val_loss')}.")
    if rows:
        r0 = rows[0]["metrics"]
        lines.append(f"Context {rows[0]['tags']['context']} tokens compressed, continuation {r0['continuation']} "
                     f"scored, {r0['samples']} val windows; full-cache NLL {r0['nll_full']:.4f} nats/token.")
    lines += ["", f"Phases (s): {json.dumps({k: v['s'] for k, v in report['phases'].items()})}; total "
              f"{report.get('total_s')} s.", ""]
    for metric, title, spec in (("delta_nll", "ΔNLL (nats/token) vs the full cache", "+.4f"),
                                ("kl", "KL(full ‖ compressed), nats/token", ".4f"),
                                ("retrieval_accuracy", "passkey retrieval accuracy", ".2f"),
                                ("kv_bytes", "measured KV bytes (= costmodel's)", "d"),
                                ("decode_tokens_per_s", "decode tokens/s (batch 1, evicting)", ".0f")):
        g = _grid(rows, metric)
        lines += [f"### {title}", "", "| policy | " + " | ".join(f"keep {k:g}" for k in keeps) + " |",
                  "|---|" + "---|" * len(keeps)]
        for pol, by in g.items():
            lines.append(f"| {pol} | " + " | ".join(_fmt(by.get(k), spec) for k in keeps) + " |")
        lines.append("")
    for method in ("locret", "kv_distill"):
        ph = report["phases"].get(method, {})
        if ph:
            lines.append(f"- {method}: {ph.get('steps')} steps, policy_val {ph.get('policy_val')}"
                         + (f", error {ph['error']}" if "error" in ph else ""))
    (out / "kv_bench.md").write_text("\n".join(lines) + "\n")


def figure(out: Path, rows) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no figure")
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, label, lin in ((axes[0], "delta_nll", "ΔNLL vs full cache (nats/token, symlog)", 1e-3),
                                   (axes[1], "kl", "KL(full ‖ compressed) (nats/token, symlog)", 1e-4)):
        for pol, by in _grid(rows, metric).items():
            ks = sorted(k for k in by if by[k] is not None)
            ax.plot(ks, [by[k] for k in ks], marker="o", label=pol)
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=lin)
        ax.set_xlabel("keep ratio (kept tokens / context)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("KV policies on one base model: continuation NLL increase and KL vs keep ratio")
    fig.tight_layout()
    fig.savefig(out / "kv_bench.png", dpi=150)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
