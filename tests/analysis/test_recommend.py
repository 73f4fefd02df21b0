"""`costlaw recommend` from known laws: the winner minimises Z, its TOML prices the same through `costlaw cost`,
the paper's qualitative behaviour holds, and bad requests fail with one line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from costlaw.costmodel import ModelConfig, costs

DATA = Path(__file__).parent / "data"
FITS = DATA / "paper_like_fits.json"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def recommend_json(cli):
    def run(*args):
        rc, out, err = cli("recommend", "--fits", FITS, "--json", *args)
        assert rc == 0, err
        return json.loads(out)

    return run


def z_of(cfg: ModelConfig, T: int, lam=0.9, alpha=0.5, beta=1 / 3) -> float:
    c = costs(cfg, T, dtype="bf16")
    return lam * c["m_infer_bytes"] ** alpha + (1 - lam) * c["c_infer_flops_per_token"] ** beta


def test_winner_has_the_lowest_z_recomputed_independently(recommend_json):
    doc = recommend_json("--target-loss", "2.55", "--context", "8K,32K,128K")
    ok = [c for c in doc["candidates"] if c["status"] == "ok"]
    assert len(ok) == 22  # the paper's 21 pairs + one compressed candidate on 8,8
    for ctx in doc["by_context"]:
        T = ctx["context"]
        zs = {c["label"]: z_of(ModelConfig.from_dict(c["config"]), T) for c in ok}
        best = min(zs, key=zs.get)
        assert ctx["winner"] == best
        assert zs[best] == pytest.approx(ctx["winner_prices"]["z"], rel=1e-12)
        second = sorted(zs, key=zs.get)[1]
        assert ctx["runner_up"] == second
        # every listed candidate reaches the target at its (rounded up) size, never below N*
        for c in ok:
            assert c["n_params"] >= c["n_star"]
            assert c["predicted_loss"] <= 2.55 + 1e-9
            iv = c["predicted_loss_interval"]
            assert iv["level"] == 0.9 and iv["point"] == c["predicted_loss"]
            assert iv["mean"]["lo"] <= c["predicted_loss"] <= iv["mean"]["hi"]
            # a fits file without runs has no run-to-run noise: no interval for a new run, and it says so
            assert iv["new_run"]["lo"] is None and "no run-to-run noise" in iv["new_run"]["covers"]


def test_winner_toml_prices_identically_through_costlaw_cost(tmp_path, recommend_json):
    out = tmp_path / "winner.toml"
    doc = recommend_json("--target-loss", "2.6", "--context", "128K", "--toml-out", out)
    assert doc["toml_files"] == [str(out)]
    p = subprocess.run([sys.executable, "-m", "costlaw", "cost", "--config", str(out), "--context", "131072",
                        "--json"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    cost_out = p.stdout
    priced = json.loads(cost_out)
    win = doc["by_context"][0]
    assert priced["config"] == win["winner_config"]
    for key in ("m_infer_bytes", "c_infer_flops_per_token", "kv_cache_bytes", "params_non_embedding", "params_total"):
        assert priced[key] == win["winner_prices"][key]


def test_optimum_moves_to_fewer_kv_heads_as_context_grows(recommend_json):
    contexts = [8192, 16384, 32768, 65536, 131072]
    moved = 0
    for target in ("2.6", "2.5", "2.4"):
        doc = recommend_json("--target-loss", target, "--context", ",".join(map(str, contexts)),
                             "--families", "gqa")
        kv = [ctx["winner_config"]["n_kv_heads"] for ctx in doc["by_context"]]
        assert kv == sorted(kv, reverse=True), (target, kv)
        moved += kv[-1] < kv[0]
    assert moved == 3


def test_compressed_candidate_adds_its_measured_delta(cli, recommend_json):
    doc = recommend_json("--target-loss", "2.6", "--context", "8K", "--candidates", "8,8;8,8 snapkv keep=0.25")
    by = {c["label"]: c for c in doc["candidates"]}
    comp, dense = by["8,8 snapkv keep=0.25"], by["8,8"]
    assert comp["delta_nll"] == 0.03 and comp["base"] == "8,8"
    assert comp["n_star"] > dense["n_star"]  # it must reach 2.6 - 0.03 with the dense law
    assert comp["config"]["kv_policy"] == {"method": "snapkv", "keep": 0.25, "kernel": 5, "window": 32}
    rc, out, _ = cli("recommend", "--fits", FITS, "--target-loss", "2.6", "--context", "8K")
    assert "dense candidate's law + the ΔNLL" in out


def test_budgets_and_latency(recommend_json):
    free = recommend_json("--target-loss", "2.5", "--context", "128K", "--families", "gqa")
    win = free["by_context"][0]["winner_prices"]["m_infer_bytes"]
    doc = recommend_json("--target-loss", "2.5", "--context", "128K", "--families", "gqa", "--flops-budget",
                         "1e10", "--gpu", "H100")
    ctx = doc["by_context"][0]
    assert ctx["winner_prices"]["c_infer_flops_per_token"] <= 1e10
    assert ctx["winner_prices"]["m_infer_bytes"] >= win
    assert ctx["winner_prices"]["latency_model"] == "roofline" and ctx["winner_prices"]["decode_ms"] > 0
    over = [c for c in doc["candidates"] if c["status"] == "ok" and "flops" in c["prices"][0]["violations"]]
    assert over and all(c["prices"][0]["c_infer_flops_per_token"] > 1e10 for c in over)


def test_calibration_file_replaces_the_roofline(tmp_path, recommend_json):
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps({"format": "costlaw-calibration/1", "gpus": {"H100": {"decode": {
        "overhead_s": 0.001, "bytes_per_s": 1e12, "flops_per_s": 1e14}, "source": "test"}}}))
    doc = recommend_json("--target-loss", "2.5", "--context", "128K", "--gpu", "H100", "--calibration", cal)
    p = doc["by_context"][0]["winner_prices"]
    weights = p["params_total"] * 2
    expect = 1e3 * (0.001 + max((weights + p["kv_cache_bytes"]) / 1e12, p["c_infer_flops_per_token"] / 1e14))
    assert p["latency_model"] == "calibrated" and p["decode_ms"] == pytest.approx(expect)


def test_extrapolation_is_reported_and_warned(cli, recommend_json):
    rc, out, err = cli("recommend", "--fits", FITS, "--target-loss", "2.05", "--context", "8K")
    assert rc == 0, err
    assert "WARNING" in out and "extrapolated far" in out
    doc = recommend_json("--target-loss", "2.05", "--context", "8K")
    ctx = doc["by_context"][0]
    assert ctx["extrapolation"] > 4 and any("extrapolated far" in w for w in doc["warnings"])


def test_a_law_below_the_r2_bar_does_not_win_unless_allowed(cli, tmp_path):
    """A law below R² 0.98 on its points (gqa-aspect's (1,1): 0.956) is weak: listed with why, never the winner;
    --allow-weak-laws lets it win, flagged."""
    doc = json.loads(FITS.read_text())
    rc, out, err = cli("recommend", "--fits", FITS, "--target-loss", "2.6", "--context", "128K", "--json")
    first = json.loads(out)
    win, runner = first["by_context"][0]["winner"], first["by_context"][0]["runner_up"]
    assert rc == 0 and first["excluded"] == [] and not any("weak" in w for w in first["warnings"])
    for c in doc["candidates"]:
        c["r2"], c["n_points"] = (0.956, 7) if f"{c['n_heads']},{c['n_kv_heads']}" == win else (0.999, 7)
    low = tmp_path / "fits.json"
    low.write_text(json.dumps(doc))
    rc, out, err = cli("recommend", "--fits", low, "--target-loss", "2.6", "--context", "128K", "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert res["by_context"][0]["winner"] == runner  # the weak law's candidate is out, the next cheapest wins
    assert res["excluded"] == [{"label": win, "why": "weak law (R² 0.956 < 0.98 on the 7 points fitted)"}]
    row = next(c for c in res["candidates"] if c["label"] == win)
    assert row["status"] == "ok" and row["weak"] == ["R² 0.956 < 0.98 on the 7 points fitted"]
    rc, out, _ = cli("recommend", "--fits", low, "--target-loss", "2.6", "--context", "128K")
    assert "excluded: weak law (R² 0.956 < 0.98 on the 7 points fitted)" in out
    rc, out, err = cli("recommend", "--fits", low, "--target-loss", "2.6", "--context", "128K", "--json",
                       "--allow-weak-laws")
    allowed = json.loads(out)
    assert rc == 0 and allowed["by_context"][0]["winner"] == win and allowed["excluded"] == []
    assert allowed["by_context"][0]["weak_law"] == ["R² 0.956 < 0.98 on the 7 points fitted"]
    assert [w for w in allowed["warnings"] if "weak" in w] == [
        f"context 131072: the winner {win}'s law is weak (R² 0.956 < 0.98 on the 7 points fitted); it won only "
        "because --allow-weak-laws was given, and its predicted loss and interval rest on a law the runs do not pin "
        "down"]


def test_no_identified_law_means_no_winner_and_why(cli, tmp_path):
    """Every law weak (E at its bound, R² 0.73: the quickstart's laws before its ladder was checked): exit 0, no
    winner, the reason per candidate; --allow-weak-laws names one."""
    doc = json.loads(FITS.read_text())
    for c in doc["candidates"]:
        c["r2"], c["n_points"] = 0.734, 8
    doc["kv_policies"] = []
    weak = tmp_path / "weak.json"
    weak.write_text(json.dumps(doc))
    rc, out, err = cli("recommend", "--fits", weak, "--target-loss", "2.6", "--context", "8K,128K", "--json")
    assert rc == 0, err
    res = json.loads(out)
    for ctx in res["by_context"]:
        assert ctx["winner"] is None and ctx["winner_config"] is None and ctx["predicted_loss"] is None
        assert ctx["no_winner_reason"].startswith("every candidate within the budgets is excluded: a weak law (1,1, ")
        assert ctx["no_winner_reason"].endswith("The data cannot support a recommendation; --allow-weak-laws "
                                                "would use them anyway")
    assert len(res["excluded"]) == 21
    assert all(e["why"] == "weak law (R² 0.734 < 0.98 on the 8 points fitted)" for e in res["excluded"])
    rc, out, err = cli("recommend", "--fits", weak, "--target-loss", "2.6", "--context", "8K,128K")
    assert rc == 0 and "== context 8192: no winner: every candidate within the budgets is excluded" in out
    rc, out, err = cli("recommend", "--fits", weak, "--target-loss", "2.6", "--context", "8K,128K", "--json",
                       "--allow-weak-laws")
    assert rc == 0 and all(ctx["winner"] for ctx in json.loads(out)["by_context"])


def test_paper_candidates_and_standard_savings(recommend_json):
    doc = recommend_json("--target-loss", "2.6", "--context", "128K", "--candidates", "paper", "--standard", "32,8")
    assert len(doc["candidates"]) == 21
    assert doc["standard"] == "32,8"
    s = doc["by_context"][0]["savings_vs_standard"]
    std, win = doc["by_context"][0]["standard_prices"], doc["by_context"][0]["winner_prices"]
    assert s["memory"] == pytest.approx(1 - win["m_infer_bytes"] / std["m_infer_bytes"])
    assert s["memory"] > 0.3  # at 128K the KV cache of 8 KV heads dominates


@pytest.mark.parametrize("args, expect", [
    (["--fits", FITS, "--target-loss", "2.5", "--context", "8K", "--candidates", "32,8;3,1"],
     "--candidates: unknown candidate '3,1'"),
    (["--fits", FITS, "--target-loss", "1.5", "--context", "8K"], "--target-loss: 1.5 is at or below every fitted"),
    (["--fits", "/nonexistent/fits.json", "--target-loss", "2.5", "--context", "8K"], "--fits: no such file"),
    (["--fits", FITS, "--target-loss", "2.5", "--context", "8K", "--latency-target-ms", "5"],
     "--latency-target-ms: needs --gpu"),
    (["--fits", FITS, "--target-loss", "2.5", "--context", "8K", "--memory-budget", "1MiB"],
     "budgets: no candidate meets"),
    (["--fits", FITS, "--target-loss", "2.5", "--context", "8K", "--memory-budget", "lots"],
     "--memory-budget: 'lots' is not a size"),
    (["--fits", FITS, "--target-loss", "2.5", "--context", "8K", "--families", "gqa,moe"],
     "--families: unknown family 'moe'"),
    (["--fits", FITS, "--target-loss", "2.5", "--context", "8K", "--standard", "d_model,8"], "--standard:"),
    (["--fits", FITS, "--target-loss", "2.5", "--context", "8K", "--keep-grid", "3"], "--keep-grid: fits ΔNLL"),
    (["--fits", FITS, "--target-loss", "2.5", "--context", "8K", "--keep-grid", "-1"], "--keep-grid"),
])
def test_bad_requests_fail_with_one_line(args, expect, cli):
    rc, out, err = cli("recommend", *args)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], err
    assert "Traceback" not in err


def test_bad_fits_files(tmp_path, cli):
    bad = tmp_path / "bad.json"
    for text, expect in [("{", "is not valid JSON"), ('{"format": "x"}', "lacks \"format\""),
                         ('{"format": "costlaw-fits/1", "candidates": [{"n_heads": 4}]}',
                          "candidates[0].n_kv_heads is missing"),
                         ('{"format": "costlaw-fits/1", "candidates": [{"n_heads": 4, "n_kv_heads": 2, '
                          '"params": {"a": 1e7, "b": 0.3}}]}', "needs E")]:
        bad.write_text(text)
        rc, _, err = cli("recommend", "--fits", bad, "--target-loss", "2.5", "--context", "8K")
        assert rc == 2 and len(err.strip().splitlines()) == 1 and expect in err, err
