"""StepLoader: the batches it hands over, and the document offsets it computes on the host."""

import numpy as np
import torch

from costlaw.runs.data.loader import StepLoader
from costlaw.runs.data.shards import Split
from costlaw.runs.models import varlen
from costlaw.runs.packing import Packer, materialize


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
