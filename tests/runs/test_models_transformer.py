"""The training forward: loss reductions, packed documents, positions, both attention backends, and a
torch.compile(fullgraph=True) trace of forward + loss + backward for every layout."""

import warnings

import pytest
import torch

import costlaw.runs.models.transformer as transformer
from costlaw.costmodel import FULL, BlockStrided, ModelConfig, SinkWindow
from costlaw.runs.models import IGNORE_INDEX, build_model

V = 67
HYBRID = (SinkWindow(2, 5), FULL, BlockStrided(4, 2, 2))
DOCS = torch.tensor([[0] * 10 + [1] * 14, [3] * 24])


def model_for(layout=HYBRID, dtype=torch.float64, backend="auto"):
    cfg = ModelConfig(d_model=32, n_layers=len(layout), n_heads=4, n_kv_heads=2, head_dim=8, ffn_dim=48,
                      vocab_size=V, rope_theta=1e4, layout=layout)
    torch.manual_seed(0)
    model = build_model(cfg, dtype=dtype, attn_backend=backend)
    model.flex_block_size = 16
    return model


def batch(B=3, T=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, V, (B, T), generator=g)
    targets = torch.randint(0, V, (B, T), generator=g)
    targets[0, :7] = IGNORE_INDEX
    targets[-1, T - 10:] = IGNORE_INDEX
    return idx, targets


def test_loss_reductions_agree():
    model, (idx, targets) = model_for(), batch()
    mean = model(idx, targets)
    total, count = model(idx, targets, reduction="sum")
    per_token = model(idx, targets, reduction="none")
    assert count.item() == (targets != IGNORE_INDEX).sum().item() == 3 * 40 - 7 - 10
    assert torch.allclose(total / count, mean) and torch.allclose(per_token.sum(), total)
    assert per_token.shape == (3, 40) and (per_token[targets == IGNORE_INDEX] == 0).all()
    assert (per_token[targets != IGNORE_INDEX] > 0).all()
    logits = model(idx)
    manual = torch.nn.functional.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=IGNORE_INDEX)
    assert torch.allclose(manual, mean)
    with pytest.raises(ValueError, match="reduction"):
        model(idx, targets, reduction="avg")


def test_loss_without_autograd_is_chunked_and_equal(monkeypatch):
    model, (idx, targets) = model_for(), batch()
    want = model(idx, targets, reduction="none")
    monkeypatch.setattr(transformer, "_EVAL_CHUNK_LOGITS", 7 * V)  # 7 rows per chunk: 18 chunks
    with torch.no_grad():
        got = model(idx, targets, reduction="none")
    assert (got - want).abs().max().item() < 1e-12


def test_packed_documents_compute_what_they_would_alone():
    """Masks and RoPE positions restart per document, so each packed document's logits equal those of a
    forward over that document alone, for every pattern."""
    model = model_for()
    lengths = [13, 1, 19, 7]
    idx = torch.randint(0, V, (1, sum(lengths)), generator=torch.Generator().manual_seed(5))
    doc_ids = torch.cat([torch.full((n,), i % 2) for i, n in enumerate(lengths)])[None]  # ids repeat: runs count
    packed = model(idx, doc_ids=doc_ids)
    start = 0
    for n in lengths:
        alone = model(idx[:, start:start + n])
        assert (packed[:, start:start + n] - alone).abs().max().item() < 1e-10
        start += n


def test_positions_set_rope_only():
    """RoPE scores depend on position differences only and documents are masked apart, so per-document and
    global positions give the same logits (the choice only matters for precision at large positions); other
    positions change them."""
    model, (idx, _) = model_for(), batch()
    doc_ids = torch.cat([torch.zeros(3, 15), torch.ones(3, 25)], 1).long()
    per_document = model(idx, doc_ids=doc_ids)
    assert (per_document - model(idx, doc_ids=doc_ids, positions=torch.arange(40))).abs().max().item() < 1e-10
    assert (per_document - model(idx, doc_ids=doc_ids, positions=2 * torch.arange(40))).abs().max().item() > 1e-4
    assert torch.allclose(model(idx), model(idx, positions=torch.arange(40).expand(3, 40)))


def test_fixed_masks_are_built_once():
    model = model_for()
    first = model.attention_masks(40)
    assert model.attention_masks(40) is first and len(first) == len(model.patterns) == 3
    assert first[model.patterns.index(FULL)] is None  # full causal without documents: SDPA is_causal
    assert model.attention_masks(40, doc_ids=torch.zeros(2, 40, dtype=torch.long)) is not first


def test_compiles_fullgraph_without_breaks():
    """Dynamo traces forward + loss in one graph for every pattern, with and without documents (the fixed
    masks are cached on the first call, hence the third call). Inductor's code generation is exercised on GPU
    by benchmarks/model_smoke_gpu.py."""
    torch._dynamo.reset()
    model = model_for(HYBRID, dtype=torch.float32, backend="sdpa")
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    idx, targets = batch(B=2, T=24)
    for docs in (None, DOCS, None):
        loss = compiled(idx, targets, doc_ids=docs)
        loss.backward()
        assert torch.allclose(loss, model(idx, targets, doc_ids=docs), atol=1e-6)


def test_flex_path_traces_fullgraph_and_matches_sdpa():
    """The GPU path traces without breaks and computes what the dense-mask path computes (forward only: no
    FlexAttention backward on CPU): fixed BlockMasks built before compiling (as the trainer does), a
    BlockMask built inside the graph from doc_ids, and one wrapped in the graph around a block index built
    outside it (as the trainer does for packed rows)."""
    torch._dynamo.reset()
    layout = (SinkWindow(2, 5), FULL)
    flex, sdpa = model_for(layout, dtype=torch.float32, backend="flex"), model_for(layout, dtype=torch.float32)
    idx, _ = batch(B=2, T=24)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flex.sink_chunks = False  # one BlockMask per pattern first; the chunk layout below
        flex.attention_masks(24)
        compiled = torch.compile(flex, fullgraph=True, backend="eager")
        for docs in (None, DOCS):
            assert torch.allclose(compiled(idx, doc_ids=docs), sdpa(idx, doc_ids=docs), atol=1e-5)
        index = flex.document_block_index(DOCS)
        assert len(index) == len(flex.patterns) and sdpa.document_block_index(DOCS) is None
        got = compiled(idx, doc_ids=DOCS, block_index=index)
        assert torch.allclose(got, sdpa(idx, doc_ids=DOCS), atol=1e-5)
        flex.sink_chunks = True  # the sink_window layer (window 5, chunks of 16 < T) as balanced chunks
        masks = flex.attention_masks(24)
        assert type(masks[0]).__name__ == "SinkWindowChunks"
        assert torch.allclose(torch.compile(flex, fullgraph=True, backend="eager")(idx), sdpa(idx), atol=1e-5)
        # prefill keeps one BlockMask (no backward to balance) and still matches
        flex._fixed_masks.clear()
        logits = flex.prefill(idx, flex.new_cache(2, 24))
        assert torch.allclose(logits, sdpa(idx), atol=1e-5)
        assert [[type(m).__name__ for m in ms] for ms in flex._fixed_masks.values()] == [["BlockMask", "NoneType"]]
