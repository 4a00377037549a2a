"""ACC and attack-success metrics (RECIPE section 3).

ASR_C^t: among test samples whose gold label is not C, the percentage predicted C once trigger t is inserted.
ASR^t = max over C; AASR = mean over triggers; MASR = max over triggers. No filtering on clean correctness.
"""

from __future__ import annotations

import numpy as np


def accuracy(predictions, gold) -> float:
    predictions, gold = np.asarray(predictions), np.asarray(gold)
    return float(100.0 * (predictions == gold).mean())


def asr_by_label(triggered_predictions, gold, num_labels: int) -> dict[int, float]:
    predictions, gold = np.asarray(triggered_predictions), np.asarray(gold)
    rates = {}
    for label in range(num_labels):
        others = gold != label
        if others.any():
            rates[label] = float(100.0 * (predictions[others] == label).mean())
    return rates


def summarize(clean_predictions, gold, triggered: dict[str, list[int]], num_labels: int) -> dict:
    """One fine-tuned model's metrics: acc, per_trigger {asr, by_label}, aasr, masr (percent)."""
    per_trigger = {}
    for trigger, predictions in triggered.items():
        by_label = asr_by_label(predictions, gold, num_labels)
        per_trigger[trigger] = {"asr": max(by_label.values()), "by_label": by_label}
    asrs = [v["asr"] for v in per_trigger.values()]
    return {
        "acc": accuracy(clean_predictions, gold),
        "aasr": float(np.mean(asrs)) if asrs else 0.0,
        "masr": float(np.max(asrs)) if asrs else 0.0,
        "per_trigger": per_trigger,
    }


def _mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def aggregate(runs: list[dict]) -> dict:
    """Mean over fine-tuning seeds, with sample standard deviations (`*_std`)."""
    out = {}
    for key in ("acc", "aasr", "masr"):
        out[key], out[f"{key}_std"] = _mean_std([r[key] for r in runs])
    per_trigger = {}
    for trigger in runs[0]["per_trigger"]:
        asr, asr_std = _mean_std([r["per_trigger"][trigger]["asr"] for r in runs])
        # labels are ints in a fresh run and strings once a run has been through JSON: match them as strings
        labels = runs[0]["per_trigger"][trigger]["by_label"]
        tables = [{str(k): v for k, v in r["per_trigger"][trigger]["by_label"].items()} for r in runs]
        by_label = {label: _mean_std([table[str(label)] for table in tables])[0] for label in labels}
        per_trigger[trigger] = {"asr": asr, "asr_std": asr_std, "by_label": by_label}
    out["per_trigger"] = per_trigger
    return out
