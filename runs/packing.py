"""Packing documents into fixed-length rows, balanced for attention cost (in the spirit of HBP).

Plans are made from document lengths alone (no tokens are touched), one *window* of optimizer steps at a
time (at least `WINDOW_ROWS` rows), so that balancing has choice and resuming is cheap:

1. Draw documents — in a seeded shuffled order per epoch, or shortest first during the `short-first`
   curriculum — and cut each into pieces of at most `seq_len` input positions (a document of n tokens has
   n + 1: see runs.data.shards). Pieces left over from the previous window come first, so none waits
   more than one window.
2. Place the pieces of at least `seq_len / 16` positions into the window's rows: `balanced` by best-fit
   decreasing, `greedy` by plain first-fit in draw order. `none` puts one piece per row and pads.
3. Stream the remaining pieces into the space left (splitting at row ends), so a packed row is padded only
   when the corpus runs dry; what does not fit is carried to the next window.
4. Deal rows to the window's micro-batches: `balanced` by longest-processing-time on each row's attention
   cost Σ s² (s = segment lengths) so every micro-batch costs about the same, then form each optimizer
   step from micro-batches of neighbouring cost (the micro-batches of a step — which data-parallel ranks
   share — are balanced within it; HBP's setting), steps in seeded random order; the others in row order.

Reported per run: the padding ratio (pad positions / all positions), the attention balance ratio over all
micro-batches of the run, ABR = Σ_i (A_max − A_i) / (A_max · N) = 1 − mean(A) / max(A), with A_i = Σ s² of
micro-batch i (HBP, arXiv 2503.07680), and `abr_step`, the mean ABR among the micro-batches of one step.
Ave-Token loss normalisation (sum over every micro-batch of a step, divided once by the step's target
count) is the trainer's; the plan tells it the count up front.

`uniform` (`UniformPieces`) draws no documents at all: every row is a seq_len window of the whole train stream
(the documents' input positions back to back) at a random offset, so consecutive steps see text from anywhere
in the corpus rather than from the few hundred documents a shuffled window holds. Documents meeting inside a
window are separate segments, as in a packed row (the document mask keeps them apart).

Rows may also carry a synthetic passkey (`retrieval_mix`): the row becomes one segment of its own text with
"The pass key is 48213. Remember it." inserted at a random depth and "What is the pass key? 48213" at its
end, so the retrieval probe (runs.evaluate) means something at small scale.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from costlaw.costmodel.core.errors import ConfigError

WINDOW_ROWS = 256  # a packing window spans whole steps holding at least this many rows
BALANCED_SLACK = 0.1  # balanced offers best-fit this much more than a window holds, so it has choice
RESERVOIR = 4  # balanced keeps this many windows of pieces in hand and takes each window's share of every length
PAD_TARGET = -100  # the model's ignore_index

PASSKEY_INTRO = " The pass key is {key}. Remember it. "
PASSKEY_QUESTION = " What is the pass key?"
PASSKEY_ANSWER = " {key}"


# ---------------------------------------------------------------- plans
@dataclass
class MicroBatch:
    """A micro-batch plan: pieces (doc, stream start, length) at (row, col); rows sorted, cols ascending."""

    index: int  # global micro-batch number (0-based)
    rows: int
    seq_len: int
    row: np.ndarray
    col: np.ndarray
    doc: np.ndarray
    start: np.ndarray
    length: np.ndarray
    passkey: np.ndarray  # bool [rows]
    keys: np.ndarray  # int [rows]: the passkey of each passkey row
    depths: np.ndarray  # float [rows]: where its intro goes

    @property
    def positions(self) -> int:
        return self.rows * self.seq_len

    @property
    def tokens(self) -> int:
        """Positions with a target (passkey rows count whole)."""
        keep = ~self.passkey[self.row]
        return int(self.length[keep].sum()) + int(self.passkey.sum()) * self.seq_len

    @property
    def pad(self) -> int:
        return self.positions - self.tokens

    @property
    def cost(self) -> int:
        """Attention cost Σ s² over the micro-batch's segments (a passkey row is one segment of seq_len)."""
        keep = ~self.passkey[self.row]
        s = self.length[keep].astype(np.int64)
        return int((s * s).sum()) + int(self.passkey.sum()) * self.seq_len ** 2


