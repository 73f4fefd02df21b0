"""Malformed sweep specs: each gives exit code 2 and one stderr line naming the key, creates no directory under
--root and submits no job (every submitit executor is replaced by one that fails the test if built)."""

import textwrap

import pytest

from costlaw.cli import main

VALID = """
[sweep]
name = "t"
runs_cap = 20
contexts = [128]

[base.model]
d_model = 64
n_layers = 2
n_heads = 4
n_kv_heads = 2
head_dim = 16
vocab_size = 257

[base.data]
seq_len = 64

[base.train]
steps = 4

[[axes]]
grid = { "model.n_heads" = [4, 8] }

[derived]
"model.ffn_dim" = "paper_ffn(model.d_model)"

[resources]
cpus = 1
time_min = 5
signal_delay_s = 30
"""

STAGED = VALID + """
[[stages]]
name = "pretrain"

[[stages]]
name = "extend"
from = "pretrain"
set = { "data.seq_len" = 128 }
"""


FFN = "\"model.ffn_dim\" = \"paper_ffn(model.d_model)\""


def sub(old, new, text=VALID):
    assert old in text, old
    return text.replace(old, new, 1)


# (id, spec text, key path the one-line error must name)
CASES = [
    ("toml-syntax", VALID + "\n[sweep\n", "toml"),
    ("unknown-top-key", "foo = 1\n" + VALID, "foo"),
    ("sweep-missing", sub("[sweep]\nname = \"t\"\nruns_cap = 20\ncontexts = [128]\n", ""), "sweep"),
    ("sweep-unknown-key", sub("runs_cap = 20", "runs_cap = 20\nrun_cap = 3"), "sweep.run_cap"),
    ("sweep-name-missing", sub("name = \"t\"\n", ""), "sweep.name"),
    ("sweep-name-type", sub("name = \"t\"", "name = 5"), "sweep.name"),
    ("sweep-name-chars", sub("name = \"t\"", "name = \"a/b\""), "sweep.name"),
    ("runs-cap-type", sub("runs_cap = 20", "runs_cap = \"many\""), "sweep.runs_cap"),
    ("runs-cap-zero", sub("runs_cap = 20", "runs_cap = 0"), "sweep.runs_cap"),
    ("runs-cap-exceeded", sub("runs_cap = 20", "runs_cap = 1"), "sweep.runs_cap"),
    ("contexts-type", sub("contexts = [128]", "contexts = 128"), "sweep.contexts"),
    ("contexts-bad-token", sub("contexts = [128]", "contexts = [\"lots\"]"), "sweep.contexts[0]"),
    ("contexts-zero", sub("contexts = [128]", "contexts = [0]"), "sweep.contexts[0]"),
    ("seeds-negative", sub("contexts = [128]", "contexts = [128]\nseeds = [0, -1]"), "sweep.seeds[1]"),
    ("seeds-repeat", sub("contexts = [128]", "contexts = [128]\nseeds = [1, 1]"), "sweep.seeds"),
    ("seeds-empty", sub("contexts = [128]", "contexts = [128]\nseeds = []"), "sweep.seeds"),
    ("base-missing", VALID[:VALID.index("[base.model]")] + VALID[VALID.index("[[axes]]"):], "base"),
    ("base-model-missing", sub("[base.model]", "[base.modle]"), "base.modle"),
    ("base-unknown-section-key", sub("steps = 4", "steps = 4\nlearning_rate = 0.1"), "base.train.learning_rate"),
    ("base-stage", sub("[base.data]", "[base]\nstage = \"extend\"\n[base.data]"), "base.stage"),
    ("base-model-unknown-field", sub("head_dim = 16", "head_dim = 16\nheads = 3"), "base.model.heads"),
    ("base-impossible-kv", sub("n_kv_heads = 2", "n_kv_heads = 3"), "base.model.n_kv_heads"),
    ("base-wrong-type", sub("steps = 4", "steps = 4\nlr = \"fast\""), "base.train.lr"),
    ("base-seq-len-small", sub("seq_len = 64", "seq_len = 2"), "base.data.seq_len"),
    ("base-unknown-preset", sub("d_model = 64", "preset = \"gqa-9t\"\nd_model = 64"), "base.model.preset"),
    ("base-vocab-small", sub("vocab_size = 257", "vocab_size = 100"), "base.model.vocab_size"),
    ("axes-not-array", "axes = 3\n" + sub("[[axes]]\ngrid = { \"model.n_heads\" = [4, 8] }", ""), "axes"),
    ("axis-no-kind", sub("grid = { \"model.n_heads\" = [4, 8] }", "name = \"x\""), "axes[0].name"),
    ("axis-two-kinds", sub("grid = { \"model.n_heads\" = [4, 8] }",
                           "grid = { \"model.n_heads\" = [4, 8] }\nzip = { \"train.lr\" = [0.1] }"), "axes[0]"),
    ("axis-empty", sub("grid = { \"model.n_heads\" = [4, 8] }", "grid = {}"), "axes[0].grid"),
    ("grid-not-list", sub("\"model.n_heads\" = [4, 8]", "\"model.n_heads\" = 4"), "axes[0].grid.model.n_heads"),
    ("grid-empty-list", sub("\"model.n_heads\" = [4, 8]", "\"model.n_heads\" = []"), "axes[0].grid.model.n_heads"),
    ("grid-unknown-path", sub("\"model.n_heads\" = [4, 8]", "\"model.n_head\" = [4, 8]"),
     "axes[0].grid.model.n_head"),
    ("grid-unknown-section", sub("\"model.n_heads\" = [4, 8]", "\"optim.lr\" = [1, 2]"), "axes[0].grid.optim.lr"),
    ("grid-stage-path", sub("\"model.n_heads\" = [4, 8]", "\"stage\" = [\"extend\"]"), "axes[0].grid.stage"),
    ("axis-impossible-point", sub("\"model.n_heads\" = [4, 8]", "\"model.n_heads\" = [4, 6, 5]"),
     "base.model.n_kv_heads"),
    ("axis-wrong-value-type", sub("\"model.n_heads\" = [4, 8]", "\"train.lr\" = [0.1, \"x\"]"),
     "axes[0].grid.train.lr"),
    ("zip-length-mismatch", sub("grid = { \"model.n_heads\" = [4, 8] }",
                                "zip = { \"model.n_heads\" = [4, 8], \"train.lr\" = [0.1] }"), "axes[0].zip.train.lr"),
    ("list-empty", sub("grid = { \"model.n_heads\" = [4, 8] }", "list = []"), "axes[0].list"),
    ("list-not-table", sub("grid = { \"model.n_heads\" = [4, 8] }", "list = [4]"), "axes[0].list[0]"),
    ("list-unknown-path", sub("grid = { \"model.n_heads\" = [4, 8] }", "list = [{ \"train.lrr\" = 1 }]"),
     "axes[0].list[0].train.lrr"),
    ("duplicate-points", sub("grid = { \"model.n_heads\" = [4, 8] }",
                             "list = [{ \"train.lr\" = 0.01 }, { \"train.lr\" = 0.01 }]"), "axes"),
    ("same-path-two-axes", VALID + "\n[[axes]]\nlist = [{ \"model.n_heads\" = 2 }]\n", "axes[1].list.model.n_heads"),
    ("derived-not-table", "derived = 3\n" + sub("[derived]\n\"model.ffn_dim\" = \"paper_ffn(model.d_model)\"", ""),
     "derived"),
    ("derived-not-string", sub("\"paper_ffn(model.d_model)\"", "160"), "derived.model.ffn_dim"),
    ("derived-unknown-target", sub("\"model.ffn_dim\" = ", "\"model.ffn\" = "), "derived.model.ffn"),
    ("derived-syntax", sub("paper_ffn(model.d_model)", "paper_ffn(model.d_model"), "derived.model.ffn_dim"),
    ("derived-unsafe-call", sub("paper_ffn(model.d_model)", "__import__('os').getpid()"), "derived.model.ffn_dim"),
    ("derived-lambda", sub("paper_ffn(model.d_model)", "(lambda: 1)()"), "derived.model.ffn_dim"),
    ("derived-unknown-name", sub("paper_ffn(model.d_model)", "paper_ffn(d_model)"), "derived.model.ffn_dim"),
    ("derived-unknown-function", sub("paper_ffn(model.d_model)", "ffn(model.d_model)"), "derived.model.ffn_dim"),
    ("derived-unknown-field-ref", sub("paper_ffn(model.d_model)", "paper_ffn(model.width)"),
     "derived.model.ffn_dim"),
    ("derived-division-by-zero", sub("paper_ffn(model.d_model)", "model.d_model / (model.n_heads - model.n_heads)"),
     "derived.model.ffn_dim"),
    ("derived-string-constant", sub("paper_ffn(model.d_model)", "'160'"), "derived.model.ffn_dim"),
    ("derived-string-field", sub(FFN, FFN + "\n\"data.corpus\" = \"1 + 1\""), "derived.data.corpus"),
    ("derived-conflicts-axis", sub(FFN, FFN + "\n\"model.n_heads\" = \"4\""), "derived.model.n_heads"),
    ("derived-N-before-model", sub("\"model.ffn_dim\" = \"paper_ffn(model.d_model)\"",
                                   "\"train.lr\" = \"1 / N\"\n\"model.ffn_dim\" = \"paper_ffn(model.d_model)\""),
     "derived.train.lr"),
    ("derived-nonfinite", sub(FFN, FFN + "\n\"train.lr\" = \"exp(1000)\""), "derived.train.lr"),
    ("resources-unknown-key", sub("cpus = 1", "cpus = 1\ngpu = 1"), "resources.gpu"),
    ("resources-negative-gpus", sub("cpus = 1", "cpus = 1\ngpus = -1"), "resources.gpus"),
    ("resources-time-zero", sub("time_min = 5", "time_min = 0"), "resources.time_min"),
    ("resources-partition-type", sub("cpus = 1", "cpus = 1\npartition = 3"), "resources.partition"),
    ("resources-signal-too-late", sub("signal_delay_s = 30", "signal_delay_s = 600"), "resources.signal_delay_s"),
    ("resources-mem-zero", sub("cpus = 1", "cpus = 1\nmem_gb = 0"), "resources.mem_gb"),
    ("stage-unknown-name", sub("name = \"extend\"", "name = \"finetune\"", STAGED), "stages[1].name"),
    ("stage-duplicate", sub("name = \"extend\"", "name = \"pretrain\"", STAGED), "stages[1].name"),
    ("stage-from-unknown", sub("from = \"pretrain\"", "from = \"warmup\"", STAGED), "stages[1].from"),
    ("stage-from-self", sub("from = \"pretrain\"", "from = \"extend\"", STAGED), "stages[1].from"),
    ("stage-cycle", sub("[[stages]]\nname = \"pretrain\"\n", "[[stages]]\nname = \"compress\"\nfrom = \"extend\"\n",
                        sub("from = \"pretrain\"", "from = \"compress\"", STAGED)), "stages[0].from"),
    ("stage-unknown-key", sub("from = \"pretrain\"", "from = \"pretrain\"\nafter = 1", STAGED), "stages[1].after"),
    ("stage-set-unknown-path", sub("\"data.seq_len\" = 128", "\"data.seqlen\" = 128", STAGED),
     "stages[1].set.data.seqlen"),
    ("stage-set-bad-value", sub("\"data.seq_len\" = 128", "\"data.seq_len\" = 1", STAGED),
     "stages[1].set.data.seq_len"),
    ("stage-without-parent", sub("from = \"pretrain\"\n", "", STAGED), "stages[1].from"),
    ("stage-resources-bad", sub("set = {", "resources = { cpus = 0 }\nset = {", STAGED), "stages[1].resources.cpus"),
    ("stages-empty", "stages = []\n" + VALID, "stages"),
]


