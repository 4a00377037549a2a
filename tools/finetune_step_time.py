"""Where a fine-tuning step's time goes: forward, backward and AdamW, averaged over 10 steps after 3 warm-up steps.

MiniLM (the embedded default) with a 4-way head on the first 640 AG News training sentences, batch 32, length ≤ 64;
then the same with the word embeddings frozen, then under bf16 autocast (`--no-bf16` skips that part: on CPUs
without native bf16 products it is very slow). Run it with the CLI's settings for comparable numbers:
MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 python tools/finetune_step_time.py

usage: python tools/finetune_step_time.py [--no-bf16]
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

from ptmdetox import models
from ptmdetox.data.readers import read_task
from ptmdetox.evaluation.finetune import Classifier

TASK = ("../shared/data/ag_news/train.tsv.gz", "../shared/data/ag_news/test.tsv.gz")


def main(with_bf16: bool = True) -> None:
    adapter = models.create("default")
    train, _ = read_task(*TASK)
    ids = adapter.tokenize(train.texts[:640], 64)
    labels = torch.tensor(train.labels[:640])
    classifier = Classifier(adapter, 4, 0.1)
    classifier.train()
    print("threads", torch.get_num_threads(), "mean length", sum(map(len, ids)) / len(ids))

    def step(i, optimizer):
        batch = adapter.collate(ids[i * 32:(i + 1) * 32])
        t0 = time.perf_counter()
        loss = F.cross_entropy(classifier(batch), labels[i * 32:(i + 1) * 32])
        t1 = time.perf_counter()
        optimizer.zero_grad()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    def measure(label, autocast=False):
        optimizer = torch.optim.AdamW([p for p in classifier.parameters() if p.requires_grad], lr=2e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            for i in range(3):
                step(i, optimizer)
            times = [step(i, optimizer) for i in range(3, 13)]
        print(label + ": fwd %.3f bwd %.3f opt %.3f s" % tuple(sum(t[k] for t in times) / len(times) for k in range(3)))

    measure("fp32")
    embeddings = adapter.backbone.embeddings.word_embeddings.weight
    embeddings.requires_grad_(False)
    measure("fp32, word embeddings frozen")
    embeddings.requires_grad_(True)
    if with_bf16:
        measure("bf16 autocast")


if __name__ == "__main__":
    main("--no-bf16" not in sys.argv[1:])
