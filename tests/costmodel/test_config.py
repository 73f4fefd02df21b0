"""ModelConfig: validation, canonical serialisation, layouts."""

import pytest

from costlaw.costmodel import FULL, BlockStrided, ConfigError, KVPolicy, ModelConfig, SinkWindow, hybrid_layout, preset

BASE = dict(d_model=256, n_layers=6, n_heads=8, n_kv_heads=2, head_dim=32, ffn_dim=672, vocab_size=1000)


def test_defaults_are_all_full_and_gqa():
    c = ModelConfig(**BASE)
    assert c.layout == (FULL,) * 6
    assert c.family == "gqa" and c.n_full_layers == 6 and c.group_size == 4
    assert c.q_dim == 256 and c.kv_dim == 64


@pytest.mark.parametrize("change, field", [
    (dict(n_kv_heads=3), "n_kv_heads"),
    (dict(n_heads=0), "n_heads"),
    (dict(d_model=1.5), "d_model"),
    (dict(head_dim=33), "head_dim"),
    (dict(vocab_size=True), "vocab_size"),
    (dict(rope_theta=-1), "rope_theta"),
    (dict(tied_embeddings="yes"), "tied_embeddings"),
    (dict(layout=["full*5"]), "layout"),
    (dict(layout=["sink_window(4,0)*6"]), "layout.window"),
    (dict(layout=["sink_window(-1,8)*6"]), "layout.sink"),
    (dict(layout=["block_strided(0,2,2)*6"]), "layout.block"),
    (dict(layout=["banded(3)*6"]), "layout"),
    (dict(layout=["sink_window(4)*6"]), "layout"),
    (dict(kv_policy={"method": "snapkv", "keep": 0.0}), "kv_policy.keep"),
    (dict(kv_policy={"method": "snapkv", "keep": 1.5}), "kv_policy.keep"),
    (dict(kv_policy={"method": "snapkv", "budget": 0}), "kv_policy.budget"),
    (dict(kv_policy={"method": "snapkv"}), "kv_policy"),
    (dict(kv_policy={"method": "snapkv", "keep": 0.5, "budget": 3}), "kv_policy"),
    (dict(kv_policy={"method": "magic", "keep": 0.5}), "kv_policy.method"),
    (dict(kv_policy={"method": "snapkv", "keep": 0.5, "hidden": 3}), "kv_policy.hidden"),
    (dict(kv_policy={"method": "infinipot", "budget": 64, "compress": 0}), "kv_policy.compress"),
])
def test_validation_names_the_field(change, field):
    with pytest.raises(ConfigError) as e:
        ModelConfig(**{**BASE, **change})
    assert e.value.field == field
    assert "\n" not in str(e.value) and str(e.value).startswith(field + ":")


def test_layer_id_out_of_range():
    with pytest.raises(ConfigError, match=r"full_layer_ids: layer id 6 out of range 0\.\.5"):
        hybrid_layout(6, "sink_window(4,64)", full_layer_ids=[1, 6])
    with pytest.raises(ConfigError, match="full_layers"):
        hybrid_layout(6, "sink_window(4,64)", full_layers=7)


def test_longgen_middle_layers():
    layout = hybrid_layout(32, "sink_window(4,4092)", full_layers=11)
    c = preset("llama-2-7b").with_layout(layout)
    assert c.full_layer_ids == tuple(range(10, 21))
    assert c.family == "hybrid" and c.sparse_patterns == (SinkWindow(4, 4092),)
    assert c.to_dict()["layout"] == ["sink_window(4,4092)*10", "full*11", "sink_window(4,4092)*11"]


def test_explicit_layer_ids_and_block_strided():
    layout = hybrid_layout(6, "block_strided(64,4,8)", full_layer_ids=[0, 5])
    c = ModelConfig(**BASE, layout=layout)
    assert c.full_layer_ids == (0, 5) and c.layout[1] == BlockStrided(64, 4, 8)


def test_round_trip_dict_toml_and_stable_id():
    c = ModelConfig(**BASE, layout=hybrid_layout(6, "sink_window(4,60)", full_layers=2),
                    kv_policy=KVPolicy("locret", budget=128, options=(("hidden", 64),)))
    assert ModelConfig.from_dict(c.to_dict()) == c
    assert ModelConfig.from_toml(c.to_toml()) == c
    assert ModelConfig.from_toml(c.to_toml(table="")) == c
    again = ModelConfig.from_dict(dict(reversed(list(c.to_dict().items()))))
    assert again.config_id == c.config_id
    assert c.config_id != c.replace(n_kv_heads=4).config_id
    assert c.kv_policy.option("hidden") == 64 and c.kv_policy.option("chunk") == 256  # defaults filled in


def test_from_dict_shorthands():
    c = ModelConfig.from_dict({"preset": "gqa-19m", "n_heads": 8, "n_kv_heads": 1,
                               "attention": {"sparse": "sink_window(4,1020)", "full_layers": 2}})
    assert (c.n_heads, c.n_kv_heads, c.d_model) == (8, 1, 512)
    assert c.full_layer_ids == (2, 3)
    c2 = ModelConfig.from_dict({"preset": "gqa-19m", "n_layers": 8})
    assert c2.n_layers == 8 and len(c2.layout) == 8


@pytest.mark.parametrize("d, field", [
    ({"preset": "gqa-19m", "n_head": 8}, "n_head"),
    ({"d_model": 64}, "n_layers"),
    ({"preset": "gqa-19m", "attention": {"full_layers": 2}}, "attention.sparse"),
    ({"preset": "gqa-19m", "attention": {"sparse": "full", "full_layers": 2, "x": 1}}, "attention.x"),
    ({"preset": "nope"}, "preset"),
])
def test_from_dict_errors(d, field):
    with pytest.raises(ConfigError) as e:
        ModelConfig.from_dict(d)
    assert e.value.field == field


def test_kept_tokens_rounding():
    p = KVPolicy("snapkv", keep=0.1)
    assert p.kept_tokens(131072) == 13107  # 13107.2 -> nearest
    assert p.kept_tokens(5) == 1  # 0.5 -> halves up
    assert p.kept_tokens(4) == 1  # 0.4 -> at least one token
    assert KVPolicy("snapkv", keep=0.29).kept_tokens(100) == 29  # no float floor trap (0.29*100 = 28.999...)
    assert KVPolicy("snapkv", budget=4096).kept_tokens(1000) == 1000
