"""Spec semantics: axes multiply, derived formulas, seeds, stages (inheritance, init_from, own axes), labels,
the safe formula language, and the shipped example specs."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from costlaw.costmodel import ConfigError, paper_ffn, params_non_embedding, params_total
from costlaw.sweeps import expand, formula, spec

REPO = Path(__file__).resolve().parents[2]

BASE = """
[sweep]
name = "s"
{sweep}
[base.model]
d_model = 64
n_layers = 2
n_heads = 4
n_kv_heads = 2
head_dim = 16
ffn_dim = 128
vocab_size = 257
[base.data]
seq_len = 64
[base.train]
steps = 10
{rest}
"""


def runs_of(rest="", sweep="", root="/tmp/r"):
    return expand.expand(spec.parse(BASE.format(rest=rest, sweep=sweep)), root)


def test_axes_multiply_grid_zip_and_list():
    runs = runs_of("""
[[axes]]
grid = { "model.n_heads" = [4, 8], "train.lr" = [1e-3, 2e-3] }
[[axes]]
zip = { "model.d_model" = [64, 128], "model.n_layers" = [2, 3] }
[[axes]]
list = [{ "data.seq_len" = 32 }, { "data.seq_len" = 64, "train.batch_size" = 4 }]
""")
    assert len(runs) == 4 * 2 * 2
    combos = {(r.config.model.n_heads, r.config.train.lr, r.config.model.d_model, r.config.model.n_layers,
               r.config.data.seq_len, r.config.train.batch_size) for r in runs}
    assert len(combos) == 16
    assert all((d, L) in ((64, 2), (128, 3)) for _, _, d, L, _, _ in combos)  # zip pairs, never crosses
    assert all(bs == (8 if T == 32 else 4) for *_, T, bs in combos)
    assert len({r.run_id for r in runs}) == 16
    r = runs[0]
    assert r.label == "n_heads=4 lr=0.001 d_model=64 n_layers=2 seq_len=32"
    assert r.config.name == f"s:pretrain:{r.label}"


def test_nested_tables_equal_dotted_keys():
    a = runs_of('[[axes]]\ngrid = { model = { n_heads = [4, 8] } }')
    b = runs_of('[[axes]]\ngrid = { "model.n_heads" = [4, 8] }')
    assert [r.run_id for r in a] == [r.run_id for r in b]


def test_field_types_come_from_the_dataclasses():
    """Every field of ModelConfig, KVPolicy and the run config's sections is a settable path, typed by its hint,
    so a field added to one of them is settable in a spec without editing sweeps."""
    import dataclasses

    from costlaw.costmodel import KVPolicy, ModelConfig
    from costlaw.costmodel.kvpolicy import METHODS
    from costlaw.runs.config import SECTIONS

    types = spec.FIELD_TYPES
    assert {p for p in types if p.count(".") == 1 and p.startswith("model.")} == (
        {f"model.{f.name}" for f in dataclasses.fields(ModelConfig)} | {"model.preset", "model.attention"})
    for name, cls in SECTIONS.items():
        assert {p for p in types if p.startswith(f"{name}.")} == {f"{name}.{f.name}" for f in dataclasses.fields(cls)}
    assert {p.split(".")[2] for p in types if p.startswith("model.kv_policy.")} == (
        {f.name for f in dataclasses.fields(KVPolicy)} - {"options"} | {k for o in METHODS.values() for k in o})
    expected = {"model.rope_theta": float, "model.tied_embeddings": bool, "model.layout": list, "model.kv_policy": None,
                "model.kv_policy.keep": float, "model.kv_policy.budget": int, "eval.contexts": list, "train.lr": float,
                "data.doc_mask": bool, "seed": int}
    assert {p: types[p] for p in expected} == expected


def test_seeds_and_derived_formulas():
    runs = runs_of(sweep="seeds = [0, 7]", rest="""
