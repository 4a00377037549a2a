"""One line per task × attack: ACC / ΔMASR of each defense, on one fine-tuning seed and (for one row) on all seeds.

usage: python tools/defense_table.py results/SUITE.json [SEED] [ALL_SEEDS_ROW]   (SEED defaults to 1,
       ALL_SEEDS_ROW to recipe)
For a suite run that has every cell on one seed but only some cells on every seed: compares the defenses on the seed
they share, against the clean model's MASR on the same seed and triggers, and adds the all-seed mean of one row.
Expects `paper-text`'s row names: ATTACK, ATTACK+fp, ATTACK+fp-gm, ATTACK+fp-ga, ATTACK+recipe.
"""

from __future__ import annotations

import json
import sys
from statistics import fmean as mean

from ptmdetox.bench import restrict

DEFENSES = ("", "+fp", "+fp-gm", "+fp-ga", "+recipe")


def masr(run: dict, triggers) -> float:
    return restrict(run, triggers)["masr"]


def on_seed(row: dict, seed: int) -> dict:
    return next(run for run in row["runs"] if run["seed"] == seed)


def main(path: str, seed: int = 1, all_seeds_row: str = "recipe") -> None:
    report = json.load(open(path))
    results, triggers_by_model = report["results"], report["triggers_by_model"]
    print(f"| task | attack | clean ACC (seed {seed}) | no defense | FP | FP-GM | FP-GA | RECIPE | "
          f"{all_seeds_row}, all seeds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for task, rows in results.items():
        clean = rows["clean"]
        for attack in ("neuba", "por", "badpre"):
            if attack not in rows:
                continue
            triggers = triggers_by_model[attack]
            floor = masr(on_seed(clean, seed), triggers)
            cells = []
            for suffix in DEFENSES:
                run = on_seed(rows[attack + suffix], seed)
                cells.append(f"{run['acc']:.1f} / {masr(run, triggers) - floor:+.1f}")
            every = rows[f"{attack}+{all_seeds_row}"]["runs"]
            floor_all = mean(masr(run, triggers) for run in clean["runs"])
            cells.append(f"{mean(r['acc'] for r in every):.1f} / "
                         f"{mean(masr(r, triggers) for r in every) - floor_all:+.1f} ({len(every)} seeds)")
            print(f"| {task} | {attack} | {on_seed(clean, seed)['acc']:.1f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3, 4):
        sys.exit(__doc__.strip().splitlines()[2])
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1, sys.argv[3] if len(sys.argv) > 3 else "recipe")
