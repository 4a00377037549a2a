"""BERT-style masked-language-model corruption (15 %, 80/10/10), static or per batch."""

from __future__ import annotations

import numpy as np

IGNORE = -100


def mask_sequence(ids: list[int], rng: np.random.Generator, *, mask_id: int, vocab_size: int,
                  special_ids: set[int], prob: float = 0.15) -> tuple[list[int], list[int]]:
    """Return (corrupted ids, labels). At least one maskable token is always selected."""
    ids = list(ids)
    labels = [IGNORE] * len(ids)
    candidates = [i for i, token in enumerate(ids) if token not in special_ids]
    if not candidates:
        return ids, labels
    chosen = [i for i in candidates if rng.random() < prob] or [candidates[int(rng.integers(len(candidates)))]]
    for i in chosen:
        labels[i] = ids[i]
        roll = rng.random()
        if roll < 0.8:
            ids[i] = mask_id
        elif roll < 0.9:
            ids[i] = int(rng.integers(vocab_size))
    return ids, labels


def mask_batch(seqs: list[list[int]], rng: np.random.Generator, **kwargs) -> tuple[list[list[int]], list[list[int]]]:
    pairs = [mask_sequence(s, rng, **kwargs) for s in seqs]
    return [p[0] for p in pairs], [p[1] for p in pairs]
