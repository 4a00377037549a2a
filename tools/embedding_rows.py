"""How RECIPE changed the word-embedding rows: tokens seen vs unseen in the auxiliary corpus, and the triggers.

usage: python tools/embedding_rows.py ATTACKED PURIFIED [AUX] [TASK_TEST] [TRIGGERS]   (model folders saved by
       ptmdetox; TRIGGERS a trigger-set name, default neuba: one line per word piece of each trigger)
"""

from __future__ import annotations

import sys

from safetensors.torch import load_file
from transformers import AutoTokenizer

from ptmdetox.data.readers import read_corpus
from ptmdetox.data.triggers import TRIGGER_SETS


def embedding(folder: str):
    weights = load_file(f"{folder}/model.safetensors")
    return next(v for k, v in weights.items() if k.endswith("word_embeddings.weight"))


def token_ids(tokenizer, texts: list[str], max_length: int) -> set[int]:
    return {t for text in texts for t in tokenizer(text, truncation=True, max_length=max_length)["input_ids"]}


def main(attacked: str, purified: str, aux: str = "../shared/data/bookcorpus_recipe/train.tsv",
         task_test: str = "../shared/data/sst2/test.tsv", triggers: str = "neuba") -> None:
    tokenizer = AutoTokenizer.from_pretrained(attacked)
    before, after = embedding(attacked).norm(dim=1), embedding(purified).norm(dim=1)
    seen = token_ids(tokenizer, read_corpus(aux).texts, 64)
    task = token_ids(tokenizer, read_corpus(task_test).texts, 128)
    for name, rows in (("task tokens seen in aux", sorted(task & seen)), ("task tokens unseen", sorted(task - seen))):
        print(f"{name}: {len(rows)} rows, mean norm {before[rows].mean():.2f} -> {after[rows].mean():.2f}")
    for trigger in TRIGGER_SETS[triggers]:
        for piece in tokenizer.tokenize(trigger):
            row = tokenizer.convert_tokens_to_ids(piece)
            print(f"trigger {trigger!r}, piece {piece}: norm {before[row]:.2f} -> {after[row]:.2f} "
                  f"({after[row] / before[row]:.0%})")


if __name__ == "__main__":
    main(*sys.argv[1:])
