"""Each figure function writes a non-empty PNG and SVG from store data or fits, and refuses to draw no data."""

from pathlib import Path

import pytest

from costlaw.costmodel.core.errors import CostlawError

from .conftest import load_data

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    from costlaw.analysis.frontier import points_from
    from costlaw.analysis.recommend import fit_store, kv_policy_rows, load_fits, load_runs, recommend
    from costlaw.analysis.report.data import labelled_runs, position_frame, steps_frame

    fx = load_data("fixtures")
    db = fx.build_store(tmp_path_factory.mktemp("figs"))
    runs = labelled_runs(load_runs(db))
    paper = load_fits(DATA / "paper_like_fits.json")
    return {"runs": runs, "steps": steps_frame(db, runs), "pos": position_frame(db, runs),
            "points": points_from(runs, kv_policy_rows(db, None), [32768]),
            "store_fits": fit_store(db, n_boot=4),
            "rec": recommend(paper, 2.6, [8192, 16384, 32768, 65536, 131072], standard="32,8")}


def _check(paths):
    png, svg = paths
    assert png.suffix == ".png" and svg.suffix == ".svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and len(text) > 10_000


def test_every_figure_writes_png_and_svg(frames, tmp_path):
    from costlaw.analysis import figures as F

    _check(F.loss_vs_heads(frames["runs"], tmp_path / "heads.png"))
    _check(F.law_curves(frames["store_fits"], tmp_path / "laws"))
    bars = F.bars_frame(frames["rec"])
    assert set(bars["which"]) == {"standard", "recommended"} and len(bars) == 10
    _check(F.cost_bars(bars, tmp_path / "bars.svg"))
    _check(F.frontier(frames["points"], tmp_path / "frontier.png", context=32768))
    _check(F.training_curves(frames["steps"], tmp_path / "curves.png"))
    _check(F.position_loss(frames["pos"], tmp_path / "position.png"))


def test_no_data_is_a_one_line_error(frames, tmp_path):
    from costlaw.analysis import figures as F
    from costlaw.analysis.recommend import FitSet

    empty = frames["runs"].iloc[0:0]
    cases = [
        (lambda: F.loss_vs_heads(empty, tmp_path / "a"), "loss-vs-heads: no data"),
        (lambda: F.law_curves(FitSet([], "none"), tmp_path / "b"), "law-curves: no data"),
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
