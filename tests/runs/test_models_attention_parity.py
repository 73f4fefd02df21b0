"""Every attention variant against a plain masked softmax in float64 (llm.c-style parity).

The reference builds its mask by asking `spec.visible` about every (query, key) pair as Python ints, with
document boundaries and in-document positions found by a Python loop: nothing is shared with runs.models'
mask code but the rule itself.
"""

import math
import warnings

import pytest
import torch

from costlaw.costmodel import FULL, BlockStrided, SinkWindow
from costlaw.runs.models.attention import attend, attend_slots
from costlaw.runs.models.masks import block_mask, dense_mask, document_layout, mask_mod

SPECS = [FULL, SinkWindow(0, 5), SinkWindow(1, 7), SinkWindow(4, 16), SinkWindow(3, 1),
         BlockStrided(4, 1, 1), BlockStrided(4, 2, 3), BlockStrided(8, 1, 2), BlockStrided(5, 3, 4)]
B, T, N_HEADS, D = 2, 72, 4, 8
FLEX_BLOCK = 16  # T is not a multiple of it: the last block row and column are partial


def doc_ids():
    # row 0: four documents, the id 0 coming back after a change (a new document); row 1: one document
    row0 = [0] * 20 + [1] + [0] * 30 + [2] * 21
    return torch.tensor([row0, [7] * T])


def reference_mask(spec, docs: torch.Tensor | None) -> torch.Tensor:
    """[B, T, T] bool from spec.visible over every pair, per document."""
    rows = []
    for b in range(B):
        seg, pos = [0], [0]
        for t in range(1, T):
            new_doc = docs is not None and int(docs[b, t]) != int(docs[b, t - 1])
            seg.append(seg[-1] + new_doc)
            pos.append(0 if new_doc else pos[-1] + 1)
        rows.append([[seg[q] == seg[k] and bool(spec.visible(pos[q], pos[k])) for k in range(T)] for q in range(T)])
    return torch.tensor(rows)


def reference_attention(q, k, v, mask):
    """Plain softmax(q k^T / sqrt(d)) v with key heads repeated per group; mask [B, Tq, Tk]."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask[:, None], float("-inf"))
    return scores.softmax(-1) @ v


def qkv(n_kv, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = lambda h: (B, h, T, D)
    return (torch.randn(*shape(N_HEADS), generator=g, dtype=torch.float64),
            torch.randn(*shape(n_kv), generator=g, dtype=torch.float64),
            torch.randn(*shape(n_kv), generator=g, dtype=torch.float64))


@pytest.fixture(scope="module")
def ref_masks():
    return {(spec, with_docs): reference_mask(spec, doc_ids() if with_docs else None)
            for spec in SPECS for with_docs in (False, True)}


def test_document_layout_matches_a_python_loop():
    segment, position = document_layout(doc_ids())
    assert segment[0].tolist() == [1] * 20 + [2] + [3] * 30 + [4] * 21
    assert position[0].tolist() == list(range(20)) + [0] + list(range(30)) + list(range(21))
    assert segment[1].tolist() == [1] * T and position[1].tolist() == list(range(T))


@pytest.mark.parametrize("with_docs", [False, True])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.spec())
def test_dense_mask_and_sdpa_path_match_reference(spec, with_docs, ref_masks):
    expected = ref_masks[spec, with_docs]
    docs = document_layout(doc_ids()) if with_docs else None
    mask = dense_mask(spec, T, "cpu", docs)
    assert torch.equal(mask[:, 0].expand(B, T, T), expected)
    for n_kv in (4, 2, 1):  # groups 1, 2, 4
        q, k, v = qkv(n_kv)
        # the model's dispatch: full layers without documents take SDPA is_causal, the rest an explicit mask
        model_mask = None if (spec == FULL and not with_docs) else mask
        err = (attend(q, k, v, model_mask) - reference_attention(q, k, v, expected)).abs().max().item()
        assert err < 1e-12, (spec, with_docs, n_kv, err)


@pytest.mark.parametrize("with_docs", [False, True])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.spec())
def test_block_mask_structure_matches_reference(spec, with_docs, ref_masks):
    """What the GPU kernel computes from a BlockMask: full blocks taken whole, partial blocks through
    mask_mod, other blocks skipped. Expanded element by element it must equal the reference mask, and a
    block is marked full only if every pair in it is visible."""
    expected = ref_masks[spec, with_docs]
    docs = document_layout(doc_ids()) if with_docs else None
    bm = block_mask(spec, T, "cpu", docs, block_size=FLEX_BLOCK)
    n_blocks = math.ceil(T / FLEX_BLOCK)
    idx = torch.arange(T)
    mod = bm.mask_mod
    for b in range(B):
        bb = b if with_docs else 0
        got = torch.zeros(T, T, dtype=torch.bool)
        for qb in range(n_blocks):
            rows = slice(qb * FLEX_BLOCK, (qb + 1) * FLEX_BLOCK)
            for kind, counts, indices in (("partial", bm.kv_num_blocks, bm.kv_indices),
                                          ("full", bm.full_kv_num_blocks, bm.full_kv_indices)):
                for kb in indices[bb, 0, qb, : int(counts[bb, 0, qb])].tolist():
                    cols = slice(kb * FLEX_BLOCK, (kb + 1) * FLEX_BLOCK)
                    if kind == "full":
                        assert expected[b, rows, cols].all(), (spec, qb, kb)
                        got[rows, cols] = True
                    else:
                        qi, ki = idx[rows][:, None], idx[cols][None, :]
                        got[rows, cols] = mod(torch.tensor(b), torch.tensor(0), qi, ki)
        assert torch.equal(got, expected[b]), (spec, with_docs, b)
    # the mask_mod alone, over the whole grid, is the rule too
    grid = mod(torch.arange(B)[:, None, None] if with_docs else torch.tensor(0), torch.tensor(0),
               idx[None, :, None], idx[None, None, :])
    assert torch.equal(grid.expand(B, T, T), expected)


@pytest.mark.parametrize(("spec", "with_docs", "n_kv"),
                         [(SinkWindow(1, 7), True, 2), (BlockStrided(4, 2, 3), False, 1)],
                         ids=["sink_window-docs-gqa2", "block_strided-gqa4"])
def test_flex_attention_path_matches_reference_on_cpu(spec, with_docs, n_kv, ref_masks):
    """FlexAttention eager on CPU (forward only: no CPU backward; slow, so two cases) with the model's BlockMask."""
    docs = document_layout(doc_ids()) if with_docs else None
    bm = block_mask(spec, T, "cpu", docs, block_size=FLEX_BLOCK)
    q, k, v = qkv(n_kv, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flex_attention called without torch.compile()"
        got = attend(q, k, v, bm)
    assert (got - reference_attention(q, k, v, ref_masks[spec, with_docs])).abs().max().item() < 1e-12


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.spec())
def test_slot_attention_matches_reference(spec, ref_masks):
    """The decode kernel: keys scattered over more slots than tokens in a random order, empty slots holding
    garbage, GQA by folding query groups. The last 5 queries must read exactly the reference rows."""
    expected = ref_masks[spec, False]
    n, slots = 5, T + 9
    for n_kv in (4, 2, 1):
        q, k, v = qkv(n_kv, seed=2)
        g = torch.Generator().manual_seed(3)
        perm = torch.randperm(slots, generator=g)[:T]  # slot of each token
        ks = torch.randn(B, n_kv, slots, D, generator=g, dtype=torch.float64)
        vs = torch.randn(B, n_kv, slots, D, generator=g, dtype=torch.float64)
        ks[:, :, perm], vs[:, :, perm] = k, v
        visible = torch.zeros(B, n_kv, n, slots, dtype=torch.bool)
        visible[:, :, :, perm] = expected[:, None, T - n:, :]
        got = attend_slots(q[:, :, T - n:], ks, vs, visible)
        want = reference_attention(q, k, v, expected)[:, :, T - n:]
        assert (got - want).abs().max().item() < 1e-12


