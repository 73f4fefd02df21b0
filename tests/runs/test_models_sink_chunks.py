"""A long sink_window layer run as balanced chunks computes the plain masked attention, forward and backward
(float64 reference), and its BlockMask holds exactly the chunk rule's blocks."""

import warnings

import pytest
import torch

from costlaw.costmodel import SinkWindow
from costlaw.runs.models.attention import attend
from costlaw.runs.models.sink_chunks import attend_chunks, sink_window_chunks

BS = 8  # block size on CPU; T is not a multiple of the chunk length


def reference(q, k, v, spec):
    T, group = q.shape[2], q.shape[1] // k.shape[1]
    i = torch.arange(T)
    mask = spec.visible(i[:, None], i[None, :])
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    s = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    return s.masked_fill(~mask, float("-inf")).softmax(-1) @ v


def qkv(T, n_h=4, n_kv=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, n, T, 8, dtype=torch.float64, generator=g, requires_grad=True) for n in (n_h, n_kv, n_kv)]


@pytest.mark.parametrize("spec", [SinkWindow(4, 16), SinkWindow(1, 7), SinkWindow(0, 5), SinkWindow(3, 1),
                                  SinkWindow(10, 20)], ids=lambda s: s.spec())
@pytest.mark.parametrize("T", [45, 64])
def test_chunks_compute_the_masked_attention_and_its_gradients(spec, T):
    q, k, v = qkv(T)
    m = sink_window_chunks(spec, T, q.shape[1], "cpu", BS, dense=True)
    assert m.n_chunks >= 2
    got = attend(q, k, v, m)
    want = reference(q, k, v, spec)
    assert (got - want).abs().max().item() < 1e-12
    g = torch.randn_like(want)
    grads = torch.autograd.grad((got * g).sum(), (q, k, v))
    ref_grads = torch.autograd.grad((want * g).sum(), (q, k, v))
    for a, b in zip(grads, ref_grads):
        assert (a - b).abs().max().item() < 1e-12


@pytest.mark.parametrize("spec", [SinkWindow(4, 16), SinkWindow(0, 5)], ids=lambda s: s.spec())
def test_block_mask_is_the_chunk_rule(spec):
    """The chunk BlockMask lists exactly the dense chunk mask's blocks, and Flex (eager, forward: no CPU
    backward) with it equals the dense chunk path (a block wrongly listed as full would show there)."""
    T = 50
    q, k, v = (t.detach() for t in qkv(T, seed=1))
    dense = sink_window_chunks(spec, T, q.shape[1], "cpu", BS, dense=True)
    blocks = sink_window_chunks(spec, T, q.shape[1], "cpu", BS)
    assert torch.equal(blocks.mask.to_dense().bool(),
                       dense.mask.unflatten(3, (-1, BS)).unflatten(2, (-1, BS)).any(5).any(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flex_attention called without torch.compile()"
        got = attend_chunks(q, k, v, blocks, attend)
    assert (got - attend(q, k, v, dense)).abs().max().item() < 1e-12
