"""A new attention pattern is one class and its registration: with nothing else edited, ModelConfig accepts a
layout that uses it, costmodel prices it, `costlaw cost` offers it, runs builds its masks and its decoding cache,
and the store records it, all without a schema migration. Unregistered, it is unknown again.

The pattern is defined here and nowhere in the tree. Every expectation below is computed from its visibility
rule alone, asked about Python ints one (query, key) pair at a time, not from its key counts.
"""

import json
import warnings
from dataclasses import dataclass

import duckdb
import pytest
import torch

from costlaw.analysis.store import SCHEMA_VERSION, ingest
from costlaw.costmodel import ConfigError, ModelConfig, costs, hybrid_layout, kv_tokens_per_layer
from costlaw.costmodel.attention import PATTERNS, Pattern, param, parse_spec, registered
from costlaw.costmodel.costs import params_compute
from costlaw.runs.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from costlaw.runs.models import build_model
from tests.support.synth_runs import write_run


@dataclass(frozen=True)
class Landmarks(Pattern):
    """The `recent` most recent tokens plus every `every`-th token of the sequence (its landmarks)."""

    recent: int = param()
    every: int = param()
    kind = "landmarks"

    def visible(self, q, k):
        return (k <= q) & ((q - k < self.recent) | (k % self.every == 0))

    def keys(self, T: int) -> int:
        if T <= self.recent:
            return T
        return self.recent + (T - self.recent - 1) // self.every + 1  # landmarks among the tokens left behind

    def cache_tokens(self, T: int) -> int:
        return self.keys(T)  # keys(T) never decreases: a token leaving the window is a landmark or never seen again


SPEC = "landmarks(6,5)"
V, T = 61, 40


@pytest.fixture
def landmarks():
    with registered(Landmarks):
        yield parse_spec(SPEC)
    assert "landmarks" not in PATTERNS


def seen_by(spec, q: int) -> int:
    return sum(bool(spec.visible(q, k)) for k in range(q + 1))


def model_config(pattern) -> ModelConfig:
    return ModelConfig(d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8, ffn_dim=48, vocab_size=V,
                       rope_theta=1e4, layout=hybrid_layout(3, pattern, full_layer_ids=[1]))


