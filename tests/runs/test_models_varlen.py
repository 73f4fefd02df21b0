"""Full layers over packed documents through the varlen path (runs/models/varlen.py). The kernel is
FlashAttention's and needs a GPU, so here a float64 per-document reference stands in for it: what is tested
is the document offsets and the plumbing around the kernel (dispatch, token-major layout, GQA, the way back),
against the dense-mask path. benchmarks/varlen_docs_gpu.py checks the real kernel on a GPU."""

import torch
import torch.nn.functional as F

import costlaw.runs.models.transformer as transformer
from costlaw.costmodel import FULL, SinkWindow
from costlaw.runs.models import varlen
from tests.runs.test_models_transformer import DOCS, batch, model_for


def test_offsets_start_at_every_row_and_document():
    doc_ids = torch.tensor([[0, 0, 1, 1, 1], [4, 4, 4, 2, 2], [7, 7, 7, 7, 7]])
    assert varlen.cu_seqlens(doc_ids).tolist() == [0, 2, 5, 8, 10, 15]
    assert varlen.cu_seqlens(doc_ids).dtype == torch.int32


def per_document(q, k, v, cu, T, **_):
    """varlen_attn's contract, causal: q [N, n_h, d], k and v [N, n_kv, d], documents at offsets cu."""
    out = torch.empty_like(q)
    group = q.shape[1] // k.shape[1]
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        qq, kk, vv = (t[a:b].transpose(0, 1) for t in (q, k, v))
        kk, vv = kk.repeat_interleave(group, 0), vv.repeat_interleave(group, 0)
        out[a:b] = F.scaled_dot_product_attention(qq, kk, vv, is_causal=True).transpose(0, 1)
    return out


def test_full_layers_take_offsets_and_match_the_dense_path(monkeypatch):
    monkeypatch.setattr(varlen, "available", lambda device, dtype: True)
    monkeypatch.setattr(varlen, "_kernel", per_document)
    layout = (SinkWindow(2, 5), FULL)
    flex, sdpa = model_for(layout, backend="flex"), model_for(layout)
    idx, targets = batch(B=2, T=24)
    index = flex.document_block_index(DOCS)
    assert len(index[flex.patterns.index(FULL)]) == 1  # offsets for the full layer
    assert len(index[flex.patterns.index(SinkWindow(2, 5))]) == 4  # a block index for the sparse one
    masks = flex._masks(24, idx.device, transformer.document_layout(DOCS), index)
    assert isinstance(masks[flex.patterns.index(FULL)], varlen.VarlenDocs)
    with torch.no_grad():  # FlexAttention (the sparse layer) has no backward on CPU
        got = flex(idx, targets, doc_ids=DOCS, block_index=index)
        assert abs(got.item() - sdpa(idx, targets, doc_ids=DOCS).item()) < 1e-10
    flex, sdpa = model_for((FULL, FULL), backend="flex"), model_for((FULL, FULL))
    got = flex(idx, targets, doc_ids=DOCS, block_index=flex.document_block_index(DOCS))
    want = sdpa(idx, targets, doc_ids=DOCS)
    assert abs(got.item() - want.item()) < 1e-10
    got.backward()
    want.backward()
    for (name, a), b in zip(flex.named_parameters(), sdpa.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-10), name


def test_cpu_and_fp32_keep_flexattention():
    assert not varlen.available(torch.device("cpu"), torch.bfloat16)
    assert not varlen.available(torch.device("cuda"), torch.float32)
    index = model_for((FULL,), backend="flex").document_block_index(DOCS)
    assert len(index[0]) == 4
