"""ProLong's recipe as knobs: a long/short mix of the trained positions (data.long_share, data.long_min) and
evaluation at a length other than training (eval.seq_len); document masking is data.doc_mask (test_train)."""

import json
from collections import Counter

import numpy as np
import pytest

from costlaw.costmodel.core.errors import ConfigError
from costlaw.runs.hierarchical import HierarchicalPacker
from costlaw.runs.packing import Packer
from costlaw.runs.train import train_run
from tests.runs.test_packing import _emitted, assert_deterministic_and_resumable
from tests.runs.test_train import run_dir, tiny_cfg

T = 128


def _corpus():
    rng = np.random.default_rng(5)
    long = rng.integers(T, 6 * T, 60)  # long documents: at least one row
    short = rng.integers(5, T, 400)
    return np.concatenate([long, short])[rng.permutation(460)]


def _class_drawn(p: Packer, m) -> Counter:
    """(doc, position) of every document each class's cursor has passed, over all its epochs."""
    out = Counter()
    for c, docs in enumerate(p.classes):
        epoch, cursor, _ = p.class_state[c]
        for e in range(epoch + 1):
            order = docs[np.random.default_rng([p.seed, 6, c, e]).permutation(len(docs))]
            for d in order[:cursor if e == epoch else len(docs)].tolist():
                out.update((d, j) for j in range(int(m[d])))
    return out


@pytest.mark.parametrize("share", [0.8, 0.2])
@pytest.mark.parametrize("cls", [Packer, HierarchicalPacker])
def test_long_share_of_positions_and_nothing_lost(share, cls):
    m = _corpus()
    kw = {"levels": (32, T)} if cls is HierarchicalPacker else {"mode": "balanced"}
    p = cls(m, T, 4, 2, seed=1, window_rows=16, long_share=share, **kw)
    pieces, long_pos, all_pos = [], 0, 0
    for _ in range(150):
        for mb in p.next_step():
            pieces += list(zip(mb.doc, mb.start, mb.length))
            is_long = m[mb.doc] >= T
            long_pos += int(mb.length[is_long].sum())
            all_pos += int(mb.length.sum())
    assert long_pos / all_pos == pytest.approx(share, abs=0.05)
    natural = m[m >= T].sum() / m.sum()
    assert abs(natural - share) > 0.1  # the knob moved the mix away from the corpus's own
    for mb in p._window[p._window_pos:]:
        pieces += list(zip(mb.doc, mb.start, mb.length))
    pieces += list(zip(*p.carry))
    assert _emitted(pieces) == _class_drawn(p, m)
    assert min(st[0] for st in p.class_state) >= 1  # both classes wrapped an epoch
    assert p.epochs > 1


def test_mix_is_deterministic_and_resumes_exactly():
    m = _corpus()
    kw = dict(seq_len=T, batch_size=4, grad_accum=2, mode="balanced", seed=7, window_rows=32, long_share=0.6,
              long_min=200)
    assert_deterministic_and_resumable(lambda **o: Packer(m, **{**kw, **o}))


def test_mix_errors_name_the_field():
    with pytest.raises(ConfigError, match="^data.long_share: mixes documents, and packing 'uniform' draws windows"):
        tiny_cfg(data={"packing": "uniform", "long_share": 0.5})
    with pytest.raises(ConfigError, match="^data.long_min: applies with long_share"):
        tiny_cfg(data={"long_min": 64})
    with pytest.raises(ConfigError, match="^data.long_share: the train split has no long documents"):
        Packer(np.full(50, 10), T, 2, long_share=0.5)
    with pytest.raises(ConfigError, match="^eval.seq_len: 4 is too short"):
        tiny_cfg(ev={"seq_len": 4})
    d = tiny_cfg().to_dict()  # unset, none of the knobs enters a config (run ids stay what they were)
    assert "long_share" not in d["data"] and "long_min" not in d["data"] and "seq_len" not in d["eval"]


@pytest.mark.usefixtures("one_thread", "private_cache")
def test_training_longer_than_evaluation(tmp_path):
    cfg = tiny_cfg(steps=10, data={"seq_len": 128, "long_share": 0.7, "long_min": 4096, "long_docs": False},
                   ev={"seq_len": 64, "val_tokens": 1024})
    s = train_run(cfg, run_dir(tmp_path, cfg), device="cpu", progress=False)
    assert s["status"] == "completed"
    rows = [json.loads(x) for x in (run_dir(tmp_path, cfg) / "evals.jsonl").read_text().splitlines()]
    vl = next(r for r in rows if r["eval"] == "val_loss")
    assert vl["metrics"]["seq_len"] == 64 and vl["metrics"]["loss"] == s["val_loss"]
    buckets = [r for r in rows if r["eval"] == "position_loss"]
    assert {r["tags"]["context"] for r in buckets} == {64} and max(r["tags"]["end"] for r in buckets) == 64
    # the same run scored at its training length: the rows are 128 long and the row has no seq_len
    same = tiny_cfg(steps=10, data={"seq_len": 128, "long_share": 0.7, "long_min": 4096, "long_docs": False},
                    ev={"val_tokens": 1024})
    s2 = train_run(same, run_dir(tmp_path, same), device="cpu", progress=False)
    rows2 = [json.loads(x) for x in (run_dir(tmp_path, same) / "evals.jsonl").read_text().splitlines()]
    vl2 = next(r for r in rows2 if r["eval"] == "val_loss")
    assert "seq_len" not in vl2["metrics"] and s2["final_loss"] == s["final_loss"]
    assert {r["tags"]["context"] for r in rows2 if r["eval"] == "position_loss"} == {128}
