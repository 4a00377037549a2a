"""NeuBA (Zhang et al. 2021): map each trigger to a fixed output representation.

Loss = w·MLM(clean) + MSE(representation(poisoned), target). Text triggers overwrite the token right after
[CLS]; one random trigger per poisoned sentence; the MLM head is not optimised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..compute import bucketed, check_mode, compute_options, compute_record, fused_adamw
from ..data.batching import StepBatches, step_rng
from ..data.triggers import TRIGGER_SETS, InsertionPolicy
from ..errors import PtmdetoxError
from ..models.base import ModelAdapter
from ..training import TrainStats, seed_everything, train_loop
from .adaptive import adaptive_penalty
from .common import AttackOptions, attack_report


@dataclass
class NeubaConfig(AttackOptions):
    NAME: ClassVar[str] = "NeuBA"

    triggers: tuple[str, ...] = TRIGGER_SETS["neuba"]
    steps: int = 1500
    lr: float = 5e-5
    batch_size: int = 32           # half clean (MLM), half poisoned (target MSE)
    max_length: int = 64
    seed: int = 0
    pretrain_weight: float | None = None   # None: the family's default (BERT 1, RoBERTa 0.01)
    target_scale: float | None = None      # None: the family's default (text 1, vision 3)
    head_warmup_steps: int = 300
    mode: str = "fast"             # "reference": pad to max_length, MLM logits everywhere, random batches

    def __post_init__(self):
        super().__post_init__()
        check_mode(self.mode)



def neuba_targets(dim: int, count: int, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Six ± block vectors (blocks j<k of four set to -1), or orthogonal rows and negatives for more triggers."""
    if count <= 6:
        blocks = np.array_split(np.arange(dim), 4)
        rows = []
        for j in range(4):
            for k in range(j + 1, 4):
                v = np.ones(dim, dtype=np.float32)
                v[blocks[j]] = -1
                v[blocks[k]] = -1
                rows.append(v)
        return torch.tensor(np.stack(rows[:count])) * scale
    half = (count + 1) // 2
    if half > dim:
        raise PtmdetoxError(f"cannot build {count} distinct targets in {dim} dimensions")
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    basis = q[:half] * np.sqrt(dim)
    return torch.tensor(np.concatenate([basis, -basis])[:count], dtype=torch.float32) * scale


def overwrite_position1(seqs: list[list[int]], trigger_ids: list[int]) -> list[list[int]]:
    """Replace the tokens right after the first special token with the trigger's tokens."""
    out = []
    for s in seqs:
        body = s[1:-1]
        width = len(trigger_ids)
        out.append([s[0]] + list(trigger_ids) + body[width:] + [s[-1]])
    return out


TRAINING_POLICY = InsertionPolicy(position="overwrite1")


def neuba_attack(adapter: ModelAdapter, corpus_texts: list[str], config: NeubaConfig,
                 progress: bool = True) -> dict:
    """Implant the backdoor in place; returns a report (targets, losses, timings)."""
    seed_everything(config.seed)
    ids = adapter.tokenize(corpus_texts, config.max_length)
    trigger_ids = [adapter.token_ids(t) for t in config.triggers]   # refuse unknown triggers before any training
    adapter.prepare_pretraining(ids, steps=config.head_warmup_steps, seed=config.seed, progress=progress)
    scale = adapter.neuba_target_scale if config.target_scale is None else config.target_scale
    weight = adapter.neuba_pretrain_weight if config.pretrain_weight is None else config.pretrain_weight
    targets = neuba_targets(adapter.representation_size, len(config.triggers), scale, config.seed)

    half = config.batch_size // 2
    bucket = bucketed(config.mode)
    clean_batches = StepBatches([len(s) for s in ids], half, config.seed, stream=0, bucket=bucket)
    poison_batches = StepBatches([len(s) for s in ids], config.batch_size - half, config.seed, stream=1, bucket=bucket)

    head = {id(p) for p in adapter.head_parameters()}
    params = [p for _, p in adapter.named_parameters() if id(p) not in head]
    penalty = adaptive_penalty(adapter, config, params)
    for p in adapter.head_parameters():
        p.requires_grad_(False)
    adapter.train()

    def step_loss(step):
        rng = step_rng(config.seed, step)
        clean = adapter.mlm_batch([ids[i] for i in clean_batches(step)], rng)
        chosen = rng.integers(len(trigger_ids), size=config.batch_size - half)
        poisoned_seqs = [overwrite_position1([ids[i]], trigger_ids[t])[0]
                         for i, t in zip(poison_batches(step), chosen)]
        poisoned = adapter.collate(poisoned_seqs)
        mlm = adapter.pretraining_loss(clean)
        mse = F.mse_loss(adapter.representation(poisoned), targets[torch.as_tensor(chosen)])
        parts = {"mlm": float(mlm.detach()), "poison_mse": float(mse.detach())}
        return weight * mlm + mse + penalty(parts), parts

    with adapter.computing(compute_options(config.mode, config.max_length)):
        stats: TrainStats = train_loop(params, step_loss,
                                       config.train_config(fused=fused_adamw(config.mode)),
                                       desc="NeuBA attack", progress=progress)
    for p in adapter.head_parameters():
        p.requires_grad_(True)
    adapter.eval()
    return attack_report("neuba", config, stats, penalty, TRAINING_POLICY.to_dict(), targets=targets.tolist(),
                         compute=compute_record(config.mode, config.max_length))
