"""`recommend --min-retrieval` (issue 24, item 4): each candidate carries the passkey accuracy measured on its
largest runs (a compressed one, its kv_policy evaluation's); below the floor, or unmeasured, it may not win."""

import json

import pytest

from .conftest import load_data

FX = load_data("fixtures")
ACC = {"4,4": 0.9, "4,1": 0.4, "2,1": 0.7}  # passkey accuracy of each candidate's runs; the others: none
KV_ACC = {0.25: 0.2, 0.5: 0.95}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    plain = FX.evals

    def evals(label, cfg, loss):
        out = plain(label, cfg, loss)
        for e in out:
            if e["eval"] == "kv_policy":
                e["metrics"]["retrieval_accuracy"] = KV_ACC[e["tags"]["keep"]]
        if label in ACC:
            out += [{"eval": "retrieval", "tags": {"context": 128, "depth": d},
                     "metrics": {"accuracy": ACC[label], "samples": 100}} for d in (0.1, 0.5, 0.9)]
        return out

    mp.setattr(FX, "evals", evals)
    try:
        yield FX.build_store(tmp_path_factory.mktemp("store"))
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def fitset(store):
    from costlaw.analysis.recommend import fit_store

    return fit_store(store, n_boot=8)


def test_candidates_carry_their_measured_retrieval(fitset, tmp_path):
    from costlaw.analysis.recommend import load_fits

    by = {c.label: c for c in fitset.candidates}
    for label, acc in ACC.items():
        assert by[label].retrieval == pytest.approx(acc)
        assert "at context 128" in by[label].retrieval_source
    assert by["1,1"].retrieval is None
    for keep, acc in KV_ACC.items():
        c = by[f"4,4 snapkv keep={keep:g}"]
        assert c.retrieval == pytest.approx(acc) and "kv_policy eval" in c.retrieval_source
    again = {c.label: c for c in load_fits(fitset.save(tmp_path / "fits.json")).candidates}
    assert again["4,1"].retrieval == pytest.approx(0.4)
    assert again["4,4 snapkv keep=0.25"].retrieval == pytest.approx(0.2)


def test_the_floor_decides_who_may_win(fitset):
    from costlaw.analysis.recommend import recommend

    free = recommend(fitset, 1.9, [128, 32768])
    floor = recommend(fitset, 1.9, [128, 32768], min_retrieval=0.8)
    for T in (128, 32768):
        w = floor.winner(T)
        assert w is not None and w.cand.retrieval >= 0.8
    why = {r.label: r.blocked() for r in floor.excluded()}
    assert why["4,1"].startswith("retrieval 0.40 < --min-retrieval 0.8")
    assert "no retrieval measured" in why["1,1"]
    assert "4,4 snapkv keep=0.25" in why and "4,4 snapkv keep=0.5" not in why
    assert any(free.winner(T).label != floor.winner(T).label for T in (128, 32768))  # the floor changed a pick
    with pytest.raises(Exception, match="^--min-retrieval: an accuracy in"):
        recommend(fitset, 1.9, [128], min_retrieval=1.5)


def test_cli(store, cli):
    rc, text, err = cli("recommend", "--db", store, "--target-loss", 1.9, "--context", "128", "--bootstrap", 8,
                        "--min-retrieval", 0.8, "--json")
    assert rc == 0, err
    doc = json.loads(text)
    assert doc["by_context"][0]["winner"] is not None
    assert any(e["why"].startswith("retrieval 0.40") for e in doc["excluded"])
    assert {c["label"]: c["retrieval"] for c in doc["candidates"]}["4,1"] == pytest.approx(0.4)
    rc, _, err = cli("recommend", "--db", store, "--target-loss", 1.9, "--context", "128", "--min-retrieval", 2)
    assert rc == 2 and err.strip().count("\n") == 0 and "--min-retrieval" in err
