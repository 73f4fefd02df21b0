"""The pieces of a trustworthy recommendation: run-to-run noise, the two intervals, the guards on weak laws and the
envelope of trained shapes."""

import math

import numpy as np
import pytest
from scipy import stats

from costlaw.analysis.recommend.candidates import Candidate
from costlaw.analysis.recommend.guards import unchecked, weaknesses
from costlaw.analysis.recommend.intervals import interval
from costlaw.analysis.recommend.noise import Noise, config_groups, estimate
from costlaw.analysis.shape import Anchor, Envelope, Template, shape
from costlaw.costmodel import params_non_embedding
from costlaw.costmodel.core.errors import CostlawError


def law(N):
    return (2e4 / np.asarray(N, dtype=float)) ** 0.35 + 1.6


def groups(rng, sd, n_cfg=40, seeds=5, offsets=None):
    Ns = np.geomspace(1e5, 1e7, n_cfg)
    off = np.zeros(n_cfg) if offsets is None else offsets
    return [(N, law(N) * np.exp(o + sd * rng.standard_normal(seeds))) for N, o in zip(Ns, off)]


def test_seed_noise_is_the_pooled_within_config_spread():
    g = groups(np.random.default_rng(0), 0.03)
    n = estimate(g, law, 3)
    assert n.source == "seeds" and n.kind == "constant" and n.seed_df == 40 * 4 and n.lof_var == 0.0
    pooled = sum(np.sum((np.log(v) - np.log(v).mean()) ** 2) for _, v in g) / (40 * 4)
    assert n.seed_var == pytest.approx(pooled, rel=1e-12)
    assert math.sqrt(n.seed_var) == pytest.approx(0.03, rel=0.12)
    assert n.sd(1e6) == pytest.approx(math.sqrt(n.seed_var)) and n.df(1e6) == 160
    assert Noise.from_json(n.to_json()) == n


def test_lack_of_fit_and_residual_noise():
    rng = np.random.default_rng(1)
    offsets = 0.05 * rng.standard_normal(40)  # config means off the law by ~5%: what N does not capture
    g = groups(rng, 0.01, offsets=offsets)
    with_lof = estimate(g, law, 3, lack_of_fit=True)
    assert math.sqrt(with_lof.lof_var) == pytest.approx(0.05, rel=0.3) and with_lof.lof_df == 37
    assert 37 <= with_lof.df(1e6) <= 160  # Welch-Satterthwaite between the two
    assert estimate(g, law, 3).lof_var == 0.0  # off by default
    # one run per config: seed noise and lack of fit cannot be told apart; the residual variance stands for both
    single = [(N, v[:1]) for N, v in g]
    r = estimate(single, law, 3)
    resid = np.array([math.log(v[0]) - math.log(law(N)) for N, v in single])
    assert r.source == "residuals" and r.seed_df == 37
    assert r.seed_var == pytest.approx(np.sum(resid ** 2) / 37, rel=1e-12)
    assert estimate(single[:3], law, 3) is None  # as many configs as parameters: nothing left to measure


def test_size_dependent_seed_noise_recovers_its_slope():
    rng = np.random.default_rng(2)
    Ns = np.geomspace(1e5, 1e8, 60)
    g = [(N, law(N) * np.exp(0.05 * (N / 1e5) ** -0.25 * rng.standard_normal(6))) for N in Ns]  # var ∝ N^-0.5
    n = estimate(g, law, 3, kind="size")
    assert n.kind == "size" and n.slope == pytest.approx(-0.5, abs=0.15)
    assert n.sd(1e5) > 2 * n.sd(1e8)
    # measured over N 1e5-1e8: held at its ends beyond (no evidence for the trend there)
    assert n.n_range == (pytest.approx(1e5), pytest.approx(1e8))
    assert n.sd(1e10) == n.sd(1e8) and n.sd(1e3) == n.sd(1e5)
    assert Noise.from_json(n.to_json()) == n
    with pytest.raises(CostlawError, match="--noise"):
        estimate(g, law, 3, kind="linear")


