"""`costlaw fit`: JSON keys, groups, --where/--assign, plots, and one-line errors with exit code 2."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from costlaw.cli import main
from costlaw.fitting import get_law
from costlaw.options import DEFAULT_BOOTSTRAP

GROUP_TRUTH = {(4, 1): {"a": 9.5e7, "b": 0.30, "E": 1.95}, (4, 4): {"a": 8.8e7, "b": 0.32, "E": 1.90},
               (8, 1): {"a": 9.0e7, "b": 0.31, "E": 1.93}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A sweep-like table: three (n_heads, n_kv_heads) groups of 8 sizes, plus one diverged run (NaN loss)."""
    law = get_law("gqa-size")
    rng = np.random.default_rng(0)
    rows = []
    for (h, kv), p in GROUP_TRUTH.items():
        N = np.geomspace(3e6, 1.2e9, 8)
        loss = law.predict(p, N) * np.exp(rng.normal(0, 0.002, len(N)))
        rows += [{"n_heads": h, "n_kv_heads": kv, "params_non_embedding": n, "loss": v, "status": "completed"}
                 for n, v in zip(N, loss)]
    rows.append({"n_heads": 4, "n_kv_heads": 1, "params_non_embedding": 5e8, "loss": np.nan, "status": "diverged"})
    df = pd.DataFrame(rows)
    d = tmp_path_factory.mktemp("runs")
    df.to_csv(d / "runs.csv", index=False)
    df.to_parquet(d / "runs.parquet")
    return d


