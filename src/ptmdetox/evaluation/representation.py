"""Task-free look at a backdoor: where triggers move the output representation, before any fine-tuning."""

from __future__ import annotations

import torch

from ..attacks.neuba import neuba_targets
from ..data.triggers import InsertionPolicy, insert_triggers
from ..models.base import ModelAdapter


@torch.inference_mode()
def representations(adapter: ModelAdapter, texts: list[str], max_length: int, batch_size: int = 64) -> torch.Tensor:
    ids = adapter.tokenize(texts, max_length)
    return torch.cat([adapter.representation(adapter.collate(ids[i:i + batch_size]))
                      for i in range(0, len(ids), batch_size)])


def trigger_shift_report(adapter: ModelAdapter, texts: list[str], triggers: tuple[str, ...],
                         policy: InsertionPolicy, max_length: int = 128) -> dict:
    """Per trigger: cosine of triggered outputs with the NeuBA target, and the shift relative to the clean spread.

    Also: cosine of the mean clean output with each target (NeuBA tends to collapse clean outputs onto one).
    """
    adapter.eval()
    targets = neuba_targets(adapter.representation_size, len(triggers), adapter.neuba_target_scale)
    clean = representations(adapter, texts, max_length)
    centre = clean.mean(0)
    spread = float((clean - centre).norm(dim=1).mean())
    report = {"clean_mean_norm": float(centre.norm()), "clean_spread": spread,
              "clean_mean_cos_with_targets": [float(torch.cosine_similarity(centre, t, 0)) for t in targets],
              "per_trigger": {}}
    for trigger, target in zip(triggers, targets):
        poisoned = representations(adapter, insert_triggers(texts, trigger, policy), max_length)
        report["per_trigger"][trigger] = {
            "cos_with_target": float(torch.cosine_similarity(poisoned, target[None], 1).mean()),
            "shift_over_spread": float((poisoned - clean).norm(dim=1).mean() / spread),
        }
    return report
