"""Hierarchical balance packing (HBP, arXiv 2503.07680): pack groups by length, each with its own micro-batch.

`data.packing = "hierarchical"` with `data.pack_levels` (e.g. [2048, 8192, 32768], the last = data.seq_len):

1. Documents are drawn and cut into pieces of at most seq_len exactly as `balanced` does (runs.packing.Packer).
2. Routing: each piece goes to the smallest level whose rows hold it whole, so a 1.5K-token file never shares
   a 32K row with others and pays 32K-long attention rows for nothing.
3. Each level packs its pieces (best-fit decreasing, leftovers streamed into the gaps) into rows of its own
   length, `batch_size × seq_len / level` rows per micro-batch: every micro-batch holds the same positions,
   so memory and the linear layers' work per micro-batch are the same at every level, and only attention
   (Σ s² of its segments) differs. Rows are dealt to the level's micro-batches by LPT on Σ s².
4. A window's micro-batches are shared among the levels in proportion to the positions routed to each (largest
   remainder; what a level cannot use this window waits in the carry), then dealt to steps by LPT on Σ s²
   (HBP's balance batching), so every step costs about the same; steps in a seeded random order.

Each level may recompute its activations in the backward (`train.recompute_from`: levels with rows at least
that long), HBP's per-group activation checkpointing. The statistics of runs.packing.PackStats (padding ratio,
ABR over the run and per step) apply unchanged; runs/pack_stats.py adds Ave-T, the per-level shares, and the
cross-rank balance (DBR) of data-parallel runs.
"""

from __future__ import annotations

import numpy as np

from costlaw.runs.config import check_levels
from costlaw.runs.packing import (
    BALANCED_SLACK,
    RESERVOIR,
    WINDOW_ROWS,
    MicroBatch,
    Packer,
    _lpt,
    _stratified_take,
    passkey_draw,
)


class HierarchicalPacker(Packer):
    """Deterministic given the seed; its state is the Packer's (a window's start and the position in it)."""

    def __init__(self, positions: np.ndarray, seq_len: int, batch_size: int, grad_accum: int = 1,
                 levels=(), seed: int = 0, curriculum_steps: int = 0, retrieval_mix: float = 0.0,
                 window_rows: int = WINDOW_ROWS, long_share: float | None = None, long_min: int = 0):
        super().__init__(positions, seq_len, batch_size, grad_accum, mode="balanced", seed=seed,
                         curriculum_steps=curriculum_steps, retrieval_mix=retrieval_mix, window_rows=window_rows,
                         long_share=long_share, long_min=long_min)
        self.levels = check_levels(levels, seq_len, batch_size)

    def rows_at(self, level: int) -> int:
        return self.B * self.T // level

    def _plan_window(self) -> None:
        self._window_start = self._cursor_state()
        T, A = self.T, self.A
        steps = self.window_steps
        curriculum = self.step < self.curriculum_steps
        if curriculum:
            steps = min(steps, self.curriculum_steps - self.step)
        n_mb, C = steps * A, self.B * T
        cdoc, cstart, clen = self.carry
        have, target = int(clen.sum()), n_mb * C * RESERVOIR
        new = self._draw(target - have, curriculum, count_pieces=False) if have < target else np.zeros(0, np.int64)
        ndoc, nstart, nlen = self._pieces(new)
        doc, start, length = (np.concatenate([a, b]) for a, b in ((cdoc, ndoc), (cstart, nstart), (clen, nlen)))
        n_carry = len(cdoc)
        level_of = np.searchsorted(np.asarray(self.levels), length)  # the smallest level that holds the piece
        shares = _shares(np.bincount(level_of, weights=length, minlength=len(self.levels)), n_mb)
        carry = [np.zeros(0, np.int64)] * 3
        mbs = []  # (level, rows, row, col, doc, start, length, cost)
        for li, L in enumerate(self.levels):
            idx = np.flatnonzero(level_of == li)  # ascending: carried pieces first
            n = int(shares[li])
            if n == 0:
                carry = [np.concatenate([c, a[idx]]) for c, a in zip(carry, (doc, start, length))]
                continue
            rows = self.rows_at(L)
            take = idx[_stratified_take(length[idx], L, int(n * C * (1 + BALANCED_SLACK)))]
            rest = np.setdiff1d(idx, take, assume_unique=True)
            carry = [np.concatenate([c, a[rest]]) for c, a in zip(carry, (doc, start, length))]
            prow, pcol, pdoc, pstart, plen = self._place(doc[take], start[take], length[take],
                                                         int((take < n_carry).sum()), n * rows, T=L)
            carry = [np.concatenate([c, a]) for c, a in zip(carry, self.carry)]
            costs = np.bincount(prow, weights=plen.astype(np.float64) ** 2, minlength=n * rows)
            mb_of_row = _lpt(costs, n, rows)
            slot = np.empty(n * rows, np.int64)
            order = np.lexsort((np.arange(n * rows), mb_of_row))
            slot[order] = np.arange(n * rows) - np.repeat(np.arange(n) * rows, rows)
            pmb = mb_of_row[prow]
            for j in range(n):
                sel = np.flatnonzero(pmb == j)
                sel = sel[np.lexsort((pcol[sel], slot[prow[sel]]))]
                mbs.append((L, rows, slot[prow[sel]], pcol[sel], pdoc[sel], pstart[sel], plen[sel],
                            float(costs[mb_of_row == j].sum())))
        self.carry = tuple(carry)
        # balance batching: steps of about equal attention cost, each with A micro-batches; seeded step order
        step_of = _lpt(np.array([m[-1] for m in mbs]), steps, A)
        step_order = np.random.default_rng([self.seed, 3, self.window_index]).permutation(steps)
        rank = np.empty(steps, np.int64)
        rank[step_order] = np.arange(steps)
        seq = sorted(range(len(mbs)), key=lambda i: (rank[step_of[i]], -mbs[i][0], i))
        window = []
        for j, i in enumerate(seq):
            L, rows, row, col, d, st, ln, _ = mbs[i]
            gi = self.mb_next + j
            passkey, keys, depths = passkey_draw(self.seed, gi, rows, self.retrieval_mix)
            window.append(MicroBatch(gi, rows, L, row, col, d, st, ln, passkey, keys, depths))
        self._window, self._window_pos = window, 0
        self.window_index += 1
        self.mb_next += n_mb


def _shares(positions: np.ndarray, n: int) -> np.ndarray:
    """n micro-batches shared among levels in proportion to their positions (largest remainder)."""
    total = positions.sum()
    if total <= 0:
        out = np.zeros(len(positions), np.int64)
        out[-1] = n
        return out
    exact = positions / total * n
    out = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - out), kind="stable")[:n - int(out.sum())]:
        out[i] += 1
    return out