def fit_cli(capsys, *args):
    rc = main(["fit", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_single_fit(runs, capsys):
    rc, out, err = fit_cli(capsys, "--data", str(runs / "runs.csv"), "--law", "gqa-size",
                           "--x", "params_non_embedding",
                           "--where", "n_heads == 4 and n_kv_heads == 1 and status == 'completed'", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["format"] == "costlaw-fits/1" and doc["law"] == "gqa-size" and doc["x"] == ["params_non_embedding"]
    assert doc["y"] == "loss" and doc["options"]["loss"] == "huber" and doc["source"] == str(runs / "runs.csv")
    [r] = doc["candidates"]
    for key in ("params", "objective", "grad_norm", "n_points", "r2", "n_starts", "n_at_best", "data_fingerprint"):
        assert key in r, key
    assert r["n_points"] == 8 and r["success"] and r["group"] == {}
    for k, v in GROUP_TRUTH[(4, 1)].items():
        assert r["params"][k] == pytest.approx(v, rel=0.05)
    # the bootstrap every verb shares by default; no holdout unless asked
    assert doc["options"]["bootstrap"] == DEFAULT_BOOTSTRAP and "bootstrap" in r and "holdout" not in r


def test_group_by_with_bootstrap_and_holdout(runs, capsys):
    rc, out, err = fit_cli(capsys, "--data", str(runs / "runs.parquet"), "--law", "gqa-size",
                           "--x", "params_non_embedding", "--where", "status == 'completed'",
                           "--group-by", "n_heads,n_kv_heads", "--bootstrap", "20", "--holdout-largest", "2",
                           "--seed", "3", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    results = doc["candidates"]
    assert [r["group"] for r in results] == [{"n_heads": h, "n_kv_heads": kv} for h, kv in sorted(GROUP_TRUTH)]
    assert doc["options"]["seed"] == 3 and doc["options"]["bootstrap"] == 20
    for r in results:
        truth = GROUP_TRUTH[(r["group"]["n_heads"], r["group"]["n_kv_heads"])]
        assert r["n_points"] == 8
        assert r["params"]["b"] == pytest.approx(truth["b"], rel=0.05)
        assert set(r["stderr"]) == set(r["ci95"]) == set(r["bootstrap"]) == {"a", "b", "E"}
        assert all(len(v) == 2 and v[0] <= v[1] for v in r["ci95"].values())
        assert r["n_bootstrap"] == 20 and all(len(v) == r["n_used"] for v in r["bootstrap"].values())
        assert r["n_used"] + r["n_failed"] + r["n_unidentified"] == 20 and r["n_used"] >= 18
        h = r["holdout"]
        assert h["n_train"] == 6 and len(h["rows"]) == 2 and h["by"] == "params_non_embedding"
        assert h["max_abs_rel_error"] < 0.02
    assert len({r["data_fingerprint"] for r in results}) == 3


def test_row_order_changes_nothing(runs, capsys, tmp_path):
    """The pipeline fits rows in one canonical order, so shuffled rows give the same fits, bootstrap included,
    and the same fingerprints: what lets a stored fit stand for a refit."""
    df = pd.read_csv(runs / "runs.csv")
    df.sample(frac=1.0, random_state=7).to_csv(tmp_path / "shuffled.csv", index=False)
    docs = []
    for path in (runs / "runs.csv", tmp_path / "shuffled.csv"):
        rc, out, err = fit_cli(capsys, "--data", str(path), "--law", "gqa-size", "--x", "params_non_embedding",
                               "--where", "status == 'completed'", "--group-by", "n_heads,n_kv_heads",
                               "--bootstrap", "6", "--json")
        assert rc == 0, err
        docs.append(json.loads(out)["candidates"])
    assert docs[0] == docs[1]
    rc, out, _ = fit_cli(capsys, "--data", str(runs / "runs.csv"), "--law", "gqa-size", "--x", "params_non_embedding",
                         "--where", "status == 'completed'", "--group-by", "n_heads,n_kv_heads", "--bootstrap", "6",
                         "--seed", "1", "--json")
    assert rc == 0
    other = json.loads(out)["candidates"]
    assert all(a["data_fingerprint"] != b["data_fingerprint"] for a, b in zip(docs[0], other))


def test_out_file_is_the_fits_format_recommend_reads(runs, capsys, tmp_path):
    out_file = tmp_path / "fits.json"
    rc, out, err = fit_cli(capsys, "--data", str(runs / "runs.csv"), "--law", "gqa-size", "--x",
                           "params_non_embedding", "--where", "status == 'completed'", "--group-by",
                           "n_heads,n_kv_heads", "--bootstrap", "5", "--out", str(out_file))
    assert rc == 0, err
    assert f"fits written to {out_file}" in out
    doc = json.loads(out_file.read_text())
    from costlaw.analysis.recommend import load_fits, recommend

    fs = load_fits(out_file)
    assert {c.label for c in fs.candidates} == {"4,1", "4,4", "8,1"}
    for c in fs.candidates:
        entry = next(e for e in doc["candidates"] if f"{e['group']['n_heads']},{e['group']['n_kv_heads']}" == c.label)
        assert c.params == entry["params"] and len(c.samples["a"]) == 5
        assert c.fit_extra["data_fingerprint"] == entry["data_fingerprint"]
    rec = recommend(fs, 2.2, [8192])
    assert rec.winner(8192) is not None
    rc = main(["recommend", "--fits", str(out_file), "--target-loss", "2.2", "--context", "8K", "--json"])
    text, err = capsys.readouterr()
    assert rc == 0, err
    assert json.loads(text)["by_context"][0]["winner"] == rec.winner(8192).label


def test_human_output_with_predict_and_inverse(runs, capsys):
    rc, out, err = fit_cli(capsys, "--data", str(runs / "runs.csv"), "--law", "gqa-size",
                           "--x", "params_non_embedding", "--where", "status == 'completed' and n_heads == 8",
                           "--bootstrap", "10", "--holdout-largest", "1", "--predict", "5e9", "--inverse", "2.2")
    assert rc == 0, err
    assert out.startswith("law gqa-size  L(N) = (a/N)^b + E  x params_non_embedding  y loss")
    for text in ("objective", "stderr", "ci95 lo", "loss@params_non_embedding=5e+09",
                 "params_non_embedding@loss=2.2", "bootstrap: 10 resamples", "holdout: fitted on 7 runs",
                 "rel error %"):
        assert text in out, text


def test_plot_files(runs, capsys, tmp_path, synthetic):
    png = tmp_path / "groups.png"
    rc, _, err = fit_cli(capsys, "--data", str(runs / "runs.csv"), "--law", "gqa-size", "--x",
                         "params_non_embedding", "--where", "status == 'completed'", "--group-by",
                         "n_heads,n_kv_heads", "--bootstrap", "5", "--plot", str(png), "--json")
    assert rc == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    X, y, _ = synthetic("chinchilla", noise=0.01, seed=1)
    pd.DataFrame({"N": X[:, 0], "D": X[:, 1], "loss": y}).to_csv(tmp_path / "nd.csv", index=False)
    two = tmp_path / "nd.png"
    rc, _, err = fit_cli(capsys, "--data", str(tmp_path / "nd.csv"), "--law", "chinchilla", "--refine", "2",
                         "--starts", "300", "--bootstrap", "5", "--plot", str(two), "--json")
    assert rc == 0, err
    assert two.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))


BAD = [
    (["--x", "nope"], "--x: unknown column 'nope'; columns are n_heads, n_kv_heads"),
    (["--law", "kaplan"], "law: unknown law 'kaplan'"),
    (["--x", "params_non_embedding"], r"loss: 1 NaN/inf value\(s\) \(first at row 24\)"),
    (["--x", "params_non_embedding", "--y", "n_heads", "--assign", "n_heads = n_heads - 4"],
     r"n_heads: .* value\(s\) <= 0"),
    (["--x", "params_non_embedding", "--where", "loss <"], "--where: 'loss <'"),
    (["--x", "params_non_embedding", "--where", "lost < 3"], "--where: unknown column 'lost'; columns are n_heads, .* "
                                                           "\\(in 'lost < 3'\\)"),
    (["--x", "params_non_embedding", "--where", "loss > 100"], "keeps no rows"),
    (["--x", "params_non_embedding", "--where", "status == 'completed'", "--group-by", "params_non_embedding"],
     r"group params_non_embedding=3000000.0: params_non_embedding: constant"),
    (["--x", "params_non_embedding", "--where", "n_heads == 8 and params_non_embedding < 1e7"],
     r"data: 2 point\(s\) for the 3 free parameters of gqa-size; need at least 3"),
    (["--x", "n_heads", "--where", "n_heads == 4 and status == 'completed'"], "n_heads: constant"),
    (["--x", "params_non_embedding,loss"], r"--x: law gqa-size has 1 variable\(s\)"),
    (["--x", "status"], "--x: column 'status' is not numeric"),
    (["--x", "params_non_embedding", "--where", "status == 'completed'", "--predict", "1,2"],
     r"--predict: '1,2' has 2 value\(s\)"),
    (["--x", "params_non_embedding", "--where", "status == 'completed'", "--assign", "loss + 1"],
     "--assign: 'loss \\+ 1' is not NAME = EXPR"),
    (["--x", "params_non_embedding", "--where", "status == 'completed'", "--group-by", "n_heads,n_kv_heads",
      "--holdout-largest", "6"], r"group n_heads=4,n_kv_heads=1: --holdout-largest: 6 of 8 runs leaves fewer"),
    (["--starts", "0"], "--starts: must be 1 to 10,000,000, got 0"),
    (["--starts", "10000000000"], "--starts: must be 1 to 10,000,000, got 10000000000"),
    (["--plot", "fit.gif"], "--plot: fit.gif needs a .png"),
    (["--bootstrap", "1"], "--bootstrap: must be 0 or 2 to 100,000 resamples, got 1"),
    (["--delta", "nan"], "--delta: must be a finite number, got nan"),
    (["--inverse", "1e400"], "--inverse: must be a finite number, got inf"),
]


@pytest.mark.parametrize("extra,pattern", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_input_exits_2_with_one_line(runs, capsys, extra, pattern):
    args = ["--data", str(runs / "runs.csv"), "--law", "gqa-size", *extra]
    if "--law" in extra:
        args = ["--data", str(runs / "runs.csv"), *extra]
    rc, out, err = fit_cli(capsys, *args)
    assert rc == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("costlaw fit: error: "), err
    assert re.search(pattern, lines[0]), lines[0]


def test_errors_through_the_console_entry():
    # The real entry point (python -m costlaw): exit status 2 and exactly one line on stderr.
    p = subprocess.run([sys.executable, "-m", "costlaw", "fit", "--data", "/nonexistent/runs.csv", "--law",
                        "gqa-size"], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == ("costlaw fit: error: --data: no such file '/nonexistent/runs.csv'; give a CSV, Parquet or "
                        "JSON-lines file of runs\n")


def test_data_is_required(capsys):
    rc, _, err = fit_cli(capsys, "--law", "gqa-size")
    assert rc == 2 and err == ("costlaw fit: error: --data: required; give a CSV, Parquet or JSON-lines file of runs, "
                               "or --db RESULTS.duckdb with --sql\n")


def test_wrong_extension_and_inverse_on_two_variables(tmp_path, capsys):
    (tmp_path / "runs.xlsx").write_text("{}")
    rc, _, err = fit_cli(capsys, "--data", str(tmp_path / "runs.xlsx"), "--law", "gqa-size")
    assert rc == 2 and "is not .csv, .parquet, .jsonl or .json" in err
    pd.DataFrame({"N": [1e8, 2e8, 4e8, 8e8, 1.6e9, 3.2e9], "D": [1e9, 4e9, 2e9, 8e9, 3e9, 9e9],
                  "loss": [3.0, 2.8, 2.7, 2.5, 2.45, 2.3]}).to_csv(tmp_path / "nd.csv", index=False)
    rc, _, err = fit_cli(capsys, "--data", str(tmp_path / "nd.csv"), "--law", "chinchilla", "--inverse", "2.0")
    assert rc == 2 and "--inverse: law chinchilla has 2 variables" in err


def test_list_laws(capsys):
    rc, out, _ = fit_cli(capsys, "--list-laws")
    assert rc == 0
    for name in ("chinchilla", "compute", "gqa-size", "power-plus-constant"):
        assert name in out


def test_chinchilla_through_the_cli(chinchilla, capsys):
    rc, out, err = fit_cli(capsys, "--data", str(chinchilla["path"]), "--law", "chinchilla",
                           "--assign", "D = `Training FLOP` / (6 * `Model Size`)",
                           "--where", "loss < largest(loss, 5)", "--x", "Model Size,D", "--json")
    assert rc == 0, err
    [r] = json.loads(out)["candidates"]
    anchor = chinchilla["anchors"]["huber_sum_delta1e-3_optimum"]
    assert r["n_points"] == 240 and r["n_starts"] == 4500
    assert r["objective"] == pytest.approx(anchor["objective_sum_huber"], rel=1e-6)
    assert r["params"]["alpha"] == pytest.approx(anchor["alpha"], abs=2e-4)
    assert r["derived"]["N_opt_exponent"] == pytest.approx(0.514, abs=2e-3)
