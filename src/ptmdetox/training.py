"""The one training loop shared by attacks, defenses, head warm-up and downstream fine-tuning."""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import DivergenceError, PtmdetoxError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_threads() -> None:
    threads = int(os.environ.get("PTMDETOX_THREADS", os.cpu_count() or 1))
    torch.set_num_threads(max(1, threads))


@dataclass
class TrainConfig:
    lr: float
    steps: int
    seed: int = 0
    clip: float = 1.0
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    schedule: str = "linear"  # linear decay to 0 after warm-up, or "constant"
    bf16: bool = False        # bf16 autocast of the forward pass (weights, optimiser and loss stay fp32)

    def __post_init__(self):
        if not self.lr > 0:
            raise PtmdetoxError(f"learning rate must be positive, got {self.lr}")
        if self.steps < 1:
            raise PtmdetoxError(f"number of steps must be at least 1, got {self.steps}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainStats:
    losses: list[float] = field(default_factory=list)
    parts: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def final_loss(self) -> float:
        tail = self.losses[-20:]
        return float(sum(tail) / len(tail)) if tail else float("nan")


def _lr_factor(step: int, config: TrainConfig) -> float:
    warmup = int(config.warmup_ratio * config.steps)
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "constant":
        return 1.0
    return max(0.0, (config.steps - step) / max(1, config.steps - warmup))


def train_loop(params: list[torch.nn.Parameter], step_loss: Callable[[int], torch.Tensor | tuple],
               config: TrainConfig, desc: str = "training", progress: bool = True,
               on_step: Callable[[int], None] | None = None) -> TrainStats:
    """AdamW with linear decay and gradient clipping over `params`.

    `step_loss(step)` returns the loss, or (loss, {name: float}) to log its parts.
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise PtmdetoxError(f"{desc}: no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=config.lr, eps=config.eps, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, config))
    stats = TrainStats()
    start = time.perf_counter()
    bar = tqdm(range(config.steps), desc=desc, disable=not progress, leave=False, mininterval=2.0)
    device = params[0].device.type
    for step in bar:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=config.bf16):
            out = step_loss(step)
        loss, parts = out if isinstance(out, tuple) else (out, {})
        value = float(loss.detach())
        if not math.isfinite(value):
            raise DivergenceError(f"{desc}: loss became {value} at step {step}; stopping without saving "
                                  "(lower the learning rate)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip:
            torch.nn.utils.clip_grad_norm_(params, config.clip)
        optimizer.step()
        scheduler.step()
        stats.losses.append(value)
        stats.parts.append(parts)
        if on_step:
            on_step(step)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{value:.4f}")
    stats.seconds = time.perf_counter() - start
    return stats
