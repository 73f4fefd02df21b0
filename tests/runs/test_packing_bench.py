"""benchmarks/packing_bench_gpu.py in its CPU mode, end to end (the GPU job itself runs on the device), and its
step timing: warm-up and compiling steps stay out of the steady state."""

import json
import math
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from tests.support.scripts import load_script

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "packing_bench_gpu.py"
ROW_KEYS = {"packing", "run_id", "status", "steps_timed", "real_tokens_per_s", "positions_per_s", "ratio_vs_balanced",
            "step_time_s", "step_time_cv", "attn_cost_cv", "padding_ratio", "abr", "abr_step", "abr_step_sd", "ave_t",
            "level_shares", "compile_s", "recompile_steps", "peak_memory_bytes", "val_loss", "steps"}


@pytest.fixture(scope="module")
def bench():
    return load_script(BENCH)


def spread_corpus(root: Path) -> Path:
    """Files of 40 to ~4,000 bytes of real code (log-normal): stdlib's files are mostly longer than a tiny row, so
    every packing would fill rows with whole-row pieces and have nothing to differ on."""
    text = "".join(p.read_text() for p in sorted((Path(sysconfig.get_paths()["stdlib"]) / "email").glob("*.py")))
    lengths = np.clip(np.random.default_rng(0).lognormal(5.5, 1.0, 300).astype(int), 40, 4000)
    root.mkdir()
    at = 0
    for i, n in enumerate(lengths.tolist()):
        (root / f"f{i:03d}.py").write_text(text[at:at + n])
        at += n
    return root


@pytest.mark.usefixtures("one_thread", "private_cache")
def test_cpu_mode_end_to_end(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = bench.main(["--corpus", str(spread_corpus(tmp_path / "corpus")), "--d-model", "32", "--n-layers", "2",
                     "--n-heads", "2", "--n-kv-heads", "1", "--head-dim", "16", "--seq-len", "1024",
                     "--levels", "256,512,1024", "--positions", "2048", "--steps", "6", "--device", "cpu",
                     "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert {"gpu", "torch", "corpus", "config", "packings"} <= set(res) and res["gpu"] == "cpu"
    assert res["config"]["model"]["d_model"] == 32 and res["config"]["levels"] == [256, 512, 1024]
    rows = {r["packing"]: r for r in res["packings"]}
    assert list(rows) == ["hierarchical", "balanced", "greedy", "none"]
    for r in rows.values():
        assert ROW_KEYS <= set(r) and r["status"] == "completed"
        assert r["steps_timed"] == 6 - res["config"]["warmup"] == sum(s["timed"] for s in r["steps"])
        assert 0 < r["real_tokens_per_s"] <= r["positions_per_s"]
        assert r["step_time_s"] > 0 and r["step_time_cv"] >= 0 and math.isfinite(r["val_loss"])
        assert sum(r["level_shares"].values()) == pytest.approx(1.0)
        assert sum(s["tokens"] for s in r["steps"]) == pytest.approx(r["ave_t"] * 6)
    assert len({r["run_id"] for r in rows.values()}) == 4
    assert rows["balanced"]["ratio_vs_balanced"] == 1.0
    # one document per row pads most of every row of short files; packing fills them
    assert rows["none"]["padding_ratio"] > 0.5 > 0.05 > rows["balanced"]["padding_ratio"]
    assert rows["none"]["ave_t"] < 0.5 * rows["balanced"]["ave_t"]
    assert rows["none"]["real_tokens_per_s"] < rows["none"]["positions_per_s"] * 0.5
    assert len(rows["hierarchical"]["level_shares"]) > 1 and rows["balanced"]["level_shares"] == {"1024": 1.0}
    assert rows["hierarchical"]["padding_ratio"] < 0.05
    shown = capsys.readouterr().out.rstrip().splitlines()
    assert shown[-5].startswith("packing") and [x.split()[0] for x in shown[-4:]] == list(rows)


def test_warmup_and_compiling_steps_are_not_timed(bench):
    # marks of 5 steps (times 0, 10, 11, 20, 21 s); step 4 compiled a new row length
    marks = [{"mark": t, "tokens": 100 * (i + 1), "cost": 0, "abr": 0.0, "levels": {"8": 8 * (i + 1)},
              "compiles": c} for i, (t, c) in enumerate(zip((0.0, 10.0, 11.0, 20.0, 21.0), (1, 1, 1, 2, 2)))]
    steps = bench.per_step(marks, warmup=1)
    assert [s["time_s"] for s in steps] == [None, 10.0, 1.0, 9.0, 1.0]
    assert [s["timed"] for s in steps] == [False, True, True, False, True]
    row = bench.row_of("x", {"run_id": "r", "status": "completed", "data": {k: None for k in (
        "padding_ratio", "abr", "abr_step", "ave_t", "level_shares", "micro_batches")}, "compile_s": 5.0,
        "peak_memory_bytes": 1, "peak_memory_kind": "k", "tokens_per_s": None, "step_time_s": None,
        "step_time_cv": None, "final_loss": None, "val_loss": None, "wall_s": None}, steps, 128, None)
    assert row["real_tokens_per_s"] == pytest.approx(300 / 12.0) and row["positions_per_s"] == pytest.approx(384 / 12)
    assert row["recompile_steps"] == 1 and row["recompile_s"] == 9.0


def test_committed_results_are_what_runs_md_says():
    """benchmarks/runs.md's HBP table: every number from results/packing_bench.json and its repeat."""
    import statistics

    root = Path(__file__).resolve().parents[2]
    text = (root / "benchmarks" / "runs.md").read_text()

    def load(name):
        return {r["packing"]: r for r in json.loads((root / "benchmarks" / "results" / name).read_text())["packings"]}

    rows, rep = load("packing_bench.json"), load("packing_bench_repeat.json")
    for p, r in rows.items():
        cost = statistics.fmean(s["cost"] for s in r["steps"] if s["timed"])
        line = (f"| {p} | {r['real_tokens_per_s']:,.0f} | {r['ratio_vs_balanced']:.3f} | "
                + (f"{rep[p]['real_tokens_per_s']:,.0f}" if p in rep else "–")
                + f" | {r['step_time_s'] * 1e3:.1f} | {r['step_time_cv']:.3f} | {r['padding_ratio']:.3f} | "
                f"{r['abr']:.3f} | {r['ave_t']:,.0f} | {cost / 1e6:.0f} M | {r['compile_s']:.1f} |")
        assert line in text, line
    worst = max(abs(rep[p]["real_tokens_per_s"] / rows[p]["real_tokens_per_s"] - 1) for p in rep)
    assert worst < 0.0006 and "within 0.06%" in text
    assert f"by {1 / rows['none']['ratio_vs_balanced']:.2f}×" in text
