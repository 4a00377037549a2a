"""Length-bucketed batching and MLM masking (ptmdetox.data.batching, ptmdetox.data.masking)."""

from __future__ import annotations

import numpy as np

from ptmdetox.data.batching import bucketed_batches, pad, sequential_batches
from ptmdetox.data.masking import IGNORE, mask_batch, mask_sequence

# ---- batching -------------------------------------------------------------------------------------------


def test_bucketed_batches_cover_every_index_once():
    rng = np.random.default_rng(0)
    lengths = list(rng.integers(1, 50, size=103))
    batches = bucketed_batches(lengths, 8, np.random.default_rng(1), pool_batches=3)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(103))
    assert all(1 <= len(b) <= 8 for b in batches)
    assert all(isinstance(i, int) for i in flat)


def test_bucketed_batches_group_similar_lengths():
    lengths = [i % 40 for i in range(400)]
    rng = np.random.default_rng(0)
    batches = bucketed_batches(lengths, 10, rng, pool_batches=40)   # one pool holding everything
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert max(spread) <= 1
    # compare with unsorted batches of the same size: much larger spread
    order = np.random.default_rng(0).permutation(400)
    random_spread = [np.ptp([lengths[i] for i in order[k:k + 10]]) for k in range(0, 400, 10)]
    assert np.mean(random_spread) > 10 * (np.mean(spread) + 0.1)


def test_bucketed_batches_are_shuffled_and_seeded():
    lengths = list(range(200))
    a = bucketed_batches(lengths, 10, np.random.default_rng(5))
    b = bucketed_batches(lengths, 10, np.random.default_rng(5))
    c = bucketed_batches(lengths, 10, np.random.default_rng(6))
    assert a == b and a != c
    firsts = [min(batch) for batch in a]
    assert firsts != sorted(firsts)   # batch order is shuffled, not by length


def test_sequential_batches_are_sorted_and_complete():
    lengths = [5, 1, 4, 2, 3]
    batches = sequential_batches(lengths, 2)
    assert batches == [[1, 3], [4, 2], [0]]


def test_pad():
    padded, mask = pad([[1, 2, 3], [4]], 0)
    assert padded == [[1, 2, 3], [4, 0, 0]]
    assert mask == [[1, 1, 1], [1, 0, 0]]


# ---- masking ----------------------------------------------------------------------------------------------

SPECIAL = {0, 2, 3}   # pad, cls, sep
KW = dict(mask_id=4, vocab_size=100, special_ids=SPECIAL)


def test_mask_sequence_labels_only_the_chosen_positions():
    seq = [2] + list(range(10, 40)) + [3]
    ids, labels = mask_sequence(seq, np.random.default_rng(0), **KW)
    assert len(ids) == len(labels) == len(seq)
    chosen = [i for i, y in enumerate(labels) if y != IGNORE]
    assert chosen, "at least one token is chosen"
    for i, (orig, new, label) in enumerate(zip(seq, ids, labels)):
        if label == IGNORE:
            assert new == orig
        else:
            assert label == orig
    assert labels[0] == IGNORE and labels[-1] == IGNORE and ids[0] == 2 and ids[-1] == 3


def test_mask_sequence_never_touches_special_tokens_and_always_masks_one():
    rng = np.random.default_rng(1)
    for _ in range(200):
        seq = [2, 50, 3]   # one maskable token: with prob 0.15 most rolls choose nothing, the fallback kicks in
        ids, labels = mask_sequence(seq, rng, **KW)
        assert labels == [IGNORE, 50, IGNORE]
        assert ids[0] == 2 and ids[2] == 3


def test_mask_sequence_without_candidates_is_unchanged():
    ids, labels = mask_sequence([2, 3, 0], np.random.default_rng(0), **KW)
    assert ids == [2, 3, 0] and labels == [IGNORE] * 3


def test_mask_rates_follow_15_percent_and_80_10_10():
    rng = np.random.default_rng(0)
    seq = list(range(10, 90)) * 5   # 400 maskable tokens, no special ids among them
    chosen = masked = kept = 0
    total = 0
    for _ in range(50):
        ids, labels = mask_sequence(seq, rng, **KW)
        total += len(seq)
        for orig, new, label in zip(seq, ids, labels):
            if label == IGNORE:
                continue
            chosen += 1
            masked += new == 4
            kept += new == orig
    assert 0.13 < chosen / total < 0.17
    assert 0.77 < masked / chosen < 0.83
    # 10 % kept as is, plus the ~1 % of random replacements that draw the original token
    assert 0.08 < kept / chosen < 0.13


def test_mask_batch_is_per_sequence():
    seqs = [[2, 10, 11, 3], [2, 12, 3]]
    ids, labels = mask_batch(seqs, np.random.default_rng(0), **KW)
    assert [len(s) for s in ids] == [4, 3] and [len(s) for s in labels] == [4, 3]
    assert all(any(y != IGNORE for y in row) for row in labels)
