"""Every model of a suite result on one fine-tuning seed, against the clean model's MASR on that seed, next to the
mean over the seeds each model holds against the clean model's mean over the same seeds (for a suite run whose rows
have different seed counts, e.g. paper-sweeps).

usage: python tools/sweep_table.py results/SUITE.json [SEED] [TASK]   (SEED defaults to 1, TASK to the first)
ΔMASR compares a model with the floor model (the suite's `floor`, default clean) over the model's own triggers.
"""

from __future__ import annotations

import json
import sys
from statistics import fmean as mean

from ptmdetox.bench import restrict

HEADER = "| model | ACC (seed {seed}) | MASR | ΔMASR | seeds | ACC (mean) | MASR | ΔMASR |"


def _on_seeds(runs: list[dict], seeds) -> list[dict]:
    return [run for run in runs if run["seed"] in seeds]


def _mean_masr(runs: list[dict], triggers) -> float:
    return mean(restrict(run, triggers)["masr"] for run in runs)


def _cells(runs: list[dict], floor_runs: list[dict], triggers) -> list[str]:
    masr = _mean_masr(runs, triggers)
    return [f"{mean(r['acc'] for r in runs):.1f}", f"{masr:.1f}", f"{masr - _mean_masr(floor_runs, triggers):+.1f}"]


def main(path: str, seed: int = 1, task: str | None = None) -> None:
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    results = report["results"]
    task = task or next(iter(results))
    if task not in results:
        raise SystemExit(f"no task '{task}' in {path} (tasks: {', '.join(results)})")
    rows, floor = results[task], (report.get("config") or {}).get("floor") or "clean"
    if floor not in rows:
        raise SystemExit(f"the floor model '{floor}' has no result on {task}")
    floor_on_seed = _on_seeds(rows[floor]["runs"], {seed})
    if not floor_on_seed:
        raise SystemExit(f"the floor model '{floor}' has no run on seed {seed}")
    header = HEADER.format(seed=seed)
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, row in rows.items():
        triggers = report["triggers_by_model"][name]
        on_seed = _on_seeds(row["runs"], {seed})
        seed_cells = _cells(on_seed, floor_on_seed, triggers) if on_seed else ["–"] * 3
        seeds = {run["seed"] for run in row["runs"]}
        all_cells = _cells(row["runs"], _on_seeds(rows[floor]["runs"], seeds), triggers)
        print(f"| {name} | " + " | ".join([*seed_cells, str(len(row["runs"])), *all_cells]) + " |")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3, 4):
        sys.exit(__doc__.strip().splitlines()[3])
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1, sys.argv[3] if len(sys.argv) > 3 else None)
