"""`costlaw validate --mode context`: does a candidate's gap to the default carry over from the pretraining context
to its extension (the assumption behind reusing a law at another context)?"""

import json
from pathlib import Path

import pandas as pd
import pytest

from costlaw.analysis.validate.context import context_shifts
from costlaw.costmodel.core.errors import CostlawError

STORE = Path(__file__).resolve().parents[2] / "studies" / "long-context" / "results.duckdb"


def frame(gaps_short: dict, gaps_long: dict, seeds=(0, 1), widths=((128, 2), (192, 3)), se=0.002, noise=None):
    """Pretraining runs at 2K and their extensions at 16K: the reference (8,8) at loss 1 and 0.9, each other pair
    its gap above it; `noise(pair, width, seed)` adds to the long loss."""
    rows = []
    for (d, L) in widths:
        for seed in seeds:
            for pair in {(8, 8), *gaps_short}:
                gs, gl = gaps_short.get(pair, 0.0), gaps_long.get(pair, 0.0)
                extra = noise(pair, d, seed) if noise and pair != (8, 8) else 0.0
                pid = f"p{pair[0]}-{pair[1]}-{d}-{seed}"
                base = dict(sweep="s", seed=seed, family="gqa", d_model=d, n_layers=L, n_heads=pair[0],
                            n_kv_heads=pair[1], head_dim=64, layout=f'["full*{L}"]', params_non_embedding=d * d,
                            loss_se=se)
                rows.append({**base, "run_id": pid, "base_run_id": None, "stage": "pretrain", "seq_len": 2048,
                             "val_loss": 1.0 + gs})
                rows.append({**base, "run_id": "x" + pid, "base_run_id": pid, "stage": "extend", "seq_len": 16384,
                             "val_loss": 0.9 + gl + extra})
    return pd.DataFrame(rows)


def test_an_unchanged_gap_holds_and_a_widened_one_does_not():
    same = context_shifts(frame({(8, 2): 0.05, (16, 2): -0.04}, {(8, 2): 0.05, (16, 2): -0.04}))
    s = same.summary()
    assert same.reference == "8,8" and len(same.shifts) == 8
    assert s["overall"]["mean"] == pytest.approx(0.0, abs=1e-12) and s["overall"]["holds"] is True
    assert s["overall"]["seed_sd_change"] == pytest.approx(0.0, abs=1e-12)
    wide = context_shifts(frame({(8, 2): 0.05, (16, 2): -0.04}, {(8, 2): 0.08, (16, 2): -0.07})).summary()
    o = wide["overall"]
    assert o["widened"] == 8 and o["mean"] == pytest.approx(0.03) and o["holds"] is False
    assert o["sign_test_p"] == pytest.approx(2 * 0.5 ** 8)
    assert wide["candidates"]["8,2"]["mean"] == pytest.approx(0.03)  # per candidate: the signed change
    assert wide["candidates"]["16,2"]["mean"] == pytest.approx(-0.03)


def test_noise_makes_the_error_and_the_seed_spread():
    """A change of +-0.01 by seed: the seed sd of a change is measured, and a mean change within two standard
    errors of zero holds."""
    fr = frame({(8, 2): 0.05}, {(8, 2): 0.05}, noise=lambda pair, d, seed: 0.01 if seed else -0.01)
    s = context_shifts(fr).summary()["overall"]
    assert s["seed_sd_change"] == pytest.approx(0.01 * 2 ** 0.5)
    assert s["holds"] is True and s["widened"] == 2


def test_pairs_sharing_a_reference_are_one_cluster():
    """The reference's luck at one width moves every candidate's change there: 3 candidates x 2 widths x 1 seed are
    6 pairs but 2 clusters. Seen as 6 independent pairs the widening looks certain (6 of 6, se from their small
    spread); counted by clusters it is 2 of 2 (p 0.5) with a cluster-robust se that covers the reference's noise."""
    luck = {128: 0.04, 192: 0.0}  # the reference's extension at d 128 came out 0.04 better than at d 192
    fr = frame({(8, 2): 0.05, (8, 1): 0.07, (4, 4): 0.06}, {(8, 2): 0.05, (8, 1): 0.07, (4, 4): 0.06}, seeds=(0,))
    ext = (fr["stage"] == "extend") & (fr["n_heads"] == 8) & (fr["n_kv_heads"] == 8)
    fr.loc[ext, "val_loss"] -= fr.loc[ext, "d_model"].map(luck)
    fr.loc[(fr["stage"] == "extend") & ~ext, "val_loss"] += 0.001 * fr.loc[(fr["stage"] == "extend") & ~ext,
                                                                            "n_kv_heads"]
    o = context_shifts(fr).summary()["overall"]
    assert o["n"] == 6 and o["widened"] == 6 and o["sign_test_p"] == pytest.approx(2 * 0.5 ** 6)
    assert (o["clusters"], o["clusters_widened"], o["cluster_sign_test_p"]) == (2, 2, 0.5)
    by_pairs = o["sd"] / 6 ** 0.5
    # CR1 by hand: cluster sums of deviations from the mean, sqrt(G / (G - 1) * sum of squares) / n
    x = {128: [0.04 + 0.001 * k for k in (2, 1, 4)], 192: [0.001 * k for k in (2, 1, 4)]}
    mean = sum(map(sum, x.values())) / 6
    cr1 = (2 / 1 * sum(sum(v - mean for v in xs) ** 2 for xs in x.values())) ** 0.5 / 6
    assert o["se_mean_clustered"] == pytest.approx(cr1) and o["se_mean"] == pytest.approx(cr1) and cr1 > by_pairs
    assert o["holds"] is True and abs(o["mean"]) < 2 * cr1  # within two of its cluster-robust se
    one = context_shifts(frame({(8, 2): 0.05}, {(8, 2): 0.08})).summary()["overall"]  # one candidate: a pair a cluster
    assert one["clusters"] == one["n"] == 4


