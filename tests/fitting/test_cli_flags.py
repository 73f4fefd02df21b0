"""Each of `costlaw fit`'s flags for a scientist's fits, through the CLI: --formula, --law-file, --residuals,
--weights, --fix/--tie/--bounds/--init, --random-starts/--start-box, --eval-at, --bootstrap-by, --holdout-where,
--best-of/--by, --method, --where's largest(), JSON lines input, --plot for three variables, and --help."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import curve_fit

from costlaw.cli import main

ASSIGN_D = "D = `Training FLOP` / (6 * `Model Size`)"


def fit_cli(capsys, *args):
    capsys.readouterr()
    rc = main(["fit", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def fit_json(capsys, *args):
    rc, out, err = fit_cli(capsys, *args, "--json")
    assert rc == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """16 runs of a three-variable law A/N^alpha + B/D^beta + C/K^gamma, 1% noise, in CSV and JSON lines."""
    rng = np.random.default_rng(0)
    n = 16
    N, D, K = (np.geomspace(lo, hi, n)[rng.permutation(n)] for lo, hi in ((1e7, 1e9), (1e9, 1e11), (1, 64)))
    y = (400 / N ** 0.34 + 2000 / D ** 0.36 + 1.5 / K ** 0.2) * np.exp(rng.normal(0, 0.01, n))
    df = pd.DataFrame({"N": N, "D": D, "K": K, "loss": y, "seed_group": np.arange(n) // 2})
    d = tmp_path_factory.mktemp("three")
    df.to_csv(d / "three.csv", index=False)
    df.to_json(d / "three.jsonl", orient="records", lines=True)
    return d


def test_help_documents_every_flag_with_an_example(capsys):
    assert main(["fit", "--help"]) == 0
    text = capsys.readouterr().out
    flags = ["--formula", "--law-file", "--residuals", "--loss", "--weights", "--fix", "--tie", "--bounds", "--init",
             "--random-starts", "--start-box", "--eval-at", "--bootstrap-by", "--db", "--sql", "--holdout-where",
             "--best-of", "--by", "--method", "--plot", "--json", "--where", "--assign"]
    examples = text[text.index("examples:"):]
    for flag in flags:
        assert re.search(rf"\n  {flag}\b", text), f"{flag} has no help entry"
        assert re.search(rf"{flag}(?![-\w])", examples), f"{flag} has no example"
    assert "HALF the sum of squares" in text and "curve_fit(sigma=sigma" in text and "largest(x, k)" in text


def test_where_largest_keeps_epochs_240_rows(chinchilla, capsys, tmp_path):
    raw = chinchilla["raw"]
    keep = raw[raw.loss < sorted(raw.loss)[-5]]
    from costlaw.analysis.fits.rows import keep as where

    kept = where(raw, "loss < largest(loss, 5)")
    assert len(kept) == 240 and list(kept.index) == list(keep.index)
    doc = fit_json(capsys, "--data", chinchilla["path"], "--formula", "E + A/`Model Size`**alpha + B/D**beta",
                   "--assign", ASSIGN_D, "--where", "loss < largest(loss, 5)")
    [r] = doc["candidates"]
    anchor = chinchilla["anchors"]["huber_sum_delta1e-3_optimum"]
    assert doc["x"] == ["Model Size", "D"] and doc["law"].startswith("formula(Model Size,D): ")
    assert r["n_points"] == 240 and r["objective"] == pytest.approx(anchor["objective_sum_huber"], rel=1e-6)
    assert r["params"]["alpha"] == pytest.approx(anchor["alpha"], abs=2e-4) and r["success"]


def test_eval_at_a_papers_parameters(chinchilla, capsys):
    a = chinchilla["anchors"]["hoffmann_rounded"]
    at = ",".join(f"{k}={a[k]}" for k in ("A", "B", "E", "alpha", "beta"))
    doc = fit_json(capsys, "--data", chinchilla["path"], "--law", "chinchilla", "--assign", ASSIGN_D, "--where",
                   "loss < largest(loss, 5)", "--x", "Model Size,D", "--eval-at", at)
    [r] = doc["candidates"]
    assert r["evaluated_at"]["alpha"] == 0.34 and "n_starts" not in r
    assert r["objective"] == pytest.approx(a["objective_sum_huber_on_240"], rel=1e-4)
    assert len(r["predictions"]) == 240 and {"x", "y_true", "y_pred"} <= set(r["predictions"][0])
    rc, out, err = fit_cli(capsys, "--data", chinchilla["path"], "--law", "chinchilla", "--assign", ASSIGN_D,
                           "--x", "Model Size,D", "--eval-at", "A=406.4,B=410.7", "--fix", "E=1.69")
    assert rc == 2 and "--eval-at: give every parameter of chinchilla; missing alpha, beta" in err


def test_fix_tie_bounds_init_and_random_starts(chinchilla, capsys):
    base = ["--data", chinchilla["path"], "--law", "chinchilla", "--assign", ASSIGN_D, "--where",
            "loss < largest(loss, 5)", "--x", "Model Size,D"]
    doc = fit_json(capsys, *base, "--fix", "E=1.69", "--tie", "beta=alpha", "--bounds", "alpha=0:0.3",
                   "--init", "A=400,B=400", "--random-starts", "20", "--start-box", "alpha=0.1:0.3", "--starts", "50")
    [r] = doc["candidates"]
    p = r["params"]
    # init A and B over the grid's other free coordinate, alpha, clipped into [0, 0.3]: 2 distinct starts
    assert p["E"] == 1.69 and p["beta"] == p["alpha"] == pytest.approx(0.3) and r["n_starts"] == 2 + 50 + 20
    assert r["at_bounds"] == [{"param": "alpha", "side": "upper", "bound": 0.3}] and r["tied"] == {"beta": "alpha"}
    assert doc["options"]["fix"] == {"E": 1.69} and doc["options"]["bounds"] == {"alpha": [0.0, 0.3]}
    rc, out, err = fit_cli(capsys, *base, "--fix", "E=1.69", "--tie", "beta=alpha", "--bounds", "alpha=0:0.3")
    assert rc == 0 and "AT BOUND: alpha sits on its upper bound 0.3" in out and "beta (tied)" in out
    assert "E (fixed)" in out


@pytest.mark.parametrize("args, pattern", [
    (["--fix", "E"], "--fix: 'E' is not NAME=VALUE; write e.g. --fix NAME=VALUE"),
    (["--fix", "E=abc"], "--fix: E='abc' is not a number"),
    (["--bounds", "alpha=1"], "--bounds: alpha='1' is not LO:HI"),
    (["--tie", "beta=0.3"], "--tie: beta='0.3': name a parameter on the right"),
    (["--start-box", "alpha=0.1:0.3"], "--start-box: is the box of --random-starts K"),
    (["--bootstrap-by", "K", "--bootstrap", "0"], "--bootstrap-by: groups the resamples of --bootstrap K"),
    (["--best-of", "loss"], "--best-of: needs --by"),
    (["--formula", "A/N**a", "--law", "chinchilla"], "--formula: give either --law NAME or --formula EXPR"),
    (["--formula", "A/Q**a"], "--formula: no name in 'A/Q**a' is a column"),
    (["--formula", "E + A/N**a", "--inverse", "2"], "--inverse: law formula(N): E + A/N**a has no closed-form inverse"),
    (["--formula", "A/N**a + B/D**b", "--x", "N"], "--formula: D is a data column but not in --x"),
    (["--method", "varpro", "--fix", "E=1"], "--method varpro: searches every exponent itself"),
    (["--eval-at", "a=1", "--bootstrap", "5"], "--eval-at: evaluates given parameters without fitting"),
    (["--holdout-where", "N > 1e8", "--holdout-largest", "2"], "give either --holdout-largest K or --holdout-where"),
    (["--weights", "nope"], "--weights: unknown column 'nope'"),
])
def test_flag_errors_are_one_line(three, capsys, args, pattern):
    law = [] if "--formula" in args else ["--law", "gqa-size", "--x", "N"]
    rc, out, err = fit_cli(capsys, "--data", three / "three.csv", *law, *args)
    assert rc == 2 and out == "" and len(err.splitlines()) == 1, err
    assert pattern in err, err


def test_raw_weighted_formula_matches_curve_fit(tmp_path, capsys):
    rng = np.random.default_rng(1)
    C = np.geomspace(1e17, 1e21, 12)
    sd = np.linspace(0.003, 0.02, 12)
    acc = 0.55 - 3.0 * (C / 1e17) ** -0.3 + rng.normal(0, sd)
    pd.DataFrame({"C": C, "acc": acc, "acc_sd": sd}).to_csv(tmp_path / "acc.csv", index=False)
    doc = fit_json(capsys, "--data", tmp_path / "acc.csv", "--formula", "top - A*(C/1e17)**(-alpha)", "--y", "acc",
                   "--residuals", "raw", "--loss", "l2", "--assign", "w = 1/acc_sd**2", "--weights", "w",
                   "--init", "top=0.5,A=3,alpha=0.3")
    popt, _ = curve_fit(lambda c, top, A, alpha: top - A * (c / 1e17) ** -alpha, C, acc, p0=[0.5, 3, 0.3],
                        sigma=sd, absolute_sigma=True, xtol=1e-15, ftol=1e-15, gtol=1e-15, maxfev=100000)
    [r] = doc["candidates"]
    for k, v in zip(("top", "A", "alpha"), popt):
        assert r["params"][k] == pytest.approx(v, rel=1e-6)
    assert r["residuals"] == "raw" and r["weighted"] and r["objective_definition"].startswith("sum w·r²/2")
    assert doc["options"]["weights"] == "w" and doc["options"]["residuals"] == "raw"


def test_law_file_through_the_cli(three, tmp_path, capsys):
    (tmp_path / "laws.py").write_text("from costlaw.fitting import formula_law\n"
                                      "THREE = formula_law('A/N**alpha + B/D**beta + C/K**gamma', ('N', 'D', 'K'))\n")
    doc = fit_json(capsys, "--data", three / "three.jsonl", "--law-file", tmp_path / "laws.py")
    [r] = doc["candidates"]
    assert r["params"]["alpha"] == pytest.approx(0.34, abs=0.05) and len(doc["options"]["law_sha256"]) == 64
    rc, out, _ = fit_cli(capsys, "--law-file", tmp_path / "laws.py", "--list-laws")
    assert rc == 0 and "formula(N,D,K)" in out


def test_bootstrap_by_holdout_where_and_a_three_variable_plot(three, tmp_path, capsys):
    png = tmp_path / "three.png"
    doc = fit_json(capsys, "--data", three / "three.csv", "--formula", "A/N**alpha + B/D**beta + C/K**gamma",
                   "--bootstrap", "40", "--bootstrap-by", "seed_group", "--holdout-where", "N > 5e8",
                   "--plot", png)
    [r] = doc["candidates"]
    assert r["bootstrap_by"] == {"column": "seed_group", "n_groups": 8}
    assert set(r["ci95"]) >= {"A", "alpha", "B", "beta", "C", "gamma"} and r["n_bootstrap"] == 40
    h = r["holdout"]
    assert h["where"] == "N > 5e8" and h["n_heldout"] == 3 and h["n_train"] == 13
    assert all(row["x"]["N"] > 5e8 and {"y_true", "y_pred"} <= set(row) for row in h["rows"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc, out, _ = fit_cli(capsys, "--data", three / "three.csv", "--formula", "A/N**alpha + B/D**beta + C/K**gamma",
                         "--bootstrap", "20", "--bootstrap-by", "seed_group", "--holdout-where", "N > 5e8")
    assert "resamples of groups of rows by seed_group (8 groups)" in out
    assert "predicting the 3 rows where N > 5e8" in out


def test_best_of_keeps_each_groups_least_loss(tmp_path, capsys):
    # An LR sweep: three learning rates per (N, D); the best is kept, one tie broken the same way in any order.
    rows = []
    for N in (1e7, 3e7, 1e8, 3e8):
        for D in (1e9, 3e9):
            base = 1.7 + 400 / N ** 0.34 + 400 / D ** 0.28
            for lr, extra in ((1e-3, 0.05), (3e-3, 0.0), (1e-2, 0.02)):
                rows.append({"N": N, "D": D, "lr": lr, "loss": base + extra})
    rows.append({"N": 1e7, "D": 1e9, "lr": 2e-3, "loss": rows[1]["loss"]})  # a tie with the best
    df = pd.DataFrame(rows)
    for order, name in ((df, "a.csv"), (df.iloc[::-1], "b.csv")):
        order.to_csv(tmp_path / name, index=False)
    docs = [fit_json(capsys, "--data", tmp_path / n, "--law", "chinchilla", "--best-of", "loss", "--by", "N,D",
                     "--starts", "200") for n in ("a.csv", "b.csv")]
    assert docs[0]["candidates"][0]["n_points"] == 8
    assert docs[0]["candidates"][0]["data_fingerprint"] == docs[1]["candidates"][0]["data_fingerprint"]
    assert docs[0]["notes"] == ["--best-of loss --by N,D: 8 of 25 rows kept; 1 group(s) tied on loss, broken by "
                                "the other columns' values"]
    assert docs[0]["options"]["best_of"] == "loss" and docs[0]["options"]["best_by"] == ["N", "D"]


def test_method_varpro_through_the_cli(chinchilla, capsys):
    doc = fit_json(capsys, "--data", chinchilla["path"], "--law", "chinchilla", "--assign", ASSIGN_D, "--where",
                   "loss < largest(loss, 5)", "--x", "Model Size,D", "--method", "varpro")
    [r] = doc["candidates"]
    anchor = chinchilla["anchors"]["huber_sum_delta1e-3_optimum"]
    assert r["objective"] == pytest.approx(anchor["objective_sum_huber"], rel=1e-6) and r["success"]
    assert doc["options"]["method"] == "varpro"


def test_json_holds_params_objective_r2_intervals_and_heldout_rows(three, capsys):
    doc = fit_json(capsys, "--data", three / "three.csv", "--formula", "A/N**alpha + B/D**beta + C/K**gamma",
                   "--bootstrap", "20", "--holdout-largest", "2", "--holdout-by", "N")
    [r] = doc["candidates"]
    assert set(r["params"]) == {"A", "alpha", "B", "beta", "C", "gamma"}
    for key in ("objective", "objective_definition", "r2", "ci95", "stderr", "success", "reason", "not_identified",
                "at_bounds"):
        assert key in r, key
    assert all({"y_true", "y_pred"} <= set(row) for row in r["holdout"]["rows"])
