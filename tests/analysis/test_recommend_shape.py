"""N* -> config: never below N*, as close above as the d grid allows near the interpolated aspect ratio."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costlaw.analysis.shape import Anchor, Template, aspect_ratio, paper_anchors, shape
from costlaw.costmodel import PRESETS, params_non_embedding, preset


@settings(max_examples=60, deadline=None)
@given(n=st.floats(1e5, 1e11), heads=st.sampled_from([(1, 1), (8, 1), (32, 8), (16, 16), (32, 32)]))
def test_config_reaches_n_star_with_the_smallest_d_near_the_ratio(n, heads):
    t = Template(*heads)
    s = shape(n, t)
    cfg = s.config
    assert s.n_params == params_non_embedding(cfg) >= n
    assert cfg.d_model % 64 == 0 and cfg.n_heads == heads[0] and cfg.n_kv_heads == heads[1]
    assert cfg.n_layers in (max(1, math.floor(s.depth_continuous)), max(1, math.ceil(s.depth_continuous)))
    if cfg.d_model > 64:  # one step narrower at the chosen depth would fall below N*
        assert params_non_embedding(t.config(cfg.n_layers, cfg.d_model - 64)) < n
    # and the other candidate depth is no closer above N*
    for L in {max(1, math.floor(s.depth_continuous)), max(1, math.ceil(s.depth_continuous))} - {cfg.n_layers}:
        d = 64
        while params_non_embedding(t.config(L, d)) < n:
            d += 64
        assert params_non_embedding(t.config(L, d)) >= s.n_params


def test_paper_anchors_and_interpolation():
    anchors = paper_anchors()
    assert [(a.n_layers, a.d_model) for a in anchors][:2] == [(4, 256), (6, 512)]
    # Table 9 is stated once: its anchors are the gqa-* presets, at their own non-embedding N
    ladder = [preset(name) for name in PRESETS if name.startswith("gqa-")]
    assert [(a.n_layers, a.d_model, a.n_params) for a in anchors[:8]] == [
        (c.n_layers, c.d_model, params_non_embedding(c)) for c in ladder]
    assert anchors[7].n_params == pytest.approx(1.019e9, rel=1e-3)  # the "1.2B" shape's non-embedding N
    for a in anchors:
        assert aspect_ratio(a.n_params, anchors) == pytest.approx(a.d_model / a.n_layers)
    mid = math.sqrt(anchors[8].n_params * anchors[9].n_params)  # halfway in log N between 1.8B and 4B
    r8, r9 = anchors[8].ratio, anchors[9].ratio
    assert aspect_ratio(mid, anchors) == pytest.approx((r8 + r9) / 2)
    assert aspect_ratio(1e3, anchors) == anchors[0].ratio and aspect_ratio(1e13, anchors) == anchors[-1].ratio
    # at an anchor, the MHA template lands on the anchor's own shape
    s = shape(anchors[4].n_params, Template(16, 16))
    assert (s.config.n_layers, s.config.d_model) == (16, 1024) and s.n_params == anchors[4].n_params


def test_ladder_anchors_hybrid_and_policy():
    t = Template(4, 1, head_dim=16, vocab_size=257, rope_theta=1e4, sparse="sink_window(4,32)", full_fraction=1 / 3,
                 kv_policy=None, anchors=(Anchor(1e5, 2, 64), Anchor(1e6, 6, 192)))
    s = shape(3e5, t)
    assert s.anchors == "ladder" and s.ratio_target == pytest.approx(32.0)
    cfg = s.config
    assert cfg.family == "hybrid" and cfg.n_full_layers == max(1, round(cfg.n_layers / 3))
    assert cfg.head_dim == 16 and cfg.vocab_size == 257 and cfg.rope_theta == 1e4
    c2 = shape(3e5, Template(4, 4, kv_policy={"method": "snapkv", "keep": 0.25})).config
    assert c2.family == "compressed" and c2.kv_policy.keep == 0.25
    assert shape(3e5, Template(4, 4, ffn_ratio=4.0)).config.ffn_dim == 4 * shape(3e5, Template(4, 4, ffn_ratio=4.0)
                                                                                 ).config.d_model
    assert shape(3e5, Template(4, 4), d_multiple=32).config.d_model % 32 == 0
