"""Locret's retrieval path (runs/kv/locret.py on runs/kv/base.py), where a defect would make passkey retrieval
fail: with an oracle score the chunked prefill keeps the key in every layer and KV head, at the position it
arrived with, and a model that retrieves with its full cache still retrieves through Locret's cache; scores
follow their tokens through chunks and evictions (every layer, not only the first) and eviction is the reference
top-b per KV head over old and new scores alike; the question at the end of the harness's passkey prompt is
never evicted before the answer is decoded; the training labels are the model's own pre-softmax attention
logits, max over the later queries and each KV head's query group (the official data_gen.py's labels)."""

import math

import pytest
import torch
import torch.nn.functional as F

from costlaw.costmodel import KVPolicy, ModelConfig
from costlaw.runs.data import get_tokenizer
from costlaw.runs.evaluate import greedy_decode
from costlaw.runs.kv import policy_model, policy_module
from costlaw.runs.kv.locret import Locret, capture_qkv, causal_importance
from costlaw.runs.models import build_model
from costlaw.runs.packing import passkey_sequence, passkey_tokens

pytestmark = pytest.mark.usefixtures("one_thread")

BIG = 1e6  # an oracle's score: above anything the random heads give


def random_backbone(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg, dtype=torch.float64)


def locret(model, keep=None, budget=None, seed=1, **options):
    """A PolicyModel under Locret with random retaining heads (every weight drawn, so scores spread)."""
    cfg = model.cfg.replace(kv_policy=KVPolicy("locret", keep=keep, budget=budget, options=tuple(options.items())))
    heads = policy_module(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in heads.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return policy_model(model, cfg, heads.to(model.embed.weight.dtype))


def override_scores(monkeypatch, marked: torch.Tensor, value: float) -> None:
    """Locret scores tokens marked [B, n] (by sequence index) `value` and the rest as its heads say; tokens past
    `marked` (decoded ones) are not marked."""
    heads_say = Locret.new_scores

    def new_scores(self, layer, q, k, v, lc):
        s = heads_say(self, layer, q, k, v, lc)
        n = s.shape[-1]
        m = marked[:, self.seq0:self.seq0 + n]
        m = F.pad(m, (0, n - m.shape[1]))
        return torch.where(m[:, None], torch.full_like(s, value), s)

    monkeypatch.setattr(Locret, "new_scores", new_scores)


def held(lc, b, h) -> set:
    s = lc.seq[b, h]
    return set(s[s >= 0].tolist())


# ---------------------------------------------------------------- an oracle keeps the key, at its position
def test_an_oracle_score_keeps_the_key_in_every_layer_and_head_at_its_arrival_position(monkeypatch):
    cfg = ModelConfig(d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8, ffn_dim=48, vocab_size=61,
                      rope_theta=1e4)
    model = random_backbone(cfg)
    P, decode = 300, 4
    idx = torch.randint(0, 61, (3, P), generator=torch.Generator().manual_seed(2))
    spans = [range(29, 36), range(64, 69), range(250, 255)]  # across a chunk boundary, at a chunk's start, late
    marked = torch.zeros(3, P, dtype=torch.bool)
    for b, span in enumerate(spans):
        marked[b, list(span)] = True
    override_scores(monkeypatch, marked, BIG)
    pm = locret(model, budget=40, chunk=32, stabilizers=8, local=6, hidden=8)
    with torch.no_grad():
        greedy_decode(pm, idx, decode + 1, P + decode + 1)
        full = model.new_cache(3, P)
        model.prefill(idx, full)
    cache = pm.policy.cache
    assert cache.seen == P + decode
    for layer, lc in enumerate(cache.layers):
        assert lc.size == lc.capacity == 40
        valid = lc.valid
        assert torch.equal(lc.pos[valid], lc.seq[valid])  # positions are the ones tokens arrived with
        for b, span in enumerate(spans):
            for h in range(cfg.n_kv_heads):
                assert set(span) <= held(lc, b, h), (layer, b, h)
                slots = [int(i) for i in range(lc.slots) if int(lc.seq[b, h, i]) in span]
                assert (pm.policy.scores[layer][b, h, slots] == BIG).all()
                if layer == 0:  # layer 0's K/V depend on the token and its RoPE position only: the full cache's
                    want = torch.tensor(list(span))
                    assert torch.allclose(lc.k[b, h, slots], full[0].k[b, h, want], atol=1e-12, rtol=0)
                    assert torch.allclose(lc.v[b, h, slots], full[0].v[b, h, want], atol=1e-12, rtol=0)


# ---------------------------------------------------------------- a model that retrieves still retrieves
V_R, QUESTION, KEY0 = 32, 20, 22  # haystack tokens 0..19 (answers are 0..9), the question, key tokens 22..31


def retriever() -> torch.nn.Module:
    """A transformer built by hand that answers the question token with the digit i its one key token (KEY0 + i)
    names, wherever the key is: in layer 0 every query head of the question matches key tokens by content on
    RoPE's slowest channel pair (rope_theta 1e6: under 0.012 rad over 2000 positions), reads the key's digit
    from its value and writes it onto the digit's embedding. A key missing from the cache leaves the question
    attending to values of zero, and it answers itself (a wrong answer). Layer 1 and every FFN are zero."""
    cfg = ModelConfig(d_model=V_R, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=8, vocab_size=V_R,
                      rope_theta=1e6)
    model = build_model(cfg, dtype=torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_() if p.dim() > 1 else p.fill_(1.0)
        model.embed.weight.copy_(torch.eye(V_R))
        w, wo = model.blocks[0].attn.wqkv.weight, model.blocks[0].attn.wo.weight
        hd, q_dim, kv_dim, slow = 16, 64, 32, 7  # channels 7 and 15 turn slowest
        for h in range(4):
            w[h * hd + slow, QUESTION] = 2.0
            for i in range(10):
                wo[i, h * hd + i] = 1.0
        for j in range(2):
            w[q_dim + j * hd + slow, KEY0:KEY0 + 10] = 2.0
            for i in range(10):
                w[q_dim + kv_dim + j * hd + i, KEY0 + i] = 1.0
    return model


def retrieval_prompts(n: int, at: list[int], seed=5):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 20, (len(at), n), generator=g)
    digit = torch.randint(0, 10, (len(at),), generator=g)
    idx[torch.arange(len(at)), torch.tensor(at)] = KEY0 + digit
    idx[:, -1] = QUESTION
    marked = torch.zeros_like(idx, dtype=torch.bool)
    marked[torch.arange(len(at)), torch.tensor(at)] = True
    return idx, digit, marked


def test_a_model_that_retrieves_with_its_full_cache_retrieves_through_locret_with_an_oracle(monkeypatch):
    model = retriever()
    P = 160  # chunks [0, 32), [32, 64), ..., [128, 156), then the local tail of 4
    at = [0, 31, 32, 63, 64, 100, 127, 128, 150]  # chunk boundaries on both sides, the last chunk
    idx, digit, marked = retrieval_prompts(P, at)
    with torch.no_grad():
        assert torch.equal(greedy_decode(model, idx, 1, P)[:, 0], digit)  # the full cache retrieves every key
        opts = dict(budget=20, chunk=32, stabilizers=4, local=4, hidden=8)
        with monkeypatch.context() as mp:
            override_scores(mp, marked, BIG)
            assert torch.equal(greedy_decode(locret(model, **opts), idx, 1, P)[:, 0], digit)
        with monkeypatch.context() as mp:  # the same path with the key scored lowest loses every key
            override_scores(mp, marked, -BIG)
            got = greedy_decode(locret(model, **opts), idx, 1, P)[:, 0]
        assert (got == QUESTION).all(), got


# ---------------------------------------------------------------- scores follow tokens; eviction is the reference's
def reference_kept(score: dict, P: int, c: int, chunk: int, n_s: int, n_loc: int) -> set:
    """The tokens one KV head of one layer keeps after Locret's prefill, as locret/inference/infer.py selects
    them, from each token's score (a dict seq -> score): per chunk, the top b = c − n_loc of every held token
    and the chunk's, the chunk's last n_s forced in; then the local tail. (infer.py forces no stabilizers in the
    final chunk; ours does, as runs/kv/locret.py says.)"""
    b, n_s = c - n_loc, min(n_s, (c - n_loc) // 2)
    n_loc = min(n_loc, c // 2)
    kept: list[int] = []
    for s in range(0, P - n_loc, chunk):
        e = min(s + chunk, P - n_loc)
        kept += range(s, e)
        forced = set(range(e - n_s, e))
        kept = sorted(kept, key=lambda t: (t in forced, score[t]), reverse=True)[:b]
    return set(kept) | set(range(P - n_loc, P))


def test_scores_follow_their_tokens_and_eviction_is_the_reference_top_b_in_every_layer(monkeypatch):
    cfg = ModelConfig(d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8, ffn_dim=48, vocab_size=512,
                      rope_theta=1e4)
    model = random_backbone(cfg, seed=4)
    P, c, chunk, n_s, n_loc = 230, 36, 24, 5, 7
    # no token twice in a row: layer 0 scores a token by its id alone, and top-k breaks ties either way
    g = torch.Generator().manual_seed(6)
    idx = torch.stack([torch.randperm(512, generator=g)[:P] for _ in range(2)])
    recorded = {}  # (layer, b, h) -> {seq: score}, every score the heads gave, as they gave it
    heads_say = Locret.new_scores

    def record(self, layer, q, k, v, lc):
        s = heads_say(self, layer, q, k, v, lc)
        for b in range(s.shape[0]):
            for h in range(s.shape[1]):
                recorded.setdefault((layer, b, h), {}).update(
                    {self.seq0 + i: float(x) for i, x in enumerate(s[b, h])})
        return s

    monkeypatch.setattr(Locret, "new_scores", record)
    pm = locret(model, budget=c, chunk=chunk, stabilizers=n_s, local=n_loc, hidden=8)
    cache = pm.new_cache(2, P)
    with torch.no_grad():
        pm.prefill(idx, cache)
        with capture_qkv(model) as feats:  # the whole prompt at once: what each token's own q, k, v are
            model(idx)
        own = [pm.policy.module(layer, f).transpose(1, 2) for layer, f in enumerate(feats)]
    for layer in range(cfg.n_layers):
        # a score is the head's output on its own token's features: the first chunk saw no eviction, so there in
        # every layer (and in layer 0 everywhere, its features depending on the token alone) they are the
        # whole prompt's
        for (at, b, h), score in recorded.items():
            upto = P if at == 0 else chunk
            if at == layer:
                got = torch.tensor([score[t] for t in range(upto)], dtype=torch.float64)
                assert torch.allclose(got, own[layer][b, h, :upto], atol=1e-5), (layer, b, h)
    for layer, lc in enumerate(cache.layers):
        for b in range(2):
            for h in range(cfg.n_kv_heads):
                score = recorded[(layer, b, h)]
                assert sorted(score) == list(range(P))
                got = held(lc, b, h)
                assert got == reference_kept(score, P, c, chunk, n_s, n_loc), (layer, b, h)
                for i in range(lc.slots):  # the slot's score is its own token's, whatever slot it moved to
                    assert pm.policy.scores[layer][b, h, i] == pytest.approx(score[int(lc.seq[b, h, i])], abs=1e-6)
        # later layers' scores depend on what earlier chunks kept: the check above is not layer 0's alone
        assert layer == 0 or len({round(v, 6) for v in recorded[(layer, 0, 0)].values()}) > P // 2


# ---------------------------------------------------------------- the harness's passkey prompt
@pytest.mark.parametrize("keep", [0.5, 0.25, 0.1, 0.05])
def test_on_the_harness_prompt_the_key_stays_by_its_score_alone_and_the_question_always(monkeypatch, keep):
    """The harness's probe (runs.evaluate.retrieval) at the committed study's context 1792 with the study's
    Locret options: prompts of T − len(answer) tokens, the intro at depths 0.1, 0.5, 0.9, decoded greedily for
    len(answer) tokens through the policy. Scored as an oracle would, the key's digits are in every layer and KV
    head after decoding; scored lowest, they are in none, at every depth (0.9 included: the intro lies before the
    last chunk's stabilizers and the local tail, so no protection keeps it and its score alone decides). The whole
    question is held either way: it lies in the local tail, never evicted before the answer is decoded."""
    tok = get_tokenizer("byte")
    cfg = ModelConfig(d_model=16, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=8, ffn_dim=16, vocab_size=257,
                      rope_theta=5e5)
    model = random_backbone(cfg, seed=7)
    T, key = 1792, 12345
    intro, question, answer = passkey_tokens(tok, key)
    n_ans = len(answer)
    P = T - n_ans
    hay = torch.randint(32, 127, (T,), generator=torch.Generator().manual_seed(8)).numpy()
    prompts, marked = [], []
    for depth in (0.1, 0.5, 0.9):
        prompts.append(torch.from_numpy(passkey_sequence(hay, intro, question, [], depth, P)))
        at = int(round(depth * (P - len(intro) - len(question))))
        digits = [at + i for i, t in enumerate(intro) if chr(t).isdigit()]
        assert [chr(t) for t in prompts[-1][digits].tolist()] == list(str(key))
        marked.append(torch.zeros(P, dtype=torch.bool).index_fill_(0, torch.tensor(digits), True))
    idx, marked = torch.stack(prompts), torch.stack(marked)
    q_span = set(range(P - len(question), P))
    for value in (BIG, -BIG):
        with monkeypatch.context() as mp:
            override_scores(mp, marked, value)
            pm = locret(model, keep=keep, chunk=256, hidden=16, local=32, stabilizers=64)
            with torch.no_grad():
                greedy_decode(pm, idx, n_ans, T)
        cache = pm.policy.cache
        assert cache.seen == T - 1 and len(question) <= pm.policy.n_loc
        for layer, lc in enumerate(cache.layers):
            assert lc.capacity == pm.cfg.kv_policy.kept_tokens(T)
            for b in range(3):
                key_seq = set(torch.nonzero(marked[b])[:, 0].tolist())
                for h in range(cfg.n_kv_heads):
                    kept = held(lc, b, h)
                    assert q_span <= kept, (keep, value, layer, b, h)
                    assert (key_seq <= kept) if value > 0 else not (key_seq & kept), (keep, value, layer, b, h)


# ---------------------------------------------------------------- the labels are the model's own logits
def test_labels_are_the_models_pre_softmax_logits_max_over_later_queries_and_the_query_group():
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=6, n_kv_heads=2, head_dim=8, ffn_dim=48, vocab_size=61,
                      rope_theta=1e4)
    model = random_backbone(cfg, seed=9)
    N, context = 40, 29
    idx = torch.randint(0, 61, (2, N), generator=torch.Generator().manual_seed(10))
    queries = {}
    cache = model.new_cache(2, N)
    with torch.no_grad(), capture_qkv(model) as feats:
        model.prefill(idx, cache, hook=lambda layer, q, k, v, lc: queries.__setitem__(layer, q.clone()))
    group = cfg.n_heads // cfg.n_kv_heads
    for layer, lc in enumerate(cache.layers):
        q = queries[layer][:, :, context:]  # [B, n_h, N − context, d]: what the model's attention used, RoPE on
        k = lc.k[:, :, :context]  # [B, n_kv, context, d]: the keys the model stored
        logits = torch.einsum("bhnd,bhtd->bhnt", q, k.repeat_interleave(group, dim=1)) / math.sqrt(cfg.head_dim)
        want = logits.amax(dim=2).view(2, cfg.n_kv_heads, group, context).amax(dim=2)
        got = causal_importance(cfg, layer, feats[layer], context)
        assert got.shape == (2, cfg.n_kv_heads, context)
        assert torch.allclose(got.double(), want, atol=1e-5), (layer, (got.double() - want).abs().max())