class PackStats:
    """Running packing statistics over consumed micro-batches (what the trainer checkpoints): padding ratio, ABR
    over the run and per step, Ave-T (targets per step), the positions each row length (pack level) got, and for
    data-parallel runs DBR, the cross-rank balance of each step's attention cost (HBP/OmniBal's metric on Σ s²;
    0 on one device, where nothing is shared)."""

    def __init__(self, d: dict | None = None):
        d = d or {}
        self.positions, self.pad = d.get("positions", 0), d.get("pad", 0)
        self.n, self.cost_sum, self.cost_max = d.get("n", 0), d.get("cost_sum", 0), d.get("cost_max", 0)
        self.steps, self.step_abr_sum = d.get("steps", 0), d.get("step_abr_sum", 0.0)
        self.tokens, self.step_dbr_sum = d.get("tokens", 0), d.get("step_dbr_sum", 0.0)
        self.level_positions: dict[str, int] = dict(d.get("level_positions", {}))

    def add_step(self, mbs: list[MicroBatch], world: int = 1) -> None:
        for mb in mbs:
            self.add(mb)
        self.steps += 1
        costs = [mb.cost for mb in mbs]
        self.step_abr_sum += abr(costs)
        if world > 1:  # the loader deals micro-batch i to rank i % world
            self.step_dbr_sum += abr([sum(costs[r::world]) for r in range(world)])

    @property
    def abr_step(self) -> float:
        """Mean over steps of the ABR among one step's micro-batches."""
        return self.step_abr_sum / self.steps if self.steps else 0.0

    @property
    def dbr(self) -> float:
        """Mean over steps of the ABR among the ranks' shares of a step (0 on one device)."""
        return self.step_dbr_sum / self.steps if self.steps else 0.0

    @property
    def ave_t(self) -> float:
        """Targets per optimizer step (HBP's Ave-T)."""
        return self.tokens / self.steps if self.steps else 0.0

    def add(self, mb: MicroBatch) -> None:
        c = mb.cost
        self.positions += mb.positions
        self.pad += mb.pad
        self.tokens += mb.tokens
        self.n += 1
        self.cost_sum += c
        self.cost_max = max(self.cost_max, c)
        key = str(mb.seq_len)
        self.level_positions[key] = self.level_positions.get(key, 0) + mb.positions

    @property
    def padding_ratio(self) -> float:
        return self.pad / self.positions if self.positions else 0.0

    @property
    def abr(self) -> float:
        return abr_from(self.cost_sum, self.cost_max, self.n)

    @property
    def level_shares(self) -> dict[str, float]:
        """Share of all positions trained in rows of each length."""
        return {k: v / self.positions for k, v in sorted(self.level_positions.items(), key=lambda kv: int(kv[0]))}

    def state_dict(self) -> dict:
        return {"positions": self.positions, "pad": self.pad, "n": self.n, "cost_sum": self.cost_sum,
                "cost_max": self.cost_max, "steps": self.steps, "step_abr_sum": self.step_abr_sum,
                "tokens": self.tokens, "step_dbr_sum": self.step_dbr_sum, "level_positions": self.level_positions}


def abr(costs) -> float:
    """Attention balance ratio Σ_i (A_max − A_i) / (A_max · N) of per-micro-batch costs A_i."""
    a = np.asarray(costs, dtype=np.float64)
    if a.size == 0 or a.max() == 0:
        return 0.0
    return float((a.max() - a).sum() / (a.max() * a.size))


def abr_from(cost_sum: float, cost_max: float, n: int) -> float:
    return 0.0 if n == 0 or cost_max == 0 else float(1.0 - cost_sum / (cost_max * n))


