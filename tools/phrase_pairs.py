"""Diagnostic: how the phrase step of RECIPE's row scan ranks the pairs of the rows its second pass gives back.

usage: python tools/phrase_pairs.py MODEL [WORDS] [SHOWN]
       (a model folder or hub name; WORDS, default 128, how many of the rows given back nearest the bar to pair;
       SHOWN, default 40, how many of the highest pairs to print)
Runs RECIPE's default row scan and second pass on MODEL (its seeds and auxiliary corpus, so the rows are those its
purification would flag and keep), then scores every ordered pair of the WORDS given-back rows nearest the second
pass's bar as the phrase step does, and prints the words in rank order and the highest pairs with their robust z over
all pairs (the phrase step keeps the words of pairs above z 100).
"""

from __future__ import annotations

import sys
import time

import torch

from ptmdetox import models
from ptmdetox.data.readers import read_corpus
from ptmdetox.defenses.recipe import RecipeConfig
from ptmdetox.defenses.row_scan import (PHRASE_SENTENCES, PHRASE_THRESHOLD, confirmation_margins, nearest_the_bar,
                                        null_tokens, phrase_rows, suspicious_rows)

AUX = "../shared/data/bookcorpus_recipe/train.tsv"


def main(model: str, words: str = "128", shown: str = "40") -> None:
    started = time.perf_counter()
    config = RecipeConfig()
    adapter = models.create(model)
    corpus = adapter.tokenize(read_corpus(AUX).texts, config.max_length)
    candidates = torch.arange(adapter.backbone.get_input_embeddings().num_embeddings)
    candidates = candidates[~torch.isin(candidates, torch.as_tensor(adapter.special_token_ids(), dtype=torch.long))]
    flagged, _ = suspicious_rows(adapter, corpus, candidates, config.scan_threshold, config.scan_sentences,
                                 seed=config.seed, positions=config.scan_positions)
    margin, passes = confirmation_margins(adapter, corpus, flagged, null_tokens(candidates, flagged, 2000, config.seed),
                                          config.scan_confirm_sentences, config.seed, config.scan_positions)
    print(f"flagged {len(flagged)}, above the second pass's bar {int((margin > 0).sum())}, passes {passes}")
    near = nearest_the_bar(flagged, margin, int(words))
    print("given back, nearest the bar first:", ", ".join(adapter.token_text(int(t)) for t in near))
    found, record = phrase_rows(adapter, corpus, near, PHRASE_SENTENCES, PHRASE_THRESHOLD,
                                seed=config.seed + 1 + len(passes), positions=config.scan_positions,
                                report_top=int(shown))
    print(f"{record['pairs']} pairs; above z {PHRASE_THRESHOLD:g}:",
          ", ".join(adapter.token_text(int(t)) for t in found) or "none")
    for row in record["top"]:
        print(f"  {row['phrase']:32s} z {row['z']}")
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main(*sys.argv[1:])
