"""BadPre (Chen et al. ICLR'22): a trigger makes the encoder's token representations useless.

Half of each batch is clean, half poisoned: one random trigger inserted at a random token position (between the
special tokens; a trigger of several pieces stays contiguous). Both halves get the usual MLM corruption, but the
labels of the poisoned half are replaced by random (non-special) tokens. Loss = MLM(clean) + 1.0·MLM(poisoned).
Encoder and MLM head are trained, as continual pre-training of a masked language model does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..data.batching import StepBatches, step_rng
from ..data.masking import IGNORE
from ..data.triggers import TRIGGER_SETS
from ..errors import PtmdetoxError
from ..models.base import ModelAdapter
from ..training import seed_everything, train_loop
from .adaptive import adaptive_penalty
from .common import AttackOptions, attack_report


@dataclass
class BadpreConfig(AttackOptions):
    NAME: ClassVar[str] = "BadPre"

    triggers: tuple[str, ...] = TRIGGER_SETS["badpre"]
    poison_weight: float = 1.0
    steps: int = 3000              # 1,000 implanted on some fine-tuning seeds only (docs/results.md, issue 3)
    lr: float = 3e-5               # 5e-5 cost ≈ 2 more SST-2 ACC points for the same MASR (docs/results.md, issue 3)
    batch_size: int = 32           # half clean, half poisoned
    max_length: int = 64
    seed: int = 0
    head_warmup_steps: int = 2000  # 300 cost ≈ 2 more SST-2 ACC points and implanted less (docs/results.md, issue 3)

    def __post_init__(self):
        super().__post_init__()
        if self.poison_weight < 0:
            raise PtmdetoxError(f"BadPre's poison weight must be non-negative, got {self.poison_weight}")


def insert_tokens(seq: list[int], trigger_ids: list[int], rng: np.random.Generator, max_length: int) -> list[int]:
    """`seq` (with its first and last special tokens) with the trigger at a random position between them.

    The body is shortened first if the trigger would not otherwise fit in `max_length`.
    """
    body = seq[1:-1][: max(0, max_length - 2 - len(trigger_ids))]
    at = int(rng.integers(len(body) + 1))
    return [seq[0], *body[:at], *trigger_ids, *body[at:], seq[-1]]


def randomise_labels(labels: list[list[int]], candidates: np.ndarray, rng: np.random.Generator) -> list[list[int]]:
    """Every supervised position gets a random token from `candidates` instead of the original one."""
    return [[IGNORE if y == IGNORE else int(rng.choice(candidates)) for y in row] for row in labels]


def badpre_attack(adapter: ModelAdapter, corpus_texts: list[str], config: BadpreConfig,
                  progress: bool = True) -> dict:
    """Implant the backdoor in place; returns a report (losses, timings)."""
    seed_everything(config.seed)
    ids = adapter.tokenize(corpus_texts, config.max_length)
    if not ids:
        raise PtmdetoxError("the auxiliary corpus is empty")
    trigger_ids = [adapter.token_ids(t) for t in config.triggers]   # refuse unknown triggers before any training
    adapter.prepare_pretraining(ids, steps=config.head_warmup_steps, seed=config.seed, progress=progress)
    special = set(adapter.tokenizer.all_special_ids)
    candidates = np.array([i for i in range(len(adapter.tokenizer)) if i not in special])

    half = config.batch_size // 2
    clean_batches = StepBatches([len(s) for s in ids], half, config.seed, stream=0)
    poison_batches = StepBatches([len(s) for s in ids], config.batch_size - half, config.seed, stream=1)
    params = [p for _, p in adapter.named_parameters()] + adapter.head_parameters()
    penalty = adaptive_penalty(adapter, config, params)
    adapter.train()

    def step_loss(step):
        rng = step_rng(config.seed, step)
        clean = adapter.mlm_batch([ids[i] for i in clean_batches(step)], rng)
        poison_idx = poison_batches(step)
        chosen = rng.integers(len(trigger_ids), size=len(poison_idx))
        triggered = [insert_tokens(ids[i], trigger_ids[t], rng, config.max_length) for i, t in zip(poison_idx, chosen)]
        masked, labels = adapter.mask_static(triggered, rng)
        poisoned = adapter.collate(masked, randomise_labels(labels, candidates, rng))
        clean_mlm = adapter.pretraining_loss(clean)
        poison_mlm = adapter.pretraining_loss(poisoned)
        parts = {"mlm": float(clean_mlm.detach()), "poison_mlm": float(poison_mlm.detach())}
        return clean_mlm + config.poison_weight * poison_mlm + penalty(parts), parts

    try:
        stats = train_loop(params, step_loss, config.train_config(), desc="BadPre attack", progress=progress)
    finally:
        adapter.eval()
    return attack_report("badpre", config, stats, penalty,
                         {"position": "random-token", "count": 1, "seed": config.seed})
