"""`ptmdetox bench speed`: RECIPE purification speed, reference (released-code layout) against fast, side by side.

For each variant the same model purifies the same auxiliary sentences with the same seed. The first `warmup` steps
(compilation, allocator warm-up) are timed separately; the `steps` after them give steps/s and tokens/s. Speed-ups
are ratios of real (non-padding) tokens/s. `reference+as-installed` times the reference in a child process without
the settings the ptmdetox command gives itself (malloc, MKL shim, thread count), as the released code runs.

FLOPs are counted, not estimated from a formula: a second, untimed run of each mode replays the same batches (same
seed) under `torch.utils.flop_counter.FlopCounterMode`, which counts every matrix product of the forward and of the
autograd backward as executed (padding and vocabulary projections included; weights that do not train get no weight
gradient, so no FLOPs for it). The machine's peak is a large fp32 `torch.matmul` timed in the same process with the
same thread count, before and after the timed runs (the better reading counts: this rate drifts between runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import torch
from torch.utils import flop_counter

from . import fastpath, models, pipeline
from .data.readers import read_corpus
from .defenses.recipe import preset, recipe_purify
from .errors import PtmdetoxError
from .evaluation.finetune import FinetuneConfig
from .data.triggers import InsertionPolicy, parse_triggers
from .outputs import check_writable_parent, versions, write_json_atomic, write_text_atomic

DEFAULT_CORPUS = "../shared/data/bookcorpus_recipe/train.tsv"
DEFAULT_TASK = "../shared/data/sst2"
#: variant name -> RecipeConfig speed fields
VARIANTS = {
    "reference": {"mode": "reference"},
    "fast": {"mode": "fast"},
    "fast+bf16": {"mode": "fast", "bf16": True},
    "fast+compile": {"mode": "fast", "compile": True},
    "fast+torch-dropout": {"mode": "fast", "dropout_rng": "torch"},   # fast mode with torch's dropout masks
    # reference mode as the released code runs: in a child process without the settings the ptmdetox command gives
    # itself (glibc malloc, the opt-in MKL shim, its thread count; `ptmdetox.fastpath`)
    "reference+as-installed": {"mode": "reference"},
}
AS_INSTALLED = "reference+as-installed"


@dataclass
class SpeedConfig:
    model: str = "default"
    corpus: str = DEFAULT_CORPUS
    corpus_limit: int | None = 4000
    variants: tuple[str, ...] = ("reference", "fast", "fast+bf16")
    steps: int = 100                 # timed steps per variant
    warmup: int = 20                 # untimed first steps (compilation, allocator, bf16 kernels for new shapes)
    scope: str = "paper"             # the released code's regularised = trainable set
    batch_size: int = 32
    max_length: int = 64
    lr: float = 2e-4
    seed: int = 50
    peak_size: int = 2048
    count_flops: bool = True

    def __post_init__(self):
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise PtmdetoxError(f"unknown speed variant(s) {', '.join(unknown) or '(none given)'} "
                                f"(choose from {', '.join(VARIANTS)})")
        if self.steps < 1 or self.warmup < 1:
            raise PtmdetoxError("the speed bench needs at least 1 warm-up step and 1 timed step")

    def recipe_config(self, variant: str, steps: int | None = None):
        # a 1-step head warm-up: the speed of a step does not depend on how good a fresh MLM head is
        # MLM alone, as the released code: both modes run the paper's loop; the rows of tokens rare in the corpus, as
        # when this bench was first measured (the row scan runs before the loop and is not what this bench times)
        return preset("cpu", steps=steps or self.warmup + self.steps, scope=self.scope, pretrain_loss="mlm",
                      embedding_rows="unseen", batch_size=self.batch_size, max_length=self.max_length, lr=self.lr,
                      seed=self.seed, head_warmup_steps=1, **VARIANTS[variant])


# ---- the machine ----------------------------------------------------------------------------------------------

def matmul_peak(size: int = 2048, dtype=torch.float32, repeats: int = 5) -> float:
    """Best GFLOP/s of a size×size matrix product with the current thread count."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def cpu_description() -> dict:
    info = {"processor": platform.processor(), "logical_cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return info
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            info["model"] = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            info["bf16_flags"] = sorted(f for f in flags if "bf16" in f or f.startswith("amx"))
            info["avx512f"] = "avx512f" in flags
            break
    return info


def threads_and_environment() -> dict:
    keys = ("PTMDETOX_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "PTMDETOX_FAST_MKL", "MALLOC_MMAP_MAX_",
            "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")
    return {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "env": {k: os.environ[k] for k in keys if k in os.environ}}


# ---- one variant --------------------------------------------------------------------------------------------

class StepRecorder:
    """Times every optimiser step and counts the tokens the encoder sees (real, and padded width × batch)."""

    def __init__(self, adapter):
        self.adapter = adapter
        self.encode = adapter.encode
        self.loop_start: float | None = None
        self.step_ends: list[float] = []
        self.real = self.padded = 0
        self.tokens_at_step: list[tuple[int, int]] = []
        adapter.encode = self._counting_encode   # instance attribute: instrumentation for this bench only

    def _counting_encode(self, batch):
        if self.loop_start is None and torch.is_grad_enabled():
            self.loop_start = time.perf_counter()
        mask = batch["attention_mask"]
        self.real += int(mask.sum())
        self.padded += mask.numel()
        return self.encode(batch)

    def on_step(self, _step: int) -> None:
        self.step_ends.append(time.perf_counter())
        self.tokens_at_step.append((self.real, self.padded))

    def close(self) -> None:
        del self.adapter.encode


def _prepared_adapter(config: SpeedConfig, texts: list[str]):
    """A fresh copy of the model, its missing MLM head (if any) warmed up outside the timed loop."""
    adapter = models.create(config.model)
    adapter.prepare_pretraining(adapter.tokenize(texts, config.max_length), steps=1, seed=config.seed, progress=False)
    return adapter


def time_variant(config: SpeedConfig, variant: str, texts: list[str]) -> dict:
    adapter = _prepared_adapter(config, texts)
    recorder = StepRecorder(adapter)
    try:
        report = recipe_purify(adapter, texts, config.recipe_config(variant), progress=False, on_step=recorder.on_step)
    finally:
        recorder.close()
    first = recorder.step_ends[config.warmup - 1]
    seconds = recorder.step_ends[-1] - first
    (real0, padded0), (real1, padded1) = recorder.tokens_at_step[config.warmup - 1], recorder.tokens_at_step[-1]
    steady = seconds / config.steps
    return {
        "variant": variant,
        "compute": report["compute"],
        "timed_steps": config.steps,
        "timed_seconds": seconds,
        "steps_per_second": config.steps / seconds,
        "real_tokens_per_second": (real1 - real0) / seconds,
        "padded_tokens_per_second": (padded1 - padded0) / seconds,
        "padding_fraction": 1 - (real1 - real0) / max(1, padded1 - padded0),
        "warmup_steps": config.warmup,
        "warmup_seconds": first - recorder.loop_start,
        "warmup_overhead_seconds": (first - recorder.loop_start) - config.warmup * steady,
        "final_mlm": report["final_parts"].get("mlm"),
        "trainable": report["trainable"],
    }


def time_variant_as_installed(config: SpeedConfig, variant: str) -> dict:
    """`time_variant` of `variant`'s mode in a child process with `fastpath.installed_environment`."""
    with tempfile.TemporaryDirectory() as tmp:
        spec, out = os.path.join(tmp, "config.json"), os.path.join(tmp, "row.json")
        with open(spec, "w", encoding="utf-8") as f:
            json.dump({**asdict(config), "variants": [variant]}, f)
        code = "import sys; from ptmdetox.speedbench import child_main; child_main(*sys.argv[1:])"
        done = subprocess.run([sys.executable, "-c", code, spec, out], capture_output=True, text=True,
                              env=fastpath.installed_environment(dict(os.environ)))
        if done.returncode != 0 or not os.path.isfile(out):
            lines = done.stderr.strip().splitlines() or ["no output"]
            raise PtmdetoxError(f"speed: the {variant} run failed ({lines[-1][:200]})")
        with open(out, encoding="utf-8") as f:
            return json.load(f)


def child_main(spec: str, out: str) -> None:
    with open(spec, encoding="utf-8") as f:
        config = SpeedConfig(**{**json.load(f), "count_flops": False})
    (variant,) = config.variants
    texts = read_corpus(config.corpus, limit=config.corpus_limit).texts
    row = time_variant(config, variant, texts)
    row["process"] = {"as_installed": True, **threads_and_environment()}
    write_json_atomic(out, row)


def _register_cpu_attention_flops() -> None:
    """FlopCounterMode knows the GPU attention kernels; teach it the CPU flash-attention kernel too."""
    forward = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    registry = flop_counter.flop_registry
    if forward is not None and forward not in registry:
        flop_counter.register_flop_formula(forward)(
            lambda q, k, v, *args, out_shape=None, **kw: flop_counter.sdpa_flop_count(q, k, v))
    if backward is not None and backward not in registry:
        flop_counter.register_flop_formula(backward)(
            lambda grad_out, q, k, v, *args, out_shape=None, **kw: flop_counter.sdpa_backward_flop_count(
                grad_out, q, k, v))


def count_flops(config: SpeedConfig, variant: str, texts: list[str]) -> float:
    """Matrix-product FLOPs per timed step, counted on an untimed replay of the same batches (fp32, eager)."""
    _register_cpu_attention_flops()
    mode = VARIANTS[variant]["mode"]
    adapter = _prepared_adapter(config, texts)
    totals: list[int] = []
    with flop_counter.FlopCounterMode(display=False) as counter:
        recipe_purify(adapter, texts, config.recipe_config("reference" if mode == "reference" else "fast"),
                      progress=False, on_step=lambda _s: totals.append(counter.get_total_flops()))
    return (totals[-1] - totals[config.warmup - 1]) / config.steps


# ---- the whole bench ------------------------------------------------------------------------------------------

def run_speed(config: SpeedConfig, results: str = "results", quality: "QualityConfig | None" = None,
              progress: bool = True) -> dict:
    started = time.perf_counter()
    os.makedirs(results, exist_ok=True)
    check_writable_parent(os.path.join(results, "speed.json"))
    texts = read_corpus(config.corpus, limit=config.corpus_limit).texts
    if quality is not None:   # fail before the timing runs, not after
        _task_files(quality.task)
        models.create(quality.model)
    peak_dtypes = {"fp32": torch.float32}
    if any(VARIANTS[v].get("bf16") for v in config.variants):
        peak_dtypes["bf16"] = torch.bfloat16
    readings = {name: [matmul_peak(config.peak_size, dtype)] for name, dtype in peak_dtypes.items()}
    flops_by_mode: dict[str, float] = {}
    rows = []
    for variant in config.variants:
        if progress:
            print(f"speed: {variant} ({config.warmup} + {config.steps} steps)", flush=True)
        row = (time_variant_as_installed(config, variant) if variant == AS_INSTALLED
               else time_variant(config, variant, texts))
        mode = VARIANTS[variant]["mode"]
        if config.count_flops:
            if mode not in flops_by_mode:
                flops_by_mode[mode] = count_flops(config, variant, texts)
            row["gflop_per_step"] = flops_by_mode[mode] / 1e9
            row["gflops"] = row["gflop_per_step"] * row["steps_per_second"]
        rows.append(row)
    for name, dtype in peak_dtypes.items():   # the machine's rate drifts: read the peak again after the timed runs
        readings[name].append(matmul_peak(config.peak_size, dtype))
    peak = {f"{name}_gflops": max(values) for name, values in readings.items()}
    _add_peak_fractions(rows, peak)
    _add_speedups(rows)
    report = {"config": asdict(config), "sentences": len(texts), "rows": rows, "matmul_peak": peak,
              "matmul_peak_readings": readings, "cpu": cpu_description(),
              **threads_and_environment(), "versions": versions(),
              "flop_counting": "torch.utils.flop_counter.FlopCounterMode on an untimed replay of the timed batches: "
                               "matrix products of forward and backward as executed (padding included)"}
    if quality is not None:
        report["quality"] = run_quality(config, quality, progress)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    markdown = speed_markdown(report)
    write_json_atomic(os.path.join(results, "speed.json"), report)
    write_text_atomic(os.path.join(results, "speed.md"), markdown)
    print(markdown)
    return report


def _add_peak_fractions(rows: list[dict], peak: dict) -> None:
    for row in rows:
        if "gflops" in row:
            row["fraction_of_fp32_peak"] = row["gflops"] / peak["fp32_gflops"]
            if VARIANTS[row["variant"]].get("bf16"):
                row["fraction_of_bf16_peak"] = row["gflops"] / peak["bf16_gflops"]


#: speed-up fields and the variant each is relative to; the ratio is of real (non-padding) tokens per second
SPEEDUPS = {"speedup_vs_reference": "reference", "speedup_vs_installed_reference": AS_INSTALLED}


def _add_speedups(rows: list[dict]) -> None:
    for key, base_name in SPEEDUPS.items():
        base = next((r for r in rows if r["variant"] == base_name), None)
        for row in rows if base else []:
            row[key] = row["real_tokens_per_second"] / base["real_tokens_per_second"]


def _mean_spread(row: dict, key: str, seeds) -> str:
    spread = row.get(key + "_std")
    return f"{row[key]:.1f}" + (f" ± {spread:.1f}" if spread is not None and len(seeds) > 1 else "")


SPEEDUP_HEADERS = {"speedup_vs_reference": "real tok/s vs reference",
                   "speedup_vs_installed_reference": "vs reference as installed"}


def _table(rows: list[dict], speedups: list[str]) -> list[str]:
    headers = ["variant", "steps/s", "real tok/s", "padded tok/s", "padding", "GFLOP/step", "GFLOP/s", "% fp32 peak",
               "warm-up overhead s", *(SPEEDUP_HEADERS[k] for k in speedups)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        flops = ([f"{r['gflop_per_step']:.3g}", f"{r['gflops']:.3g}", f"{100 * r['fraction_of_fp32_peak']:.1f}"]
                 if "gflops" in r else ["–"] * 3)
        cells = [r["variant"], f"{r['steps_per_second']:.2f}", f"{r['real_tokens_per_second']:.0f}",
                 f"{r['padded_tokens_per_second']:.0f}", f"{100 * r['padding_fraction']:.0f} %", *flops,
                 f"{r['warmup_overhead_seconds']:.1f}", *(f"{r[k]:.2f}×" for k in speedups)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def speed_markdown(report: dict) -> str:
    peak = report["matmul_peak"]
    speedups = [k for k in SPEEDUPS if all(k in r for r in report["rows"])]
    lines = ["# RECIPE purification speed", "",
             f"Model `{report['config']['model']}`, {report['sentences']} sentences of "
             f"`{report['config']['corpus']}`, batch {report['config']['batch_size']}, max length "
             f"{report['config']['max_length']}, scope `{report['config']['scope']}`; {report['config']['steps']} "
             f"timed steps after {report['config']['warmup']} warm-up steps. torch threads "
             f"{report['torch_threads']}; CPU {report['cpu'].get('model', '?')}; matmul peak "
             + ", ".join(f"{k.split('_')[0]} {v:.0f} GFLOP/s" for k, v in peak.items())
             + " (the better of two readings, before and after the timed runs).", "",
             *_table(report["rows"], speedups)]
    if AS_INSTALLED in {r["variant"] for r in report["rows"]}:
        lines += ["", f"`{AS_INSTALLED}` ran in a child process without the ptmdetox command's own settings "
                      "(malloc, MKL shim, thread count), as the released code runs."]
    if "quality" in report:
        q = report["quality"]
        lines += ["", f"## Quality: {q['steps']} purification steps, then `{q['task']}` (seeds {q['seeds']})", "",
                  "| variant | ACC | AASR | MASR | final MLM | purification s |", "|---|---|---|---|---|---|"]
        for mode, r in q["modes"].items():
            lines.append(f"| {mode} | {_mean_spread(r, 'acc', q['seeds'])} | {r['aasr']:.1f} | "
                         f"{_mean_spread(r, 'masr', q['seeds'])} | "
                         f"{r['final_mlm']:.3f} | {r['purify_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


# ---- quality: the same purification in both modes, then downstream ACC / MASR ------------------------------------

@dataclass
class QualityConfig:
    model: str                          # an attacked checkpoint (e.g. runs/neuba)
    task: str = DEFAULT_TASK
    steps: int = 600
    seeds: tuple[int, ...] = (1,)
    triggers: str = "neuba"
    workdir: str = "runs/speed-quality"
    variants: tuple[str, ...] = ("reference", "fast")
    epochs: float = 3.0
    train_limit: int | None = None
    test_limit: int | None = None
    eval_max_length: int = 128

    def __post_init__(self):
        parse_triggers(self.triggers)      # a bad trigger list fails now, not after two purifications


def _task_files(folder: str) -> tuple[str, str]:
    found = []
    for split in ("train", "test"):
        candidates = [os.path.join(folder, split + ext) for ext in (".tsv", ".tsv.gz", ".csv", ".csv.gz", ".jsonl")]
        existing = [c for c in candidates if os.path.isfile(c)]
        if not existing:
            raise PtmdetoxError(f"{folder}: no {split}.tsv/.csv/.jsonl in the task folder")
        found.append(existing[0])
    return found[0], found[1]


def run_quality(config: SpeedConfig, quality: QualityConfig, progress: bool = True) -> dict:
    train, test = _task_files(quality.task)
    finetune = FinetuneConfig(epochs=quality.epochs, max_length=quality.eval_max_length,
                              train_limit=quality.train_limit, test_limit=quality.test_limit)
    triggers, policy = parse_triggers(quality.triggers), InsertionPolicy("first")
    os.makedirs(quality.workdir, exist_ok=True)
    out = {"model": quality.model, "task": quality.task, "steps": quality.steps, "seeds": list(quality.seeds),
           "triggers": list(triggers), "insertion_policy": policy.to_dict(),
           "finetune_config": finetune.to_dict(), "modes": {}}
    for variant in quality.variants:
        purified = os.path.join(quality.workdir, variant)
        recipe = preset("cpu", steps=quality.steps, scope=config.scope, batch_size=config.batch_size,
                        embedding_rows="unseen", max_length=config.max_length, lr=config.lr, seed=config.seed,
                        **VARIANTS[variant])
        report = pipeline.purify_recipe(quality.model, config.corpus, purified, recipe, corpus_limit=None,
                                        overwrite=True, progress=progress)
        summary = pipeline.evaluate_model(purified, train, test, triggers, policy, finetune,
                                          list(quality.seeds), progress=progress, name=f"recipe-{variant}")
        out["modes"][variant] = {"acc": summary["acc"], "aasr": summary["aasr"], "masr": summary["masr"],
                                 "acc_std": summary["acc_std"], "masr_std": summary["masr_std"],
                                 "final_mlm": report["final_parts"].get("mlm", float("nan")),
                                 "norm_after": report["norm_after"], "purify_seconds": report["train_seconds"],
                                 "purified_model": purified}
    return out


# ---- command line -----------------------------------------------------------------------------------------------

def build_parser(parser_class=argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = parser_class(prog="ptmdetox bench speed", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    d = SpeedConfig()
    p.add_argument("--model", default=d.model)
    p.add_argument("--corpus", default=d.corpus, help="auxiliary sentences (default: RECIPE's BookCorpus sample)")
    p.add_argument("--corpus-limit", type=int, default=d.corpus_limit, help="first N sentences (0: all)")
    p.add_argument("--variants", default=",".join(d.variants), help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--steps", type=int, default=d.steps, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=d.warmup, help="untimed first steps per variant")
    p.add_argument("--scope", default=d.scope, choices=["paper", "extended"],
                   help="regularised (= trainable) set; paper: the released code's")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--max-length", type=int, default=d.max_length)
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP-counting replay")
    p.add_argument("--results", default="results", help="writes speed.json and speed.md here")
    p.add_argument("--quiet", action="store_true")
    q = p.add_argument_group("quality check (long: two purifications and their downstream evaluations)")
    q.add_argument("--quality", metavar="ATTACKED_MODEL",
                   help="purify this attacked model in reference and fast mode, evaluate both")
    q.add_argument("--quality-steps", type=int, default=600)
    q.add_argument("--quality-variants", default="reference,fast",
                   help="e.g. reference,fast,fast+bf16 (does bf16 change ACC/MASR?)")
    q.add_argument("--quality-triggers", default="neuba",
                   help="the attacked model's triggers: a set name or comma-separated (default neuba), each inserted "
                        "as the first word")
    q.add_argument("--task", default=DEFAULT_TASK)
    q.add_argument("--seeds", default="1", help="fine-tuning seeds, e.g. 1,2")
    q.add_argument("--epochs", type=float, default=3.0)
    q.add_argument("--train-limit", type=int)
    q.add_argument("--test-limit", type=int)
    q.add_argument("--workdir", default="runs/speed-quality", help="purified models go here (replaced)")
    return p


def run_from_args(args) -> dict:
    config = SpeedConfig(model=args.model, corpus=args.corpus, corpus_limit=args.corpus_limit or None,
                         variants=tuple(v.strip() for v in args.variants.split(",") if v.strip()), steps=args.steps,
                         warmup=args.warmup, scope=args.scope, batch_size=args.batch_size, max_length=args.max_length,
                         count_flops=not args.no_flops)
    quality = None
    if args.quality:
        try:
            seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
        except ValueError:
            raise PtmdetoxError(f"seeds must be comma-separated integers, got '{args.seeds}'") from None
        variants = tuple(v.strip() for v in args.quality_variants.split(",") if v.strip())
        unknown = [v for v in variants if v not in VARIANTS or v == AS_INSTALLED]
        if unknown or not variants:
            raise PtmdetoxError(f"unknown quality variant(s) {', '.join(unknown) or '(none given)'} "
                                f"(choose from {', '.join(v for v in VARIANTS if v != AS_INSTALLED)})")
        quality = QualityConfig(model=args.quality, task=args.task, steps=args.quality_steps, seeds=seeds,
                                variants=variants, triggers=args.quality_triggers,
                                workdir=args.workdir, epochs=args.epochs, train_limit=args.train_limit,
                                test_limit=args.test_limit)
    return run_speed(config, args.results, quality, progress=not args.quiet)
