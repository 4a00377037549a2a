"""Per-seed ACC / MASR of every model in one or more result files of the same suite, against the floor model on the
same seeds and triggers (for suite runs split over several `--only` commands).

usage: python tools/seed_table.py results/a/SUITE.json [results/b/SUITE.json ...]
A later file's run of a model on a seed replaces an earlier one's. Each model's MASR is over its own triggers; ΔACC
and ΔMASR compare it with the floor (the suite's `floor`, default clean) on the seeds both hold.
"""

from __future__ import annotations

import json
import sys
from statistics import fmean as mean

from ptmdetox.bench import restrict

HEADER = "| task | model | seeds | ACC | ΔACC | MASR | ΔMASR | per seed: ACC / MASR (floor MASR) |"


def merged_runs(paths: list[str]) -> tuple[dict, dict, str]:
    """{task: {model: {seed: run}}}, each model's triggers, and the floor model's name."""
    runs, triggers, floor = {}, {}, "clean"
    for path in paths:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
        floor = (report.get("config") or {}).get("floor") or floor
        triggers.update(report["triggers_by_model"])
        for task, rows in report["results"].items():
            for model, row in rows.items():
                for run in row["runs"]:
                    runs.setdefault(task, {}).setdefault(model, {})[run["seed"]] = run
    return runs, triggers, floor


def row(task: str, model: str, own: dict, floor: dict, triggers) -> str:
    seeds = sorted(s for s in own if s in floor)
    if not seeds:
        return f"| {task} | {model} | {', '.join(map(str, sorted(own)))} | no floor run on these seeds |||||"
    masr = {s: restrict(own[s], triggers)["masr"] for s in seeds}
    floor_masr = {s: restrict(floor[s], triggers)["masr"] for s in seeds}
    acc = mean(own[s]["acc"] for s in seeds)
    d_acc = acc - mean(floor[s]["acc"] for s in seeds)
    d_masr = mean(masr.values()) - mean(floor_masr.values())
    per_seed = ", ".join(f"{own[s]['acc']:.1f} / {masr[s]:.1f} ({floor_masr[s]:.1f})" for s in seeds)
    return (f"| {task} | {model} | {', '.join(map(str, seeds))} | {acc:.1f} | {d_acc:+.1f} | {mean(masr.values()):.1f} "
            f"| {d_masr:+.1f} | {per_seed} |")


def main(paths: list[str]) -> None:
    runs, triggers, floor_name = merged_runs(paths)
    print(HEADER)
    print("|---" * (HEADER.count("|") - 1) + "|")
    for task, rows in runs.items():
        if floor_name not in rows:
            raise SystemExit(f"task {task}: no '{floor_name}' rows in these files (add it to --only)")
        for model, own in rows.items():
            if model != floor_name:
                print(row(task, model, own, rows[floor_name], triggers[model]))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__.strip().splitlines()[2])
    main(sys.argv[1:])
