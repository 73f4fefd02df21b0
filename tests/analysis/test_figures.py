"""Each figure function writes a non-empty PNG and SVG from store data or fits, and refuses to draw no data; the
loss-vs-heads fit is drawn only where it is a law, training curves tell sizes apart, and every figure uses the one
style and the one name of each unit."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from costlaw.costmodel.core.errors import CostlawError

from .conftest import load_data

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    from costlaw.analysis.frontier import points_from
    from costlaw.analysis.recommend import fit_store, kv_policy_rows, load_fits, load_runs, recommend
    from costlaw.analysis.report.data import labelled_runs, position_frame, steps_frame

    fx = load_data("fixtures")
    db = fx.build_store(tmp_path_factory.mktemp("figs"))
    runs = labelled_runs(load_runs(db))
    paper = load_fits(DATA / "paper_like_fits.json")
    return {"runs": runs, "raw_runs": load_runs(db), "steps": steps_frame(db, runs), "pos": position_frame(db, runs),
            "points": points_from(runs, kv_policy_rows(db, None), [32768]),
            "store_fits": fit_store(db, n_boot=4),
            "rec": recommend(paper, 2.6, [8192, 16384, 32768, 65536, 131072], standard="32,8")}


def _check(paths):
    png, svg = paths
    assert png.suffix == ".png" and svg.suffix == ".svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and len(text) > 10_000
    return svg


def texts(svg: Path) -> list[str]:
    """The figure's text as matplotlib's SVG writes it: each string in a comment beside its glyph paths."""
    import html

    return [html.unescape(t) for t in re.findall(r"<!-- (.*?) -->", svg.read_text())]


def test_every_figure_writes_png_and_svg(frames, tmp_path):
    from costlaw.analysis import figures as F

    unit = "nats per byte"  # the fixture's runs are byte-level
    heads = _check(F.loss_vs_heads(frames["runs"], tmp_path / "heads.png"))
    laws = _check(F.law_curves(frames["store_fits"], tmp_path / "laws", loss_unit=unit))
    bars = F.bars_frame(frames["rec"])
    assert set(bars["which"]) == {"standard", "recommended"} and len(bars) == 10
    _check(F.cost_bars(bars, tmp_path / "bars.svg"))
    front = _check(F.frontier(frames["points"], tmp_path / "frontier.png", context=32768, loss_unit=unit))
    curves = _check(F.training_curves(frames["steps"], tmp_path / "curves.png", loss_unit=unit))
    pos = _check(F.position_loss(frames["pos"], tmp_path / "position.png", loss_unit=unit))
    assert "validation loss (nats per byte)" in texts(heads)  # read from the runs' tokenizer
    for svg, kind in ((laws, "validation"), (front, "validation"), (curves, "training"), (pos, "validation")):
        assert f"{kind} loss (nats per byte)" in texts(svg), svg.name
    assert "non-embedding parameters N (log scale)" in texts(laws)


def test_no_data_is_a_one_line_error(frames, tmp_path):
    from costlaw.analysis import figures as F
    from costlaw.analysis.recommend import FitSet

    empty = frames["runs"].iloc[0:0]
    unfit = FitSet([c for c in frames["store_fits"].candidates if not c.fitted], "store")
    assert [c.label for c in unfit.candidates] == ["8,2"]
    cases = [
        (lambda: F.loss_vs_heads(empty, tmp_path / "a"), "loss-vs-heads: no data"),
        (lambda: F.law_curves(FitSet([], "none"), tmp_path / "b"), "law-curves: no data"),
        # points but no law: a law figure with no law in it is not drawn
        (lambda: F.law_curves(unfit, tmp_path / "b2"), "no candidate has a fitted law: 8,2: runs at 3 size(s)"),
        (lambda: F.cost_bars(F.bars_frame(frames["rec"]).iloc[0:0], tmp_path / "c"), "cost-bars: no data"),
        (lambda: F.frontier(frames["points"], tmp_path / "d", context=99), "frontier: no data"),
        (lambda: F.training_curves(frames["steps"].iloc[0:0], tmp_path / "e"), "training-curves: no data"),
        (lambda: F.position_loss(frames["pos"].iloc[0:0], tmp_path / "f"), "position-loss: no data"),
        (lambda: F.training_curves(frames["pos"], tmp_path / "g"), "lack column(s) tokens"),
    ]
    for fn, expect in cases:
        with pytest.raises(CostlawError) as e:
            fn()
        assert expect in str(e.value) and "\n" not in str(e.value)
    assert not list(tmp_path.iterdir())  # nothing half-drawn was left behind


def _heads_runs(scale: float, seed: int = 0):
    """GQA runs at one shape, n_kv = n_h, 1..16 heads, two seeds each: loss = 0.3·n_h^-0.5 + 1.2 plus noise of sd
    `scale` (log-normal), a byte-level tokenizer."""
    rng = np.random.default_rng(seed)
    rows = [{"family": "gqa", "d_model": 256, "n_layers": 4, "n_heads": h, "n_kv_heads": h, "seed": s,
             "loss": (0.3 * h ** -0.5 + 1.2) * float(np.exp(scale * rng.standard_normal())), "tokenizer": "byte"}
            for h in (1, 2, 4, 8, 16) for s in (0, 1)]
    return pd.DataFrame(rows)


def test_loss_vs_heads_draws_its_fit_only_where_it_is_a_law(frames, tmp_path):
    """The fit goes to the head counts' means, with ±1 sd bars where seeds repeat; below recommend's R² bar, or with
    no more head counts than parameters, no line is drawn and the legend says why."""
    from costlaw.analysis import figures as F
    from costlaw.analysis.recommend.guards import R2_MIN
    from costlaw.fitting import fit, get_law

    clean = texts(F.loss_vs_heads(_heads_runs(0.0005), tmp_path / "clean")[1])
    line = [t for t in clean if t.startswith("fit ")]
    assert len(line) == 1 and "on the means" in line[0] and not any(t.startswith("no fit line") for t in clean)
    assert float(re.search(r"R² ([\d.]+)", line[0]).group(1)) >= R2_MIN
    assert any("±1 sd of repeats" in t for t in clean)

    noisy = _heads_runs(0.08, seed=3)
    means = noisy.groupby("n_heads")["loss"].mean()
    r2 = fit(get_law("power-plus-constant"), means.index.to_numpy(float), means.to_numpy(float)).r2
    assert r2 < R2_MIN  # the noise hides the trend: the data this case is about
    drawn = texts(F.loss_vs_heads(noisy, tmp_path / "noisy")[1])
    assert not any(t.startswith("fit ") for t in drawn)
    assert f"no fit line: R² {r2:.3f} < {R2_MIN}, the bar a law must clear in recommend" in drawn

    # the fixture's best series (n_kv = 1 at one shape) has 3 head counts: as many as the curve's parameters
    few = texts(F.loss_vs_heads(frames["runs"], tmp_path / "few")[1])
    assert "no fit line: 3 head counts for a 3-parameter curve" in few and not any(t.startswith("fit ") for t in few)
    assert not any("sd of repeats" in t for t in few)  # one run per head count: no bars claimed


def _steps(labels=("4,4", "1,1"), sizes=(1.0e6, 2.0e6, 4.0e6)):
    rows = []
    for label in labels:
        for i, n in enumerate(sizes):
            for k in range(1, 11):
                rows.append({"run_id": f"{label}-{i}", "label": label, "N": n, "tokens": 1000 * k,
                             "loss": 3.0 + 1.0 / k - 0.1 * i})
    return pd.DataFrame(rows)


def test_training_curves_tell_sizes_apart(tmp_path):
    """One panel per config, one colour per size (in order along the sequential map), a legend naming each N."""
    from matplotlib.colors import to_hex

    from costlaw.analysis import figures as F
    from costlaw.analysis.figures.style import size_colours

    svg = F.training_curves(_steps(), tmp_path / "curves")[1]
    t = texts(svg)
    assert "4,4 (3 runs)" in t and "1,1 (3 runs)" in t  # a panel per config
    assert {"1M", "2M", "4M", "non-embedding parameters N"} <= set(t)  # a legend naming each size
    body = svg.read_text()
    panels = body[:body.index('<g id="legend_1">')]  # the figure's legend comes after the panels: lines only
    strokes = set(re.findall(r"stroke: (#[0-9a-f]{6})", panels))
    wanted = {to_hex(c) for c in size_colours([1.0e6, 2.0e6, 4.0e6]).values()}
    assert len(wanted) == 3 and wanted <= strokes
    # many sizes: a colour bar labelled N instead of a legend entry each
    many = texts(F.training_curves(_steps(sizes=tuple(1e6 * 1.2 ** i for i in range(15))), tmp_path / "many")[1])
    assert "non-embedding parameters N" in many


def test_loss_units_follow_the_tokenizer(frames):
    from costlaw.analysis.figures.style import loss_unit, loss_unit_of

    assert loss_unit(["byte", "byte"]) == "nats per byte"
    assert loss_unit(["gpt2"]) == "nats per token"
    assert loss_unit([]) == "nats per token"
    assert loss_unit(["byte", "gpt2"]) == "nats per token of each run's tokenizer"
    assert loss_unit_of(frames["runs"]) == "nats per byte"  # the tokenizer column labelled_runs adds
    assert "tokenizer" not in frames["raw_runs"].columns
    assert loss_unit_of(frames["raw_runs"]) == "nats per byte"  # else each run's config


FIGURE_SOURCES = ["analysis/figures/costs.py", "analysis/figures/laws.py", "analysis/figures/training.py",
                  "analysis/validate/figure.py", "analysis/calibration/figure.py", "analysis/hybrid/figure.py",
                  "fitting/plot.py", "studies/gqa-depth/figure.py", "studies/gqa-knee/figure.py"]


@pytest.mark.parametrize("rel", FIGURE_SOURCES)
def test_every_figure_draws_in_the_one_style(rel):
    """No figure makes its own canvas, picks matplotlib's default colours or dpi, or names a unit its own way:
    each draws through the style module (fitting/style.py, re-exported by analysis/figures/style.py)."""
    src = (ROOT / rel).read_text()
    assert re.search(r"from costlaw\.(analysis\.figures|fitting)\.style import", src), rel
    for bad, why in ((r"\bFigure\(", "its own Figure"), (r"FigureCanvasAgg", "its own canvas"),
                     (r"[\"']C\d[\"']|f\"C\{", "matplotlib's default colours"), (r"dpi\s*=", "its own dpi"),
                     (r"nats/token|nats/byte", "another name for the loss's unit"), (r"\.savefig\(", "its own save")):
        assert not re.search(bad, src), f"{rel}: {why}"


def test_the_style_is_one(tmp_path):
    """analysis' style is fitting's (the same objects), and `costlaw fit --plot` writes at its dpi."""
    from matplotlib.image import imread

    import costlaw.analysis.figures.style as A
    import costlaw.fitting.style as B
    from costlaw.fitting import fit, get_law, plot_fits

    assert A.RC is B.RC and A.PALETTE is B.PALETTE and A.style is B.style and A.save is B.save
    N = np.geomspace(1e6, 1e8, 6)
    y = (1e5 / N) ** 0.3 + 1.7
    res = fit(get_law("gqa-size"), N, y)
    png = plot_fits(tmp_path / "fit.png", [("", res, N.reshape(-1, 1), y, None)])
    assert imread(png).shape[:2] == (int(5 * B.RC["savefig.dpi"]), int(7 * B.RC["savefig.dpi"]))
