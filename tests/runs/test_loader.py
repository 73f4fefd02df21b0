"""StepLoader: the batches it hands over (packed and uniform rows), the document offsets it computes on the host,
and where a uniform run resumes."""

import numpy as np
import torch

from costlaw.runs.data.loader import StepLoader
from costlaw.runs.data.shards import Split
from costlaw.runs.models import varlen
from costlaw.runs.packing import Packer, UniformPieces, materialize


def _split():
    rng = np.random.default_rng(1)
    lens = rng.integers(1, 150, size=40)
    toks = rng.integers(0, 250, size=int(lens.sum())).astype(np.uint16)
    docs = np.stack([np.zeros(40, np.int64), np.cumsum(lens) - lens, lens], 1)
    return Split("train", [toks], docs, eot=256)


def test_steps_carry_host_computed_document_offsets():
    """Each micro-batch's cu_seqlens are the offsets varlen would derive from its doc_ids, and the tokens are
    what the packer's plans materialise to."""
    split = _split()
    loader = StepLoader(split, Packer(split.positions, 32, 4, 2, seed=0, window_rows=8), 256, "cpu")
    twin = Packer(split.positions, 32, 4, 2, seed=0, window_rows=8)
    try:
        for _ in range(5):
            step = loader.next()
            assert len(step.micro) == 2
            for mb, plan in zip(step.micro, twin.next_step()):
                hb = materialize(split, plan, eot=256)
                assert torch.equal(mb.idx, torch.from_numpy(hb.idx))
                assert torch.equal(mb.doc_ids, torch.from_numpy(hb.doc_ids))
                assert mb.cu_seqlens.dtype == torch.int32
                assert torch.equal(mb.cu_seqlens, varlen.cu_seqlens(mb.doc_ids))
    finally:
        loader.close()


def test_no_offsets_without_document_masks():
    split = _split()
    loader = StepLoader(split, Packer(split.positions, 32, 4, 1, seed=0, window_rows=8), 256, "cpu", doc_mask=False)
    try:
        mb = loader.next().micro[0]
        assert mb.doc_ids is None and mb.cu_seqlens is None
    finally:
        loader.close()


def test_uniform_pieces_through_the_loader_resume_where_they_stopped():
    """The loader hands over UniformPieces' rows as they materialise, with the document offsets of their
    segments, and the state a step carries restarts a fresh loader at the very next rows."""
    split = _split()
    loader = StepLoader(split, UniformPieces(split.positions, 32, 4, 2, seed=3), 256, "cpu")
    twin = UniformPieces(split.positions, 32, 4, 2, seed=3)
    try:
        states = []
        for _ in range(6):
            step = loader.next()
            states.append(step.state)
            for mb, plan in zip(step.micro, twin.next_step()):
                hb = materialize(split, plan, eot=256)
                assert torch.equal(mb.idx, torch.from_numpy(hb.idx))
                assert torch.equal(mb.targets, torch.from_numpy(hb.targets))
                assert torch.equal(mb.cu_seqlens, varlen.cu_seqlens(mb.doc_ids))
            assert step.tokens == 2 * 4 * 32
        assert any(len(mb.cu_seqlens) > 2 for mb in step.micro)  # windows that cross documents
        expected = [loader.next() for _ in range(3)]
    finally:
        loader.close()
    resumed_packer = UniformPieces(split.positions, 32, 4, 2, seed=3)
    resumed_packer.load_state_dict(states[-1])
    resumed = StepLoader(split, resumed_packer, 256, "cpu")
    try:
        for want in expected:
            got = resumed.next()
            assert all(torch.equal(a.idx, b.idx) and torch.equal(a.doc_ids, b.doc_ids)
                       for a, b in zip(got.micro, want.micro))
            assert got.state == want.state
    finally:
        resumed.close()
