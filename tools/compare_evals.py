"""Evaluations two bench caches both hold, side by side: are the results the same, and how long did each take?

usage: python tools/compare_evals.py OLD_CACHE NEW_CACHE
For every `eval-<key>.json` in NEW_CACHE that OLD_CACHE also holds (same key: same model, task, seed and protocol),
prints the task's label count, ACC, AASR, MASR, fine-tuning and test seconds of both, whether every per-trigger ASR is identical, and the
totals of the recorded seconds. Used to check that a speed change leaves results unchanged (docs/results.md, issue 5).
"""

from __future__ import annotations

import glob
import json
import os
import sys

FIELDS = ("acc", "aasr", "masr")
SECONDS = ("finetune_seconds", "eval_seconds")


def _load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def pairs(old_cache: str, new_cache: str) -> list[tuple[str, dict, dict]]:
    found = []
    for path in sorted(glob.glob(os.path.join(new_cache, "eval-*.json"))):
        twin = os.path.join(old_cache, os.path.basename(path))
        if os.path.isfile(twin):
            found.append((os.path.basename(path), _load(twin), _load(path)))
    return found


def seconds(result: dict) -> float:
    return sum(float(result.get(k, 0.0)) for k in SECONDS)


def main(old_cache: str, new_cache: str) -> None:
    found = pairs(old_cache, new_cache)
    if not found:
        raise SystemExit(f"no evaluation of {new_cache} is also in {old_cache}")
    print("| evaluation | labels | " + " | ".join(f"{k} old / new" for k in FIELDS + SECONDS) + " | per-trigger ASR |")
    print("|---" * (len(FIELDS) + len(SECONDS) + 3) + "|")
    for name, old, new in found:
        cells = [f"{old[k]:.2f} / {new[k]:.2f}" for k in FIELDS] + [f"{old[k]:.1f} / {new[k]:.1f}" for k in SECONDS]
        same = "identical" if old["per_trigger"] == new["per_trigger"] else "differ"
        labels = len(next(iter(new["per_trigger"].values()))["by_label"])
        print(f"| {name} | {labels} | " + " | ".join(cells) + f" | {same} |")
    old_total, new_total = sum(seconds(o) for _, o, _ in found), sum(seconds(n) for _, _, n in found)
    print(f"\nrecorded seconds: {old_total:.0f} old, {new_total:.0f} new ({new_total / old_total:.2f}×)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.strip().splitlines()[2])
    main(*sys.argv[1:])
