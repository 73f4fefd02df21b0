"""Store benchmark: ingest N runs x S steps, re-ingest unchanged, and a grouped final-loss query.

    python benchmarks/store_bench.py [--runs 1000] [--steps 1000] [--repeats 5] [--out FILE.json]

The run directories are generated first (not timed) by tests/support/synth_runs.py from real RunConfig dicts
(a ladder of sizes x head configurations x seeds), each with metrics.jsonl of S lines and the standard
evals. Timed in this one interpreter (the first ingest also pays polars' import):
- ingest into a new database (median of --repeats, each into a new file; wall and CPU seconds),
- re-ingest of the unchanged root (median),
- the grouped final-loss query through analysis.store.query_df (read-only connect + statement check +
  query + polars frame), and the same query on an open read-only connection (medians).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's tests/ (its run-directory fixture)
from costlaw.analysis.store import connect_readonly, ingest, query_df  # noqa: E402
from costlaw.costmodel import preset  # noqa: E402
from costlaw.runs.config import DataConfig, RunConfig, TrainConfig  # noqa: E402
from tests.support.synth_runs import write_run  # noqa: E402

QUERY = """SELECT family, n_heads, n_kv_heads, n_params, count(*) AS n_runs, avg(final_loss) AS final_loss,
       stddev_samp(final_loss) AS final_loss_std, min(final_loss) AS best
FROM run_summary GROUP BY ALL ORDER BY n_params, n_heads, n_kv_heads"""

HEADS = [(8, 1), (8, 2), (8, 4), (8, 8), (4, 1), (4, 2), (4, 4), (16, 2), (16, 4), (16, 8)]


def configs(n: int) -> list[dict]:
    out, i = [], 0
    base = preset("gqa-3m", vocab_size=257)
    while len(out) < n:
        d_model = (128, 192, 256, 320, 384)[i % 5]
        h, kv = HEADS[(i // 5) % len(HEADS)]
        seed = i // (5 * len(HEADS))
        model = base.replace(d_model=d_model, n_heads=h, n_kv_heads=kv, head_dim=32, ffn_dim=d_model * 8 // 3)
        cfg = RunConfig(model=model, data=DataConfig(seq_len=256), train=TrainConfig(steps=1000, batch_size=8),
                        seed=seed, name=f"d{d_model}-h{h}kv{kv}-s{seed}")
        out.append(cfg.to_dict())
        i += 1
    return out


def _cpu() -> float:
    """CPU seconds of this process, all threads (DuckDB's and polars' included): less sensitive to a busy
    machine than wall time."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        return f"{info.get('Model name', '?').strip()}, {info.get('CPU(s)', '?').strip()} CPUs"
    except (OSError, subprocess.TimeoutExpired):
        return platform.processor() or "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/store_bench.json")
    ap.add_argument("--workdir", help="where to generate the runs (default: a temporary directory)")
    args = ap.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="store_bench_"))
    root = work / "root"
    t = time.perf_counter()
    if root.exists():
        shutil.rmtree(root)
    for cfg in configs(args.runs):
        write_run(root, cfg, steps=args.steps, sweep="bench")
    gen_s = time.perf_counter() - t
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    print(f"generated {args.runs} runs x {args.steps} steps ({size / 2**20:.0f} MiB) in {gen_s:.1f} s", file=sys.stderr)

    load_before = os.getloadavg()
    ingest_s, ingest_cpu_s, reingest_s = [], [], []
    for r in range(args.repeats):
        db = work / f"bench{r}.duckdb"
        db.unlink(missing_ok=True)
        cpu = _cpu()
        rep = ingest(root, db)
        ingest_cpu_s.append(_cpu() - cpu)
        assert len(rep.ingested) == args.runs and rep.steps_rows == args.runs * args.steps, rep.line()
        ingest_s.append(rep.seconds)
        rep2 = ingest(root, db)
        assert len(rep2.unchanged) == args.runs, rep2.line()
        reingest_s.append(rep2.seconds)
        print(f"repeat {r}: ingest {rep.seconds:.2f} s, re-ingest {rep2.seconds:.2f} s", file=sys.stderr)
    db = work / "bench0.duckdb"
    api_ms, open_ms = [], []
    for _ in range(max(5, args.repeats)):
        t = time.perf_counter()
        df = query_df(db, QUERY)
        api_ms.append((time.perf_counter() - t) * 1000)
    con = connect_readonly(db)
    for _ in range(max(5, args.repeats)):
        t = time.perf_counter()
        con.sql(QUERY).fetchall()
        open_ms.append((time.perf_counter() - t) * 1000)
    con.close()
    result = {
        "machine": {"cpu": cpu_model(), "python": platform.python_version(), "duckdb": duckdb.__version__,
                    "platform": platform.platform()},
        "runs": args.runs, "steps_per_run": args.steps, "step_rows": args.runs * args.steps,
        "evals_rows": rep.evals_rows, "root_mib": round(size / 2**20, 1), "db_mib": round(db.stat().st_size / 2**20, 1),
        "generate_s": round(gen_s, 2), "repeats": args.repeats,
        "load_average_1_5_15": {"before": [round(x, 2) for x in load_before],
                                "after": [round(x, 2) for x in os.getloadavg()]},
        "ingest_s": {"median": round(statistics.median(ingest_s), 3), "all": [round(x, 3) for x in ingest_s],
                     "cpu_s_median": round(statistics.median(ingest_cpu_s), 3)},
        "reingest_unchanged_s": {"median": round(statistics.median(reingest_s), 3),
                                 "all": [round(x, 3) for x in reingest_s]},
        "grouped_query_ms": {"query_df_median": round(statistics.median(api_ms), 2),
                             "open_connection_median": round(statistics.median(open_ms), 2),
                             "groups": df.height, "sql": " ".join(QUERY.split())},
        "limits": {"ingest_s": 10.0, "grouped_query_ms": 200.0},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if not args.workdir:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
