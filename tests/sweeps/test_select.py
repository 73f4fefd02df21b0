"""`--where`: one round of a sweep, with the parents its runs start from; and the largest-first order of
the local executor."""

import pytest

from costlaw.costmodel import ConfigError
from costlaw.sweeps import expand, spec, submit
from costlaw.sweeps.select import largest_first, select

from .conftest import FAKE


def _runs(path, root):
    return expand.expand(spec.load(path), root)


def test_where_picks_a_round_and_brings_parents(tmp_path, write_spec):
    runs = _runs(write_spec(), tmp_path / "root")
    by_id = {r.run_id: r for r in runs}
    four = select(runs, "model.n_heads == 4")
    assert {by_id[i].config.model.n_heads for i in four} == {4}
    assert {by_id[i].stage for i in four} == {"pretrain", "extend"}
    child = select(runs, "model.n_heads == 2 and data.seq_len == 32")
    (kid,) = [i for i in child if by_id[i].stage == "extend"]
    assert child == {kid, by_id[kid].parent_id}  # the extend run comes with the pretrain run it starts from
    assert len(select(runs, "N > 0")) == len(runs)


@pytest.mark.parametrize("expr, field", [("model.n_heads == 3", "--where"), ("model.n_head == 4", "--where"),
                                         ("model.d_model +", "--where")])
def test_where_that_selects_nothing_or_is_malformed_names_the_flag(tmp_path, write_spec, expr, field):
    runs = _runs(write_spec(), tmp_path / "root")
    with pytest.raises(ConfigError) as e:
        select(runs, expr)
    assert e.value.field == field


def test_submit_where_runs_only_the_round(tmp_path, write_spec, job_env):
    path, root = write_spec(), tmp_path / "root"
    sub = submit.submit_spec(path, root, "debug", train_fn=FAKE, progress=False, where="model.n_heads == 4")
    assert sub["submitted"] == 2 and sub["outcome"] == {"completed": 2}
    rest = submit.submit_spec(path, root, "debug", train_fn=FAKE, progress=False)
    assert rest["submitted"] == 2 and rest["skipped_done"] == 2  # the next round picks up what is left


def test_largest_first_orders_by_training_flops(tmp_path, write_spec):
    runs = [r for r in _runs(write_spec(), tmp_path / "root") if r.stage == "pretrain"]
    ordered = largest_first(runs)
    assert [r.config.model.n_heads for r in ordered] == [4, 2]  # more heads, more FLOPs per token


def test_where_compares_strings_as_fit_where_does():
    """--where is costlaw's one expression language: strings compare, and a field of an absent table
    (no kv_policy on a pretrain run) compares unequal instead of failing."""
    from pathlib import Path

    runs = expand.expand(spec.load(Path(__file__).resolve().parents[2] / "sweeps/examples/compress_stage.toml"),
                         "/tmp/r")
    by_id = {r.run_id: r for r in runs}
    chosen = select(runs, "model.kv_policy.method == 'locret' and model.d_model == 512")
    assert {by_id[i].stage for i in chosen} == {"compress", "pretrain"}  # the compress runs and their parent
    assert all(by_id[i].config.model.d_model == 512 for i in chosen)
    compress = {i for i, r in by_id.items() if r.stage == "compress"}
    assert compress <= select(runs, "train.trainable == 'policy'") and compress.isdisjoint(
        select(runs, "train.trainable != 'policy'"))
    with pytest.raises(ConfigError, match="selects none of the"):
        select(runs, "model.d_model == 'x'")  # parses, selects nothing: one line naming --where


