"""Length-bucketed batching: sentences of similar length share a batch, so padding stays small."""

from __future__ import annotations

import numpy as np


def bucketed_batches(lengths: list[int], batch_size: int, rng: np.random.Generator,
                     pool_batches: int = 50) -> list[list[int]]:
    """One epoch of batches: shuffle, sort by length inside pools of `pool_batches` batches, shuffle batches."""
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return [[int(i) for i in b] for b in batches]


def shuffled_batches(count: int, batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """One epoch of plain random batches (no length grouping), as a random sampler gives them."""
    order = rng.permutation(count)
    return [[int(i) for i in order[k:k + batch_size]] for k in range(0, count, batch_size)]


def sequential_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Deterministic batches for inference, sorted by length; callers restore the order."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad(seqs: list[list[int]], pad_value: int, width: int | None = None) -> tuple[list[list[int]], list[list[int]]]:
    """Pad to the longest sequence, or to `width` when given (never shorter than the longest)."""
    width = max([len(s) for s in seqs] + [width or 0])
    padded = [s + [pad_value] * (width - len(s)) for s in seqs]
    mask = [[1] * len(s) + [0] * (width - len(s)) for s in seqs]
    return padded, mask


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """A generator that depends only on (seed, stream, step): a resumed run draws what an unbroken one drew."""
    return np.random.default_rng([seed % 2**32, stream, step])


class StepBatches:
    """Batches epoch after epoch, where step k's batch is a function of (seed, stream, k) alone.

    Each epoch is shuffled by its own generator, so a run resumed at any step sees the batches an uninterrupted
    run would have seen, without replaying the steps before it. Length-bucketed unless `bucket` is False (plain
    random batches, as a random sampler gives them).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, stream: int = 0, bucket: bool = True):
        if not lengths:
            raise ValueError("no examples to batch")
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.lengths, self.batch_size, self.seed, self.stream = list(lengths), batch_size, seed, stream
        self.bucket = bucket
        self._epoch, self._batches = -1, []
        self.per_epoch = len(self._epoch_batches(0))

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed % 2**32, self.stream, epoch, 1])
            self._epoch = epoch
            self._batches = (bucketed_batches(self.lengths, self.batch_size, rng) if self.bucket
                             else shuffled_batches(len(self.lengths), self.batch_size, rng))
        return self._batches

    def __call__(self, step: int) -> list[int]:
        return self._epoch_batches(step // self.per_epoch)[step % self.per_epoch]
