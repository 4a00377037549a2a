"""One line per task × attack: ACC / ΔMASR of each defense, on one fine-tuning seed or averaged over every seed.

usage: python tools/defense_table.py results/SUITE.json [SEED|all] [ALL_SEEDS_ROW]   (SEED defaults to 1,
       ALL_SEEDS_ROW to recipe)
With a SEED: for a suite run that has every cell on one seed but only some cells on every seed, compares the defenses
on the seed they share, against the clean model's MASR on the same seed and triggers, and adds the all-seed mean of
one row. With `all`: every cell is the mean over the seeds it holds, against the clean model's mean MASR over its
seeds, for the same triggers.
Expects `paper-text`'s row names: ATTACK, ATTACK+fp, ATTACK+fp-gm, ATTACK+fp-ga, ATTACK+recipe.
"""

from __future__ import annotations

import json
import sys
from statistics import fmean as mean

from ptmdetox.bench import restrict

DEFENSES = ("", "+fp", "+fp-gm", "+fp-ga", "+recipe")
HEADER = "| task | attack | clean ACC{seeds} | no defense | FP | FP-GM | FP-GA | RECIPE |"


def masr(run: dict, triggers) -> float:
    return restrict(run, triggers)["masr"]


def runs_on(row: dict, seed: int | None) -> list[dict]:
    """The row's runs on `seed`, or all of them when seed is None."""
    runs = [run for run in row["runs"] if seed is None or run["seed"] == seed]
    if not runs:
        raise SystemExit(f"no run on seed {seed} in a row of the report")
    return runs


def cell(runs: list[dict], triggers, floor: float, show_count: bool = False) -> str:
    text = f"{mean(r['acc'] for r in runs):.1f} / {mean(masr(r, triggers) for r in runs) - floor:+.1f}"
    return text + (f" ({len(runs)} seeds)" if show_count else "")


def main(path: str, seed: int | None = 1, all_seeds_row: str = "recipe") -> None:
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    results, triggers_by_model = report["results"], report["triggers_by_model"]
    if seed is None:
        header = HEADER.format(seeds=", mean over seeds")
    else:
        header = HEADER.format(seeds=f" (seed {seed})") + f" {all_seeds_row}, all seeds |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for task, rows in results.items():
        clean = rows["clean"]
        for attack in ("neuba", "por", "badpre"):
            if attack not in rows:
                continue
            triggers = triggers_by_model[attack]
            floor_runs = runs_on(clean, seed)
            floor = mean(masr(run, triggers) for run in floor_runs)
            cells = [cell(runs_on(rows[attack + suffix], seed), triggers, floor) for suffix in DEFENSES]
            if seed is not None:
                floor_all = mean(masr(run, triggers) for run in clean["runs"])
                cells.append(cell(rows[f"{attack}+{all_seeds_row}"]["runs"], triggers, floor_all, show_count=True))
            clean_acc = mean(run["acc"] for run in floor_runs)
            print(f"| {task} | {attack} | {clean_acc:.1f} | " + " | ".join(cells) + " |")


def _seed(text: str) -> int | None:
    return None if text == "all" else int(text)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3, 4):
        sys.exit(__doc__.strip().splitlines()[2])
    main(sys.argv[1], _seed(sys.argv[2]) if len(sys.argv) > 2 else 1, sys.argv[3] if len(sys.argv) > 3 else "recipe")
