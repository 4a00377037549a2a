"""How far a model's hidden states have moved from another model's on the same clean text, layer by layer.

Both models in eval mode (no dropout), the same sentences. For each layer's output: the mean squared difference of
the token states (real tokens except the first, as POR's token term counts them), the reference's own mean square
(the scale to read the difference against), their mean cosine, and the same cosine at the first ([CLS]) position.

usage: python tools/state_drift.py BEFORE AFTER [CORPUS] [N]   (model folders, 'default' for the embedded MiniLM;
       CORPUS defaults to the RECIPE BookCorpus sample, N to 256 sentences)
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from ptmdetox.data.readers import read_corpus
from ptmdetox.models import create

DEFAULT_CORPUS = "../shared/data/bookcorpus_recipe/train.tsv"
BATCH = 64


@torch.no_grad()
def layer_states(model, seqs: list[list[int]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer: (token states at real non-first positions [M, H], first-position states [B, H]), all batches."""
    tokens, firsts = [], []
    for start in range(0, len(seqs), BATCH):
        batch = model.collate(seqs[start:start + BATCH])
        states, _, _ = model.hidden_states(batch)
        positions = model.token_positions(batch)
        tokens.append([s[positions] for s in states])
        firsts.append([s[:, 0] for s in states])
    return [(torch.cat(t), torch.cat(f)) for t, f in zip(zip(*tokens), zip(*firsts))]


def main(before: str, after: str, corpus: str = DEFAULT_CORPUS, count: str = "256") -> None:
    old, new = create(before), create(after)
    old.eval(), new.eval()
    seqs = old.tokenize(read_corpus(corpus, limit=int(count)).texts, 64)
    print("layer  token MSE  reference mean square  token cosine  [CLS] cosine")
    for layer, ((a, ca), (b, cb)) in enumerate(zip(layer_states(old, seqs), layer_states(new, seqs)), start=1):
        print(f"{layer:5d}  {float(F.mse_loss(b, a)):9.4f}  {float(a.pow(2).mean()):21.4f}"
              f"  {float(F.cosine_similarity(a, b).mean()):12.3f}  {float(F.cosine_similarity(ca, cb).mean()):12.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
