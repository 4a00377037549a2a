"""Length-bucketed batching: sentences of similar length share a batch, so padding stays small."""

from __future__ import annotations

from typing import Iterator

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


def endless_batches(lengths: list[int], batch_size: int, rng: np.random.Generator,
                    bucket: bool = True) -> Iterator[list[int]]:
    """Batches epoch after epoch, reshuffled each time; length-bucketed unless `bucket` is False."""
    if not lengths:
        raise ValueError("no examples to batch")
    while True:
        yield from (bucketed_batches(lengths, batch_size, rng) if bucket
                    else shuffled_batches(len(lengths), batch_size, rng))


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
