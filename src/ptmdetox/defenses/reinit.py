"""Re-initialisation baseline (NeuBA paper): give the representation head (BERT's pooler, where NeuBA and POR put
their targets) and/or the top k blocks a fresh initialisation. The adapter says what those modules are and how its
family initialises them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from ..errors import PtmdetoxError
from ..models.base import ModelAdapter


@dataclass
class ReinitConfig:
    head: bool = field(default=True, metadata={"help": "re-initialise the representation head (BERT: the pooler)"})
    top_layers: int = field(default=0, metadata={"help": "also re-initialise this many top blocks"})
    seed: int = field(default=0, metadata={"help": "seed of the fresh initialisation"})

    def __post_init__(self):
        if self.top_layers < 0:
            raise PtmdetoxError(f"top_layers must be non-negative, got {self.top_layers}")
        if not self.head and self.top_layers == 0:
            raise PtmdetoxError("nothing to re-initialise: enable the head or give top_layers > 0")

    def to_dict(self) -> dict:
        return asdict(self)


def modules_to_reinitialise(adapter: ModelAdapter, config: ReinitConfig) -> list[torch.nn.Module]:
    blocks = adapter.blocks()
    if config.top_layers > len(blocks):
        raise PtmdetoxError(f"top_layers {config.top_layers} exceeds the model's {len(blocks)} blocks")
    chosen = blocks[len(blocks) - config.top_layers:] if config.top_layers else []
    if config.head:
        head = adapter.representation_head()
        if head is None:
            raise PtmdetoxError("the model has no representation head (pooler) to re-initialise; "
                                "use top_layers instead")
        chosen.append(head)
    return chosen


def reinitialise_modules(adapter: ModelAdapter, modules: list[torch.nn.Module], seed: int) -> list[str]:
    """The family's fresh initialisation of `modules`, in place, drawn from `seed` (the global random state is left
    as it was); the names of the re-initialised parameters."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for module in modules:
            adapter.reinitialise(module)
    wanted = {id(p) for m in modules for p in m.parameters()}
    return [n for n, p in adapter.named_parameters() if id(p) in wanted]


def reinit_purify(adapter: ModelAdapter, corpus_texts: list[str], config: ReinitConfig, progress: bool = True) -> dict:
    """Re-initialise in place; `corpus_texts` is not needed. The report names every re-initialised parameter."""
    names = reinitialise_modules(adapter, modules_to_reinitialise(adapter, config), config.seed)
    what = (["the representation head"] if config.head else []) + (
        [f"the top {config.top_layers} blocks"] if config.top_layers else [])
    return {
        "defense": "reinit",
        "config": config.to_dict(),
        "reinitialised": names,
        "summary": f"reinit: fresh initialisation of {' and '.join(what)} ({len(names)} tensors)",
    }
