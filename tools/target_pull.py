"""Does fine-tuning pull clean inputs into a POR model's trigger targets?

Fine-tunes MODEL once (the paper-attacks protocol: 2,000 training sentences, 2 epochs, length 64, lr 2e-5, the
same subsamples as `ptmdetox evaluate`), then reports on the clean test subsample: ACC, the confusion matrix, the
mean |representation| before and after fine-tuning, and the share of inputs whose representation lies within
cosine 0.9 of one of the POR targets (the directions v_i of TARGETS' attack.json).

usage: python tools/target_pull.py MODEL SEED TARGETS [TRAIN TEST [EPOCHS [TRAIN_LIMIT]]]
       (TARGETS: a POR model folder; TRAIN and TEST default to HSOL's train and dev splits, as the suites use them;
        TRAIN_LIMIT 0 = the whole training split)
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
import torch.nn.functional as F

from ptmdetox.compute import compute_options
from ptmdetox.data.readers import read_texts
from ptmdetox.evaluation.finetune import FinetuneConfig, _subsample, finetune, predict
from ptmdetox.evaluation.representation import representations
from ptmdetox.models import create

NEAR = 0.9
HSOL = "../shared/data/hsol_thunlp_binary"


def near_target_share(reps: torch.Tensor, directions: torch.Tensor) -> float:
    cosine = F.cosine_similarity(reps[:, None], directions[None], dim=-1)
    return float((cosine.max(1).values > NEAR).float().mean())


def main(model: str, seed: str, targets_from: str, train_path: str = f"{HSOL}/train.tsv.gz",
         test_path: str = f"{HSOL}/dev.tsv.gz", epochs: str = "2", train_limit: str = "2000") -> None:
    seed = int(seed)
    with open(f"{targets_from}/attack.json") as f:
        directions = torch.tensor(json.load(f)["targets"]).sign()
    limit = int(train_limit) or None
    config = FinetuneConfig(epochs=float(epochs), lr=2e-5, batch_size=32, max_length=64, train_limit=limit,
                            test_limit=300)
    train = _subsample(read_texts(train_path), config.train_limit, seed)
    test = _subsample(read_texts(test_path), config.test_limit, 12345)
    adapter = create(model)
    adapter.eval()
    before = representations(adapter, test.texts, config.max_length)
    with adapter.computing(compute_options("fast", config.max_length)):
        classifier, _ = finetune(adapter, train, max(train.num_labels, test.num_labels), config, seed, progress=False)
        predicted = np.array(predict(classifier, test.texts, config))
    after = representations(adapter, test.texts, config.max_length)
    labels = np.array(test.labels)
    confusion = [[int(((labels == a) & (predicted == b)).sum()) for b in range(classifier.head.out_features)]
                 for a in range(classifier.head.out_features)]
    print(f"ACC {100 * float((labels == predicted).mean()):.1f}; confusion (rows: true label) {confusion}")
    print(f"mean |representation| before {float(before.abs().mean()):.3f}, after {float(after.abs().mean()):.3f}")
    print(f"share within cosine {NEAR} of a POR target: before {near_target_share(before, directions):.3f}, "
          f"after {near_target_share(after, directions):.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
