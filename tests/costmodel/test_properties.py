"""Property tests: hybrid and compressed costs reduce to the dense ones when nothing is cut."""

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from costlaw.costmodel import KVPolicy, ModelConfig, costs, hybrid_layout
from costlaw.costmodel.attention import PATTERNS, BlockStrided, SinkWindow
from costlaw.costmodel.core.validate import bounds

DENSE_KEYS = ("c_infer_flops_per_token", "m_infer_values", "kv_cache_bytes", "c_train_flops_per_token",
              "prefill_flops", "kv_tokens")


def dense(layers, heads, group):
    return ModelConfig(d_model=64, n_layers=layers, n_heads=heads, n_kv_heads=heads // group, head_dim=16,
                       ffn_dim=96, vocab_size=300)


cfgs = st.builds(dense, st.integers(1, 6), st.sampled_from([2, 4, 8]), st.sampled_from([1, 2]))


@settings(max_examples=60, deadline=None)
@given(cfg=cfgs, T=st.integers(1, 3000), sink=st.integers(0, 16), extra=st.integers(0, 100), k=st.integers(0, 6))
def test_sink_window_wider_than_context_is_dense(cfg, T, sink, extra, k):
    k = min(k, cfg.n_layers)
    hybrid = cfg.with_layout(hybrid_layout(cfg.n_layers, SinkWindow(sink, max(1, T - sink) + extra), full_layers=k))
    a, b = costs(cfg, T), costs(hybrid, T)
    assert all(a[key] == b[key] for key in DENSE_KEYS)


@settings(max_examples=60, deadline=None)
@given(cfg=cfgs, T=st.integers(1, 3000), block=st.integers(1, 64), stride=st.integers(1, 9))
def test_block_strided_with_all_local_blocks_is_dense(cfg, T, block, stride):
    local = -(-T // block)
    hybrid = cfg.with_layout(hybrid_layout(cfg.n_layers, BlockStrided(block, local, stride), full_layers=0))
    a, b = costs(cfg, T), costs(hybrid, T)
    assert all(a[key] == b[key] for key in DENSE_KEYS)


@settings(max_examples=60, deadline=None)
@given(cfg=cfgs, T=st.integers(1, 3000), method=st.sampled_from(["snapkv", "streaming", "h2o", "random"]),
       slack=st.integers(0, 500))
def test_keep_one_or_budget_at_least_context_is_dense(cfg, T, method, slack):
    a = costs(cfg, T)
    for policy in (KVPolicy(method, keep=1.0), KVPolicy(method, budget=T + slack)):
        b = costs(cfg.replace(kv_policy=policy), T)
        assert all(a[key] == b[key] for key in DENSE_KEYS)


@st.composite
def registered_patterns(draw):
    """Any registered pattern, its parameters drawn from the ranges it declares (a new pattern is covered too)."""
    cls = draw(st.sampled_from(list(PATTERNS.values())))
    values = {f.name: draw(st.integers(bounds(f)["lo"], bounds(f)["lo"] + 40)) for f in dataclasses.fields(cls)}
    return cls(**values)


def check_counts(spec, T: int) -> None:
    """keys, total_keys and cache_tokens against the rule asked about every (query, key) pair."""
    seen = [sum(1 for k in range(q + 1) if spec.visible(q, k)) for q in range(T)]
    assert spec.keys(T) == seen[-1]
    assert spec.total_keys(T) == sum(seen)
    assert spec.cache_tokens(T) == max(seen)


@settings(max_examples=80, deadline=None)
@given(T=st.integers(1, 400), spec=registered_patterns())
def test_counts_match_brute_force(T, spec):
    check_counts(spec, T)


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 400), block=st.integers(1, 16), local=st.integers(1, 5), stride=st.integers(1, 6),
       sink=st.integers(0, 8), window=st.integers(1, 40))
def test_closed_forms_match_brute_force(T, block, local, stride, sink, window):
    """The built-in patterns' small parameters, where their closed forms have most corner cases."""
    for spec in (SinkWindow(sink, window), BlockStrided(block, local, stride)):
        check_counts(spec, T)
