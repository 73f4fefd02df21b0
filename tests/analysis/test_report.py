"""`costlaw report`: a self-contained HTML page and the same content as Markdown, from a known store."""

import base64
import re

import pytest

from .conftest import load_data


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
                       "R² ceiling"):
            assert needle in text, needle
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
