"""`costlaw validate --mode rerun`: the same run ids in two stores; one run's noise at a fixed seed from the val
losses' differences, and the step where two trainings' logged losses parted."""

import json
import math

import pytest

DIFFS = {"r0": 0.03, "r1": -0.03, "r2": 0.01, "r3": -0.01}  # rerun - first, val loss
STEPS = range(10, 1010, 10)  # 100 logged steps
PART = 500  # r0's rerun trains 0.05 nats higher from this step on; the others never part


def store(path, rerun: bool, ids=tuple(DIFFS), se=0.002):
    import duckdb
    import pandas as pd

    from costlaw.analysis.store.schema import migrate

    runs = pd.DataFrame([{"run_id": rid, "model_id": "m", "sweep": "s", "stage": "pretrain", "seed": 0,
                          "status": "completed", "family": "gqa", "d_model": 128 + 32 * i, "n_layers": 2,
                          "n_heads": 8, "n_kv_heads": 2, "head_dim": 16, "seq_len": 2048, "steps": STEPS[-1],
                          "val_loss": 1.0 + (DIFFS.get(rid, 0.0) if rerun else 0.0)} for i, rid in enumerate(ids)])
    steps = pd.DataFrame([{"run_id": rid, "step": s, "loss": 3.0 - s / 1000
                           + (0.05 if rerun and rid == "r0" and s >= PART else 0.0)} for rid in ids for s in STEPS])
    se_rows = runs[["run_id"]].assign(eval="val_loss", tags="{}", metric="loss_se", value=se)
    con = duckdb.connect(str(path))
    migrate(con, path)
    for name, df in (("runs", runs), ("steps", steps), ("evals", se_rows)):
        con.register("df", df)
        con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM df")
        con.unregister("df")
    con.close()
    return path


@pytest.fixture
def pair(tmp_path):
    return store(tmp_path / "first.duckdb", False), store(tmp_path / "again.duckdb", True)


def test_noise_is_the_differences_sd_over_root_two_and_r0_parts_where_it_was_made_to(cli, pair):
    rc, out, err = cli("validate", "--db", pair[0], "--db", pair[1], "--mode", "rerun", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    d = list(DIFFS.values())
    sd = math.sqrt(sum(x * x for x in d) / (len(d) - 1))  # their mean is 0
    o = doc["overall"]
    assert o["n"] == 4 and o["mean_diff"] == pytest.approx(0.0, abs=1e-12)
    assert o["sd_diff"] == pytest.approx(sd) and o["run_noise_sd"] == pytest.approx(sd / math.sqrt(2))
    assert o["max_abs_diff"] == pytest.approx(0.03) and o["median_abs_diff"] == pytest.approx(0.02)
    # one loss's val-set error is 0.002; the noise is that many times it
    assert o["val_se"] == pytest.approx(0.002) and o["noise_over_val_se"] == pytest.approx(sd / math.sqrt(2) / 0.002)
    by = {p["run_id"]: p for p in doc["pairs"]}
    assert by["r0"]["parted_at"] == PART  # the 5-step mean first exceeds 0.02 with 3 of its 5 steps moved
    assert by["r0"]["train_diff_at_share"]["1.0"] == pytest.approx(0.05)
    assert by["r0"]["train_diff_at_share"]["0.25"] == pytest.approx(0.0, abs=1e-9)
    assert all(by[r]["parted_at"] is None for r in ("r1", "r2", "r3"))
    assert o["parted"] == 1 and o["median_parted_share"] == pytest.approx(PART / STEPS[-1])


def test_a_higher_threshold_sees_no_parting_and_the_text_says_the_noise(cli, pair):
    rc, out, err = cli("validate", "--db", pair[0], "--db", pair[1], "--mode", "rerun", "--threshold", "0.06",
                       "--wide")
    assert rc == 0, err
    sd = math.sqrt(sum(x * x for x in DIFFS.values()) / 3) / math.sqrt(2)
    assert f"one run's noise at a fixed seed: sd {sd:.4f} nats" in out
    assert "parted by > 0.06 nats in 0 of 4 runs" in out


def test_the_figure_draws_each_runs_difference(cli, pair, tmp_path):
    from costlaw.analysis.validate import figure as F

    figs, real = [], F.save
    F.save = lambda fig, path: figs.append(fig) or real(fig, path)
    try:
        rc, out, err = cli("validate", "--db", pair[0], "--db", pair[1], "--mode", "rerun", "--figure",
                           tmp_path / "rr.png")
    finally:
        F.save = real
    assert rc == 0, err
    assert (tmp_path / "rr.png").read_bytes()[:4] == b"\x89PNG" and "<svg" in (tmp_path / "rr.svg").read_text()
    lines = [ln for ln in figs[0].axes[0].get_lines() if len(ln.get_xdata()) == len(STEPS)]
    assert len(lines) == 4
    ends = sorted(float(ln.get_ydata()[-1]) for ln in lines)
    assert ends[-1] == pytest.approx(0.05) and ends[0] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("args, message", [
    (["--mode", "rerun"], "--mode rerun compares two results files, got 1"),
    (["--threshold", "0.05"], "--threshold: only --mode rerun reads it"),
    (["--mode", "rerun", "--window", "3"], "--mode rerun compares two results files"),
])
def test_one_store_or_a_stray_flag_is_a_one_line_error(cli, pair, args, message):
    rc, out, err = cli("validate", "--db", pair[0], *args)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_stores_without_a_shared_run_or_a_bad_threshold_are_refused(cli, pair, tmp_path):
    other = store(tmp_path / "other.duckdb", True, ids=("x0", "x1"))
    rc, out, err = cli("validate", "--db", pair[0], "--db", other, "--mode", "rerun")
    assert rc == 2 and "share no completed run id" in err
    rc, out, err = cli("validate", "--db", pair[0], "--db", pair[1], "--mode", "rerun", "--threshold", "0")
    assert rc == 2 and "--threshold: 0.0 must be > 0 nats" in err
