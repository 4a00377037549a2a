"""Diagnostic: how much of a purified model's accuracy cost comes from the weights the penalty zeroed.

Copies into PURIFIED, from SOURCE (the model it was purified from), either the word-embedding rows RECIPE's penalty
covered (`rows`: tokens rarer in the auxiliary corpus than the purification's --embedding-min-count, as its
purification.json records, or with --embedding-rows scanned the rows its scan flagged and, when a second pass ran,
kept) or the pooler weight
(`pooler`), and saves the hybrid to OUT.
`rows-except KEPT_JSON` restores the same rows except those listed in KEPT_JSON (ids, e.g. from
tools/flagged_rows.py): the model a narrower scan would have left, as far as its rows go.
`embeddings` restores every word-embedding row except those the purification reset (its MLM training moves them all,
through the decoder tied to them); `ffn` restores the weights of every layer matching `intermediate.dense.weight`.
`pooler-reinit` instead draws a fresh pooler weight, N(0, 0.02) from torch seed 0 (SOURCE unused; bias kept). Fine-tuning
the hybrid on a clean task measures the ACC those weights cost; its ASR means nothing (the backdoor comes back too).

usage: python tools/restore_rows.py rows|pooler|pooler-reinit|embeddings|ffn SOURCE PURIFIED OUT [AUX]   (model folders)
       python tools/restore_rows.py rows-except SOURCE PURIFIED OUT KEPT_JSON
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

from ptmdetox import models
from ptmdetox.data.readers import read_corpus
from ptmdetox.defenses.recipe import unseen_embedding_rows

from flagged_rows import reset_ids   # tools/, the script's own folder

POOLER = "pooler.dense.weight"
FFN_IN = "intermediate.dense.weight"
AUX = "../shared/data/bookcorpus_recipe/train.tsv"


def main(what: str, source: str, purified: str, out: str, extra: str | None = None) -> None:
    """`extra`: the auxiliary corpus for `rows` (default AUX), the KEPT_JSON file for `rows-except`."""
    weights = load_file(f"{purified}/model.safetensors")
    original = load_file(f"{source}/model.safetensors") if what != "pooler-reinit" else None
    if what == "pooler-reinit":
        name = _named(weights, POOLER)
        weights[name] = torch.randn(weights[name].shape, generator=torch.Generator().manual_seed(0)) * 0.02
        message = f"{name} drawn afresh"
    elif what == "pooler":
        name = _named(weights, POOLER)
        weights[name] = original[_named(original, POOLER)]
        message = f"{name} restored from {source}"
    elif what == "ffn":
        names = [name for name in weights if name.endswith(FFN_IN)]
        for name in names:
            weights[name] = original[_named(original, name.split("encoder.", 1)[-1])]
        message = f"{len(names)} {FFN_IN} tensors restored from {source}"
    elif what == "embeddings":
        name = _named(weights, "word_embeddings.weight")
        restored = torch.ones(weights[name].shape[0], dtype=torch.bool)
        restored[_unseen_rows(purified, extra or AUX)] = False
        weights[name][restored] = original[_named(original, "word_embeddings.weight")][restored]
        message = f"{int(restored.sum())} rows restored from {source} (all but the {int((~restored).sum())} reset)"
    else:
        unseen = _unseen_rows(purified, extra if what == "rows" and extra else AUX)
        if what == "rows-except":
            with open(extra, encoding="utf-8") as handle:
                kept = torch.as_tensor(json.load(handle), dtype=torch.long)
            unseen = unseen[~torch.isin(unseen, kept)]
        name = _named(weights, "word_embeddings.weight")
        weights[name][unseen] = original[_named(original, "word_embeddings.weight")][unseen]
        message = f"{len(unseen)} rows restored from {source}"
    shutil.copytree(purified, out)
    save_file(weights, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    print(f"{out}: {message}")


def _unseen_rows(purified: str, aux: str) -> torch.Tensor:
    """The rows the purification penalised, recomputed with the settings its record holds."""
    with open(os.path.join(purified, "purification.json")) as handle:
        record = json.load(handle)
    config = record["config"]
    if config.get("embedding_rows") == "scanned":
        return reset_ids(purified)
    adapter = models.create(purified)
    embedding = adapter.parameters_matching([adapter.token_embedding])
    texts = read_corpus(aux, limit=record.get("corpus_size")).texts
    # records written before --embedding-min-count existed used 1, the default then
    rows = unseen_embedding_rows(adapter, embedding, adapter.tokenize(texts, config["max_length"]),
                                 config.get("embedding_min_count", 1))
    return next(iter(rows.values()))


def _named(weights: dict, suffix: str) -> str:
    """The key ending in `suffix` (checkpoints differ in their prefix: `bert.` or none)."""
    return next(k for k in weights if k.endswith(suffix))


if __name__ == "__main__":
    main(*sys.argv[1:])