def test_config_groups_pool_seeds_by_config():
    pts = [{"N": 1e5, "d_model": 64, "n_layers": 2, "loss": 2.0, "model_id": "a"},
           {"N": 1e5, "d_model": 64, "n_layers": 2, "loss": 2.1, "model_id": "a"},
           {"N": 1e5, "d_model": 32, "n_layers": 8, "loss": 2.3, "model_id": "b"},  # same N, another shape
           {"N": 2e5, "d_model": 96, "n_layers": 2, "loss": 1.9}]
    got = config_groups(pts)
    assert [(N, list(v)) for N, v in got] == [(1e5, [2.0, 2.1]), (1e5, [2.3]), (2e5, [1.9])]


def test_prediction_interval_is_the_exact_mixture_quantile():
    # one bootstrap mean: the interval is the t quantiles around it, exactly
    iv = interval(2.0, np.full(50, 2.0), 0.9, noise_sd=0.03, noise_df=7)
    q = stats.t(7).ppf(0.95)
    assert [iv.lo, iv.hi] == pytest.approx([2.0 * math.exp(-0.03 * q), 2.0 * math.exp(0.03 * q)], rel=1e-9)
    assert (iv.mean_lo, iv.mean_hi) == (2.0, 2.0) and iv.kind == "prediction"
    # spread bootstrap means: the mixture's quantiles, checked against a large Monte Carlo draw
    rng = np.random.default_rng(3)
    draws = 2.0 * np.exp(0.04 * rng.standard_normal(200))
    iv = interval(2.0, draws, 0.8, noise_sd=0.02, noise_df=12)
    mc = np.log(rng.choice(draws, 2_000_000)) + 0.02 * rng.standard_t(12, 2_000_000)
    assert [math.log(iv.lo), math.log(iv.hi)] == pytest.approx(np.quantile(mc, [0.1, 0.9]), abs=1e-3)
    assert [iv.mean_lo, iv.mean_hi] == pytest.approx(np.quantile(draws, [0.1, 0.9]), rel=1e-12)
    assert iv.lo < iv.mean_lo and iv.hi > iv.mean_hi  # a new run is less certain than the mean
    # what each covers is said; without noise there is no new-run interval, without draws only the noise
    assert "fit uncertainty plus run-to-run noise" in iv.covers and "configs resampled" in iv.mean_covers
    no_noise = interval(2.0, draws, 0.9)
    assert no_noise.lo is None and no_noise.kind == "mean" and "no run-to-run noise" in no_noise.covers
    only_noise = interval(2.0, np.empty(0), 0.9, noise_sd=0.03, noise_df=math.inf)
    assert only_noise.mean_lo is None and "noise only" in only_noise.covers
    assert only_noise.hi == pytest.approx(2.0 * math.exp(0.03 * stats.norm.ppf(0.95)), rel=1e-9)
    for bad in (0, 1, 1.5, True):
        with pytest.raises(CostlawError, match="--level"):
            interval(2.0, draws, bad)


def cand(params, samples=None, r2=0.999, losses=(2.0, 1.9, 1.8, 1.75)):
    c = Candidate(label="x", family="gqa", template=Template(4, 4), params=params, r2=r2, n_points=len(losses),
                  ladder=[{"N": 1e5 * (i + 1), "d_model": 64, "n_layers": 2, "loss": v} for i, v in enumerate(losses)])
    c.samples = {k: np.asarray(v, dtype=float) for k, v in samples.items()} if samples else None
    return c


