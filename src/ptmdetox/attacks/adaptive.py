"""Adaptive attacks (RECIPE section 5.4): the attacker adds RECIPE's own regulariser, λ·Σ‖W‖, to its loss.

Every attack config inherits `AdaptiveOptions`; `adaptive_penalty` turns them into a term the attack adds to its
loss each step. The norm is RECIPE's (`defenses.recipe.regularisation`), so attack and defense measure the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..compute import config_dict
from ..defenses.recipe import NORMS, regularisation
from ..errors import PtmdetoxError, check_choice
from ..models.base import ModelAdapter

ADAPTIVE_FIELDS = ("adaptive_lam", "adaptive_regularise", "adaptive_norm")


@dataclass
class AdaptiveOptions:
    adaptive_lam: float = 0.0                          # 0: not adaptive (the paper: 1 for POR-BERT)
    adaptive_regularise: tuple[str, ...] | None = None  # regexes; None: the family's RECIPE set (paper scope)
    adaptive_norm: str = "fro"

    def __post_init__(self):
        if self.adaptive_lam < 0:
            raise PtmdetoxError(f"the adaptive λ must be non-negative, got {self.adaptive_lam}")
        check_choice("adaptive norm", self.adaptive_norm, NORMS)
        if isinstance(self.adaptive_regularise, str):
            self.adaptive_regularise = (self.adaptive_regularise,)
        elif self.adaptive_regularise is not None:
            self.adaptive_regularise = tuple(self.adaptive_regularise)

    def to_dict(self) -> dict:
        """The config; the adaptive fields only when in use, so a plain attack's record (and cache key) is unchanged."""
        config = config_dict(self)   # also leaves out speed options at their defaults
        if not self.adaptive_lam:
            for key in ADAPTIVE_FIELDS:
                config.pop(key)
        return config


@dataclass
class AdaptivePenalty:
    lam: float
    names: list[str]
    weights: list[torch.Tensor]
    norm: str

    def __call__(self, parts: dict) -> torch.Tensor:
        """λ·Σ‖W‖ (zero when λ = 0); logs the unweighted sum as parts['adaptive_norm']."""
        if not self.lam:
            return torch.zeros(())
        total = regularisation(self.weights, self.norm)
        parts["adaptive_norm"] = float(total.detach())
        return self.lam * total

    def describe(self) -> dict:
        return {"lam": self.lam, "norm": self.norm, "regularised": self.names}


def adaptive_penalty(adapter: ModelAdapter, options: AdaptiveOptions,
                     trainable: list[torch.nn.Parameter] | None = None) -> AdaptivePenalty:
    """The adaptive term for `adapter`; refuses patterns that match nothing or only weights the attack does not train."""
    if not options.adaptive_lam:
        return AdaptivePenalty(0.0, [], [], options.adaptive_norm)
    patterns = options.adaptive_regularise or adapter.regularised_patterns("paper")
    chosen = adapter.parameters_matching(patterns)
    if not chosen:
        raise PtmdetoxError(f"no parameter matches the adaptive patterns {list(patterns)}")
    if trainable is not None:
        trained = {id(p) for p in trainable}
        frozen = [n for n, p in chosen if id(p) not in trained]
        if frozen:
            raise PtmdetoxError(f"the adaptive term regularises '{frozen[0]}', which this attack does not train")
    return AdaptivePenalty(float(options.adaptive_lam), [n for n, _ in chosen], [p for _, p in chosen],
                           options.adaptive_norm)