# ---------------------------------------------------------------- the packer
class Packer:
    """Deterministic given the seed; `state_dict()` after any step restores the exact sequence."""

    def __init__(self, positions: np.ndarray, seq_len: int, batch_size: int, grad_accum: int = 1,
                 mode: str = "balanced", seed: int = 0, curriculum_steps: int = 0, retrieval_mix: float = 0.0,
                 window_rows: int = WINDOW_ROWS, long_share: float | None = None, long_min: int = 0):
        if mode not in ("balanced", "greedy", "none"):
            raise ValueError(f"packing mode {mode!r}")
        self.m = np.asarray(positions, dtype=np.int64)
        if self.m.size == 0 or self.m.min() < 1:
            raise ValueError("every document needs at least one position")
        # ProLong's long/short mix: `long_share` of the drawn positions from documents of >= long_min positions,
        # each class in its own shuffled order and epochs (None: documents as the corpus has them)
        self.long_share = long_share
        self.long_min = long_min or seq_len
        if long_share is not None:
            self.classes = (np.flatnonzero(self.m >= self.long_min), np.flatnonzero(self.m < self.long_min))
            for c, name in zip(self.classes, ("long", "short")):
                if len(c) == 0 and (long_share if name == "long" else 1 - long_share) > 0:
                    raise ConfigError("data.long_share", f"the train split has no {name} documents (long: >= "
                                                         f"{self.long_min} positions, data.long_min); change "
                                                         "long_min or drop long_share")
            # [epoch, cursor, positions drawn] of the long and the short class
            self.class_state = [[0, 0, 0], [0, 0, 0]]
        self.T, self.B, self.A = seq_len, batch_size, grad_accum
        self.mode, self.seed = mode, seed
        self.curriculum_steps = curriculum_steps
        self.retrieval_mix = retrieval_mix
        self.window_steps = max(1, -(-window_rows // (batch_size * grad_accum)))
        self._curr_order = None
        # cursor state (what a window starts from)
        self.epoch, self.cursor, self.curr_cursor = 0, 0, 0
        self.carry = (np.zeros(0, np.int64),) * 3
        self.window_index = 0
        self.mb_next = 0  # global index of the next micro-batch to plan
        self.step = 0  # steps handed out
        self._window: list[MicroBatch] = []
        self._window_pos = 0
        self._window_start: dict | None = None

    # ---- state
    def _cursor_state(self) -> dict:
        out = {"epoch": self.epoch, "cursor": self.cursor, "curr_cursor": self.curr_cursor,
               "carry": [c.tolist() for c in self.carry], "window_index": self.window_index,
               "mb_next": self.mb_next, "step": self.step}
        if self.long_share is not None:
            out["classes"] = [list(c) for c in self.class_state]
        return out

    def _set_cursor_state(self, s: dict) -> None:
        self.epoch, self.cursor, self.curr_cursor = s["epoch"], s["cursor"], s["curr_cursor"]
        if self.long_share is not None:
            self.class_state = [list(c) for c in s["classes"]]
        self.carry = tuple(np.asarray(c, dtype=np.int64) for c in s["carry"])
        self.window_index, self.mb_next, self.step = s["window_index"], s["mb_next"], s["step"]

    def state_dict(self) -> dict:
        """The data position: the state the current window was planned from, and how far into it we are."""
        return {"window_start": self._window_start, "window_pos": self._window_pos, "step": self.step,
                "epoch": self.epoch}

    def load_state_dict(self, d: dict) -> None:
        if d["window_start"] is None:
            return
        self._set_cursor_state(d["window_start"])
        self._plan_window()
        self._window_pos = d["window_pos"]
        self.step = d["step"]

    @property
    def epochs(self) -> float:
        """Passes over the documents so far (main phase); with a long/short mix, each class's passes weighted by
        its share of the corpus's positions."""
        if self.long_share is None:
            return self.epoch + self.cursor / len(self.m)
        total = float(self.m.sum())
        return sum((e + k / len(c)) * float(self.m[c].sum()) / total
                   for c, (e, k, _) in zip(self.classes, self.class_state) if len(c))

    # ---- stepping
    def next_step(self) -> list[MicroBatch]:
        out = []
        for _ in range(self.A):
            if self._window_pos >= len(self._window):
                self._plan_window()
            out.append(self._window[self._window_pos])
            self._window_pos += 1
        self.step += 1
        return out

    # ---- drawing documents
    def _order(self, curriculum: bool) -> np.ndarray:
        if curriculum:
            if self._curr_order is None:
                perm = np.random.default_rng([self.seed, 2]).permutation(len(self.m))
                self._curr_order = perm[np.argsort(self.m[perm], kind="stable")]  # shortest first, ties shuffled
            return self._curr_order
        return np.random.default_rng([self.seed, 1, self.epoch]).permutation(len(self.m))

    def _draw(self, need: int, curriculum: bool, count_pieces: bool) -> np.ndarray:
        """Documents (in order) until their positions (or pieces) reach `need`."""
        if self.long_share is not None and not curriculum:
            # aim at the share of everything drawn so far: a draw overshoots by up to a document, and the next
            # one makes up for it instead of the bias piling up window after window
            drawn = [st[2] for st in self.class_state]
            want_long = max(0, round((sum(drawn) + need) * self.long_share) - drawn[0])
            want_short = max(0, sum(drawn) + need - want_long - drawn[0] - drawn[1])
            return np.concatenate([self._draw_class(0, want_long, count_pieces),
                                   self._draw_class(1, want_short, count_pieces)])
        got, out = 0, []
        order = self._order(curriculum)
        while got < need:
            cur = self.curr_cursor if curriculum else self.cursor
            if cur >= len(order):
                if curriculum:
                    self.curr_cursor = 0
                else:
                    self.epoch, self.cursor = self.epoch + 1, 0
                    order = self._order(False)
                continue
            block = order[cur:cur + 4096]
            k, n = self._prefix(block, need - got, count_pieces)
            out.append(block[:k])
            got += n
            if curriculum:
                self.curr_cursor += k
            else:
                self.cursor += k
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def _draw_class(self, c: int, need: int, count_pieces: bool) -> np.ndarray:
        """Documents of length class c (0 long, 1 short) until their positions (or pieces) reach `need`."""
        docs, st = self.classes[c], self.class_state[c]
        got, out = 0, []
        order = None
        while got < need and len(docs):
            if order is None:
                order = docs[np.random.default_rng([self.seed, 6, c, st[0]]).permutation(len(docs))]
            block = order[st[1]:st[1] + 4096]
            if len(block) == 0:
                st[0], st[1], order = st[0] + 1, 0, None
                continue
            k, n = self._prefix(block, need - got, count_pieces)
            out.append(block[:k])
            got += n
            st[1] += k
            st[2] += int(self.m[block[:k]].sum())
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def _prefix(self, block: np.ndarray, need: int, count_pieces: bool) -> tuple[int, int]:
        """(k, amount): the shortest prefix of `block` whose positions (or pieces) reach `need` (all of it when
        none does), and what it holds."""
        size = -(-self.m[block] // self.T) if count_pieces else self.m[block]
        cum = np.cumsum(size)
        k = min(int(np.searchsorted(cum, need)) + 1, len(block))
        return k, int(cum[k - 1])

    def _pieces(self, docs: np.ndarray):
        m = self.m[docs]
        cnt = -(-m // self.T)
        doc = np.repeat(docs, cnt)
        k = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        start = k * self.T
        length = np.minimum(self.T, np.repeat(m, cnt) - start)
        return doc.astype(np.int64), start.astype(np.int64), length.astype(np.int64)

    # ---- planning a window
    def _plan_window(self) -> None:
        self._window_start = self._cursor_state()
        T, B = self.T, self.B
        steps = self.window_steps
        curriculum = self.step < self.curriculum_steps
        if curriculum:
            steps = min(steps, self.curriculum_steps - self.step)
        R = steps * self.A * B
        cap = R * T
        cdoc, cstart, clen = self.carry
        if self.mode == "none":
            have = len(clen)
            new = self._draw(R - have, curriculum, count_pieces=True) if have < R else np.zeros(0, np.int64)
        else:
            target = cap * RESERVOIR if self.mode == "balanced" else cap
            have = int(clen.sum())
            new = self._draw(target - have, curriculum, count_pieces=False) if have < target else np.zeros(0, np.int64)
        ndoc, nstart, nlen = self._pieces(new)
        doc = np.concatenate([cdoc, ndoc])
        start = np.concatenate([cstart, nstart])
        length = np.concatenate([clen, nlen])
        n_carry = len(cdoc)
        held = (np.zeros(0, np.int64),) * 3
        if self.mode == "balanced":
            take = _stratified_take(length, T, int(cap * (1 + BALANCED_SLACK)))
            rest = np.setdiff1d(np.arange(len(doc)), take, assume_unique=True)
            held = (doc[rest], start[rest], length[rest])
            n_carry = int((take < n_carry).sum())
            doc, start, length = doc[take], start[take], length[take]

        if self.mode == "none":
            placed = np.arange(min(R, len(doc)))
            prow, pcol = placed.copy(), np.zeros(len(placed), np.int64)
            pdoc, pstart, plen = doc[placed], start[placed], length[placed]
            rest = np.arange(len(placed), len(doc))
            self.carry = (doc[rest], start[rest], length[rest])
        else:
            prow, pcol, pdoc, pstart, plen = self._place(doc, start, length, n_carry, R)
            self.carry = tuple(np.concatenate([a, b]) for a, b in zip(self.carry, held))
        costs = np.bincount(prow, weights=plen.astype(np.float64) ** 2, minlength=R)
        if self.mode == "balanced":
            mb_of_row = _lpt(costs, steps * self.A, B)
        else:
            mb_of_row = np.arange(R) // B
        # slot of each row within its micro-batch, in row order
        order = np.lexsort((np.arange(R), mb_of_row))
        slot = np.empty(R, np.int64)
        slot[order] = np.arange(R) - np.repeat(np.arange(steps * self.A) * B, B)
        n_mb = steps * self.A
        mb_order = np.arange(n_mb)
        if self.mode == "balanced":
            # steps of micro-batches with neighbouring costs (what is left after LPT is granularity: a few
            # rows per micro-batch), so each step is balanced within itself; steps in a seeded random order
            mb_cost = np.bincount(mb_of_row, weights=costs, minlength=n_mb)
            by_cost = np.argsort(-mb_cost, kind="stable").reshape(steps, self.A)
            step_order = np.random.default_rng([self.seed, 3, self.window_index]).permutation(steps)
            mb_order = by_cost[step_order].reshape(-1)
        rank = np.empty(n_mb, np.int64)
        rank[mb_order] = np.arange(n_mb)
        pmb = rank[mb_of_row[prow]]
        pslot = slot[prow]
        srt = np.lexsort((pcol, pslot, pmb))
        pmb, pslot, pcol, pdoc, pstart, plen = (a[srt] for a in (pmb, pslot, pcol, pdoc, pstart, plen))
        bounds = np.searchsorted(pmb, np.arange(n_mb + 1))
        window = []
        for j in range(n_mb):
            a, b = bounds[j], bounds[j + 1]
            gi = self.mb_next + j
            passkey, keys, depths = self._passkeys(gi)
            window.append(MicroBatch(gi, B, T, pslot[a:b], pcol[a:b], pdoc[a:b], pstart[a:b], plen[a:b],
                                     passkey, keys, depths))
        self._window, self._window_pos = window, 0
        self.window_index += 1
        self.mb_next += n_mb

    def _passkeys(self, gi: int):
        return passkey_draw(self.seed, gi, self.B, self.retrieval_mix)

    def _place(self, doc, start, length, n_carry, R, T: int | None = None):
        """Place pieces into R rows of T (default seq_len) positions; what does not fit becomes self.carry."""
        T = T or self.T
        big_min = max(1, T // 16)
        rem = np.full(R, T, dtype=np.int64)
        big = np.flatnonzero(length >= big_min)
        if self.mode == "balanced":  # carried pieces first, then new ones; each group longest first
            carried = big < n_carry
            big = np.concatenate([big[carried][np.argsort(-length[big[carried]], kind="stable")],
                                  big[~carried][np.argsort(-length[big[~carried]], kind="stable")]])
        rows = np.full(len(doc), -1, dtype=np.int64)
        cols = np.zeros(len(doc), dtype=np.int64)
        inf = np.int64(T + 1)
        for i in big.tolist():
            L = length[i]
            fits = rem >= L
            if self.mode == "balanced":
                r = int(np.argmin(np.where(fits, rem, inf)))
                if rem[r] < L:
                    continue
            else:
                r = int(np.argmax(fits))
                if not fits[r]:
                    continue
            rows[i], cols[i] = r, T - rem[r]
            rem[r] -= L
        placed = np.flatnonzero(rows >= 0)
        left = np.flatnonzero(rows < 0)  # pool order: carried first
        # stream leftovers into the remaining space, splitting where a row ends
        gap_rows = np.flatnonzero(rem > 0)
        gap_len = rem[gap_rows]
        gap_col = T - gap_len
        lens = length[left]
        S, G = int(lens.sum()), int(gap_len.sum())
        use = min(S, G)
        srow = scol = sdoc = sstart = slen = np.zeros(0, np.int64)
        if use > 0:
            p_end = np.cumsum(lens)
            g_end = np.cumsum(gap_len)
            cuts = np.union1d(np.concatenate([[0], p_end[p_end < use], g_end[g_end < use]]), [use])
            seg_start, seg_len = cuts[:-1], np.diff(cuts)
            pi = np.searchsorted(p_end, seg_start, side="right")
            gi = np.searchsorted(g_end, seg_start, side="right")
            p_begin, g_begin = p_end - lens, g_end - gap_len
            srow = gap_rows[gi]
            scol = gap_col[gi] + (seg_start - g_begin[gi])
            sdoc = doc[left][pi]
            sstart = start[left][pi] + (seg_start - p_begin[pi])
            slen = seg_len
        # what did not fit: the tail of the stream
        if S > use:
            p_end = np.cumsum(lens)
            k = int(np.searchsorted(p_end, use, side="right"))
            used_in_k = use - (int(p_end[k - 1]) if k > 0 else 0)
            cdoc = doc[left][k:].copy()
            cstart = start[left][k:].copy()
            clen = lens[k:].copy()
            cstart[0] += used_in_k
            clen[0] -= used_in_k
            self.carry = (cdoc, cstart, clen)
        else:
            self.carry = (np.zeros(0, np.int64),) * 3
        return (np.concatenate([rows[placed], srow]), np.concatenate([cols[placed], scol]),
                np.concatenate([doc[placed], sdoc]), np.concatenate([start[placed], sstart]),
                np.concatenate([length[placed], slen]))


def passkey_draw(seed: int, gi: int, rows: int, mix: float):
    """Which rows of micro-batch `gi` carry a passkey, their keys and depths (seeded by run and micro-batch)."""
    rng = np.random.default_rng([seed, 4, gi])
    draw = rng.random(rows)
    keys = rng.integers(10000, 100000, rows)
    depths = rng.random(rows)
    return (draw < mix) if mix > 0 else np.zeros(rows, bool), keys, depths


# ---------------------------------------------------------------- uniform pieces
def stream_pieces(doc_start: np.ndarray, doc_end: np.ndarray, a: int, b: int, col: int = 0):
    """The pieces (doc, start in its stream, length, column) of stream positions [a, b), where document d holds
    positions [doc_start[d], doc_end[d]); the first piece lands at column `col`."""
    d0 = int(np.searchsorted(doc_end, a, side="right"))
    d1 = int(np.searchsorted(doc_start, b, side="left"))
    docs = np.arange(d0, d1, dtype=np.int64)
    lo = np.maximum(doc_start[docs], a)
    hi = np.minimum(doc_end[docs], b)
    return docs, lo - doc_start[docs], hi - lo, col + lo - a


class UniformPieces:
    """packing = "uniform": each row a seq_len window of the train stream at a random offset.

    The stream is circular (a window may run off its end into its start), so every position is equally likely.
    Epoch e tiles it with K = P // seq_len windows from a random phase and deals them in a random order (both
    seeded by the run's seed and e): within an epoch no token repeats and all but the < seq_len positions past
    the last tile are seen once, a different stretch each epoch. Row r of the run is window r % K of epoch
    r // K, so a row's text depends on the seed and its step alone and the state is the step count."""

    def __init__(self, positions: np.ndarray, seq_len: int, batch_size: int, grad_accum: int = 1, seed: int = 0,
                 retrieval_mix: float = 0.0):
        self.m = np.asarray(positions, dtype=np.int64)
        if self.m.size == 0 or self.m.min() < 1:
            raise ValueError("every document needs at least one position")
        self.doc_end = np.cumsum(self.m)
        self.doc_start = self.doc_end - self.m
        self.P = int(self.doc_end[-1])
        self.T, self.B, self.A = seq_len, batch_size, grad_accum
        if self.P < seq_len:
            raise ConfigError("data.packing", f"uniform draws windows of {seq_len} positions from a train split of "
                                              f"{self.P}; use a larger corpus or a shorter seq_len")
        self.K = self.P // seq_len
        self.seed, self.retrieval_mix = seed, retrieval_mix
        self.step = 0
        self._epoch_cache: tuple[int, int, np.ndarray] | None = None

    # ---- state
    def state_dict(self) -> dict:
        return {"mode": "uniform", "step": self.step}

    def load_state_dict(self, d: dict) -> None:
        if d.get("mode") != "uniform":
            raise ValueError("the checkpoint's data position is not a uniform one")
        self.step = int(d["step"])

    @property
    def epochs(self) -> float:
        """Rows handed out, in epochs of K windows."""
        return self.step * self.A * self.B / self.K

    # ---- windows
    def _epoch(self, e: int) -> tuple[int, np.ndarray]:
        if self._epoch_cache is None or self._epoch_cache[0] != e:
            rng = np.random.default_rng([self.seed, 5, e])
            phase = int(rng.integers(0, self.P))
            self._epoch_cache = (e, phase, rng.permutation(self.K))
        return self._epoch_cache[1:]

    def window_start(self, row: int) -> int:
        """The stream position where the run's row `row` (0-based over the whole run) starts."""
        phase, perm = self._epoch(row // self.K)
        return int((phase + int(perm[row % self.K]) * self.T) % self.P)

    def _row_pieces(self, g: int):
        first = stream_pieces(self.doc_start, self.doc_end, g, min(g + self.T, self.P))
        if g + self.T <= self.P:
            return first
        wrap = stream_pieces(self.doc_start, self.doc_end, 0, g + self.T - self.P, col=self.P - g)
        return tuple(np.concatenate([x, y]) for x, y in zip(first, wrap))

    def next_step(self) -> list[MicroBatch]:
        out = []
        for a in range(self.A):
            gi = self.step * self.A + a
            parts = [self._row_pieces(self.window_start(gi * self.B + r)) for r in range(self.B)]
            row = np.repeat(np.arange(self.B, dtype=np.int64), [len(p[0]) for p in parts])
            doc, start, length, col = (np.concatenate([p[k] for p in parts]) for k in range(4))
            passkey, keys, depths = passkey_draw(self.seed, gi, self.B, self.retrieval_mix)
            out.append(MicroBatch(gi, self.B, self.T, row, col, doc, start, length, passkey, keys, depths))
        self.step += 1
        return out


def _stratified_take(length: np.ndarray, T: int, want: int) -> np.ndarray:
    """Indices (ascending) of pieces worth about `want` positions, taking the same share of every length
    class (full rows, long, short pieces) oldest first: a long document's burst of full-length chunks
    is spread over the windows the reservoir spans instead of flooding one."""
    total = int(length.sum())
    if total <= want:
        return np.arange(len(length))
    cls = np.minimum(np.log2(np.maximum(T / np.maximum(length, 1), 1)).astype(np.int64), 8)
    frac = want / total
    out = []
    for c in np.unique(cls).tolist():
        idx = np.flatnonzero(cls == c)
        cum = np.cumsum(length[idx])
        k = int(np.searchsorted(cum, frac * cum[-1])) + 1
        out.append(idx[:min(k, len(idx))])
    return np.sort(np.concatenate(out))


def _lpt(costs: np.ndarray, n_mb: int, per_mb: int) -> np.ndarray:
    """Longest processing time first with a capacity: each row (costliest first) goes to the cheapest
    micro-batch that still has a free slot."""
    out = np.empty(len(costs), np.int64)
    heap = [(0.0, j) for j in range(n_mb)]
    count = np.zeros(n_mb, np.int64)
    for r in np.argsort(-costs, kind="stable").tolist():
        c, j = heapq.heappop(heap)
        out[r] = j
        count[j] += 1
        if count[j] < per_mb:
            heapq.heappush(heap, (c + float(costs[r]), j))
    return out


# ---------------------------------------------------------------- tokens for a plan
def passkey_tokens(tokenizer, key: int) -> tuple[list[int], list[int], list[int]]:
    """(intro, question, answer) token lists for a passkey in the tokenizer's text."""
    return (tokenizer.encode(PASSKEY_INTRO.format(key=key)), tokenizer.encode(PASSKEY_QUESTION),
            tokenizer.encode(PASSKEY_ANSWER.format(key=key)))


def passkey_sequence(haystack: np.ndarray, intro, question, answer, depth: float, length: int) -> np.ndarray:
    """`length` tokens: haystack text with the intro at `depth` of it, then the question and the answer."""
    n_hay = length - len(intro) - len(question) - len(answer)
    if n_hay < 0:
        raise ValueError(f"a passkey needs {length - n_hay} tokens, the row has {length}")
    hay = np.asarray(haystack[:n_hay], dtype=np.int64)
    at = int(round(depth * n_hay))
    return np.concatenate([hay[:at], np.asarray(intro, np.int64), hay[at:], np.asarray(question, np.int64),
                           np.asarray(answer, np.int64)])


def passkey_min_len(tokenizer) -> int:
    intro, q, a = passkey_tokens(tokenizer, 99999)
    return len(intro) + len(q) + len(a)


@dataclass
class HostBatch:
    idx: np.ndarray  # [B, T] int64
    targets: np.ndarray  # [B, T] int64, PAD_TARGET where nothing is predicted
    doc_ids: np.ndarray  # [B, T] int32: segment number within the row; padding gets its own segment
    positions: np.ndarray  # [B, T] int32: position within the segment
    tokens: int  # targets that count


def materialize(split, mb: MicroBatch, eot: int, tokenizer=None) -> HostBatch:
    """Gather a plan's tokens from the split: one slice copy per piece (pieces are long; a micro-batch holds
    tens of them), so the loader keeps up with a GPU at millions of tokens per second."""
    B, T = mb.rows, mb.seq_len
    idx = np.full((B, T), eot, dtype=np.int64)
    tgt = np.full((B, T), PAD_TARGET, dtype=np.int64)
    pos = np.zeros((B, T), dtype=np.int32)
    # padding after a row's last piece is a segment of its own (ids past every piece's)
    seg = np.repeat(np.bincount(mb.row, minlength=B).astype(np.int32)[:, None], T, axis=1)
    ar = np.arange(T, dtype=np.int32)
    k = 0
    prev = -1
    for r, c, d, a, n in zip(mb.row.tolist(), mb.col.tolist(), mb.doc.tolist(), mb.start.tolist(),
                             mb.length.tolist()):
        k = k + 1 if r == prev else 0
        prev = r
        w = split.window(d, a, n + 1)
        idx[r, c:c + n] = w[:-1]
        tgt[r, c:c + n] = w[1:]
        seg[r, c:c + n] = k
        pos[r, c:c + n] = ar[:n]
    for r in np.flatnonzero(mb.passkey).tolist():
        if tokenizer is None:
            raise ValueError("passkey rows need the tokenizer")
        hay = np.concatenate([idx[r], tgt[r, -1:]])
        hay = np.where(hay < 0, eot, hay)
        intro, q, a = passkey_tokens(tokenizer, int(mb.keys[r]))
        s = passkey_sequence(hay, intro, q, a, float(mb.depths[r]), T + 1)
        idx[r], tgt[r] = s[:T], s[1:]
        seg[r] = 0
        pos[r] = np.arange(T)
    return HostBatch(idx, tgt, seg, pos, mb.tokens)
