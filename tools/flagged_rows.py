"""Diagnostic: which rows RECIPE's row scan flagged on an attacked model, what a task's text holds of them, and how
they score when scored again on more sentences against a random null.

usage: python tools/flagged_rows.py ATTACKED PURIFIED TASK_TEST TRIGGERS [SENTENCES] [KEPT_JSON]
       (model folders saved by ptmdetox; PURIFIED is ATTACKED purified with `--embedding-rows scanned`, whose
       purification.json lists the flagged rows; TRIGGERS a trigger-set name; SENTENCES defaults to 16; KEPT_JSON, if
       given, receives the ids of the flagged rows whose distance z is above every random token's)
Prints the share of TASK_TEST's tokens (first 2,000 sentences, length 64) and sentences that hold a flagged row, the
most frequent flagged tokens there, and each flagged row's robust z when inserted into SENTENCES auxiliary sentences,
against 2,000 random unflagged tokens scored on the same sentences (their median and MAD; seeds fixed); then the same
for how consistently a token shifts the representation state: the mean pairwise cosine similarity, over SENTENCES
sentences, of the shift (state with the token minus state without), against 500 random unflagged tokens.
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
from ptmdetox.defenses.row_scan import insertion_positions, row_influence, scan_sentences, z_against_null

AUX = "../shared/data/bookcorpus_recipe/train.tsv"
NULL_SIZE = 2000


def flagged_ids(purified: str) -> torch.Tensor:
    """The rows the purification's row scan flagged, as its purification.json lists them."""
    with open(os.path.join(purified, "purification.json"), encoding="utf-8") as handle:
        record = json.load(handle)
    if "flagged_ids" not in record.get("row_scan", {}):
        sys.exit(f"{purified}: its record does not list rows flagged by a row scan")
    return torch.as_tensor(record["row_scan"]["flagged_ids"], dtype=torch.long)


def reset_ids(purified: str) -> torch.Tensor:
    """The rows the purification reset and penalised or held: those its second pass kept (`confirm.kept_ids`, phrase
    words included) when one ran, else every flagged row."""
    with open(os.path.join(purified, "purification.json"), encoding="utf-8") as handle:
        confirm = json.load(handle).get("row_scan", {}).get("confirm")
    return torch.as_tensor(confirm["kept_ids"], dtype=torch.long) if confirm else flagged_ids(purified)


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


def random_unflagged(adapter, flagged: torch.Tensor, size: int) -> torch.Tensor:
    excluded = set(flagged.tolist()) | set(adapter.special_token_ids())
    pool = [token for token in range(adapter.backbone.get_input_embeddings().num_embeddings) if token not in excluded]
    return torch.as_tensor(np.random.default_rng(1).choice(pool, size, replace=False))


def rescored(adapter, corpus, flagged: torch.Tensor, sentences: int) -> tuple[torch.Tensor, float]:
    """Each flagged row's distance score on `sentences` sentences, as a z against random unflagged rows."""
    null = random_unflagged(adapter, flagged, NULL_SIZE)
    scores = row_influence(adapter, corpus, torch.cat([flagged, null]), sentences=sentences, seed=7, progress=False)
    return z_against_null(scores[:len(flagged)], scores[len(flagged):])


def mean_pairwise_cosine(vectors: torch.Tensor) -> torch.Tensor:
    """For each (sentences × hidden) slice, the mean cosine similarity between its distinct rows."""
    unit = torch.nn.functional.normalize(vectors, dim=-1)
    count = vectors.shape[-2]
    return ((unit @ unit.transpose(-1, -2)).sum((-1, -2)) - count) / (count * (count - 1))


def shift_consistency(adapter, corpus, tokens: torch.Tensor, sentences: int, batch: int = 8) -> torch.Tensor:
    """How alike the shifts of the representation state are when each token is inserted into different sentences."""
    rng = np.random.default_rng(7)
    base = scan_sentences(corpus, sentences, rng)
    at = insertion_positions(base, rng, "random")
    adapter.eval()
    scores = []
    with torch.inference_mode():
        clean = adapter.representation_states(adapter.collate(base)).float()
        for start in range(0, len(tokens), batch):
            chunk = tokens[start:start + batch].tolist()
            seqs = [seq[:a] + [token] + seq[a:] for token in chunk for seq, a in zip(base, at)]
            states = adapter.representation_states(adapter.collate(seqs)).float().view(len(chunk), len(base), -1)
            scores.append(mean_pairwise_cosine(states - clean[None]))
    return torch.cat(scores)


def print_ranking(adapter, what: str, flagged: torch.Tensor, z: torch.Tensor, null_max: float, triggers: str) -> None:
    order = torch.argsort(z, descending=True)
    print(f"{what}: {int((z > 6).sum())} of {len(flagged)} above z 6, {int((z > null_max).sum())} above the null's "
          f"highest z {null_max:.1f}")
    print("highest:", ", ".join(f"{adapter.token_text(int(flagged[i]))} {float(z[i]):.1f}" for i in order[:15]))
    rank = {int(flagged[i]): r for r, i in enumerate(order.tolist())}
    position = {int(token): k for k, token in enumerate(flagged)}
    for trigger in TRIGGER_SETS[triggers]:
        pieces = adapter.tokenize([trigger], 8)[0][1:-1]
        print(f"trigger {trigger}:", ", ".join(
            f"{adapter.token_text(p)} z {float(z[position[p]]):.1f}, rank {rank[p] + 1}" if p in position
            else f"{adapter.token_text(p)} not flagged" for p in pieces))


def main(attacked: str, purified: str, task_test: str, triggers: str, sentences: str = "16",
         kept_json: str | None = None) -> None:
    torch.manual_seed(0)
    adapter = models.create(attacked)
    flagged = flagged_ids(purified)
    task_share(adapter, flagged, task_test)
    corpus = adapter.tokenize(read_corpus(AUX, limit=5000).texts, 64)
    count = int(sentences)
    z, null_max = rescored(adapter, corpus, flagged, count)
    print_ranking(adapter, f"distance, rescored on {count} sentences", flagged, z, null_max, triggers)
    if kept_json:
        with open(kept_json, "w", encoding="utf-8") as handle:
            json.dump(flagged[z > null_max].tolist(), handle)
    null = random_unflagged(adapter, flagged, 500)
    z, null_max = z_against_null(shift_consistency(adapter, corpus, flagged, count),
                               shift_consistency(adapter, corpus, null, count))
    print_ranking(adapter, f"shift consistency on {count} sentences", flagged, z, null_max, triggers)


if __name__ == "__main__":
    main(*sys.argv[1:])
