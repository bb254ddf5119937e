"""Length-bucketed, seeded mini-batches of `<s> w1 ... wn </s>` tensors, batch-first.

Each epoch visits every sentence exactly once. Sentences are shuffled, stably sorted by length
(so equal lengths come out in random order), cut into batches, and the batch order is shuffled:
padding stays small and the order is a pure function of (seed, epoch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from corpora.vocab import BOS_ID, EOS_ID, PAD_ID


def frame(seqs: Sequence[Sequence[int]]) -> torch.Tensor:
    """Pad id lists into `<s> ids </s> <pad>...`; returns x: (B, T+2) long, T = longest list."""
    lens = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    width = int(lens.max()) + 2 if len(seqs) else 2
    out = np.full((len(seqs), width), PAD_ID, dtype=np.int64)
    out[:, 0] = BOS_ID
    flat = np.fromiter((i for s in seqs for i in s), dtype=np.int64, count=int(lens.sum()))
    rows = np.repeat(np.arange(len(seqs)), lens)
    cols = np.arange(len(flat)) - np.repeat(np.cumsum(lens) - lens, lens) + 1
    out[rows, cols] = flat
    out[np.arange(len(seqs)), lens + 1] = EOS_ID
    return torch.from_numpy(out)


def scored_tokens(x: torch.Tensor) -> torch.Tensor:
    """Number of scored targets (words and `</s>`) per row of a framed batch x: (B, T) -> (B,)."""
    return (x[:, 1:] != PAD_ID).sum(1)


def epoch_order(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                bucket: bool = True) -> list[np.ndarray]:
    """Index arrays of one epoch's batches; a deterministic function of its arguments."""
    rng = np.random.default_rng([seed, epoch])
    idx = rng.permutation(len(lengths))
    if bucket:
        idx = idx[np.argsort(np.asarray(lengths)[idx], kind="stable")]
    batches = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def by_length(data: Sequence[Sequence[int]], batch_size: int,
              max_tokens: int | None = None) -> Iterator[np.ndarray]:
    """Index arrays over `data` in length order: every item once, little padding, no randomness
    (for evaluation, inference and scoring). Each batch holds at most `batch_size` items and, with
    `max_tokens`, at most that many target positions (items x (longest + 1)) unless it is a single
    item, so that the (positions, V) logits of long documents stay bounded."""
    width = np.fromiter((len(s) + 1 for s in data), dtype=np.int64, count=len(data))
    order = np.argsort(width, kind="stable")
    start = 0
    while start < len(order):
        n = min(batch_size, len(order) - start)
        if max_tokens is not None:
            # Widths ascend within the order, so n * (width of the n-th) grows with n.
            fits = np.arange(1, n + 1) * width[order[start:start + n]] <= max_tokens
            n = max(1, int(fits.sum()))
        yield order[start:start + n]
        start += n


@dataclass
class Batches:
    """Iterate framed batches of `data` (lists of word ids) for one epoch at a time.

    >>> for x in Batches(ids, 32, seed=0).epoch(0): ...   # x: (B, T) long
    """
    data: Sequence[Sequence[int]]
    batch_size: int
    seed: int = 0
    bucket: bool = True

    def __post_init__(self) -> None:
        if not len(self.data):
            raise ValueError("no sentences to batch")
        self.lengths = np.fromiter((len(s) for s in self.data), dtype=np.int64, count=len(self.data))

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch_size)

    def indices(self, epoch: int) -> list[np.ndarray]:
        return epoch_order(self.lengths, self.batch_size, self.seed, epoch, self.bucket)

    def epoch(self, epoch: int) -> Iterator[torch.Tensor]:
        for ix in self.indices(epoch):
            yield frame([self.data[i] for i in ix])

    def padding_fraction(self, epoch: int = 0) -> float:
        """Share of target positions (after `<s>`) that are padding, over one epoch."""
        pad = total = 0
        for ix in self.indices(epoch):
            ln = self.lengths[ix] + 1
            pad += int((ln.max() - ln).sum())
            total += int(ln.max()) * len(ix)
        return pad / total
