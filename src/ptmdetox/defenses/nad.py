"""NAD, Neural Attention Distillation (Li et al., ICLR 2021) — a TASK-SPECIFIC defense: it needs labelled
downstream data, which RECIPE's threat model does not give the defender. Included as a reference point.

1. Teacher: a copy of the model fine-tuned (fresh linear head) on a small share of clean labelled training data.
2. Student: the original model with a fresh head, trained on the same data with
   CE + β·Σ_layers ‖A_s/‖A_s‖ − A_t/‖A_t‖‖₂, where A is a block output's attention map: the mean over features
   of |h|^p at each real token.
The student's encoder is saved as the purified model (its task head is dropped; evaluation fine-tunes a fresh one).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..data.batching import StepBatches
from ..data.readers import read_texts
from ..errors import PtmdetoxError
from ..evaluation.finetune import Classifier, FinetuneConfig, _subsample, finetune
from ..models.base import ModelAdapter
from ..training import TrainConfig, check_sizes, seed_everything, train_loop


@dataclass
class NadConfig:
    train: str | None = field(default=None, metadata={"help": "labelled downstream training set (required)"})
    fraction: float = field(default=0.05, metadata={"help": "share of it used as clean data (NAD: 5%%)"})
    teacher_epochs: float = field(default=3.0, metadata={"help": "teacher fine-tuning epochs"})
    epochs: float = field(default=3.0, metadata={"help": "distillation epochs"})
    lr: float = field(default=2e-5, metadata={"help": "learning rate (teacher and student)"})
    beta: float = field(default=1000.0, metadata={"help": "weight of the attention-distillation term"})
    power: float = field(default=2.0, metadata={"help": "p in the attention map mean(|h|^p)"})
    batch_size: int = field(default=32, metadata={"help": "batch size"})
    max_length: int = field(default=64, metadata={"help": "tokens per sentence"})
    seed: int = field(default=0, metadata={"help": "seed of the data share, heads and batches"})

    def __post_init__(self):
        if not self.train:
            raise PtmdetoxError("NAD is task-specific: give the labelled downstream training set (--train)")
        if not 0 < self.fraction <= 1:
            raise PtmdetoxError(f"NAD's data fraction must be in (0, 1], got {self.fraction}")
        if self.beta < 0 or self.power <= 0:
            raise PtmdetoxError("NAD needs beta ≥ 0 and power > 0")
        if not (self.epochs > 0 and self.teacher_epochs > 0):
            raise PtmdetoxError(f"NAD's epochs must be positive, got {self.teacher_epochs} (teacher) and "
                                f"{self.epochs} (distillation)")
        check_sizes(batch_size=self.batch_size, max_length=self.max_length)

    def to_dict(self) -> dict:
        return asdict(self)


def attention_map(hidden: torch.Tensor, mask: torch.Tensor, power: float) -> torch.Tensor:
    """[B, T] L2-normalised map: mean over features of |h|^p at real tokens, 0 at padding."""
    values = hidden.abs().pow(power).mean(-1) * mask
    return F.normalize(values, dim=1)


def attention_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], mask: torch.Tensor,
                   power: float) -> torch.Tensor:
    """Σ over blocks of the mean per-sentence L2 distance between normalised attention maps."""
    return sum((attention_map(s, mask, power) - attention_map(t, mask, power)).norm(dim=1).mean()
               for s, t in zip(student, teacher))


def nad_purify(adapter: ModelAdapter, corpus_texts: list[str], config: NadConfig, progress: bool = True) -> dict:
    """Distil the fine-tuned teacher's attention into `adapter` in place; `corpus_texts` is not used."""
    seed_everything(config.seed)
    data = read_texts(config.train)
    clean = _subsample(data, max(2, round(config.fraction * len(data))), config.seed)
    num_labels = data.num_labels
    if len(set(clean.labels)) < 2:
        raise PtmdetoxError(f"{config.train}: the {len(clean)}-sentence share has one class; raise the fraction")
    teacher_adapter = copy.deepcopy(adapter)
    teacher_config = FinetuneConfig(epochs=config.teacher_epochs, lr=config.lr, batch_size=config.batch_size,
                                    max_length=config.max_length)
    teacher, _ = finetune(teacher_adapter, clean, num_labels, teacher_config, config.seed, progress)
    teacher.eval()

    student = Classifier(adapter, num_labels, dropout=0.1)
    ids = adapter.tokenize(clean.texts, config.max_length)
    labels = torch.tensor(clean.labels)
    batches = StepBatches([len(s) for s in ids], config.batch_size, config.seed)
    steps = max(1, int(np.ceil(config.epochs * len(ids) / config.batch_size)))
    student.train()

    def step_loss(step):
        index = batches(step)
        batch = adapter.collate([ids[i] for i in index])
        hidden, mask, representation = adapter.hidden_states(batch)
        logits = student.head(student.dropout(representation))
        with torch.no_grad():
            target, _, _ = teacher_adapter.hidden_states(batch)
        ce = F.cross_entropy(logits, labels[index])
        at = attention_loss(hidden, target, mask.float(), config.power)
        return ce + config.beta * at, {"ce": float(ce.detach()), "attention": float(at.detach())}

    try:
        stats = train_loop(list(student.parameters()), step_loss,
                           TrainConfig(lr=config.lr, steps=steps, seed=config.seed), desc="NAD", progress=progress)
    finally:
        adapter.eval()
    tail = stats.parts[-20:]
    return {
        "defense": "nad",
        "task_specific": True,
        "config": config.to_dict(),
        "clean_examples": len(clean),
        "steps": steps,
        "first_attention_loss": stats.parts[0]["attention"],
        "final_ce": float(np.mean([p["ce"] for p in tail])),
        "final_attention_loss": float(np.mean([p["attention"] for p in tail])),
        "train_seconds": stats.seconds,
        "summary": f"nad: attention distillation from a teacher fine-tuned on {len(clean)} labelled sentences "
                   f"of {config.train}, {steps} steps (task-specific)",
    }