def test_config_and_costs_follow_the_rule(landmarks):
    cfg = ModelConfig.from_dict({"d_model": 32, "n_layers": 3, "n_heads": 4, "n_kv_heads": 2, "head_dim": 8,
                                 "ffn_dim": 48, "vocab_size": V, "rope_theta": 1e4,
                                 "layout": [f"{SPEC}*1", "full*1", f"{SPEC}*1"]})
    assert cfg == model_config(landmarks) and cfg.family == "hybrid" and cfg.sparse_patterns == (landmarks,)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["layout"][0] == f"{SPEC}*1"
    with pytest.raises(ConfigError, match=r"^layout\.every: must be >= 1"):
        cfg.with_layout(["landmarks(6,0)*3"])
    with pytest.raises(ConfigError, match=r"^layout: landmarks takes 2 integer arguments.*landmarks\(RECENT,EVERY\)"):
        cfg.with_layout(["landmarks(6)*3"])
    for ctx in (1, 6, 7, 64, 333):
        per_query = [seen_by(landmarks, q) for q in range(ctx)]
        assert kv_tokens_per_layer(cfg, ctx) == [max(per_query), ctx, max(per_query)]
        row = costs(cfg, ctx, dtype="fp32")
        assert row["kv_cache_bytes"] == 2 * cfg.kv_dim * (2 * max(per_query) + ctx) * 4
        attention = 4 * cfg.head_dim * cfg.n_heads
        assert row["c_infer_flops_per_token"] == 2 * params_compute(cfg) + attention * (2 * per_query[-1] + ctx)
        assert row["prefill_flops"] == (ctx * 2 * params_compute(cfg)
                                        + attention * (2 * sum(per_query) + ctx * (ctx + 1) // 2))


def test_cost_cli_offers_it(landmarks, capsys):
    from costlaw.cli import main

    args = ["cost", "--d-model", "32", "--layers", "3", "--heads", "4", "--kv-heads", "2", "--head-dim", "8",
            "--ffn-dim", "48", "--vocab", str(V), "--rope-theta", "1e4", "--sparse", "landmarks",
            "--full-layer-ids", "1", "--context", "64", "--dtype", "fp32", "--json"]
    assert main(args + ["--recent", "6", "--every", "5"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["config"]["layout"] == [f"{SPEC}*1", "full*1", f"{SPEC}*1"]
    want = costs(model_config(landmarks), 64, dtype="fp32")
    per_token = 2 * 2 * 8 * 4  # K and V of 2 KV heads of 8 values in fp32
    assert got == {**want, "kv_bytes_per_layer": [t * per_token for t in want["kv_tokens_per_layer"]],
                   "config": model_config(landmarks).to_dict()}
    assert main(args + ["--every", "5"]) == 2  # the pattern gives its parameters no default
    assert capsys.readouterr().err == "costlaw cost: error: --recent: missing; landmarks is landmarks(RECENT,EVERY)\n"


def reference_mask(spec, doc_ids: torch.Tensor | None, B: int) -> torch.Tensor:
    """[B, T, T]: spec.visible on ints, per document (positions restart where the id changes)."""
    rows = []
    for b in range(B):
        seg, pos = [0], [0]
        for t in range(1, T):
            new = doc_ids is not None and int(doc_ids[b, t]) != int(doc_ids[b, t - 1])
            seg.append(seg[-1] + new)
            pos.append(0 if new else pos[-1] + 1)
        rows.append([[seg[q] == seg[k] and bool(spec.visible(pos[q], pos[k])) for k in range(T)] for q in range(T)])
    return torch.tensor(rows)


def test_model_masks_equal_the_rule(landmarks):
    model = build_model(model_config(landmarks), dtype=torch.float64, attn_backend="sdpa")
    assert model.patterns == [landmarks, parse_spec("full")]
    doc_ids = torch.tensor([[0] * 13 + [1] * 27, [2] * T])
    for docs in (None, doc_ids):
        B = 1 if docs is None else 2
        want = reference_mask(landmarks, docs, B)
        dense = model.attention_masks(T, docs)[0]
        assert torch.equal(dense[:, 0].expand(B, T, T), want)
        flex = build_model(model_config(landmarks), attn_backend="flex")
        flex.flex_block_size = 16  # T is not a multiple: the last block row and column are partial
        bm = flex.attention_masks(T, docs, device="cpu")[0]
        # what the kernel computes: the mask_mod on every visited block, and it visits every block with a key
        i = torch.arange(T)
        grid = bm.mask_mod(torch.arange(B)[:, None, None] if docs is not None else torch.tensor(0), torch.tensor(0),
                           i[None, :, None], i[None, None, :])
        assert torch.equal(grid.expand(B, T, T), want)
        blocks = bm.to_dense()[:, 0]  # [B|1, q blocks, kv blocks]: 1 where a block is visited at all
        for b in range(B):
            for qb in range(blocks.shape[1]):
                for kb in range(blocks.shape[2]):
                    tile = want[b, qb * 16:(qb + 1) * 16, kb * 16:(kb + 1) * 16]
                    assert bool(blocks[min(b, blocks.shape[0] - 1), qb, kb]) == bool(tile.any()), (b, qb, kb)


def test_decode_cache_holds_the_priced_bytes_and_matches_a_forward(landmarks):
    cfg = model_config(landmarks)
    torch.manual_seed(0)
    model = build_model(cfg, dtype=torch.float64, attn_backend="sdpa")
    idx = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(1))
    for context in (1, 9, T, 500):
        cache = model.new_cache(2, context, dtype=torch.bfloat16)
        assert cache.nbytes() == costs(cfg, context, dtype="bf16")["kv_cache_bytes"] * 2  # batch 2
    with torch.no_grad():
        want = model(idx)
        cache = model.new_cache(2, T)
        steps, peak = [model.prefill(idx[:, :9], cache)], [0] * len(cache)
        for t in range(9, T):  # far past the window: landmarks stay, the rest leaves
            steps.append(model.decode(idx[:, t], cache))
            peak = [max(m, layer.size) for m, layer in zip(peak, cache.layers)]
    assert (torch.cat(steps, 1) - want).abs().max().item() < 1e-10
    assert peak == [layer.capacity for layer in cache.layers] == kv_tokens_per_layer(cfg, T)
    assert cache[0].size == seen_by(landmarks, T - 1)
    # the flex backend computes the same logits from its BlockMask
    flex = build_model(cfg, dtype=torch.float64, attn_backend="flex")
    flex.load_state_dict(model.state_dict())
    flex.flex_block_size = 16
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flex_attention called without torch.compile()": eager on CPU
        assert (flex(idx) - want).abs().max().item() < 1e-10


def test_store_records_it_without_a_migration(landmarks, tmp_path):
    run = RunConfig(model=model_config(landmarks).replace(vocab_size=257), data=DataConfig(seq_len=64),
                    train=TrainConfig(steps=4, batch_size=2), eval=EvalConfig(contexts=(64,)))
    write_run(tmp_path / "root", run.to_dict(), steps=4, final_loss=3.0)
    db = tmp_path / "r.duckdb"
    report = ingest(tmp_path / "root", db)
    assert report.ingested == [run.run_id] and not (report.corrupt or report.incomplete)
    con = duckdb.connect(str(db), read_only=True)
    try:
        row = con.execute("SELECT family, sparse_kind, sparse_params, sparse_patterns, sink, \"window\", stride, "
                          "kv_tokens_per_layer FROM runs").fetchone()
        versions = [v for (v,) in con.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()]
    finally:
        con.close()
    family, kind, params, patterns, *legacy, kv_tokens = row
    assert (family, kind) == ("hybrid", "landmarks")
    assert json.loads(params) == {"recent": 6, "every": 5} and json.loads(patterns) == [SPEC]
    assert legacy == [None, None, None]  # the v1 columns belong to the built-in patterns' parameter names
    assert kv_tokens == kv_tokens_per_layer(run.model, 64)
    assert versions == list(range(1, SCHEMA_VERSION + 1))


def test_unregistered_it_is_unknown_again():
    with registered(Landmarks):
        assert parse_spec(SPEC).recent == 6
    with pytest.raises(ConfigError, match=r"^layout: unknown attention pattern 'landmarks\(6,5\)'; use full, "):
        parse_spec(SPEC)
    with pytest.raises(ValueError, match="already"), registered(Landmarks), registered(Landmarks):
        pass
    assert "landmarks" not in PATTERNS
