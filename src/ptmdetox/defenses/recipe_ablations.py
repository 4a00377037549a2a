"""RECIPE's ablations (paper Table 8; appendix Table 5), run by RECIPE's own loop with one term switched off.

- only pre-train: λ = 0 (the pre-training loss alone, same trainable weights and steps);
- only regularisation: no pre-training loss (the norm penalty alone, same steps as RECIPE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .recipe import RecipeConfig

ABLATIONS = {"only-pretrain": {"lam": 0.0}, "only-regularisation": {"pretrain_loss": "none"}}


@dataclass
class OnlyPretrainConfig(RecipeConfig):
    lam: float = 0.0
    preset_overrides: ClassVar[dict] = ABLATIONS["only-pretrain"]


@dataclass
class OnlyRegularisationConfig(RecipeConfig):
    pretrain_loss: str = "none"
    preset_overrides: ClassVar[dict] = ABLATIONS["only-regularisation"]
