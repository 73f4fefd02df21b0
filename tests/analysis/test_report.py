"""`costlaw report`: a self-contained HTML page and the same content as Markdown, from a known store."""

import base64
import re

import pytest

from .conftest import DATA, load_data


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from costlaw.cli import main

    tmp = tmp_path_factory.mktemp("report")
    db = load_data("fixtures").build_store(tmp)
    out = tmp / "report"
    assert main(["report", "--db", str(db), "--out", str(out), "--bootstrap", "4", "--context", "8K,32K,128K"]) == 0
    return db, out


def test_html_embeds_every_figure(report):
    _, out = report
    html = (out / "index.html").read_text()
    pngs = sorted((out / "figures").glob("*.png"))
    names = {p.stem for p in pngs}
    assert names == {"law-curves", "loss-vs-heads", "cost-bars", "frontier-8192", "frontier-131072",
                     "training-curves", "position-loss"}
    assert all(p.with_suffix(".svg").is_file() for p in pngs)
    uris = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(uris) == len(pngs) == html.count("<img")
    assert sorted(base64.b64decode(u) for u in uris) == sorted(p.read_bytes() for p in pngs)
    assert "src=\"http" not in html and "href=\"http" not in html  # self-contained
    assert "document.body.dataset.figuresLoaded" in html


def test_report_content(report):
    _, out = report
    html, md = (out / "index.html").read_text(), (out / "report.md").read_text()
    for text in (html, md):
        for needle in ("Recommendation", "chosen automatically", "Fits", "4,1 full=0.50 sink_window(4,32)",
                       "runs at 3 size(s)", "NVIDIA H100 80GB HBM3", "2.13.0", "0123abcd", "Pareto", "snapkv",
                       "R² ceiling", "losses in nats per byte",
                       # a figure with nothing to draw says why where it would have been
                       "Figure validation not drawn: cross-validation no fold could be fitted"):
            assert needle in text, needle
    # the recommendation in two narrow tables: per context, and per winner with the contexts it wins
    assert '<table id="recommendation">' in html and '<table id="recommendation-winners">' in html
    assert "| 4,1 full=0.50 sink_window(4,32) | 32768, 131072 | 3x192 |" in md
    figures = md[md.index("## Figures"):md.index("## Fits")]
    assert figures.index("frontier-131072") < figures.index("Figure validation not drawn") < \
        figures.index("training-curves")
    for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / rel).is_file()
    assert len(re.findall(r"!\[", md)) == 7
    assert (out / "fits.json").is_file()
    tomls = sorted((out / "recommended").glob("*.toml"))
    assert [p.name for p in tomls] == ["model-131072.toml", "model-32768.toml", "model-8192.toml"]


