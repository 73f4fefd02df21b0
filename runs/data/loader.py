"""Training batches on the device: plans from runs.packing (a Packer or UniformPieces), tokens from the corpus,
prefetched.

A background thread plans and gathers the next steps (numpy, a few vectorised calls per micro-batch) and
pins them; the training thread only issues non-blocking host-to-device copies, so the GPU never waits on
data. With document masks the thread also computes the documents' offsets (`cu_seqlens`, for the varlen
kernel): derived on the device they cost a host-device sync every step. Every step carries the packer state
*after* it, which is the data position a checkpoint stores: the thread may run ahead, but what was consumed is
what gets saved.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

import numpy as np
import torch

from costlaw.runs.models.varlen import cu_seqlens
from costlaw.runs.packing import HostBatch, MicroBatch, Packer, UniformPieces, materialize


@dataclass
class DeviceBatch:
    idx: torch.Tensor
    targets: torch.Tensor
    doc_ids: torch.Tensor | None  # None without document masking
    tokens: int
    cu_seqlens: torch.Tensor | None = None  # int32 document offsets of doc_ids (runs/models/varlen.py)


@dataclass
class Step:
    micro: list[DeviceBatch]  # this rank's micro-batches
    plans: list[MicroBatch]  # every micro-batch of the step (all ranks), for the packing statistics
    tokens: int  # targets in the whole step (all ranks): the Ave-Token normaliser
    state: dict  # packer state after this step


class StepLoader:
    def __init__(self, split, packer: Packer | UniformPieces, eot: int, device: torch.device, tokenizer=None,
                 doc_mask: bool = True, rank: int = 0, world: int = 1, prefetch: int = 4):
        self.split, self.packer, self.eot, self.tokenizer = split, packer, eot, tokenizer
        self.device = torch.device(device)
        self.doc_mask = doc_mask
        self.rank, self.world = rank, world
        self.pin = self.device.type == "cuda"
        self._q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="costlaw-data", daemon=True)
        self._thread.start()

    def _host(self, hb: HostBatch):
        arrays = [hb.idx, hb.targets] + ([hb.doc_ids] if self.doc_mask else [])  # the model derives positions
        ts = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
        if self.doc_mask:
            ts.append(cu_seqlens(ts[2]))
        if self.pin:
            ts = [t.pin_memory() for t in ts]
        return ts, hb.tokens

    def _produce(self):
        try:
            while not self._stop.is_set():
                plans = self.packer.next_step()
                state = self.packer.state_dict()
                mine = plans[self.rank::self.world]
                hosts = [self._host(materialize(self.split, mb, self.eot, self.tokenizer)) for mb in mine]
                total = sum(mb.tokens for mb in plans)
                item = (hosts, plans, total, state)
                while not self._stop.is_set():
                    try:
                        self._q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # handed to the consumer, which re-raises it
            self._q.put(e)

    def next(self) -> Step:
        item = self._q.get()
        if isinstance(item, BaseException):
            raise item
        hosts, plans, total, state = item
        micro = []
        for ts, n in hosts:
            ts = [t.to(self.device, non_blocking=True) for t in ts]
            doc_ids, cu = (ts[2], ts[3]) if self.doc_mask else (None, None)
            micro.append(DeviceBatch(ts[0], ts[1], doc_ids, n, cu))
        return Step(micro, plans, total, state)

    def close(self):
        self._stop.set()
        try:
            while True:
                self._q.get_nowait()
        except queue.Empty:
            pass
        self._thread.join(timeout=5)
