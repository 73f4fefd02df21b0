"""One validation rule for every config: non-finite numbers and bools-as-numbers are refused everywhere, whole
numbers written as 4.0 are accepted everywhere, and each error is one line naming the field."""

import math
import re

import pytest

from costlaw.costmodel import ConfigError, KVPolicy, ModelConfig
from costlaw.costmodel.attention import SinkWindow
from costlaw.costmodel.core.validate import check, conform, integer, real
from costlaw.runs.config import RunConfig
from costlaw.sweeps.spec import from_dict as spec_from_dict

MODEL = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=96, vocab_size=300)
RUN = {"model": {**MODEL, "vocab_size": 257}, "train": {"steps": 10}}
SPEC = {"sweep": {"name": "t"}, "base": RUN}


def model(**change):
    return ModelConfig(**{**MODEL, **change})


def run(section, **change):
    return RunConfig.from_dict({**RUN, section: {**RUN.get(section, {}), **change}})


def spec(**sweep):
    return spec_from_dict({**SPEC, "sweep": {**SPEC["sweep"], **sweep}})


def resources(**res):
    return spec_from_dict({**SPEC, "resources": res})


BAD = [  # (id, build, field the error must name)
    ("model-int-bool", lambda v: model(n_layers=v), "n_layers"),
    ("model-float", lambda v: model(rope_theta=v), "rope_theta"),
    ("pattern-int", lambda v: SinkWindow(v, 8), "sink"),
    ("policy-keep", lambda v: KVPolicy("snapkv", keep=v), "kv_policy.keep"),
    ("policy-budget", lambda v: KVPolicy("snapkv", budget=v), "kv_policy.budget"),
    ("policy-int-option", lambda v: KVPolicy("snapkv", keep=0.5, options=(("window", v),)), "kv_policy.window"),
    ("policy-float-option", lambda v: KVPolicy("h2o", keep=0.5, options=(("recent", v),)), "kv_policy.recent"),
    ("data-int", lambda v: run("data", seq_len=v), "data.seq_len"),
    ("data-fraction", lambda v: run("data", retrieval_mix=v), "data.retrieval_mix"),
    ("train-int", lambda v: run("train", batch_size=v), "train.batch_size"),
    ("train-float", lambda v: run("train", lr=v), "train.lr"),
    ("train-unbounded-above", lambda v: run("train", grad_clip=v), "train.grad_clip"),
    ("eval-int-list", lambda v: run("eval", contexts=[64, v]), "eval.contexts"),
    ("eval-float-list", lambda v: run("eval", kv_keep=[v]), "eval.kv_keep"),
    ("run-seed", lambda v: RunConfig.from_dict({**RUN, "seed": v}), "seed"),
    ("sweep-runs-cap", lambda v: spec(runs_cap=v), "sweep.runs_cap"),
    ("sweep-seed", lambda v: spec(seeds=[v]), "sweep.seeds[0]"),
    ("resources-int", lambda v: resources(cpus=v), "resources.cpus"),
    ("resources-float", lambda v: resources(mem_gb=v), "resources.mem_gb"),
]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True], ids=["nan", "inf", "-inf", "bool"])
@pytest.mark.parametrize("build, field", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_non_finite_and_bool_are_refused_everywhere(build, field, value):
    with pytest.raises(ConfigError) as e:
        build(value)
    assert e.value.field == field
    assert "\n" not in str(e.value) and re.match(rf"{re.escape(field)}: (item \d+ )?must be ", str(e.value))


def test_whole_floats_are_whole_numbers_everywhere():
    m = model(d_model=64.0, n_layers=2.0)
    assert (m.d_model, m.n_layers) == (64, 2) and type(m.d_model) is int and m == model()
    assert SinkWindow(4.0, 8).sink == 4 and type(SinkWindow(4.0, 8).sink) is int
    assert KVPolicy("snapkv", budget=64.0).budget == 64
    assert run("data", seq_len=128.0).data.seq_len == 128
    assert run("eval", contexts=[128.0]).eval.contexts == (128,)
    assert spec(runs_cap=20.0).runs_cap == 20
    assert resources(cpus=2.0).stages[0].resources.cpus == 2
    with pytest.raises(ConfigError, match=r"^d_model: must be a whole number, got 64\.5$"):
        model(d_model=64.5)


def test_numbers_convert_to_the_fields_type():
    assert model(rope_theta=10000).rope_theta == 1e4 and type(model(rope_theta=10000).rope_theta) is float
    assert KVPolicy("kv_distill", keep=1, options=(("alpha", 8),)).option("alpha") == 8.0
    assert run("train", lr=1).train.lr == 1.0 and type(run("train", lr=1).train.lr) is float


@pytest.mark.parametrize("call, message", [
    (lambda: integer("n", 0, lo=1), "n: must be >= 1, got 0"),
    (lambda: integer("n", 9, 0, 5), "n: must be in [0, 5], got 9"),
    (lambda: real("x", 0.0, 0, 1, lo_open=True), "x: must be in (0, 1], got 0"),
    (lambda: real("x", "1"), "x: must be a number, got '1'"),
    (lambda: real("x", math.nan), "x: must be a finite number, got nan"),
    (lambda: check("x", [0.5, 2.0], tuple[float, ...], lo=0, hi=1), "x: item 1 must be in [0, 1], got 2"),
    (lambda: check("x", "a", tuple[str, ...]), "x: must be a list, got str 'a'"),
    (lambda: check("x", "c", str, choices=("a", "b")), "x: 'c' is not one of a, b"),
    (lambda: check("x", 1, bool), "x: must be true or false, got 1"),
])
def test_messages(call, message):
    with pytest.raises(ConfigError) as e:
        call()
    assert str(e.value) == message


def test_conform_stores_converted_values_and_names_the_prefix():
    p = KVPolicy("snapkv", keep=1)
    assert p.keep == 1.0 and type(p.keep) is float
    with pytest.raises(ConfigError, match=r"^kv_policy\.method: 'magic' is not one of streaming, "):
        KVPolicy("magic", keep=0.5)
    conform(p, "kv_policy")  # idempotent on a valid object
    assert p == KVPolicy("snapkv", keep=1.0)