def test_other_architectures_and_missing_references_are_left_out():
    fr = frame({(8, 2): 0.05}, {(8, 2): 0.06})
    hybrid = fr[fr["run_id"] == "xp8-2-128-0"].assign(run_id="h", family="hybrid", layout='["full*1","sink*1"]')
    lone = fr[(fr["run_id"].str.contains("p8-2-192-1"))].assign(d_model=256)  # no reference at d 256
    lone["run_id"] = lone["run_id"] + "-256"
    lone.loc[lone["stage"] == "extend", "base_run_id"] = lone.loc[lone["stage"] == "extend", "base_run_id"] + "-256"
    c = context_shifts(pd.concat([fr, hybrid, lone], ignore_index=True))
    assert len(c.shifts) == 4  # the hybrid extension is another architecture, d 256 has no (8,8)
    assert c.skipped == ["8,2 d 256 L 3 seed 1: no reference run at that width, seed and contexts"]


@pytest.mark.parametrize("mutate, reference, message", [
    (lambda f: f[f["stage"] == "pretrain"].assign(base_run_id=None), None, "--db: no pretraining run"),
    (lambda f: f, "8,3", "--reference: '8,3' is not a GQA pair"),
    (lambda f: f, "4,4", "--reference: no extension pair of 4,4"),
    (lambda f: f[f["n_heads"] == 8].query("n_kv_heads == 2"), None, "--reference: no multi-head"),
    (lambda f: f[f["n_kv_heads"] == 8], None, "--db: only the reference 8,8 has extensions"),
])
def test_what_cannot_be_checked_says_why(mutate, reference, message):
    with pytest.raises(CostlawError, match=message):
        context_shifts(mutate(frame({(8, 2): 0.05}, {(8, 2): 0.06})), reference)


def test_the_committed_long_context_store(cli):
    """Round 1 of the long-context study: every gap widened from 2K to 16K (studies/long-context/README.md), but its 6
    pairs share 2 reference runs, and counted by them the widening is within two cluster-robust standard errors."""
    rc, out, err = cli("validate", "--db", STORE, "--mode", "context", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    o = doc["overall"]
    assert doc["reference"] == "8,8" and o["n"] == 6 and o["widened"] == 6
    assert o["sign_test_p"] == pytest.approx(0.03125)
    assert (o["clusters"], o["clusters_widened"], o["cluster_sign_test_p"]) == (2, 2, 0.5)
    assert o["se_mean"] == o["se_mean_clustered"] == pytest.approx(0.0119, abs=5e-5) and o["holds"] is True
    changes = {(s["candidate"], s["d_model"]): round(s["change"], 4) for s in doc["shifts"]}
    assert changes == {("16,2", 192): -0.0446, ("16,2", 256): -0.0048, ("8,2", 192): 0.0232,
                       ("8,2", 256): 0.0238, ("8,1", 192): 0.0361, ("8,1", 256): 0.0037}
    text = cli("validate", "--db", STORE, "--mode", "context")[1]
    assert ("the pairs share 2 reference runs, whose pairs widened on average in 2 (sign test p 0.5; cluster-robust "
            "se 0.0119)") in text and "invariance holds within 2 se" in text
    rc, _, err = cli("validate", "--db", STORE, "--reference", "8,8")
    assert rc == 2 and "--reference: only --mode context" in err


def test_recommend_says_what_reusing_a_law_at_a_longer_context_assumes(cli, tmp_path):
    """recommend's note when its laws were fitted at a shorter context than asked: what that assumes, with the
    store's own measurement of it when the store has extensions, and that it has none otherwise."""
    import shutil

    from costlaw.analysis.validate.context import context_evidence

    ev = context_evidence(str(STORE))
    assert ev.startswith("this store's extensions measured it up to seq_len 16384: against 8,8, the gap widened "
                         "in 6 of 6 pairs (2 of the 2 reference runs they share), by +0.0227 nats on average")
    assert "(se 0.0119, within noise;" in ev
    steps = shutil.copy(STORE.parents[1] / "gqa-heads-steps" / "results.duckdb", tmp_path / "steps.duckdb")
    rc, out, err = cli("recommend", "--db", steps, "--target-loss", "0.9", "--context", "64K", "--families", "gqa",
                       "--bootstrap", "0")
    assert rc == 0, err
    assert ("note: the laws were fitted to runs trained at 2048 tokens and are used as is at every longer --context, "
            "which assumes each candidate's loss relative to the default does not change with context") in out
    assert "; no extension pair in this store tests it (costlaw validate --mode context); the context changes" in out
