"""A small results store for analysis tests, built with the store's own writers (tests/support/synth_runs.py +
ingest) from known laws, so fits, recommendations, frontiers, figures and reports can be checked exactly.

Ladder: byte-level models (vocab 257, d_h 16, seq_len 128) at four shapes (L, d) = (2, 64), (3, 128),
(4, 192), (4, 256) for the GQA candidates 4,4 / 4,1 / 2,1 / 1,1 and a hybrid 4,1 with half its layers
sink_window(4,32); 8,2 has only three sizes (unfit). Each run's val_loss = LAWS[candidate](N), its loss by
position falls with position, and 4,4's runs carry snapkv kv_policy evals with ΔNLL = KV_DELTA[keep].
"""

from __future__ import annotations

from pathlib import Path

from costlaw.analysis.store.ingest import ingest
from costlaw.costmodel import ModelConfig, hybrid_layout, paper_ffn, params_non_embedding
from costlaw.runs.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from tests.support.synth_runs import metrics_lines, write_run

SHAPES = ((2, 64), (3, 128), (4, 192), (4, 256))
LAWS = {  # label -> (a, b, E) of L(N) = (a/N)^b + E
    "4,4": (2.0e4, 0.35, 1.60),
    "4,1": (3.0e4, 0.35, 1.65),
    "2,1": (4.0e4, 0.35, 1.70),
    "1,1": (5.0e4, 0.35, 1.74),
    "4,1 full=0.50 sink_window(4,32)": (3.5e4, 0.35, 1.68),
    "8,2": (2.5e4, 0.35, 1.62),
}
KV_DELTA = {0.25: 0.08, 0.5: 0.03}


def law_loss(label: str, N: float) -> float:
    a, b, E = LAWS[label]
    return (a / N) ** b + E


def model(label: str, L: int, d: int) -> ModelConfig:
    pair = label.split()[0]
    h, k = (int(x) for x in pair.split(","))
    layout = hybrid_layout(L, "sink_window(4,32)", full_layers=L // 2) if "full=" in label else ()
    return ModelConfig(d_model=d, n_layers=L, n_heads=h, n_kv_heads=k, head_dim=16, ffn_dim=paper_ffn(d),
                       vocab_size=257, tied_embeddings=True, rope_theta=10000.0, layout=layout)


def run_config(cfg: ModelConfig, seed: int = 0) -> dict:
    return RunConfig(model=cfg, data=DataConfig(seq_len=128), train=TrainConfig(steps=20, batch_size=4),
                     eval=EvalConfig(val_tokens=4096, position_buckets=4), seed=seed).to_dict()


def evals(label: str, cfg: ModelConfig, loss: float) -> list[dict]:
    ev = [{"eval": "val_loss", "tags": {"context": 128}, "metrics": {"loss": loss, "tokens": 4096}}]
    for b in range(4):
        ev.append({"eval": "position_loss", "tags": {"context": 128, "bucket": b, "start": 32 * b, "end": 32 * b + 32},
                   "metrics": {"loss": loss + 0.3 / (b + 1), "tokens": 1024}})
    if label == "4,4":
        for keep, delta in KV_DELTA.items():
            ev.append({"eval": "kv_policy", "tags": {"context": 128, "policy": "snapkv", "keep": keep},
                       "metrics": {"nll": loss + delta, "nll_full": loss, "delta_nll": delta}})
    return ev


def build_store(tmp: Path, labels=tuple(LAWS)) -> Path:
    """Write the run directories under tmp/root and ingest them into tmp/results.duckdb."""
    root, db = tmp / "root", tmp / "results.duckdb"
    for label in labels:
        shapes = SHAPES[:3] if label == "8,2" else SHAPES
        for L, d in shapes:
            cfg = model(label, L, d)
            loss = law_loss(label, params_non_embedding(cfg))
            rc = run_config(cfg)
            steps = rc["train"]["steps"]
            metrics = metrics_lines(steps, 4 * 128, seed=d)
            for m in metrics:  # training curves that end near the run's loss
                m["loss"] = round(loss + 2.0 * m["step"] ** -0.7, 6)
            write_run(root, rc, evals=evals(label, cfg, loss), metrics=metrics, sweep="fixture",
                      env={"gpu": "NVIDIA H100 80GB HBM3", "device": "cuda", "torch": "2.13.0", "python": "3.11.7",
                           "git_commit": "0123abcd", "git_dirty": False, "hostname": "node1"})
    ingest(root, db)
    return db
