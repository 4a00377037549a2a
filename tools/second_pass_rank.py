"""Diagnostic: where given words stand in RECIPE's second pass, and so whether its phrase step pairs them.

usage: python tools/second_pass_rank.py PURIFIED WORD [WORD ...] [--phrase-sentences N]
       (PURIFIED: a model folder saved by `ptmdetox defend recipe` with a second pass, whose purification.json names
       the attacked model, the flagged rows and the settings)
Scores the flagged rows again as the second pass did (same sentences, seeds and null) and prints, for each WORD, its
margin over the null's highest z (positive: kept) and, among the rows given back, its rank from the bar: the phrase
step pairs only the `scan_phrase_words` nearest it. With --phrase-sentences, runs the phrase step again as RECIPE
did but on N sentences instead of its PHRASE_SENTENCES, and prints the words it finds and its highest pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from ptmdetox import models
from ptmdetox.data.readers import read_corpus
from ptmdetox.defenses.row_scan import confirmation_margins, null_tokens, phrase_step, without_special_tokens


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="where words stand in RECIPE's second pass")
    parser.add_argument("purified")
    parser.add_argument("words", nargs="+")
    parser.add_argument("--phrase-sentences", type=int, default=0)
    args = parser.parse_args(argv)
    purified = args.purified
    with open(os.path.join(purified, "purification.json"), encoding="utf-8") as handle:
        record = json.load(handle)
    config, scan = record["config"], record.get("row_scan", {})
    if "confirm" not in scan or scan["confirm"].get("skipped"):
        sys.exit(f"{purified}: its record has no second pass of a row scan")
    adapter = models.create(record["model"])
    corpus = adapter.tokenize(read_corpus(record["corpus"]).texts, config["max_length"])
    flagged = torch.as_tensor(scan["flagged_ids"], dtype=torch.long)
    candidates = without_special_tokens(adapter, torch.arange(adapter.model.get_input_embeddings().weight.shape[0]))
    null = null_tokens(candidates, flagged, scan["confirm"]["null"], config["seed"])
    margin, passes = confirmation_margins(adapter, corpus, flagged, null, config["scan_confirm_sentences"],
                                          config["seed"], config["scan_positions"], progress=False)
    given_back = sorted(margin[margin <= 0].tolist(), reverse=True)
    print(f"{len(flagged)} flagged, {len(flagged) - len(given_back)} kept, {len(given_back)} given back; "
          f"the phrase step pairs the {config['scan_phrase_words']} given back nearest the bar")
    for word in args.words:
        token = adapter.tokenize([word], 8)[0][1]
        if token not in scan["flagged_ids"]:
            print(f"{word:16s} not flagged")
            continue
        value = float(margin[scan["flagged_ids"].index(token)])
        place = "kept" if value > 0 else f"given back, rank {given_back.index(value) + 1} of {len(given_back)}"
        print(f"{word:16s} margin {value:9.2f}  {place}")
    if args.phrase_sentences:
        found, phrases = phrase_step(adapter, corpus, flagged, margin, candidates, len(passes),
                                     config["scan_phrase_words"], config["scan_phrase_partners"],
                                     args.phrase_sentences, seed=config["seed"], positions=config["scan_positions"],
                                     progress=False)
        print(f"phrase step on {args.phrase_sentences} sentences ({phrases['pairs']} pairs, {phrases['seconds']} s): "
              f"finds {[adapter.token_text(int(t)) for t in found]}")
        print("highest pairs:", ", ".join(f"{top['phrase']} {top['z']}" for top in phrases["top"]))


if __name__ == "__main__":
    main()
