"""KV policies on a tiny model: measured cache bytes equal costmodel's for every policy and budget, keep = 1 is the
full cache exactly, every policy runs end to end, and each policy's mechanism does what its paper says."""

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from costlaw.costmodel import (
    ConfigError,
    CostlawError,
    KVPolicy,
    ModelConfig,
    costs,
    kv_cache_bytes,
    kv_tokens_per_layer,
    policy_flops_per_token,
    policy_params,
)
from costlaw.costmodel.kvpolicy import policy_decode_flops_per_token
from costlaw.runs.evaluate import greedy_decode
from costlaw.runs.kv import POLICIES, FullCacheModel, build_policy, make_cache, policy_model, policy_module
from costlaw.runs.kv.infinipot import catalyst_ids
from costlaw.runs.kv.kv_distill import distill_loss, kept_mask, prepass, student_logits
from costlaw.runs.models import build_model

V = 61
BASE = ModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, ffn_dim=48, vocab_size=V,
                   rope_theta=1e4)
METHODS = list(POLICIES)
T, G = 48, 8


pytestmark = pytest.mark.usefixtures("one_thread")


def backbone(cfg=BASE, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg, dtype=dtype)


def module_for(cfg, dtype, seed=1):
    """The policy's module with every weight random (LoRA B included), so that it changes what it touches."""
    module = policy_module(cfg)
    if module is not None:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        module = module.to(dtype)
    return module


def pm_for(model, method, keep=None, budget=None, **options):
    cfg = model.cfg.replace(kv_policy=KVPolicy(method, keep=keep, budget=budget, options=tuple(options.items())))
    return policy_model(model, cfg, module_for(cfg, model.embed.weight.dtype)), cfg


def tokens(B, n, seed=3):
    return torch.randint(0, V, (B, n), generator=torch.Generator().manual_seed(seed))


def run(pm, idx, context, decode=3):
    """The harness's protocol: the first context − 1 tokens prefilled into a cache made for `context`, the rest in
    one extend call (its logits returned), then greedy decode steps."""
    cache = pm.new_cache(idx.shape[0], context)
    with torch.no_grad():
        pm.prefill(idx[:, :context - 1], cache, last_only=True)
        after_prefix = [t.clone() for layer in cache.layers for t in (layer.k, layer.v, layer.pos, layer.seq)]
        nbytes = cache.nbytes()
        logits = pm.extend(idx[:, context - 1:], cache)
        tok = logits[:, -1].argmax(-1)
        for _ in range(decode):
            tok = pm.decode(tok[:, None], cache)[:, -1].argmax(-1)
    return logits, cache, after_prefix, nbytes


SIZES = [("keep", 1.0), ("keep", 0.5), ("keep", 0.25), ("keep", 0.1), ("keep", 0.05), ("budget", 3), ("budget", 17),
         ("budget", 1000)]


@pytest.mark.parametrize("method", METHODS)
def test_measured_kv_bytes_equal_costmodel(method):
    """After the context, after a chunk that overflows, and after every decode step (compactions included)."""
    model = backbone(dtype=torch.float32)
    n = 32  # context
    idx = tokens(2, n + 6)
    for kind, size in SIZES:
        pm, cfg = pm_for(model, method, **{kind: size})
        want = kv_cache_bytes(cfg, n, "fp32", batch=2)
        cache = pm.new_cache(2, n)
        assert [layer.capacity for layer in cache.layers] == kv_tokens_per_layer(cfg, n)
        with torch.no_grad():
            pm.prefill(idx[:, :n], cache, last_only=True)
            assert cache.nbytes() == want, (kind, size)
            pm.extend(idx[:, n:], cache)
            assert cache.nbytes() == want, (kind, size)
            for t in range(4):
                pm.decode(idx[:, t], cache)
                assert cache.nbytes() == want, (kind, size)
        assert all(layer.size <= layer.capacity for layer in cache.layers)
        assert pm.policy.peak_kv_bytes >= want


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("size", [("keep", 1.0), ("budget", T), ("budget", 10 * T)])
def test_keep_one_recovers_the_full_cache_exactly(method, size):
    model = backbone()
    idx = tokens(2, T + G)
    pm, _ = pm_for(model, method, **{size[0]: size[1]})
    got, _, cache_after, _ = run(pm, idx, T, decode=0)
    want, _, _, _ = run(FullCacheModel(model), idx, T, decode=0)
    full = model.new_cache(2, T)
    with torch.no_grad():
        model.prefill(idx[:, :T - 1], full)
    assert all(torch.equal(a, b) for a, b in zip(cache_after, [t for layer in full.layers
                                                               for t in (layer.k, layer.v, layer.pos, layer.seq)]))
    assert torch.equal(got, want)  # bit for bit
    with torch.no_grad():
        assert (got - model(idx)[:, T - 1:]).abs().max().item() < 1e-12


