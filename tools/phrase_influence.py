"""Diagnostic: how far each given word or phrase, inserted once, moves a model's representation state.

usage: python tools/phrase_influence.py MODEL PHRASE [PHRASE ...]
Inserts each PHRASE (its tokens as one block) at seeded random positions into 8 auxiliary sentences, as RECIPE's row
scan does, and prints the mean cosine distance between the representation state with and without it; then the
median and highest of 300 random token pairs (ids 2,000-20,000) on the same sentences, for scale.
"""

from __future__ import annotations

import sys

import torch

from ptmdetox import models
from ptmdetox.data.readers import read_corpus
from ptmdetox.defenses.row_scan import row_influence

AUX = "../shared/data/bookcorpus_recipe/train.tsv"
SENTENCES = 8
SEED = 9


def main(model: str, *phrases: str) -> None:
    if not phrases:
        sys.exit(__doc__)
    adapter = models.create(model)
    corpus = adapter.tokenize(read_corpus(AUX).texts, 64)
    for phrase in phrases:
        block = torch.tensor([adapter.tokenize([phrase], 16)[0][1:-1]])
        distance = float(row_influence(adapter, corpus, block, SENTENCES, SEED, progress=False)[0])
        print(f"{phrase:24s} {distance:.4f}")
    pairs = torch.randint(2000, 20000, (300, 2), generator=torch.Generator().manual_seed(0))
    scores = row_influence(adapter, corpus, pairs, SENTENCES, SEED, progress=False)
    print(f"random pairs: median {float(scores.median()):.4f}, highest {float(scores.max()):.4f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
