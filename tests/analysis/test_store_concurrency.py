"""64 concurrent writer processes + ingests running meanwhile -> every run exactly once, none half-ingested."""

import json
import subprocess
import sys

import pytest

from costlaw.analysis.store import ingest, query_df

N_WRITERS, STEPS, EVALS = 64, 40, 3

# One worker: a RunConfig of its own, written with runs/rundir.py's writers line by line, with pauses so
# that the ingests below catch it in every state (config only, part of the metrics, summary without DONE).
WRITER = """
import random, sys, time
from costlaw.costmodel import preset
from costlaw.runs.config import DataConfig, RunConfig, TrainConfig
from costlaw.costmodel.core.rundir import RunDir

root, i, steps, n_evals = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
heads = [(4, 1), (4, 2), (4, 4), (8, 1), (8, 2), (8, 4), (8, 8), (2, 1)]
h, kv = heads[i % len(heads)]
cfg = RunConfig(model=preset("gqa-3m", vocab_size=257).replace(n_heads=h, n_kv_heads=kv),
                data=DataConfig(seq_len=64), train=TrainConfig(steps=steps, batch_size=2), seed=i // len(heads),
                name=f"w{i}")
rd = RunDir(f"{root}/runs/{cfg.run_id}")
rng = random.Random(i)
rd.write_config(cfg, sweep="concurrency")
for s in range(1, steps + 1):
    rd.append_metrics({"step": s, "tokens": s * 128, "loss": 5.0 / s ** 0.2 + i * 1e-3, "lr": 1e-3,
                       "grad_norm": 1.0, "tokens_per_s": 1000.0, "time_s": s * 0.01})
    if s == steps // 2:  # halfway: say so, and wait for the test to have ingested everyone mid-run
        with open(rd.file("metrics.jsonl"), "ab") as f:
            f.write(b'{"step": ')  # a torn line, as a kill mid-append leaves it
        print("half", flush=True)
        sys.stdin.readline()
        from costlaw.costmodel.core.files import repair_jsonl
        repair_jsonl(rd.file("metrics.jsonl"))
    if rng.random() < 0.1:
        time.sleep(rng.random() * 0.05)
for e in range(n_evals):
    rd.append_eval("val_loss", {"context": 64 * (e + 1)}, {"loss": 2.0 + e, "tokens": 100})
rd.write_summary({"run_id": cfg.run_id, "status": "completed", "steps": steps, "tokens": steps * 128,
                  "final_loss": 5.0 / steps ** 0.2 + i * 1e-3})
time.sleep(rng.random() * 0.2)
rd.write_done(cfg.run_id, "completed")
print(cfg.run_id)
"""


def check_consistent(db):
    """Every ingested run has all of its rows, and no (run, step) or (run, eval, tags, metric) twice."""
    per_run = query_df(db, """
        SELECT r.run_id, r.n_steps, r.n_evals,
               (SELECT count(*) FROM steps s WHERE s.run_id = r.run_id) AS steps,
               (SELECT count(DISTINCT step) FROM steps s WHERE s.run_id = r.run_id) AS distinct_steps,
               (SELECT count(*) FROM evals e WHERE e.run_id = r.run_id) AS evals
        FROM runs r""").rows(named=True)
    for r in per_run:
        assert r["n_steps"] == r["steps"] == r["distinct_steps"] == STEPS, r
        assert r["n_evals"] == r["evals"] == EVALS * 2, r
    orphans = query_df(db, "SELECT count(*) AS n FROM steps WHERE run_id NOT IN (SELECT run_id FROM runs)")
    assert orphans["n"][0] == 0
    return len(per_run)


@pytest.mark.slow
def test_64_concurrent_writers_then_ingest(tmp_path):
    root, db = tmp_path / "root", tmp_path / "results.duckdb"
    root.mkdir()
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(i), str(STEPS), str(EVALS)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(N_WRITERS)]
    rival = None
    seen = []
    try:
        for w in writers:
            assert w.stdout.readline().strip() == "half"
        # everyone is mid-run with a torn last line: all incomplete, nothing ingested
        rep = ingest(root, db)
        assert len(rep.incomplete) == N_WRITERS and not rep.ingested and not rep.corrupt
        assert query_df(db, "SELECT (SELECT count(*) FROM runs) + (SELECT count(*) FROM steps) AS n")["n"][0] == 0
        for w in writers:
            w.stdin.write("go\n")
            w.stdin.flush()
        # a second ingest process competes for the lock with the ingests of this process
        rival = subprocess.Popen([sys.executable, "-m", "costlaw", "ingest", "--root", str(root), "--db", str(db),
                                  "--wait", "60", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while any(w.poll() is None for w in writers) or len(seen) < 3:
            rep = ingest(root, db, wait=60)
            seen.append(rep)
            assert not rep.corrupt, rep.corrupt
            check_consistent(db)
        ids = []
        for w in writers:
            out, err = w.communicate(timeout=120)
            assert w.returncode == 0, err
            ids.append(out.strip())
        out, err = rival.communicate(timeout=120)
        assert rival.returncode == 0, err
        rival_added = json.loads(out)["ingested"]
    finally:
        for p in [*writers, rival]:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert len(set(ids)) == N_WRITERS
    final = ingest(root, db)
    assert not final.incomplete and not final.corrupt
    assert check_consistent(db) == N_WRITERS
    got = query_df(db, "SELECT run_id FROM runs ORDER BY run_id")["run_id"].to_list()
    assert got == sorted(ids)
    totals = query_df(db, "SELECT (SELECT count(*) FROM steps) AS steps, (SELECT count(*) FROM evals) AS evals")
    assert totals.row(0) == (N_WRITERS * STEPS, N_WRITERS * EVALS * 2)
    # every run was added exactly once over all the ingests (never replaced, never re-added)
    added = [rid for rep in seen + [final] for rid in rep.ingested] + rival_added
    assert sorted(added) == sorted(ids) and not any(rep.replaced for rep in seen + [final])