def test_measured_throughput_reorders_small_long_runs(tmp_path):
    """Finished runs that show small models reaching a far smaller share of the GPU make a small model with many
    tokens start before a larger one with fewer FLOPs; with nothing finished, the order is by FLOPs."""
    import json

    from costlaw.costmodel import c_train, costs, params_non_embedding
    from costlaw.runs.config import DataConfig, RunConfig, TrainConfig
    from costlaw.sweeps.expand import PlannedRun
    from costlaw.sweeps.select import throughput

    base = dict(n_layers=2, n_heads=2, n_kv_heads=1, head_dim=32, vocab_size=257)

    def planned(d, tokens):
        from costlaw.costmodel import ModelConfig

        cfg = RunConfig(model=ModelConfig(d_model=d, ffn_dim=2 * d, **base), data=DataConfig(seq_len=128),
                        train=TrainConfig(tokens=tokens, batch_size=4))
        return PlannedRun(cfg.run_id, "pretrain", 0, 0, f"d={d}", {}, cfg, None, None)

    small, big = planned(64, 4_000_000), planned(512, 200_000)
    flops = {r.run_id: c_train(r.config.model, 128) * r.config.total_tokens for r in (small, big)}
    assert flops[big.run_id] > flops[small.run_id]
    assert [r.run_id for r in largest_first([small, big], tmp_path)] == [big.run_id, small.run_id]
    # finished runs: 1e11 FLOP/s at the small size, 1e13 at the big one
    for r, rate in ((small, 1e11), (big, 1e13)):
        c = costs(r.config.model, 128)
        d = tmp_path / "runs" / f"done-{r.config.model.d_model}"
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps({"status": "completed", "costs": c,
                                                    "tokens_per_s": rate / c["c_train_flops_per_token"]}))
    rate = throughput(tmp_path)
    assert rate(params_non_embedding(small.config.model)) == pytest.approx(1e11, rel=1e-6)
    assert [r.run_id for r in largest_first([small, big], tmp_path)] == [small.run_id, big.run_id]
    (tmp_path / "runs" / "torn").mkdir()
    (tmp_path / "runs" / "torn" / "summary.json").write_text("{")  # a summary being written is skipped
    assert throughput(tmp_path)(params_non_embedding(big.config.model)) == pytest.approx(1e13, rel=1e-6)


def test_where_reads_stage_and_family():
    """A round of a multi-family study: `stage` and `family` (as the store records it) are names a --where reads;
    a derived formula, which computes numbers, is told they are text."""
    from pathlib import Path

    runs = expand.expand(spec.load(Path(__file__).resolve().parents[2] / "sweeps/examples/compress_stage.toml"),
                         "/tmp/r")
    by_id = {r.run_id: r for r in runs}
    compressed = select(runs, "family == 'compressed'")
    assert {by_id[i].stage for i in compressed} == {"compress", "pretrain"}  # with the parents they start from
    assert all(by_id[i].config.model.family == ("compressed" if by_id[i].stage == "compress" else "gqa")
               for i in compressed)
    assert select(runs, "stage == 'pretrain'") == {i for i, r in by_id.items() if r.stage == "pretrain"}
    with pytest.raises(ConfigError, match="family is text") as e:
        expand.expand(spec.parse('[sweep]\nname = "x"\n[base.model]\npreset = "gqa-3m"\n[derived]\n'
                                 '"train.tokens" = "family * 1000"\n'), "/tmp/r")
    assert e.value.field == "derived.train.tokens"


def test_a_run_with_long_later_stages_starts_first():
    """Of two pretraining runs, the one whose extension takes long starts first even though it alone is the
    shorter: the order follows the longest chain a run starts (its own time plus its later stages')."""
    from costlaw.costmodel import ModelConfig
    from costlaw.runs.config import DataConfig, RunConfig, TrainConfig
    from costlaw.sweeps.expand import PlannedRun

    def planned(d, tokens, seq_len=128, parent=None):
        cfg = RunConfig(model=ModelConfig(d_model=d, ffn_dim=2 * d, n_layers=2, n_heads=2, n_kv_heads=1,
                                          head_dim=32, vocab_size=257), data=DataConfig(seq_len=seq_len),
                        train=TrainConfig(tokens=tokens, batch_size=4))
        return PlannedRun(cfg.run_id, "extend" if parent else "pretrain", 0, 0, f"d={d}", {}, cfg,
                          parent.run_id if parent else None, None)

    big, small = planned(256, 2_000_000), planned(128, 1_000_000)
    long_ext = planned(128, 4_000_000, seq_len=4096, parent=small)
    assert [r.run_id for r in largest_first([small, big])] == [big.run_id, small.run_id]  # alone: by own time
    ordered = [r.run_id for r in largest_first([small, big, long_ext])]
    assert ordered == [small.run_id, long_ext.run_id, big.run_id]


def test_start_order_chains_puts_continuations_first():
    from types import SimpleNamespace as R

    from costlaw.sweeps.select import start_order

    p2, e1, e2, c1 = R(parent_id=None), R(parent_id="p1"), R(parent_id="p2"), R(parent_id="e1")
    pending = [p2, e1, e2, c1]  # largest_first's order; p1 has completed, e1 has not started
    later = {"p2", "e1", "e2", "c1"}
    assert start_order(pending, "longest", later) == pending
    assert start_order(pending, "chains", later) == [e1, p2, e2, c1]
    assert start_order(pending, "chains", later - {"e1"}) == [e1, c1, p2, e2]  # e1 done: its child next
    with pytest.raises(ValueError, match="one of longest, chains"):
        start_order(pending, "shortest", later)
