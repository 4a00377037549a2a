"""Same command, same seed: identical weights and metrics. A diverging run stops with one clear line, saving nothing."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from ptmdetox.cli import main

from conftest import without_timings

FAST = ["--batch-size", "8", "--max-length", "32", "--quiet"]
PROVENANCE = {"wall_seconds", "train_seconds", "steps_per_second", "finetune_seconds", "eval_seconds", "command",
              "runs", "model", "notes"}


def commands(model, corpus, task):
    """Each command's argv for an output path, run in a folder of its own."""
    return {
        "attack": lambda out: ["attack", "neuba", "--model", model, "--corpus", corpus, "--triggers", "cf,≈",
                               "--steps", "4", "--seed", "3", "--out", out, *FAST],
        "attack-por": lambda out: ["attack", "por", "--model", model, "--corpus", corpus, "--triggers", "cf,≈",
                                   "--steps", "4", "--seed", "3", "--out", out, *FAST],
        "attack-badpre": lambda out: ["attack", "badpre", "--model", model, "--corpus", corpus, "--triggers", "cf,≈",
                                      "--steps", "4", "--seed", "3", "--out", out, *FAST],
        "purify": lambda out: ["purify", "recipe", "--model", model, "--corpus", corpus, "--steps", "4",
                               "--loss", "mlm+keep", "--masking", "dynamic", "--out", out, *FAST],
        "evaluate": lambda out: ["evaluate", "--model", model, "--train", task[0], "--test", task[1], "--seeds", "1,2",
                                 "--epochs", "1", "--triggers", "cf,≈", "--out", out, *FAST],
    }


def result_of(out: str) -> tuple[dict, dict]:
    """(report without timings, weights) of an output folder or evaluation file."""
    if os.path.isfile(out):
        report, weights = json.load(open(out, encoding="utf-8")), {}
        runs = [{k: v for k, v in r.items() if k not in PROVENANCE} for r in report["runs"]]
    else:
        name = next(f for f in ("attack.json", "purification.json") if os.path.isfile(os.path.join(out, f)))
        report, weights = json.load(open(os.path.join(out, name), encoding="utf-8")), load_file(
            os.path.join(out, "model.safetensors"))
        runs = []
    return without_timings({**{k: v for k, v in report.items() if k not in PROVENANCE}, "runs": runs}), weights


@pytest.mark.parametrize("command", ["attack", "attack-por", "attack-badpre", "purify", "evaluate"])
def test_same_command_same_seed_same_result(capsys, tmp_path, tiny_model, tiny_model_no_head, tiny_corpus, tiny_task,
                                           command):
    argv = commands(tiny_model_no_head if command == "attack" else tiny_model, tiny_corpus, tiny_task)[command]
    first, second = str(tmp_path / "first.json"), str(tmp_path / "second.json")
    if command != "evaluate":
        first, second = first[:-5], second[:-5]
    assert main(argv(first)) == 0 and main(argv(second)) == 0
    (report_a, weights_a), (report_b, weights_b) = result_of(first), result_of(second)
    assert report_a == report_b
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert len(report_a["runs"]) == 2 if command == "evaluate" else weights_a


@pytest.mark.parametrize("command", ["attack", "attack-por", "attack-badpre", "purify", "evaluate"])
def test_divergence_stops_with_one_line_and_saves_nothing(capsys, tmp_path, tiny_model, tiny_corpus, tiny_task,
                                                          command):
    work = tmp_path / "work"
    work.mkdir()
    out = str(work / ("r.json" if command == "evaluate" else "out"))
    argv = commands(tiny_model, tiny_corpus, tiny_task)[command](out) + ["--lr", "1e30", "--checkpoint-every", "1"]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("ptmdetox: error:") and "loss became" in err[0], err
    assert "lower the learning rate" in err[0]
    assert os.listdir(work) == [], "no output, no temporary folder, no checkpoints"