[[axes]]
grid = { "model.d_model" = [64, 96] }
[derived]
"model.ffn_dim" = "paper_ffn(model.d_model)"
"train.tokens" = "20 * N"
"train.steps" = "0"
"train.lr" = "0.0047 * (N / 108e6) ** (-1/3) / 2"
"train.batch_size" = "max(1, round(2048 * 160 * (N / 108e6) ** (2/3) / data.seq_len))"
"train.beta2" = "0.95 if train.batch_size * data.seq_len >= 524288 else 0.99"
""")
    assert len(runs) == 4 and [r.seed for r in runs] == [0, 7, 0, 7]
    assert runs[1].label == "d_model=64 seed=7"
    for r in runs:
        m = r.config.model
        N = params_non_embedding(m)
        assert m.ffn_dim == paper_ffn(m.d_model)
        assert r.config.train.tokens == 20 * N and r.config.train.steps == 0
        assert math.isclose(r.config.train.lr, 0.0047 * (N / 108e6) ** (-1 / 3) / 2)
        assert r.config.train.batch_size == max(1, round(2048 * 160 * (N / 108e6) ** (2 / 3) / 64))
        assert r.config.train.beta2 == 0.99
    assert runs[0].run_id != runs[1].run_id  # the seed is part of the run


def test_int_fields_take_the_rounded_value_and_formulas_see_earlier_results():
    runs = runs_of("""
[derived]
"train.batch_size" = "10 / 4"
"train.grad_accum" = "train.batch_size + 0.6"
""")
    assert runs[0].config.train.batch_size == 2 and runs[0].config.train.grad_accum == 3


def test_preset_with_overrides_and_N():
    runs = expand.expand(spec.parse("""
[sweep]
name = "p"
[base.model]
preset = "gqa-19m"
[base.data]
tokenizer = "gpt2"
[[axes]]
zip = { "model.d_model" = [512, 768], "model.n_layers" = [6, 12] }
[derived]
"model.ffn_dim" = "paper_ffn(model.d_model)"
"train.tokens" = "20 * N_total"
"""), "/tmp/r")
    for r in runs:
        assert r.config.model.n_layers == len(r.config.model.layout)
        assert r.config.train.tokens == 20 * params_total(r.config.model)


STAGES = """
[base.model.attention]
sparse = "sink_window(4,16)"
full_layers = 1

[[axes]]
grid = { "model.n_heads" = [4, 8] }

[[stages]]
name = "pretrain"

[[stages]]
name = "extend"
from = "pretrain"
set = { "data.seq_len" = 256 }
derived = { "train.steps" = "train.steps // 2" }
resources = { time_min = 7 }

