"""Several stores read as one: recommend, validate and report with --db given more than once see the runs of all of
them, each run once, and give what one store holding every run gives."""

import json
import shutil

import pytest

from .conftest import load_data

NOISY = load_data("noisy_ladder")
ARGS = ("--target-loss", "1.81", "--context", "128,32K", "--bootstrap", "200", "--json")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stores")
    a = NOISY.build(tmp, "seeds01", seeds=(0, 1))
    b = NOISY.build(tmp, "seed2", seeds=(2,))
    whole = NOISY.build(tmp, "all")
    return a, b, whole


def fresh(path, tmp_path):
    """A private copy: recommend stores fits in a single --db."""
    out = tmp_path / path.name
    shutil.copy(path, out)
    return out


def test_recommend_over_two_stores_is_recommend_over_their_union(stores, tmp_path, cli):
    a, b, whole = (fresh(p, tmp_path) for p in stores)
    rc, out, err = cli("recommend", "--db", a, "--db", b, *ARGS)
    assert rc == 0, err
    two = json.loads(out)
    rc, out, err = cli("recommend", "--db", whole, *ARGS)
    assert rc == 0, err
    one = json.loads(out)
    assert two["source"].startswith(f"stores {a}, {b}: 48 completed runs (16 configs)")
    assert all(ctx["winner"] for ctx in one["by_context"])  # identified laws: a recommendation
    for x, y in zip(two["by_context"], one["by_context"]):
        assert x["winner"] == y["winner"] and x["winner_config"] == y["winner_config"]
        assert x["predicted_loss"] == pytest.approx(y["predicted_loss"], rel=1e-12)
        for part in ("mean", "new_run"):
            got, want = x["predicted_loss_interval"][part], y["predicted_loss_interval"][part]
            assert [got["lo"], got["hi"]] == pytest.approx([want["lo"], want["hi"]], rel=1e-12)
    # fits of runs from two studies belong to neither file
    assert two["fits"]["not_stored"] == "several --db given: new fits are stored in none of them"
    assert one["fits"].get("stored") == 2


def test_a_run_in_two_stores_counts_once(stores, tmp_path, cli):
    whole = fresh(stores[2], tmp_path)
    copy = tmp_path / "copy.duckdb"
    shutil.copy(whole, copy)
    rc, out, err = cli("recommend", "--db", whole, "--db", copy, *ARGS)
    assert rc == 0, err
    doc = json.loads(out)
    assert "48 completed runs" in doc["source"]
    assert all(c["n_runs"] == 24 for c in doc["candidates"])
    # and recording goes to the first store only
    rc, out, err = cli("recommend", "--db", whole, "--db", copy, *ARGS, "--record")
    assert rc == 0, err
    from costlaw.analysis.store import query_df

    assert int(query_df(whole, "SELECT count(*) AS n FROM recommendations")["n"][0]) == 2
    assert int(query_df(copy, "SELECT count(*) AS n FROM recommendations")["n"][0]) == 0


def test_validate_and_report_over_two_stores(stores, tmp_path, cli):
    a, b, whole = (fresh(p, tmp_path) for p in stores)
    boot = ("--bootstrap", "40")
    rc, out, err = cli("validate", "--db", a, "--db", b, "--json", *boot)
    assert rc == 0, err
    two = json.loads(out)
    rc, out, err = cli("validate", "--db", whole, "--json", *boot)
    one = json.loads(out)
    assert rc == 0 and two["coverage"] == one["coverage"] and len(two["predictions"]) == 48
    assert [p["measured"] for p in two["predictions"]] == [p["measured"] for p in one["predictions"]]
    rc, out, err = cli("report", "--db", a, "--db", b, "--out", tmp_path / "r", "--bootstrap", "40",
                       "--context", "8K", "--json")
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["validation"]["coverage"] == two["coverage"]
    md = (tmp_path / "r" / "report.md").read_text()
    assert f"48 completed runs from {a}, {b}" in md and "## Validation" in md
    assert (tmp_path / "r" / "figures" / "validation.png").is_file()
    env = md[md.index("## Environment"):]
    assert "noisy (48)" in env  # each run once, though its sweep is in two files


def test_db_twice_is_an_error(stores, cli):
    rc, _, err = cli("recommend", "--db", stores[0], "--db", stores[0], *ARGS)
    assert rc == 2 and "is given twice" in err
