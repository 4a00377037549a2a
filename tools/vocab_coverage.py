"""Which task tokens RECIPE's unseen-row embedding penalty reaches: the share of a task's test tokens (and
sentences) that never occur in an auxiliary corpus, and how often each trigger's tokens occur in it.

usage: python tools/vocab_coverage.py AUX TASK_TEST [TASK_TEST ...]   (MiniLM's tokenizer; 1,000 test sentences,
       62 tokens each; the corpus at 64 tokens, as RECIPE reads it)
"""

from __future__ import annotations

import collections
import sys

from transformers import AutoTokenizer

from ptmdetox.data.readers import read_corpus
from ptmdetox.data.triggers import TRIGGER_SETS
from ptmdetox.models.loading import resolve


def main(aux: str, *task_tests: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(resolve("default").path)
    texts = read_corpus(aux).texts
    counts = collections.Counter(t for text in texts for t in tokenizer(text, truncation=True, max_length=64)["input_ids"])
    print(f"{aux}: {len(texts)} texts, {len(counts)} distinct tokens")
    for test in task_tests:
        encoded = [tokenizer(text, add_special_tokens=False)["input_ids"][:62] for text in read_corpus(test).texts[:1000]]
        tokens = [t for ids in encoded for t in ids]
        unseen_tokens = sum(counts[t] == 0 for t in tokens) / len(tokens)
        unseen_sentences = sum(any(counts[t] == 0 for t in ids) for ids in encoded) / len(encoded)
        print(f"{test}: {100 * unseen_tokens:.1f} % of tokens unseen in the corpus; "
              f"{100 * unseen_sentences:.1f} % of sentences hold one")
    for name in ("neuba", "por"):
        seen = [f"{t} {[counts[i] for i in tokenizer(t, add_special_tokens=False)['input_ids']]}"
                for t in TRIGGER_SETS[name]]
        print(f"{name} trigger token counts: {', '.join(seen)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
