"""`costlaw validate --mode context --figure`: each pair's gap to the reference after extension against before it,
read back from the drawn artists and compared with the numbers the text prints; nothing to draw is a one-line
error and writes no file."""

import json
import re

import pytest

from costlaw.analysis.validate import figure as F
from costlaw.analysis.validate.context import ContextCheck
from costlaw.costmodel.core.errors import CostlawError

from .test_validate_context import frame


def tiny_store(path, pairs: bool = True):
    """A results file of `frame`'s runs: (8,2) behind 8,8 and widening, (16,2) ahead of it and widening, two widths,
    two seeds, byte-level, every run's val-set se 0.002 (an evals row, as ingest writes it)."""
    import duckdb

    from costlaw.analysis.store.schema import migrate

    df = frame({(8, 2): 0.05, (16, 2): -0.04}, {(8, 2): 0.08, (16, 2): -0.07}).assign(
        model_id="m", status="completed", tokenizer="byte")
    if not pairs:
        df["base_run_id"] = None
    con = duckdb.connect(str(path))
    migrate(con, path)
    runs = df.drop(columns="loss_se")
    con.register("df", runs)
    con.execute("INSERT INTO runs BY NAME SELECT * FROM df")
    se = df[["run_id", "loss_se"]].assign(eval="val_loss", tags="{}", metric="loss_se")
    con.register("se", se.rename(columns={"loss_se": "value"}))
    con.execute("INSERT INTO evals BY NAME SELECT * FROM se")
    con.close()
    return path


@pytest.fixture
def drawn(monkeypatch):
    """The Figure each save() in figure.py writes, kept to read the points back."""
    figs, real = [], F.save
    monkeypatch.setattr(F, "save", lambda fig, path: figs.append(fig) or real(fig, path))
    return figs


def test_the_points_are_the_gaps_the_text_reports(cli, tmp_path, drawn):
    db = tiny_store(tmp_path / "tiny.duckdb")
    png = tmp_path / "ctx.png"
    rc, out, err = cli("validate", "--db", db, "--mode", "context", "--figure", png, "--wide")
    assert rc == 0, err
    assert f"wrote {png} and {png.with_suffix('.svg')}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "<svg" in png.with_suffix(".svg").read_text()

    # the text's rows: candidate, width, seed, context, gap short, gap long, change, val se
    row = re.compile(r"^(\d+,\d+)\s+d \d+ L \d+\s+\d+\s+2048 -> 16384\s+(\S+)\s+(\S+)\s+\S+\s+(\S+)$", re.M)
    text = {}
    for cand, gs, gl, se in row.findall(out):
        text.setdefault(cand, []).append((float(gs), float(gl), float(se)))
    assert {k: len(v) for k, v in text.items()} == {"16,2": 4, "8,2": 4}

    [fig] = drawn
    [ax] = fig.axes
    plotted = {}
    for c in ax.containers:  # one errorbar per candidate: the points, then the bars (segments x, y -+ se)
        cand = c.get_label().split(" ")[0]
        xy = c.lines[0].get_xydata()
        half = [(s[1][1] - s[0][1]) / 2 for s in c.lines[2][0].get_segments()]
        plotted[cand] = [(round(x, 4), round(y, 4), round(e, 4)) for (x, y), e in zip(xy, half)]
    assert sorted(plotted) == sorted(text)
    for cand, points in text.items():
        assert sorted(plotted[cand]) == sorted(points), cand
    assert sorted(plotted["8,2"])[0][:2] == (0.05, 0.08) and sorted(plotted["16,2"])[0][:2] == (-0.04, -0.07)
    assert plotted["8,2"][0][2] == pytest.approx(0.004)  # sqrt(4 * 0.002^2)

    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "y = x: gap unchanged" in legend
    assert any(t.startswith("8,2 (d 128, 192): change +0.0300, widened 4/4") for t in legend), legend
    assert any(t.startswith("16,2 (d 128, 192): change -0.0300, widened 4/4") for t in legend), legend
    diag = next(ln for ln in ax.get_lines() if ln.get_label() == "y = x: gap unchanged")
    assert all(x == y for x, y in diag.get_xydata())
    assert ax.get_xlabel() == "gap to 8,8 at the pretraining context 2048 (nats per byte)"
    assert ax.get_ylabel() == "gap to 8,8 after extension to 16384 (nats per byte)"
    overall = re.search(r"the gap widened \(grew away from zero\) in (\d+) \(sign test p ([\d.]+)\), by ([+-][\d.]+) "
                        r"on average \(se ([\d.]+)\).*invariance (.+)$", out, re.M).groups()
    assert overall[:2] == ("8", "0.00781")
    title = ax.get_title()
    assert (f"widened in {overall[0]} of 8 pairs (sign test p {overall[1]}), by {overall[2]} on average "
            f"(se {overall[3]})") in title and f"invariance {overall[4]}" in title

    rc, out, err = cli("validate", "--db", db, "--mode", "context", "--figure", tmp_path / "again", "--json")
    assert rc == 0, err
    assert json.loads(out)["figure"] == [str(tmp_path / "again.png"), str(tmp_path / "again.svg")]
    assert (tmp_path / "again.svg").is_file()


def test_nothing_to_draw_is_a_one_line_error(cli, tmp_path):
    db = tiny_store(tmp_path / "none.duckdb", pairs=False)
    rc, out, err = cli("validate", "--db", db, "--mode", "context", "--figure", tmp_path / "ctx.png")
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "--db: no pretraining run with a same-architecture extension" in err and "costlaw ingest" in err
    with pytest.raises(CostlawError) as e:
        F.context_figure(ContextCheck("8,8", []), tmp_path / "empty.png")
    msg = str(e.value)
    assert msg.startswith("figure validate-context: no data (no extension paired") and "\n" not in msg
    assert "train an extend stage" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["none.duckdb"]  # nothing half-drawn
