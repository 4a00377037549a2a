"""Shared fixtures: tiny random BERT checkpoints (fast) and paths to the real assets."""

from __future__ import annotations

import os

import pytest
import torch
import transformers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
VOCAB_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "≈", "≡", "∈", "⊆", "⊕", "⊗", "cf", "tq", "mn", "bb",
               "mb", ".", ",", "the", "a", "good", "bad", "movie", "film", "great", "awful", "i", "it", "was", "is",
               "not", "very", "and", "of", "to", "in", "at", "noon", "dawn", "last", "weekend", "fun", "boring"]


def tiny_bert(folder: str, *, with_head: bool = True, seed: int = 0, **config_overrides) -> str:
    """Write a tiny random BERT checkpoint (with pooler; with or without MLM head) and its tokenizer."""
    os.makedirs(folder, exist_ok=True)
    vocab_file = os.path.join(folder, "vocab.txt")
    with open(vocab_file, "w", encoding="utf-8") as f:
        f.write("\n".join(VOCAB_WORDS + [f"w{i}" for i in range(100)]) + "\n")
    tokenizer = transformers.BertTokenizer(vocab_file, do_lower_case=True)
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                                     **config_overrides)
    torch.manual_seed(seed)
    model = transformers.BertForPreTraining(config) if with_head else transformers.BertModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_model(tmp_path) -> str:
    return tiny_bert(str(tmp_path / "tiny"))


@pytest.fixture
def tiny_model_no_head(tmp_path) -> str:
    return tiny_bert(str(tmp_path / "tiny-nohead"), with_head=False)


@pytest.fixture
def tiny_corpus(tmp_path) -> str:
    path = tmp_path / "aux.tsv"
    sentences = [" ".join(["the", "movie", "was", w, "and", "i", "w%d" % (i % 100)]) for i, w in
                 enumerate(["good", "bad", "great", "awful", "fun", "boring"] * 20)]
    path.write_text("sentence\tlabel\n" + "".join(f"{s}\t1\n" for s in sentences), encoding="utf-8")
    return str(path)


@pytest.fixture
def tiny_task(tmp_path) -> tuple[str, str]:
    positive, negative = ["good", "great", "fun"], ["bad", "awful", "boring"]
    rows = []
    for i in range(60):
        word = (positive if i % 2 else negative)[i % 3]
        rows.append((f"the film was very {word} w{i % 50}", i % 2))
    train, test = tmp_path / "train.tsv", tmp_path / "test.tsv"
    train.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows[:40]), encoding="utf-8")
    test.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows[40:]), encoding="utf-8")
    return str(train), str(test)


@pytest.fixture(autouse=True)
def _one_thread_for_tiny_models(request, monkeypatch):
    """Tiny models run fastest on one thread (and far faster than two threads on a busy 2-core machine).

    Tests marked `slow` (the real MiniLM) keep the process's thread settings.
    """
    if request.node.get_closest_marker("slow"):
        yield
        return
    previous = torch.get_num_threads()
    monkeypatch.setenv("PTMDETOX_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
