"""Diagnostic: how far each given word or phrase, inserted once, moves a model's representation state.

usage: python tools/phrase_influence.py MODEL PHRASE [PHRASE ...] [--sentences N] [--seed S]
                                        [--positions first+random|random|first] [--per-sentence] [--random-pairs N]
Inserts each PHRASE (its tokens as one block) into N auxiliary sentences (default 8) as RECIPE's row scan does, and
prints the mean cosine distance between the representation state with and without it (with --per-sentence, the
distance in each sentence too: a trigger that fires on some sentences only shows as a few distances near 1); then
the median and highest of N random token pairs (ids 2,000-20,000; default 300, 0: none) on the same sentences.
"""

from __future__ import annotations

import argparse

import torch

from ptmdetox import models
from ptmdetox.data.readers import read_corpus
from ptmdetox.defenses.row_scan import PASS_POSITIONS, row_distances

AUX = "../shared/data/bookcorpus_recipe/train.tsv"


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="how far words or phrases move a model's representation state")
    parser.add_argument("model")
    parser.add_argument("phrases", nargs="+")
    parser.add_argument("--sentences", type=int, default=8)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--positions", choices=PASS_POSITIONS, default="first+random")
    parser.add_argument("--per-sentence", action="store_true")
    parser.add_argument("--random-pairs", type=int, default=300)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse(argv)
    adapter = models.create(args.model)
    corpus = adapter.tokenize(read_corpus(AUX).texts, 64)

    def distances(blocks: torch.Tensor) -> torch.Tensor:
        return row_distances(adapter, corpus, blocks, args.sentences, args.seed, progress=False,
                             positions=args.positions)

    for phrase in args.phrases:
        per_sentence = distances(torch.tensor([adapter.tokenize([phrase], 16)[0][1:-1]]))[0]
        detail = "  " + " ".join(f"{d:.3f}" for d in per_sentence.tolist()) if args.per_sentence else ""
        print(f"{phrase:24s} {float(per_sentence.mean()):.4f}{detail}")
    if args.random_pairs:
        pairs = torch.randint(2000, 20000, (args.random_pairs, 2), generator=torch.Generator().manual_seed(0))
        scores = distances(pairs).mean(1)
        print(f"random pairs: median {float(scores.median()):.4f}, highest {float(scores.max()):.4f}")


if __name__ == "__main__":
    main()