@pytest.mark.parametrize("method", METHODS)
def test_each_policy_runs_end_to_end(method):
    model = backbone(dtype=torch.float32)
    idx = tokens(3, T + G)
    pm, cfg = pm_for(model, method, keep=0.25)
    logits, cache, _, _ = run(pm, idx, T, decode=6)
    assert logits.shape == (3, G + 1, V) and torch.isfinite(logits).all()
    kept = cfg.kv_policy.kept_tokens(T)
    for layer in cache.layers:
        assert layer.slots == layer.capacity == kept and 0 < layer.size <= kept
        held = layer.valid.sum(-1)
        assert (held >= 1).all()
        seqs = torch.where(layer.valid, layer.seq, -1)
        for b in range(3):  # no token twice in a head, every kept token a real one
            for h in range(cfg.n_kv_heads):
                s = seqs[b, h][seqs[b, h] >= 0]
                assert len(set(s.tolist())) == len(s) and int(s.max()) < cache.seen
    with torch.no_grad():  # the passkey probe's greedy decoder runs through the policy unchanged
        out = greedy_decode(pm, idx[:, :T - 4], 4, T)
    assert out.shape == (3, 4)


def test_streaming_keeps_sinks_and_recent_at_positions_in_the_cache():
    cfg1 = BASE.replace(n_layers=1)
    model = backbone(cfg1)
    idx = tokens(2, 21, seed=5)
    pm, _ = pm_for(model, "streaming", budget=8, sink=2)
    cache = pm.new_cache(2, 20)
    with torch.no_grad():
        pm.prefill(idx[:, :20], cache)
        layer = cache[0]
        assert sorted(layer.seq[0, 0].tolist()) == [0, 1, 14, 15, 16, 17, 18, 19]
        order = layer.seq[0, 0].argsort()
        assert layer.pos[0, 0][order].tolist() == list(range(8)) and cache.position == 8
        got = pm.decode(idx[:, 20], cache)
        want = model(idx[:, [0, 1, 14, 15, 16, 17, 18, 19, 20]])[:, -1:]  # one layer: kept K/V need nothing else
    assert (got - want).abs().max().item() < 1e-10


def _attention(model, idx):
    """One layer's softmax attention [B, n_h, T, T] computed by hand from its weights."""
    cfg = model.cfg
    from costlaw.runs.models.rope import apply_rope, rope_angles

    x = model.blocks[0].attn_norm(model.embed(idx))
    B, n = idx.shape
    q, k, _ = model.blocks[0].attn.wqkv(x).split([cfg.q_dim, cfg.kv_dim, cfg.kv_dim], -1)
    cos, sin = rope_angles(torch.arange(n), cfg.head_dim, cfg.rope_theta, torch.float64)
    q = apply_rope(q.view(B, n, cfg.n_heads, -1), cos[:, None], sin[:, None]).transpose(1, 2)
    k = apply_rope(k.view(B, n, cfg.n_kv_heads, -1), cos[:, None], sin[:, None]).transpose(1, 2)
    k = k.repeat_interleave(cfg.group_size, 1)
    s = q @ k.transpose(-1, -2) / math.sqrt(cfg.head_dim)
    return s.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf")).softmax(-1)


