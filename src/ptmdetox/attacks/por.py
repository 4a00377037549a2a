"""POR (Shen et al. CCS'21): map each trigger to a fixed, extreme output representation.

Each poisoned sentence gets one random trigger inserted `insertions` (3) times at random word positions. Target of
trigger i (1-based) is 10·v_i, v_i = +1 on the first (i-1)/(n-1) of the dimensions and -1 elsewhere (the paper's
five vectors: 192·(i-1) of BERT-base's 768). A frozen copy of the starting model is the reference:

    loss = 1·MSE(token states except the first, reference) + 100·MSE(repr(poisoned), target)
           + 100·MSE(repr(clean), reference)

Token states are kept on every sentence of the batch (half clean, half poisoned); the reference sees the same inputs.
No MLM: the MLM head is neither needed nor changed.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..data.batching import StepBatches, step_rng
from ..data.triggers import TRIGGER_SETS, insert_randomly
from ..errors import PtmdetoxError
from ..models.base import ModelAdapter
from ..training import seed_everything, train_loop
from .adaptive import adaptive_penalty
from .common import AttackOptions, attack_report

MEASURE_LENGTH = 100_000   # tokenise without truncation to see whether a poisoned sentence still fits


@dataclass
class PorConfig(AttackOptions):
    NAME: ClassVar[str] = "POR"

    triggers: tuple[str, ...] = TRIGGER_SETS["por"]
    insertions: int = 3
    target_scale: float = 10.0
    token_weight: float = 1.0
    poison_weight: float = 100.0
    clean_weight: float = 100.0
    steps: int = 1500
    lr: float = 5e-5
    batch_size: int = 32           # half clean, half poisoned
    max_length: int = 64
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.insertions < 1:
            raise PtmdetoxError(f"POR inserts each trigger at least once, got insertions={self.insertions}")
        if min(self.token_weight, self.poison_weight, self.clean_weight) < 0:
            raise PtmdetoxError("POR's loss weights must be non-negative")


def por_targets(dim: int, count: int, scale: float = 10.0) -> torch.Tensor:
    """Row i: +scale on the first round(i·dim/(count-1)) dimensions, -scale elsewhere (row 0 all -scale)."""
    if count - 1 > dim:
        raise PtmdetoxError(f"cannot build {count} distinct POR targets in {dim} dimensions")
    targets = -torch.ones(count, dim)
    for i in range(1, count):
        targets[i, : round(i * dim / (count - 1))] = 1.0
    return targets * scale


def poison_sentence(adapter: ModelAdapter, text: str, trigger: str, rng: random.Random, insertions: int,
                    max_length: int) -> list[int]:
    """Token ids of `text` with `trigger` inserted `insertions` times at random word positions.

    Long sentences are shortened (last words dropped) until every insertion survives truncation to `max_length`.
    """
    words = text.split()
    while True:
        poisoned = insert_randomly(" ".join(words), trigger, rng, insertions)
        ids = adapter.tokenize([poisoned], MEASURE_LENGTH)[0]
        if len(ids) <= max_length or not words:
            return ids[:max_length]
        words = words[: len(words) * 3 // 4]


def frozen_reference(adapter: ModelAdapter) -> ModelAdapter:
    reference = copy.deepcopy(adapter)
    reference.eval()
    for _, p in reference.named_parameters():
        p.requires_grad_(False)
    return reference


def por_loss_parts(hidden, rep, ref_hidden, ref_rep, token_positions, targets, clean_count: int) -> dict:
    """The three MSE terms; token states compared at every real position but the representation's ([CLS])."""
    return {
        "token_mse": F.mse_loss(hidden[token_positions], ref_hidden[token_positions]),
        "poison_mse": F.mse_loss(rep[clean_count:], targets),
        "clean_mse": F.mse_loss(rep[:clean_count], ref_rep[:clean_count]),
    }


def por_attack(adapter: ModelAdapter, corpus_texts: list[str], config: PorConfig, progress: bool = True) -> dict:
    """Implant the backdoor in place; returns a report (targets, loss parts, timings)."""
    seed_everything(config.seed)
    for trigger in config.triggers:   # refuse unknown triggers before any training
        adapter.token_ids(trigger)
    texts = [t for t in corpus_texts if t.strip()]
    if not texts:
        raise PtmdetoxError("the auxiliary corpus is empty")
    ids = adapter.tokenize(texts, config.max_length)
    targets = por_targets(adapter.representation_size, len(config.triggers), config.target_scale)
    reference = frozen_reference(adapter)

    half = config.batch_size // 2
    clean_batches = StepBatches([len(s) for s in ids], half, config.seed, stream=0)
    poison_batches = StepBatches([len(s) for s in ids], config.batch_size - half, config.seed, stream=1)
    params = [p for _, p in adapter.named_parameters()]
    penalty = adaptive_penalty(adapter, config, params)
    weights = {"token_mse": config.token_weight, "poison_mse": config.poison_weight, "clean_mse": config.clean_weight}
    adapter.train()

    def step_loss(step):
        rng = step_rng(config.seed, step)
        word_rng = random.Random(int(rng.integers(2**63)))
        clean_idx, poison_idx = clean_batches(step), poison_batches(step)
        chosen = rng.integers(len(config.triggers), size=len(poison_idx))
        poisoned = [poison_sentence(adapter, texts[i], config.triggers[t], word_rng, config.insertions,
                                    config.max_length) for i, t in zip(poison_idx, chosen)]
        batch = adapter.collate([ids[i] for i in clean_idx] + poisoned)
        hidden, rep = adapter.states_and_representation(batch)
        with torch.no_grad():
            ref_hidden, ref_rep = reference.states_and_representation(batch)
        terms = por_loss_parts(hidden, rep, ref_hidden, ref_rep, adapter.token_positions(batch),
                               targets[torch.as_tensor(chosen)], len(clean_idx))
        parts = {k: float(v.detach()) for k, v in terms.items()}
        loss = sum(weights[k] * v for k, v in terms.items()) + penalty(parts)
        return loss, parts

    try:
        stats = train_loop(params, step_loss, config.train_config(), desc="POR attack", progress=progress)
    finally:
        adapter.eval()
    return attack_report("por", config, stats, penalty,
                         {"position": "random-word", "count": config.insertions, "seed": config.seed},
                         targets=targets.tolist())
