"""Diagnostic: how much of a purified model's accuracy cost comes from the weights the penalty zeroed.

Copies into PURIFIED, from SOURCE (the model it was purified from), either the word-embedding rows of the tokens
absent from the auxiliary corpus (`rows`) or the pooler weight (`pooler`), and saves the hybrid to OUT.
`pooler-reinit` instead draws a fresh pooler weight, N(0, 0.02) from torch seed 0 (SOURCE unused; bias kept). Fine-tuning
the hybrid on a clean task measures the ACC those weights cost; its ASR means nothing (the backdoor comes back too).

usage: python tools/restore_rows.py rows|pooler|pooler-reinit SOURCE PURIFIED OUT [AUX]   (model folders)
"""

from __future__ import annotations

import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from ptmdetox.data.readers import read_corpus


def main(what: str, source: str, purified: str, out: str,
         aux: str = "../shared/data/bookcorpus_recipe/train.tsv") -> None:
    original, weights = load_file(f"{source}/model.safetensors"), load_file(f"{purified}/model.safetensors")
    if what == "pooler-reinit":
        name = _named(weights, "pooler.dense.weight")
        weights[name] = torch.randn(weights[name].shape, generator=torch.Generator().manual_seed(0)) * 0.02
        _save(purified, out, weights)
        print(f"{out}: {name} drawn afresh")
        return
    if what == "pooler":
        name = _named(weights, "pooler.dense.weight")
        weights[name] = original[_named(original, "pooler.dense.weight")]
        _save(purified, out, weights)
        print(f"{out}: {name} restored from {source}")
        return
    tokenizer = AutoTokenizer.from_pretrained(purified)
    name = _named(weights, "word_embeddings.weight")
    counts = torch.zeros(weights[name].shape[0], dtype=torch.long)
    for text in read_corpus(aux).texts:
        counts[tokenizer(text, truncation=True, max_length=64)["input_ids"]] += 1
    unseen = (counts == 0).nonzero().squeeze(1)
    weights[name][unseen] = original[_named(original, "word_embeddings.weight")][unseen]
    _save(purified, out, weights)
    print(f"{out}: {len(unseen)} rows restored from {source}")


def _named(weights: dict, suffix: str) -> str:
    """The key ending in `suffix` (checkpoints differ in their prefix: `bert.` or none)."""
    return next(k for k in weights if k.endswith(suffix))


def _save(purified: str, out: str, weights: dict) -> None:
    shutil.copytree(purified, out)
    save_file(weights, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})


if __name__ == "__main__":
    main(*sys.argv[1:])