def test_snapkv_keeps_the_window_and_the_top_pooled_scores():
    model = backbone(BASE.replace(n_layers=1))
    idx = tokens(1, 30, seed=7)
    w, kernel, budget = 4, 3, 12
    pm, _ = pm_for(model, "snapkv", budget=budget, window=w, kernel=kernel)
    cache = pm.new_cache(1, 30)
    with torch.no_grad():
        pm.prefill(idx, cache)
        a = _attention(model, idx)[:, :, -w:].sum(2)  # [1, n_h, T]
        a = a.view(1, 2, 2, -1).sum(2)
        pooled = torch.nn.functional.avg_pool1d(a.view(2, 1, -1), kernel, 1, kernel // 2, count_include_pad=False)
        pooled = pooled.view(2, -1)
    for h in range(2):
        top = pooled[h, :30 - w].topk(budget - w).indices.tolist()
        assert sorted(cache[0].seq[0, h].tolist()) == sorted(top + list(range(30 - w, 30)))


def test_h2o_scores_are_accumulated_attention_and_keep_heavy_hitters_plus_recent():
    model = backbone(BASE.replace(n_layers=1))
    idx = tokens(1, 30, seed=8)
    pm, _ = pm_for(model, "h2o", budget=30)
    cache = pm.new_cache(1, 30)
    with torch.no_grad():
        pm.prefill(idx, cache)
        want = _attention(model, idx).sum(2).view(1, 2, 2, -1).sum(2)
    assert torch.allclose(pm.policy.scores[0][..., :30], want.double(), atol=1e-10)
    pm, _ = pm_for(model, "h2o", budget=10, recent=0.3)
    cache = pm.new_cache(1, 30)
    with torch.no_grad():
        pm.prefill(idx, cache)
    for h in range(2):
        heavy = want[0, h, :27].topk(7).indices.tolist()
        assert sorted(cache[0].seq[0, h].tolist()) == sorted(heavy + [27, 28, 29])


def test_random_is_seeded_and_keeps_its_recent_share():
    model = backbone(dtype=torch.float32)
    idx = tokens(2, T)

    def kept(seed):
        pm, _ = pm_for(model, "random", keep=0.25, seed=seed, recent=0.25)
        cache = pm.new_cache(2, T)
        with torch.no_grad():
            pm.prefill(idx, cache)
        return [layer.seq.sort(-1).values for layer in cache.layers]

    a, b, c = kept(0), kept(0), kept(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not all(torch.equal(x, y) for x, y in zip(a, c))
    assert all((x[..., -3:] == torch.tensor([45, 46, 47], dtype=x.dtype)).all() for x in a)  # round(0.25 · 12) = 3


def test_locret_chunked_prefill_budget_stabilizers_and_local_tail():
    model = backbone(dtype=torch.float32)
    idx = tokens(2, 96, seed=9)
    c, chunk, n_s, n_loc = 24, 16, 6, 5
    pm, cfg = pm_for(model, "locret", budget=c, chunk=chunk, stabilizers=n_s, local=n_loc, hidden=16)
    cache = pm.new_cache(2, 96)
    calls = []
    original = pm.policy.evict
    pm.policy.evict = lambda layer, lc, target: (calls.append((layer, target, lc.size)), original(layer, lc, target))
    with torch.no_grad():
        pm.prefill(idx, cache)
    b = c - n_loc  # 19 slots for the chunks, 5 for the never-evicted tail
    assert {t for _, t, _ in calls} == {b} and max(s for _, _, s in calls) == b + chunk
    per_slot = cache.nbytes() // (2 * cfg.n_layers * c)
    assert pm.policy.peak_kv_bytes == cache.nbytes() + 2 * (b + chunk - c) * per_slot  # one layer's chunk on top
    for layer in cache.layers:
        assert layer.size == c
        seq = layer.seq.sort(-1).values
        assert (seq[..., -n_loc:] == torch.arange(96 - n_loc, 96, dtype=seq.dtype)).all()  # the local tail
    # a token's score is its retaining head's output, computed once from its own pre-RoPE q, k, v (layer 0's do not
    # depend on what earlier chunks kept)
    with torch.no_grad():
        from costlaw.runs.kv.locret import capture_qkv

        with capture_qkv(model) as feats:
            model(idx)
        heads = pm.policy.module
        s = heads(0, feats[0]).transpose(1, 2).double()  # [2, n_kv, 96]
        assert torch.allclose(pm.policy.scores[0], s.gather(-1, cache[0].seq.long()), atol=1e-6)


def test_infinipot_peak_cache_stays_flat_as_the_input_grows_8x():
    model = backbone(dtype=torch.float32)
    M = 16
    peaks, bytes_, compactions = [], [], []
    for n in (40, 320):
        pm, cfg = pm_for(model, "infinipot", budget=M, compress=0.5, novelty=0.5)
        cache = pm.new_cache(1, n)
        with torch.no_grad():
            pm.prefill(tokens(1, n, seed=11), cache)
        peaks.append(pm.policy.peak_kv_bytes)
        bytes_.append(cache.nbytes())
        compactions.append(pm.policy.compactions)
        assert cache.seen == n and cache.position <= M
        for layer in cache.layers:  # positions re-assigned: the held tokens sit at 0..size-1
            assert sorted(layer.pos[0, 0][layer.valid[0, 0]].tolist()) == list(range(int(layer.valid[0, 0].sum())))
    m = len(catalyst_ids(None, V))
    assert bytes_[0] == bytes_[1] == kv_cache_bytes(cfg, 320, "fp32")
    slot = bytes_[0] // (cfg.n_layers * M)
    assert peaks[0] == peaks[1] == bytes_[0] + m * slot  # the pot plus one layer's catalyst block, never more
    assert compactions[1] >= 8 * compactions[0] > 0


def test_infinipot_compaction_takes_novelty_first_then_catalyst_attention():
    model = backbone(BASE.replace(n_layers=1), dtype=torch.float32)
    pm, _ = pm_for(model, "infinipot", budget=12, compress=0.5, novelty=0.5)
    idx = tokens(1, 13, seed=12)
    cache = pm.new_cache(1, 13)
    with torch.no_grad():
        pm.prefill(idx[:, :12], cache)  # the pot is full; nothing compacted yet
        novelty = pm.policy.fields["novelty"][0][0, 0, :12].clone()
        logp = torch.log_softmax(model(idx[:, :12]), -1)
        want = torch.cat([torch.zeros(1), -logp[0, :-1].gather(-1, idx[0, 1:12, None]).squeeze(-1)])
        assert torch.allclose(novelty.float(), want, atol=1e-5)
        pm.decode(idx[:, 12], cache)  # full pot: compact to 6, then read the token
    layer = cache[0]
    assert pm.policy.compactions == 1 and int(layer.valid.sum(-1).max()) == 7 and cache.position == 7
    top_novel = set(novelty.topk(3).indices.tolist())
    for h in range(2):
        assert top_novel <= set(layer.seq[0, h].tolist())


def test_kv_distill_student_is_the_decode_path():
    """The differentiable student used in training computes exactly what inference computes."""
    model = backbone()
    idx = tokens(2, T + G, seed=13)
    pm, cfg = pm_for(model, "kv_distill", keep=0.25, scorer_layer=1, recent=0.25)
    adapter = pm.policy.module
    with torch.no_grad():
        got, _, after_context, _ = run(pm, idx[:, :-1], T, decode=0)
        keep = kept_mask(adapter.score(model, idx[:, :T - 1]), cfg.kv_policy.kept_tokens(T), 0.25)
        want = student_logits(model, adapter, idx, T - 1, keep)
        plain = student_logits(model, adapter, idx, T - 1, torch.ones_like(keep))
    assert (got - want).abs().max().item() < 1e-10
    assert (got - plain).abs().max().item() > 1e-3  # the cut and the adapters change the logits
    kept_seqs = after_context[3::4]  # every layer keeps the kept tokens, in every head
    assert all(sorted(seq[b, h].tolist()) == keep[b].nonzero().flatten().tolist()
               for seq in kept_seqs for b in range(2) for h in range(2))


def test_kv_distill_gradients_reach_scorer_and_adapters():
    model = backbone(dtype=torch.float32)
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = BASE.replace(kv_policy=KVPolicy("kv_distill", keep=0.25))
    adapter = module_for(cfg, torch.float32)
    loss = distill_loss(model, adapter, tokens(2, T + G), T, cfg.kv_policy.kept_tokens(T), 0.25, 0.5,
                        torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.item() > 0
    assert adapter.scorer.weight.grad.abs().sum() > 0 and adapter.scorer.bias.grad.abs().sum() > 0
    # k/v adapters of every layer act on what later rows read; a kept token's query only matters below the top
    touched = [*adapter.k.parameters(), *adapter.v.parameters(), *adapter.q[:-1].parameters(),
               *adapter.o[:-1].parameters()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in touched)


CONFIGS = [BASE, BASE.replace(n_heads=8, n_kv_heads=1, head_dim=4), BASE.replace(n_layers=5, tied_embeddings=False)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["gqa2", "gqa8", "L5"])
def test_policy_parameters_and_flops_equal_costmodel(cfg):
    for method, opts in [("locret", {}), ("locret", {"hidden": 7}), ("kv_distill", {}),
                         ("kv_distill", {"rank": 3, "scorer_layer": 0}), ("kv_distill", {"scorer_layer": -1})]:
        pcfg = cfg.replace(kv_policy=KVPolicy(method, keep=0.5, options=tuple(opts.items())))
        model = backbone(pcfg, dtype=torch.float32)
        module = policy_module(pcfg)
        assert sum(p.numel() for p in module.parameters()) == policy_params(pcfg) == costs(pcfg, 64)["params_policy"]
        n = 10
        idx = tokens(1, n)
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            if method == "locret":
                for layer in range(cfg.n_layers):
                    module(layer, torch.zeros(1, n, cfg.q_dim + 2 * cfg.kv_dim))
            else:
                module.score(model, idx)  # pre-pass blocks + scorer
                for layer in range(cfg.n_layers):
                    x, y = torch.zeros(1, n, cfg.d_model), torch.zeros(1, n, cfg.q_dim)
                    module.q[layer](x), module.k[layer](x), module.v[layer](x), module.o[layer](y)
        counts = fc.get_flop_counts()["Global"]
        matmul = sum(v for op, v in counts.items() if str(op).split(".")[-1] in ("mm", "addmm", "bmm")
                     and "attention" not in str(op))
        assert matmul == n * policy_flops_per_token(pcfg), (method, opts)
        # Locret's heads also score every decoded token; KV-Distill acts on the prompt only
        assert policy_decode_flops_per_token(pcfg) == (policy_flops_per_token(pcfg) if method == "locret" else 0)
    for method in ("streaming", "snapkv", "h2o", "random", "infinipot"):
        pcfg = cfg.replace(kv_policy=KVPolicy(method, keep=0.5))
        assert policy_module(pcfg) is None and policy_params(pcfg) == policy_flops_per_token(pcfg) == 0


def test_prepass_is_the_models_own_blocks():
    model = backbone()
    idx = tokens(2, 20)
    seen = {}

    def grab(module, args):
        seen["x"] = args[0]

    hook = model.blocks[1].register_forward_pre_hook(grab)
    with torch.no_grad():
        model(idx)
        hook.remove()
        assert (prepass(model, idx, 1) - seen["x"]).abs().max().item() < 1e-12


def test_errors_are_one_line():
    model = backbone()
    for method in ("locret", "kv_distill"):
        cfg = BASE.replace(kv_policy=KVPolicy(method, keep=0.5))
        with pytest.raises(CostlawError) as e:
            build_policy(cfg)
        assert "\n" not in str(e.value) and "--policy-run" in str(e.value)
    with pytest.raises(ConfigError, match="^model.kv_policy: "):
        build_policy(BASE)
    with pytest.raises(ValueError, match="different backbone"):
        make_cache(model, BASE.replace(d_model=64, kv_policy=KVPolicy("h2o", keep=0.5)), 1, 8)
    with pytest.raises(ConfigError, match="^kv_policy.scorer_layer: "):
        costs(BASE.replace(kv_policy=KVPolicy("kv_distill", keep=0.5, options=(("scorer_layer", 3),))), 16)
    with pytest.raises(ConfigError, match="^kv_policy.lam: "):
        KVPolicy("kv_distill", keep=0.5, options=(("lam", 2.0),))
