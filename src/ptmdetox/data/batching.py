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


def endless_batches(lengths: list[int], batch_size: int, rng: np.random.Generator) -> Iterator[list[int]]:
    """Bucketed batches epoch after epoch, reshuffled each time."""
    if not lengths:
        raise ValueError("no examples to batch")
    while True:
        yield from bucketed_batches(lengths, batch_size, rng)


def sequential_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Deterministic batches for inference, sorted by length; callers restore the order."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad(seqs: list[list[int]], pad_value: int) -> tuple[list[list[int]], list[list[int]]]:
    width = max(len(s) for s in seqs)
    padded = [s + [pad_value] * (width - len(s)) for s in seqs]
    mask = [[1] * len(s) + [0] * (width - len(s)) for s in seqs]
    return padded, mask
