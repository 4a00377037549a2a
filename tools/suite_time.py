"""A suite's compute time summed from its cached pieces, for a run spread over several sessions.

usage: python tools/suite_time.py results/SUITE.json [CACHE]   (a report from `ptmdetox bench`, complete or
       --cached-only; CACHE defaults to runs/cache)
Adds the recorded time of each model the suite builds (attack.json / purification.json: the wall time of the run that
made it, or the summed training time of a resumed run when that is larger) and the fine-tuning and test time of each
evaluation in the report; process start-up and model loading between them are not counted.
"""

from __future__ import annotations

import json
import os
import sys

from ptmdetox.bench import built_folder


def _build_seconds(folder: str) -> float:
    for name in ("attack.json", "purification.json"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
            # train_seconds adds up the training loop across resumed runs; wall_seconds covers the last run only, but
            # with what comes before the loop (RECIPE's head warm-up and row scan): the larger is the closer figure
            return max(float(record.get("train_seconds") or 0.0), float(record.get("wall_seconds") or 0.0))
    return 0.0


def main(report_path: str, cache: str = "runs/cache") -> None:
    with open(report_path, encoding="utf-8") as f:
        report = json.load(f)
    suite = report["config"]
    folders = {model: built_folder(suite, model, cache) for model in suite["models"]}
    builds = []
    for model, folder in folders.items():
        if folder and os.path.isdir(folder):
            builds.append(_build_seconds(folder))
            print(f"{model}: {builds[-1]:.0f} s ({folder})")
    missing = sum(1 for f in folders.values() if f and not os.path.isdir(f))
    runs = [run for rows in report["results"].values() for summary in rows.values() for run in summary["runs"]]
    evals = sum(run.get("finetune_seconds", 0.0) + run.get("eval_seconds", 0.0) for run in runs)
    print(f"models built: {len(builds)} ({missing} not in the cache), {sum(builds) / 60:.1f} min; "
          f"evaluations: {len(runs)}, {evals / 60:.1f} min; total {(sum(builds) + evals) / 60:.1f} min")


if __name__ == "__main__":
    main(*sys.argv[1:])
