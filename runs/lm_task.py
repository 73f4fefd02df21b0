"""The LM task: pretraining and every later LM stage (`train.trainable = "all"`), the Trainer's default.

Batches are packed rows of the train split (runs.packing's Packer, or its UniformPieces for `data.packing =
"uniform"`, planned and prefetched by a thread through runs.data.loader.StepLoader; a document mask when
`data.doc_mask`, passkey rows when `data.retrieval_mix`). The
loss is the model's summed next-token cross-entropy over a micro-batch's targets, normalised by the step's target
count (Ave-Token). Every parameter trains. The evaluation is runs/evaluate.py. A checkpoint keeps the packer's
position (`data`) and the packing statistics (`pack_stats`).
"""

from __future__ import annotations

import math

from costlaw.costmodel import costs as analytic_costs
from costlaw.costmodel.core.errors import ConfigError
from costlaw.runs.packing import PackStats
from costlaw.runs.task import DIVERGE_FACTOR, Task, register_task
from costlaw.runs.train import autocast


def model_loss(fwd, batch, dtype, device, model=None, recompute: bool = False):
    """Summed loss of one micro-batch (the model's reduction="sum"). Document masks' block indices are built
    here, eagerly, so a compiled `fwd` gets them as tensors instead of tracing the builder."""
    extra = {}
    with autocast(device, dtype):  # the index depends on the compute dtype (runs/models/varlen.py)
        if batch.doc_ids is not None and hasattr(model, "document_block_index"):
            index = model.document_block_index(batch.doc_ids, batch.cu_seqlens)
            if index is not None:
                extra["block_index"] = index
        if recompute:
            extra["recompute"] = True
        out = fwd(batch.idx, targets=batch.targets, doc_ids=batch.doc_ids, reduction="sum", **extra)
    return out[0] if isinstance(out, tuple) else out


@register_task
class LMTask(Task):
    name = "lm"
    compile = True
    ddp = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.pack = PackStats()
        self.consumed = None  # the packer's position after the last finished step (the prefetcher runs ahead)
        self.loader = None
        self.tokenizer = None

    def setup(self, trainer) -> None:
        from costlaw.runs.data import get_tokenizer
        from costlaw.runs.packing import Packer, UniformPieces, passkey_min_len

        cfg, d = self.cfg, self.cfg.data
        self.trainer = trainer
        self.tokenizer = get_tokenizer(d.tokenizer) if d.retrieval_mix > 0 or cfg.eval.retrieval_samples else None
        need = passkey_min_len(self.tokenizer) + 32 if self.tokenizer is not None else 0
        if d.retrieval_mix > 0 and d.seq_len < need:
            raise ConfigError("data.retrieval_mix", f"passkey rows need seq_len >= {need} with the {d.tokenizer} "
                                                    "tokenizer; raise data.seq_len or set retrieval_mix = 0")
        if d.retrieval_mix > 0 and d.packing == "hierarchical" and d.pack_levels[0] < need:
            raise ConfigError("data.pack_levels", f"passkey rows (retrieval_mix) need rows of >= {need} tokens with "
                                                  f"the {d.tokenizer} tokenizer, and the smallest level is "
                                                  f"{d.pack_levels[0]}; raise it or set retrieval_mix = 0")
        if self.tokenizer is not None and d.seq_len < need:
            trainer._log(f"retrieval probe skipped: it needs seq_len >= {need} with the {d.tokenizer} tokenizer")
            self.tokenizer = None
        # fixed masks and the RoPE table are built here, outside the compiled graph
        trainer.model.attention_masks(d.seq_len, device=trainer.device)
        curriculum_steps = round(d.curriculum_frac * cfg.total_steps) if d.curriculum == "short-first" else 0
        if d.packing == "uniform":
            self.packer = UniformPieces(trainer.corpus.train.positions, d.seq_len, cfg.train.batch_size,
                                        cfg.train.grad_accum, seed=cfg.seed, retrieval_mix=d.retrieval_mix)
        elif d.packing == "hierarchical":
            from costlaw.runs.hierarchical import HierarchicalPacker

            self.packer = HierarchicalPacker(trainer.corpus.train.positions, d.seq_len, cfg.train.batch_size,
                                             cfg.train.grad_accum, levels=d.pack_levels, seed=cfg.seed,
                                             curriculum_steps=curriculum_steps, retrieval_mix=d.retrieval_mix,
                                             long_share=d.long_share, long_min=d.long_min)
        else:
            self.packer = Packer(trainer.corpus.train.positions, d.seq_len, cfg.train.batch_size,
                                 cfg.train.grad_accum, mode=d.packing, seed=cfg.seed,
                                 curriculum_steps=curriculum_steps, retrieval_mix=d.retrieval_mix,
                                 long_share=d.long_share, long_min=d.long_min)
        self.vocab_log = math.log(trainer.corpus.vocab_size)

    # ---- batches
    def start(self, trainer) -> None:
        from costlaw.runs.data.loader import StepLoader

        if self.consumed is None:
            self.consumed = self.packer.state_dict()  # the position before any step
        self.loader = StepLoader(trainer.corpus.train, self.packer, trainer.corpus.eot, trainer.device,
                                 self.tokenizer, doc_mask=self.cfg.data.doc_mask, rank=trainer.rank,
                                 world=trainer.world)

    def next_batch(self):
        return self.loader.next()

    def stepped(self, batch) -> None:
        self.pack.add_step(batch.plans, self.trainer.world)
        self.consumed = batch.state

    def close(self) -> None:
        if self.loader is not None:
            self.loader.close()
            self.loader = None

    def state_dict(self) -> dict:
        return {"data": self.consumed, "pack_stats": self.pack.state_dict()}

    def load_state_dict(self, ck: dict) -> None:
        self.packer.load_state_dict(ck["data"])
        self.consumed = ck["data"]
        self.pack = PackStats(ck["pack_stats"])

    # ---- loss
    def loss(self, micro):
        t = self.trainer
        every = self.cfg.train.recompute_from
        return model_loss(t.fwd, micro, t.dtype, t.device, t.model,
                          recompute=bool(every) and micro.idx.shape[1] >= every)

    def loss_bound(self) -> float:
        # ten times a uniform guess over the vocabulary: a healthy run starts near ln V and only falls
        return DIVERGE_FACTOR * self.vocab_log

    # ---- evaluation and the summary
    def evaluate(self, trainer) -> dict:
        from costlaw.runs.evaluate import evaluate as run_eval

        return run_eval(trainer.model, self.cfg, trainer.corpus, trainer.device, trainer.rd, self.tokenizer,
                        dtype=trainer.dtype, log=trainer._log)

    def data_summary(self) -> dict:
        # cr: the share of tokens that cross devices for sequence parallelism (HBP); this trainer has none, so 0
        return {"padding_ratio": self.pack.padding_ratio, "abr": self.pack.abr, "abr_step": self.pack.abr_step,
                "packing": self.cfg.data.packing, "doc_mask": self.cfg.data.doc_mask, "micro_batches": self.pack.n,
                "ave_t": self.pack.ave_t, "dbr": self.pack.dbr, "cr": 0.0, "level_shares": self.pack.level_shares}

    def flops_per_token(self) -> float:
        return analytic_costs(self.cfg.model, self.cfg.data.seq_len)["c_train_flops_per_token"]
