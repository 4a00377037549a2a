"""Clip extreme parameters (RECIPE Table 11: clamp every parameter to [-1, 1]).

Per parameter tensor, values outside a band are clamped to its edges. The band is fixed (`value`: [-t, t], the
paper's), `std` (mean ± t·std of that tensor) or `quantile` (the t and 1-t quantiles of that tensor).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from ..errors import PtmdetoxError, check_choice
from ..models.base import ModelAdapter

MODES = ("value", "std", "quantile")
QUANTILE_SAMPLE = 1_000_000   # torch.quantile refuses very large tensors; estimate from a fixed sample


@dataclass
class ClipConfig:
    mode: str = field(default="value", metadata={"help": "band: value [-t, t], std (mean ± t·std) or quantile",
                                                  "choices": MODES})
    threshold: float = field(default=1.0, metadata={"help": "t (value: 1 as in the paper; std: e.g. 6; "
                                                            "quantile: e.g. 0.001)"})
    parameters: tuple[str, ...] = field(default=(".*",), metadata={
        "help": "regexes over parameter names to clip (default: every parameter, as in the paper)"})
    matrices_only: bool = field(default=False, metadata={"help": "clip only tensors with 2+ dimensions"})

    def __post_init__(self):
        check_choice("clipping mode", self.mode, MODES)
        if self.mode == "quantile" and not 0 < self.threshold < 0.5:
            raise PtmdetoxError(f"a quantile threshold must be in (0, 0.5), got {self.threshold}")
        if self.mode != "quantile" and not self.threshold > 0:
            raise PtmdetoxError(f"the clipping threshold must be positive, got {self.threshold}")

    def to_dict(self) -> dict:
        return asdict(self)


def clip_band(values: torch.Tensor, mode: str, threshold: float) -> tuple[float, float]:
    flat = values.detach().float().flatten()
    if mode == "value":
        return -threshold, threshold
    if mode == "std":
        mean, std = float(flat.mean()), float(flat.std()) if flat.numel() > 1 else 0.0
        return mean - threshold * std, mean + threshold * std
    if flat.numel() > QUANTILE_SAMPLE:
        generator = torch.Generator().manual_seed(0)
        flat = flat[torch.randint(flat.numel(), (QUANTILE_SAMPLE,), generator=generator)]
    low, high = torch.quantile(flat, torch.tensor([threshold, 1 - threshold])).tolist()
    return low, high


@torch.no_grad()
def clip_purify(adapter: ModelAdapter, corpus_texts: list[str], config: ClipConfig, progress: bool = True) -> dict:
    """Clamp in place; `corpus_texts` is not needed. The report counts the clipped values per tensor."""
    chosen = [(n, p) for n, p in adapter.parameters_matching(config.parameters)
              if p.dim() >= 2 or not config.matrices_only]
    if not chosen:
        raise PtmdetoxError(f"no parameter matches {list(config.parameters)}")
    clipped, bands = {}, {}
    for name, param in chosen:
        low, high = clip_band(param, config.mode, config.threshold)
        outside = int(((param < low) | (param > high)).sum())
        if outside:
            param.clamp_(low, high)
            clipped[name] = outside
            bands[name] = [low, high]
    total = sum(p.numel() for _, p in chosen)
    count = sum(clipped.values())
    return {
        "defense": "clip",
        "config": config.to_dict(),
        "values_clipped": count,
        "values_considered": total,
        "tensors_considered": len(chosen),
        "clipped_per_tensor": clipped,
        "bands": bands,
        "summary": f"clip: clamped {count} of {total} values in {len(clipped)} of {len(chosen)} tensors "
                   f"({config.mode} band, threshold {config.threshold})",
    }
