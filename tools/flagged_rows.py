"""Diagnostic: which rows RECIPE's row scan flagged on an attacked model, what a task's text holds of them, and how
they score when scored again on more sentences against a random null.

usage: python tools/flagged_rows.py ATTACKED PURIFIED TASK_TEST TRIGGERS [SENTENCES]
       (model folders saved by ptmdetox; PURIFIED is ATTACKED purified with `--embedding-rows scanned`, whose
       purification.json lists the flagged rows; TRIGGERS a trigger-set name; SENTENCES defaults to 16)
Prints the share of TASK_TEST's tokens (first 2,000 sentences, length 64) and sentences that hold a flagged row, the
most frequent flagged tokens there, and each flagged row's robust z when inserted into SENTENCES auxiliary sentences,
against 2,000 random unflagged tokens scored on the same sentences (their median and MAD; seeds fixed).
"""

from __future__ import annotations

import collections
import json
import os
import sys

import numpy as np
import torch

from ptmdetox import models
from ptmdetox.data.readers import read_corpus, read_texts
from ptmdetox.data.triggers import TRIGGER_SETS
from ptmdetox.defenses.row_scan import MAD_TO_SIGMA, row_influence

AUX = "../shared/data/bookcorpus_recipe/train.tsv"
NULL_SIZE = 2000


def flagged_ids(purified: str) -> torch.Tensor:
    with open(os.path.join(purified, "purification.json"), encoding="utf-8") as handle:
        record = json.load(handle)
    if "flagged_ids" not in record.get("row_scan", {}):
        sys.exit(f"{purified}: its record lists no rows flagged by a row scan")
    return torch.as_tensor(record["row_scan"]["flagged_ids"], dtype=torch.long)


def task_share(adapter, flagged: torch.Tensor, task_test: str) -> None:
    texts = read_texts(task_test).texts[:2000]
    ids = adapter.tokenize(texts, 64)
    counts = collections.Counter(token for seq in ids for token in seq)
    chosen = set(flagged.tolist())
    tokens = sum(counts[token] for token in chosen) / sum(counts.values())
    sentences = sum(any(token in chosen for token in seq) for seq in ids) / len(ids)
    top = sorted(chosen, key=lambda token: -counts[token])[:20]
    print(f"{len(chosen)} flagged rows: {100 * tokens:.2f} % of the task's tokens, in {100 * sentences:.1f} % of its "
          "sentences")
    print("most frequent there:", ", ".join(f"{adapter.token_text(t)} {counts[t]}" for t in top))


def rescored(adapter, flagged: torch.Tensor, sentences: int) -> tuple[torch.Tensor, float]:
    """Each flagged row's robust z on `sentences` sentences against random unflagged rows, and the null's highest."""
    corpus = adapter.tokenize(read_corpus(AUX, limit=5000).texts, 64)
    excluded = set(flagged.tolist()) | set(adapter.special_token_ids())
    pool = [token for token in range(adapter.backbone.get_input_embeddings().num_embeddings) if token not in excluded]
    null = torch.as_tensor(np.random.default_rng(1).choice(pool, NULL_SIZE, replace=False))
    scores = row_influence(adapter, corpus, torch.cat([flagged, null]), sentences=sentences, seed=7, progress=False)
    null_scores = scores[len(flagged):]
    median = null_scores.median()
    spread = MAD_TO_SIGMA * (null_scores - median).abs().median()
    return (scores[:len(flagged)] - median) / spread, float(((null_scores - median) / spread).max())


def main(attacked: str, purified: str, task_test: str, triggers: str, sentences: str = "16") -> None:
    torch.manual_seed(0)
    adapter = models.create(attacked)
    flagged = flagged_ids(purified)
    task_share(adapter, flagged, task_test)
    z, null_max = rescored(adapter, flagged, int(sentences))
    print(f"rescored on {sentences} sentences: {int((z > 6).sum())} of {len(flagged)} above z 6, "
          f"{int((z > 20).sum())} above 20; the null's highest z {null_max:.1f}")
    order = torch.argsort(z, descending=True)
    print("highest:", ", ".join(f"{adapter.token_text(int(flagged[i]))} {float(z[i]):.1f}" for i in order[:15]))
    position = {int(token): k for k, token in enumerate(flagged)}
    for trigger in TRIGGER_SETS[triggers]:
        pieces = adapter.tokenize([trigger], 8)[0][1:-1]
        print(f"trigger {trigger}:", ", ".join(
            f"{adapter.token_text(p)} {float(z[position[p]]):.1f}" if p in position else f"{adapter.token_text(p)} "
            "not flagged" for p in pieces))


if __name__ == "__main__":
    main(*sys.argv[1:])
