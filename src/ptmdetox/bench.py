"""`ptmdetox bench SUITE`: a YAML suite of models (attacks, defenses) × tasks × seeds, cached and resumable.

Every intermediate model is cached under `runs/cache/<hash of its config chain>`; every (model, task, seed)
evaluation under `runs/cache/eval-<hash>.json`. An interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import yaml
from tqdm.auto import tqdm

from . import attacks, models, pipeline
from .data.readers import read_task
from .data.triggers import InsertionPolicy, parse_triggers
from .defenses.recipe import preset
from .errors import PtmdetoxError
from .evaluation.finetune import FinetuneConfig, evaluate_seed, _subsample
from .evaluation.metrics import aggregate
from .outputs import versions, write_json_atomic, write_text_atomic
from .reporting.tables import results_table

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench")


def suite_path(name: str) -> str:
    if os.path.isfile(name):
        return name
    candidate = os.path.join(BENCH_DIR, f"{name}.yaml")
    if os.path.isfile(candidate):
        return candidate
    known = sorted(f[:-5] for f in os.listdir(BENCH_DIR) if f.endswith(".yaml")) if os.path.isdir(BENCH_DIR) else []
    raise PtmdetoxError(f"unknown suite '{name}' (known: {', '.join(known) or 'none'}; or give a YAML path)")


def load_suite(name: str, quick: bool = False) -> dict:
    path = suite_path(name)
    try:
        with open(path, encoding="utf-8") as f:
            suite = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise PtmdetoxError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(suite, dict) or "models" not in suite or "tasks" not in suite:
        raise PtmdetoxError(f"{path}: a suite needs 'models' and 'tasks'")
    if quick:
        suite = _merge(suite, suite.get("quick", {}))
    suite["_path"] = path
    return suite


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _chain(suite: dict, name: str, seen=()) -> list[dict]:
    """The list of steps (attack/defense configs) that produce model `name`, root first."""
    if name in seen:
        raise PtmdetoxError(f"suite models form a cycle at '{name}'")
    spec = suite["models"].get(name)
    if spec is None:
        raise PtmdetoxError(f"suite model '{name}' is not defined")
    spec = spec or {}
    parent = spec.get("from")
    steps = _chain(suite, parent, (*seen, name)) if parent else [{"base": suite.get("model", "default")}]
    for kind in ("attack", "defense"):
        if kind in spec:
            steps = steps + [{kind: spec[kind], "aux": spec.get("aux", suite.get("aux"))}]
    return steps


def _resolved(step: dict) -> dict:
    """A step with every default filled in, so a changed default never reuses a stale cached model."""
    if "base" in step:
        return step
    method, config, limit = _config(step)
    return {"method": method, "config": config.to_dict(), "corpus_limit": limit, "aux": step["aux"]}


def _config(step: dict):
    kind = "attack" if "attack" in step else "defense"
    cfg = dict(step[kind])
    method = cfg.pop("method", "neuba" if kind == "attack" else "recipe")
    limit = cfg.pop("corpus_limit", None)
    if kind == "attack":
        return method, attacks.make_config(method, cfg), limit
    if method != "recipe":
        raise PtmdetoxError(f"unknown defense '{method}' in suite")
    for key in ("regularised", "trainable"):
        if isinstance(cfg.get(key), list):
            cfg[key] = tuple(cfg[key])
    return method, preset(cfg.pop("preset", "cpu"), **cfg), limit


def _build(step: dict, source: str, out: str, progress: bool) -> None:
    method, config, limit = _config(step)
    if "attack" in step:
        pipeline.attack(method, source, step["aux"], out, config, corpus_limit=limit, progress=progress)
    else:
        pipeline.purify_recipe(source, step["aux"], out, config, corpus_limit=limit, progress=progress)


def model_path(suite: dict, name: str, cache: str, progress: bool, timings: dict) -> str:
    """Build (or reuse) every step of model `name`; returns its folder."""
    steps = _chain(suite, name)
    source = steps[0]["base"]
    for i, step in enumerate(steps[1:], 1):
        out = os.path.join(cache, "model-" + _hash([_resolved(s) for s in steps[: i + 1]]))
        if not os.path.isdir(out):
            started = time.perf_counter()
            _build(step, source, out, progress)
            timings[f"build {name} step {i}"] = time.perf_counter() - started
        source = out
    return source


def run_suite(name: str, quick: bool = False, cache: str = "runs/cache", results: str = "results",
              progress: bool = True, cached_only: bool = False) -> dict:
    suite = load_suite(name, quick)
    suite_name = os.path.splitext(os.path.basename(suite["_path"]))[0] + ("-quick" if quick else "")
    os.makedirs(cache, exist_ok=True)
    os.makedirs(results, exist_ok=True)
    started = time.perf_counter()
    triggers = parse_triggers(suite.get("triggers", "neuba"))
    policy = InsertionPolicy(**suite.get("policy", {}))
    ft = FinetuneConfig(**suite.get("finetune", {}))
    seeds = list(suite.get("seeds", [1, 2, 3]))
    timings: dict = {}
    # seed-major: an interrupted run already holds every model under the first seeds
    jobs = [(m, t, s) for t in suite["tasks"] for s in seeds for m in suite["models"]]
    per_run: dict = {}
    loaded_tasks: dict = {}
    done = 0
    for model, task, seed in tqdm(jobs, desc=f"bench {suite_name}", disable=not progress):
        paths = suite["tasks"][task]
        key = _hash([[_resolved(s) for s in _chain(suite, model)], paths, list(triggers), policy.to_dict(), ft.to_dict(), seed])
        cached = os.path.join(cache, f"eval-{key}.json")
        if os.path.isfile(cached):
            with open(cached, encoding="utf-8") as f:
                run = json.load(f)
        elif cached_only:
            continue
        else:
            folder = model_path(suite, model, cache, progress, timings)
            if task not in loaded_tasks:   # read each task once, not once per (model, seed)
                train, test = read_task(paths["train"], paths["test"])
                loaded_tasks[task] = (train, _subsample(test, ft.test_limit, 12345))
            train, test = loaded_tasks[task]
            run = evaluate_seed(lambda: models.create(folder), train, test, triggers, policy, ft, seed, progress=False)
            write_json_atomic(cached, run)
        per_run.setdefault((task, model), []).append(run)
        done += 1
    report = {"suite": suite_name, "config": {k: v for k, v in suite.items() if k != "_path"},
              "triggers": list(triggers), "insertion_policy": policy.to_dict(), "seeds": seeds,
              "versions": versions(), "timings_this_run": timings,
              "wall_seconds_this_run": round(time.perf_counter() - started, 1), "evaluations_done": done,
              "evaluations_total": len(jobs), "results": {}}
    tables = []
    floor = suite.get("floor")
    for task in suite["tasks"]:
        rows = []
        for model in suite["models"]:
            if (task, model) not in per_run:
                continue
            summary = aggregate(per_run[(task, model)])
            summary["runs"] = per_run[(task, model)]
            report["results"].setdefault(task, {})[model] = summary
            rows.append((model, summary))
        tables.append(f"### {task}\n\n{results_table(rows, floor)}\n")
    markdown = (f"# Suite {suite_name}\n\nTriggers {' '.join(triggers)}; policy {policy.to_dict()}; "
                f"fine-tuning {ft.to_dict()}; seeds {seeds}; {done} of {len(jobs)} evaluations.\n\n"
                + "\n".join(tables))
    write_json_atomic(os.path.join(results, f"{suite_name}.json"), report)
    write_text_atomic(os.path.join(results, f"{suite_name}.md"), markdown)
    print(markdown)
    return report