@pytest.fixture
def no_jobs(monkeypatch):
    """Any attempt to build a submitit executor fails the test."""
    import submitit

    def refuse(*a, **k):
        raise AssertionError("an executor was created for a malformed spec")

    for name in ("AutoExecutor", "SlurmExecutor", "LocalExecutor", "DebugExecutor"):
        monkeypatch.setattr(submitit, name, refuse)
    import costlaw.sweeps.submit as sweeps_submit
    monkeypatch.setattr(sweeps_submit, "submit", refuse)


def test_at_least_30_distinct_cases():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) >= 30
    assert len({c[1] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case_id,text,key", CASES, ids=[c[0] for c in CASES])
def test_malformed_spec(case_id, text, key, tmp_path, capsys, no_jobs):
    spec = tmp_path / "spec.toml"
    spec.write_text(textwrap.dedent(text))
    root = tmp_path / "root"
    for argv in (["sweep", "plan", str(spec)],
                 ["sweep", "submit", str(spec), "--executor", "slurm", "--root", str(root)],
                 ["sweep", "submit", str(spec), "--executor", "local", "--root", str(root)]):
        rc = main(argv)
        err = capsys.readouterr().err
        lines = err.strip("\n").split("\n")
        assert rc == 2, (argv, err)
        assert len(lines) == 1, err
        msg = lines[0]
        assert msg.startswith(f"costlaw sweep: error: {key}:") or msg.startswith(f"costlaw sweep: error: {key} ("), msg
        assert "Traceback" not in err
        assert not root.exists(), f"{root} was created for a malformed spec"


def test_valid_specs_pass(tmp_path, capsys):
    for i, text in enumerate((VALID, STAGED)):
        spec = tmp_path / f"ok{i}.toml"
        spec.write_text(text)
        assert main(["sweep", "plan", str(spec)]) == 0, capsys.readouterr().err


def test_missing_spec_file(tmp_path, capsys, no_jobs):
    root = tmp_path / "root"
    assert main(["sweep", "submit", str(tmp_path / "nope.toml"), "--executor", "debug", "--root", str(root)]) == 2
    assert capsys.readouterr().err.startswith("costlaw sweep: error: spec: no such file")
    assert not root.exists()