[[stages]]
name = "compress"
from = "extend"
set = { "model.kv_policy" = { method = "snapkv", keep = 0.5 } }
[[stages.axes]]
grid = { "model.kv_policy.keep" = [0.5, 0.25, 0.125] }
"""


def test_stages_chain_inherit_settings_and_point_at_parent_dirs():
    runs = runs_of(STAGES, root="/tmp/rootA")
    by = {s: [r for r in runs if r.stage == s] for s in ("pretrain", "extend", "compress")}
    assert [len(v) for v in by.values()] == [2, 2, 6]
    assert [r.stage for r in runs] == ["pretrain"] * 2 + ["extend"] * 2 + ["compress"] * 6
    ids = {r.run_id: r for r in runs}
    for r in by["extend"]:
        p = ids[r.parent_id]
        assert p.stage == "pretrain" and p.point == r.point
        assert r.config.train.init_from == f"/tmp/rootA/runs/{p.run_id}"
        assert r.config.data.seq_len == 256 and r.config.train.steps == 5 and r.resources.time_min == 7
        assert r.config.stage == "extend"
    for r in by["compress"]:
        p = ids[r.parent_id]
        assert p.stage == "extend" and p.point == r.point
        assert r.config.data.seq_len == 256 and r.config.train.steps == 5  # inherited from the extend stage
        assert r.config.train.init_from == f"/tmp/rootA/runs/{p.run_id}"
        assert r.config.model.kv_policy.method == "snapkv" and r.resources.time_min == 60
    keeps = sorted((r.point, r.config.model.kv_policy.keep) for r in by["compress"])
    assert keeps == [(i, k) for i in (0, 1) for k in (0.125, 0.25, 0.5)]
    assert by["compress"][0].label == "n_heads=4 keep=0.5"
    # first-stage ids do not depend on the root; later stages do (init_from is part of their config)
    other = runs_of(STAGES, root="/tmp/rootB")
    assert [r.run_id for r in other[:2]] == [r.run_id for r in runs[:2]]
    assert not {r.run_id for r in other[2:]} & {r.run_id for r in runs[2:]}
    assert expand.count(spec.parse(BASE.format(rest=STAGES, sweep=""))) == 10


def test_runs_cap_counts_stage_axes():
    with pytest.raises(ConfigError, match=r"sweep.runs_cap: the spec expands to 10 runs"):
        runs_of(STAGES, sweep="runs_cap = 9")


@pytest.mark.parametrize("text,fragment", [
    ("().__class__", "attribute access"),
    ("model.d_model.real", "unknown field path"),
    ("[1, 2][0]", "Subscript"),
    ("(x := 3)", "NamedExpr"),
    ("max(*[1, 2])", "keyword or starred"),
    ("round(x=1)", "keyword or starred"),
    ("open('/etc/passwd')", "unknown function 'open'"),
    ("model", "is a table"),
    ("2 ** 100000", None),
    ("'a' * 3", "constant 'a'"),
    ("paper_ffn", "a function: call it"),
])
def test_formula_language_refuses_everything_else(text, fragment):
    if fragment is None:  # parses, but a huge exponent is refused when evaluated
        f = formula.compile_formula(text, "derived.x")
        with pytest.raises(ConfigError, match="exponent"):
            formula.evaluate(f, lambda n: 0, "derived.x")
        return
    with pytest.raises(ConfigError, match="derived.x") as e:
        formula.compile_formula(text, "derived.x")
    assert fragment in str(e.value)


def test_formula_functions():
    ev = lambda t, env=None: formula.evaluate(formula.compile_formula(t, "d"), (env or {}).get, "d")  # noqa: E731
    assert ev("round_to(700, 64)") == 704 and ev("round_to(10, 64)") == 64
    assert ev("clamp(5, 0, 3)") == 3 and ev("log2(8) + sqrt(16) + floor(2.7) + ceil(2.1)") == 12.0
    assert ev("N * 2 if N > 3 else 0", {"N": 4}) == 8 and ev("not N", {"N": 0}) is True
    assert ev("model.d_model / 2", {"model.d_model": 64}) == 32
    assert ev("1 < N <= 4", {"N": 4}) is True and ev("1 < N <= 4", {"N": 5}) is False


def test_example_specs_plan_without_torch():
    examples = sorted((REPO / "sweeps" / "examples").glob("*.toml"))
    names = {p.name for p in examples}
    assert {"tiny.toml", "gqa_ladder.toml", "hybrid_extend.toml", "compress_stage.toml"} <= names
    code = ("import sys, json, io, contextlib\nfrom costlaw.cli import main\n"
            "for p in sys.argv[1:]:\n"
            "    out = io.StringIO()\n"
            "    with contextlib.redirect_stdout(out):\n"
            "        assert main(['sweep', 'plan', p, '--json', '--root', '/tmp/x']) == 0, p\n"
            "    doc = json.loads(out.getvalue())\n"
            "    assert doc['totals']['runs'] == len(doc['runs']) > 0\n"
            "assert 'torch' not in sys.modules, 'plan imported torch'\n")
    p = subprocess.run([sys.executable, "-c", code, *map(str, examples)], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0, p.stderr
    compress = expand.expand(spec.load(REPO / "sweeps/examples/compress_stage.toml"), "/tmp/x")
    assert sum(r.stage == "compress" for r in compress) == 3 * sum(r.stage == "pretrain" for r in compress)
    hybrid = expand.expand(spec.load(REPO / "sweeps/examples/hybrid_extend.toml"), "/tmp/x")
    assert {r.config.model.family for r in hybrid} == {"hybrid", "gqa"}
    assert {r.config.data.seq_len for r in hybrid if r.stage == "extend"} == {16384}


def test_study_specs_expand():
    """Every committed study spec (studies/*/spec.toml) still expands: a spec edit that breaks one would
    otherwise surface only on the GPU host."""
    studies = sorted((REPO / "studies").glob("*/spec*.toml"))
    assert {p.parent.name for p in studies} >= {"gqa-heads", "gqa-heads-steps", "gqa-depth", "gqa-aspect", "gqa-knee",
                                                "gqa-lr", "gqa-tokens", "hybrid-extend", "closed-loop"}
    for path in studies:
        runs = expand.expand(spec.load(path), "/tmp/x")
        assert runs and len({r.run_id for r in runs}) == len(runs), path
    lr = expand.expand(spec.load(REPO / "studies/gqa-lr/spec.toml"), "/tmp/x")
    assert sorted({r.config.train.lr for r in lr}) == [1e-3, 2e-3, 4e-3] and len(lr) == 12


def test_long_context_round_two_is_what_its_readme_plans():
    """studies/long-context/spec-r2.toml: one seed's round trains 24 dense pretrains, extends each to 16K dense and
    as a sink+window hybrid (a third of its layers full, at least one), (8,8) and (8,2) at d 192 also as a
    block-strided hybrid, and compresses only the dense (8,2) extensions (its [sweep] where): 62 runs at 16K a
    round, above the 60 issue 24 asks the store to hold."""
    from costlaw.sweeps.select import select

    runs = expand.expand(spec.load(REPO / "studies/long-context/spec-r2.toml"), "/tmp/x")
    assert len(runs) == 172  # [sweep] where: compress only on dense (8,2) parents, block-strided at one size
    by_id = {r.run_id: r for r in runs}
    chosen = [by_id[i] for i in select(runs, "seed == 0")]
    stages = {s: [r for r in chosen if r.stage == s] for s in ("pretrain", "extend", "compress")}
    assert [len(v) for v in stages.values()] == [24, 50, 12]
    assert {r.config.model.family for r in stages["extend"]} == {"gqa", "hybrid"}
    strided = [m for m in (r.config.model for r in stages["extend"])
               if any(p.kind == "block_strided" for p in m.layout)]
    assert sorted((m.d_model, m.n_heads, m.n_kv_heads, m.n_full_layers) for m in strided) == [(192, 8, 2, 1),
                                                                                              (192, 8, 8, 1)]
    for r in stages["extend"]:
        m = r.config.model
        assert r.config.data.seq_len == 16384 and m.rope_theta == 5e6
        assert m.n_full_layers == (m.n_layers if m.family == "gqa" else max(1, round(m.n_layers / 3)))
    for r in stages["compress"]:
        parent = by_id[r.parent_id].config.model
        assert parent.family == "gqa" and (parent.n_heads, parent.n_kv_heads) == (8, 2)
    assert sum(r.config.data.seq_len >= 16384 for r in chosen) == 62
    assert {r.seed for r in chosen} == {0}


@pytest.mark.parametrize("study", ["gqa-heads", "gqa-heads-steps", "gqa-depth", "gqa-aspect", "gqa-knee"])
def test_committed_runs_are_their_specs_runs(study):
    """Each committed run has a run id that the spec of the sweep it ran under, as committed, still expands to.
    Studies add seeds and axes over several rounds; an edit that renamed the runs already in the results would
    make the next round rerun them. gqa-heads-steps also stores d 640 runs that ran from gqa-heads' spec."""
    import duckdb

    with duckdb.connect(str(REPO / f"studies/{study}/results.duckdb"), read_only=True) as con:
        stored = con.execute("select sweep, run_id from runs").fetchall()
    assert any(sweep == study for sweep, _ in stored)
    for sweep in {sweep for sweep, _ in stored}:
        ids = {r.run_id for r in expand.expand(spec.load(REPO / f"studies/{sweep}/spec.toml"), "/tmp/x")}
        missing = sorted(r for s, r in stored if s == sweep and r not in ids)
        assert not missing, (sweep, missing[:5])


def test_sweep_where_keeps_the_runs_it_names_and_their_parents(tmp_path):
    """[sweep] where: a stage for some parents only; the runs it keeps bring their parents, run ids are those of the
    spec without it, and a malformed or empty expression is refused naming sweep.where."""
    text = (REPO / "sweeps/examples/compress_stage.toml").read_text()
    full = expand.expand(spec.parse(text), tmp_path)
    kept = expand.expand(spec.parse(text.replace("[sweep]\n", "[sweep]\nwhere = \"stage != 'compress' or "
                                                               "model.d_model == 512\"\n", 1)), tmp_path)
    assert {r.run_id for r in kept} < {r.run_id for r in full}
    assert all(r.config.model.d_model == 512 for r in kept if r.stage == "compress")
    assert {r.stage for r in kept} == {r.stage for r in full}
    assert {r.parent_id for r in kept if r.parent_id} <= {r.run_id for r in kept}
    for bad, msg in (("model.d_model +", "sweep.where"), ("model.d_model == 3", "selects none")):
        with pytest.raises(ConfigError) as e:
            expand.expand(spec.parse(text.replace("[sweep]\n", f"[sweep]\nwhere = \"{bad}\"\n", 1)), tmp_path)
        assert e.value.field == "sweep.where" and msg in str(e.value)