def test_guards_name_each_rule_that_applies():
    good = {"a": [1.0e5, 1.2e5, 0.9e5, 1.1e5], "b": [0.3, 0.32, 0.29, 0.31], "E": [1.5, 1.55, 1.45, 1.52]}
    assert weaknesses(cand({"a": 1e5, "b": 0.3, "E": 1.5}, good)) == []
    floor = weaknesses(cand({"a": 1e5, "b": 0.3, "E": 1e-10}, good))
    assert floor == ["E = 1e-10 is at its bound (below 0.001 x the lowest loss 1.75): the runs show no floor"]
    wide = weaknesses(cand({"a": 1e5, "b": 0.3, "E": 1.5}, {**good, "a": [1e3, 1e5, 1e7, 1e5]}))
    assert len(wide) == 1 and wide[0].startswith("a's bootstrap 95% interval") and "decades" in wide[0]
    inf = weaknesses(cand({"a": 1e5, "b": 0.3, "E": 1.5}, {**good, "a": [1e5, np.inf, 1e5, 1e5]}))
    assert inf == ["a's bootstrap 95% interval [1e+05, inf] is not finite"]
    flat = weaknesses(cand({"a": 1e5, "b": 0.3, "E": 1.5}, {**good, "b": [-0.1, 0.3, 0.3, 0.3]}))
    assert len(flat) == 1 and "reaches <= 0" in flat[0]
    assert weaknesses(cand({"a": 1e5, "b": 0.3, "E": 1.5}, good, r2=0.95)) == [
        "R² 0.950 < 0.98 on the 4 points fitted"]
    bare = cand({"a": 1e5, "b": 0.3, "E": 1.5}, None, r2=None, losses=())
    assert weaknesses(bare) == [] and unchecked(bare) == ["identification (no bootstrap draws)", "R² (not given)",
                                                          "E's bound (no run losses)"]


def ladder_template():
    """(4,4) trained at L 2-4 and d/L 32-64, d 64..256 (the fixture ladder's shapes)."""
    t = Template(4, 4, head_dim=16, vocab_size=257, rope_theta=1e4)
    shapes = ((2, 64), (3, 128), (4, 192), (4, 256))
    return Template(4, 4, head_dim=16, vocab_size=257, rope_theta=1e4,
                    anchors=tuple(Anchor(float(params_non_embedding(t.config(L, d))), L, d) for L, d in shapes))


def test_shapes_stay_inside_the_trained_envelope():
    t = ladder_template()
    env = t.envelope
    assert env == Envelope((2, 4), (32.0, 64.0)) and env.outside(5, 256) == "depth 5 outside the trained 2-4"
    assert env.outside(2, 192) == "d/L 96 outside the trained 32-64" and env.outside(4, 128) is None
    n_max = max(a.n_params for a in t.anchors)
    for n in np.geomspace(1e5, n_max, 25):
        s = shape(float(n), t)
        assert s.outside is None and s.n_params >= n, (n, s.config.n_layers, s.config.d_model)
        assert env.outside(s.config.n_layers, s.config.d_model) is None
        # the smallest N >= N* among the envelope's configs
        best = min(params_non_embedding(t.config(L, d)) for L in range(2, 5) for d in range(64, 257, 64)
                   if 32 <= d / L <= 64 and params_non_embedding(t.config(L, d)) >= n)
        assert s.n_params == best
    beyond = shape(1.5 * n_max, t)  # no config inside reaches it: the rule's config, flagged
    assert beyond.outside is not None and beyond.n_params >= 1.5 * n_max
    assert shape(1e6, Template(4, 4)).envelope is None  # the paper's anchors: no envelope to check


def test_a_config_outside_its_envelope_does_not_win_unless_allowed():
    from costlaw.analysis.objective import Objective
    from costlaw.analysis.recommend import FitSet, recommend

    t = ladder_template()
    inside = Candidate(label="4,4", family="gqa", template=t, params={"a": 2e4, "b": 0.35, "E": 1.6}, r2=0.999,
                       n_points=4, n_max=max(a.n_params for a in t.anchors))
    n_max = inside.n_max
    target = float(law(1.3 * n_max))  # reachable only beyond the envelope
    fs = FitSet([inside], "test")
    rec = recommend(fs, target, [128], Objective())
    assert rec.winner(128) is None and [r.label for r in rec.excluded()] == ["4,4"]
    assert rec.no_winner_reason(128).endswith("--allow-outside-envelope would use them anyway")
    allowed = recommend(fs, target, [128], Objective(), allow_outside=True)
    w = allowed.winner(128)
    assert w is not None and w.outside and any("outside the shapes it was trained at" in x
                                                for x in allowed.warnings())
