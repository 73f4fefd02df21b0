"""Pareto sets: a hand example with ties and duplicates, then `costlaw frontier` on a known store."""

import json

import numpy as np
import pytest

from costlaw.analysis.frontier import pareto_mask

from .conftest import load_data


def test_pareto_hand_example():
    #            a    b    c    d    e    f    g    h
    cost = [1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 5.0, 0.5]
    loss = [3.0, 2.5, 2.6, 2.5, 2.0, 2.0, 2.1, 3.5]
    # b beats c (same cost, lower loss) and d (same loss, higher cost); e and f tie exactly, so neither
    # dominates the other; g is worse and dearer than e; h is the cheapest.
    assert pareto_mask(cost, loss).tolist() == [True, True, False, False, True, True, False, True]


def test_pareto_matches_brute_force():
    rng = np.random.default_rng(0)
    cost = rng.integers(0, 6, 60).astype(float)
    loss = rng.integers(0, 6, 60).astype(float)
    brute = [not any(cost[j] <= cost[i] and loss[j] <= loss[i] and (cost[j] < cost[i] or loss[j] < loss[i])
                     for j in range(60)) for i in range(60)]
    assert pareto_mask(cost, loss).tolist() == brute


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    fx = load_data("fixtures")
    return fx.build_store(tmp_path_factory.mktemp("frontier"))


def test_frontier_cli(store, tmp_path, capsys):
    from costlaw.cli import main

    plot = tmp_path / "front.png"
    assert main(["frontier", "--db", str(store), "--context", "128,128K", "--json", "--plot", str(plot)]) == 0
    doc = json.loads(capsys.readouterr().out)
    pts = doc["points"]
    assert {p["family"] for p in pts} == {"gqa", "hybrid", "compressed"}
    assert len({p["run_id"] for p in pts}) == 23 and len(pts) == 2 * (23 + 8)  # 4,4's runs add 2 policies each
    for T in (128, 131072):
        for name, col in (("memory", "m_infer_bytes"), ("flops", "c_infer_flops_per_token")):
            at = [p for p in pts if p["context"] == T]
            want = pareto_mask([p[col] for p in at], [p["loss"] for p in at])
            assert [p[f"pareto_{name}_all"] for p in at] == want.tolist()
            entry = next(s for s in doc["pareto"] if (s["context"], s["cost"], s["family"]) == (T, name, "all"))
            assert [p["loss"] for p in entry["points"]] == sorted((p["loss"] for p in entry["points"]), reverse=True)
    comp = [p for p in pts if p["family"] == "compressed" and p["context"] == 128]
    assert all(p["delta_nll"] in (0.08, 0.03) for p in comp)
    assert sorted(doc["plots"]) == sorted(str(tmp_path / f"front-{T}.{e}") for T in (128, 131072)
                                          for e in ("png", "svg"))
    assert main(["frontier", "--db", str(store), "--context", "8K"]) == 0
    assert "pareto (all)" in capsys.readouterr().out