def test_report_errors(tmp_path, capsys):
    from costlaw.analysis.store.ingest import ingest
    from costlaw.cli import main

    (tmp_path / "root").mkdir()
    ingest(tmp_path / "root", tmp_path / "empty.duckdb")
    assert main(["report", "--db", str(tmp_path / "empty.duckdb"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no completed runs" in err[0]


def test_report_sweep_filter(report, tmp_path, capsys):
    """--sweep keeps one study's runs when a results file holds several; a sweep with none errs in one line."""
    import shutil

    from costlaw.analysis.store.ingest import ingest
    from costlaw.cli import main
    from tests.support.synth_runs import write_run

    db, out = report
    total = int(re.search(r"(\d+) completed runs from", (out / "report.md").read_text()).group(1))
    fx = load_data("fixtures")
    mixed = tmp_path / "mixed.duckdb"
    shutil.copy(db, mixed)
    write_run(tmp_path / "extra", fx.run_config(fx.model("4,1", 2, 128)), sweep="other-study")
    ingest(tmp_path / "extra", mixed)
    for sweep, n in ((None, total + 1), ("fixture", total), ("other-study", 1)):
        dest = tmp_path / f"r-{sweep}"
        args = ["report", "--db", str(mixed), "--out", str(dest), "--bootstrap", "0"]
        args += ["--sweep", sweep] if sweep else []
        assert main(args) == 0
        assert f"{n} completed runs from" in (dest / "report.md").read_text(), sweep
    capsys.readouterr()
    assert main(["report", "--db", str(mixed), "--out", str(tmp_path / "none"), "--sweep", "nothing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no completed runs in sweep 'nothing'" in err[0]


def test_each_warning_once(tmp_path):
    """A warning that holds at several contexts (the same winner at each) is listed once, naming them."""
    from costlaw.analysis.recommend import load_fits
    from costlaw.analysis.report import build_report

    db = load_data("fixtures").build_store(tmp_path)
    fits = load_fits(DATA / "paper_like_fits.json")  # laws without runs: no measured noise, a warning per context
    res = build_report(db, tmp_path / "r", fits=fits, target=2.6, standard="32,8", n_boot=4, validate=False)
    raw = res.recommendation.warnings()
    assert len(raw) == 5 and len({w.split(": ", 1)[1] for w in raw}) == 2  # five contexts, two distinct texts
    md = res.markdown.read_text()
    warned = [line for line in md.splitlines() if line.startswith("- warning: ")]
    assert warned == ["- warning: context 8192: the winner 32,2 has no measured run-to-run noise, so its interval "
                      "covers the fit only",
                      "- warning: contexts 16384, 32768, 65536, 131072: the winner 32,1 has no measured run-to-run "
                      "noise, so its interval covers the fit only"]
    assert md.count("| 32,1 | 16384, 32768, 65536, 131072 |") == 1  # one row per winner, not one per context


def test_merged_warnings_name_every_context_once():
    from types import SimpleNamespace

    from costlaw.analysis.report.build import merged_warnings

    ctx = [8192, 131072]
    rec = SimpleNamespace(contexts=ctx, warnings=lambda: [f"context {T}: {w}" for w in ("A", "B") for T in ctx]
                          + ["context 8192: no winner: why", "unscoped"])
    assert merged_warnings(rec) == ["every context (8192, 131072): A", "every context (8192, 131072): B", "unscoped"]


def _flat_store(tmp_path):
    """Runs that fall as a pure power law over four sizes: every law's E runs to its bound (a weak law)."""
    from costlaw.analysis.store.ingest import ingest
    from costlaw.costmodel import params_non_embedding
    from tests.support.synth_runs import write_run

    fx = load_data("fixtures")
    for label in ("4,4", "4,1"):
        for L, d in fx.SHAPES:
            cfg = fx.model(label, L, d)
            loss = 3.0 * (params_non_embedding(cfg) / 1e5) ** -0.05 * (1.0 if label == "4,4" else 1.02)
            write_run(tmp_path / "root", fx.run_config(cfg), sweep="flat", final_loss=loss + 0.01,
                      evals=[{"eval": "val_loss", "tags": {"context": 128}, "metrics": {"loss": loss, "tokens": 4096}}])
    ingest(tmp_path / "root", tmp_path / "flat.duckdb")
    return tmp_path / "flat.duckdb"


def test_no_recommendation_says_why(tmp_path):
    """The Recommendation section is always there: with weak laws it names them and the flag that would use them;
    with no law at all it says so, and the figures that would need one say why they are missing."""
    from costlaw.analysis.report import build_report

    res = build_report(_flat_store(tmp_path), tmp_path / "weak", n_boot=4, validate=False, contexts=[8192, 131072])
    md = res.markdown.read_text()
    rec = md[md.index("## Recommendation"):md.index("## Validation")]
    assert "No recommendation at any context: every candidate within the budgets is excluded: a weak law (4,4, 4,1)" \
        in rec and "--allow-weak-laws would use them anyway" in rec
    assert "- 4,4: weak law (E = " in rec and "the runs show no floor" in rec
    assert '<table id="recommendation"' not in res.html.read_text()  # no table of 'none' rows
    assert "law-curves.png" in md  # weak laws are still laws: drawn (dashed)
    assert "Figure cost-bars not drawn: no context has a recommended config" in md
    assert not res.tomls

    few = load_data("fixtures").build_store(tmp_path / "few", labels=("8,2",))
    res = build_report(few, tmp_path / "none", n_boot=4, validate=False)
    md = res.markdown.read_text()
    rec = md[md.index("## Recommendation"):md.index("## Validation")]
    assert "No recommendation: no candidate has a fitted law (8,2: runs at 3 size(s); a fit needs >= 4)" in rec
    assert "- 8,2: no law (runs at 3 size(s); a fit needs >= 4)" in rec
    assert "Figure law-curves not drawn: no data (no candidate has a fitted law: 8,2: runs at 3 size(s)" in md
    assert "law-curves.png" not in md and res.recommendation is None


def test_a_store_with_extensions_reports_the_context_check(tmp_path):
    """Validation says what the store's extension pairs measured of reusing a law at a longer context
    (studies/long-context: every gap to 8,8 widened from 2K to 16K); a store without extensions says nothing."""
    import json
    import shutil
    from pathlib import Path

    from costlaw.analysis.report.build import build_report, dumps_json

    study = Path(__file__).resolve().parents[2] / "studies/long-context/results.duckdb"
    db = shutil.copy(study, tmp_path / "lc.duckdb")
    res = build_report(db, tmp_path / "r", n_boot=0)
    md = res.markdown.read_text()
    assert ("The gap widened in 6 of 6 pairs (2 of the 2 reference runs they share), by +0.0227 on average (se "
            "0.0119): the invariance holds within two standard errors.") in md
    assert "| 8,2 | 2 | +0.0235 | 0.0065 | 2/2 |" in md
    doc = json.loads(dumps_json(res))["context_check"]
    assert doc["reference"] == "8,8" and doc["overall"]["widened"] == 6
    plain = build_report(_flat_store(tmp_path), tmp_path / "plain", n_boot=0, contexts=[8192])
    assert "Context: each candidate" not in plain.markdown.read_text() and plain.context_check is None