def test_mask_mod_is_the_spec_rule():
    spec = BlockStrided(4, 2, 3)
    i = torch.arange(40)
    assert torch.equal(mask_mod(spec)(0, 0, i[:, None], i[None, :]), spec.visible(i[:, None], i[None, :]))


@pytest.mark.parametrize("chunk_elements", [1, 1 << 12, 1 << 26])  # one block row per chunk .. all at once
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.spec())
def test_fixed_block_mask_equals_create_block_mask(spec, chunk_elements):
    """The chunked builder gives torch's create_block_mask's blocks: the same partial and full block counts
    per row and the same dense expansion, for a T that is not a multiple of the block, with and without
    documents (the document index is what the trainer computes outside the compiled model)."""
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask

    from costlaw.runs.models.masks import document_block_index, fixed_block_mask, mask_mod

    ref = create_block_mask(mask_mod(spec), None, None, T, T, device="cpu", BLOCK_SIZE=FLEX_BLOCK)
    got = fixed_block_mask(spec, T, "cpu", FLEX_BLOCK, chunk_elements=chunk_elements)
    assert torch.equal(got.to_dense(), ref.to_dense())
    assert torch.equal(got.kv_num_blocks, ref.kv_num_blocks)
    assert torch.equal(got.full_kv_num_blocks, ref.full_kv_num_blocks)
    docs = document_layout(doc_ids())
    ref = create_block_mask(mask_mod(spec, docs), B, None, T, T, device="cpu", BLOCK_SIZE=FLEX_BLOCK)
    index = document_block_index(spec, docs, T, "cpu", FLEX_BLOCK, chunk_elements=chunk_elements)
    got = BlockMask.from_kv_blocks(*index, BLOCK_SIZE=FLEX_BLOCK, mask_mod=mask_mod(spec, docs), seq_lengths=(T, T))
    assert torch.equal(got.to_dense(), ref.to_dense())
    assert torch.equal(got.kv_num_blocks, ref.kv_num_blocks)
    assert torch.equal(got.full_kv_num_blocks, ref.full_kv_num_blocks)


def test_eager_gqa_repeats_kv_instead_of_enable_gqa(monkeypatch):
    """Eager SDPA with enable_gqa took the math kernel on an H200 (T x T scores, an OOM at 16K): outside a
    compiled graph `attend` repeats K and V to the query heads, with the same result."""
    from costlaw.runs.models import attention

    calls = []
    sdpa = attention.F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        calls.append((k.shape[1], kw.get("enable_gqa")))
        return sdpa(q, k, v, **kw)

    torch.manual_seed(0)
    q = torch.randn(B, N_HEADS, T, D, dtype=torch.float64)
    k, v = torch.randn(2, B, 1, T, D, dtype=torch.float64)
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", spy)
    got = attend(q, k, v, None)
    assert calls == [(N_HEADS, False)]
    want = sdpa(q, k.expand(B, N_HEADS, T, D), v.expand(B, N_HEADS, T, D), is_causal=True)
    torch.testing.assert_close(got, want)
