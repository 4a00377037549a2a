"""The speed benchmark (ptmdetox.speedbench, `ptmdetox bench speed`) on a tiny model."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ptmdetox.cli import main
from ptmdetox.speedbench import _register_cpu_attention_flops, matmul_peak

TINY = ["--steps", "3", "--warmup", "1", "--batch-size", "8", "--max-length", "32", "--quiet"]


def long_corpus(tmp_path) -> str:
    """Sentences of very different lengths, so that padding to 32 costs something."""
    path = tmp_path / "aux.tsv"
    rows = [" ".join(["the", "movie", "was"] + ["good"] * (i % 12)) for i in range(64)]
    path.write_text("sentence\tlabel\n" + "".join(f"{r}\t1\n" for r in rows), encoding="utf-8")
    return str(path)


def run_bench(model, tmp_path, variants: str) -> tuple[dict, dict, str]:
    """(speed.json, its rows by variant, speed.md) of a tiny `bench speed` run."""
    results = tmp_path / "results"
    code = main(["bench", "speed", "--model", model, "--corpus", long_corpus(tmp_path), "--results", str(results),
                 "--variants", variants, *TINY])
    assert code == 0
    report = json.loads((results / "speed.json").read_text())
    return report, {r["variant"]: r for r in report["rows"]}, (results / "speed.md").read_text()


def test_bench_speed_runs_both_modes_and_writes_json_and_markdown(tiny_model, tmp_path, capsys):
    report, rows, markdown = run_bench(tiny_model, tmp_path, "reference,fast")
    assert set(rows) == {"reference", "fast"}
    reference, fast = rows["reference"], rows["fast"]
    for row in (reference, fast):
        assert row["timed_steps"] == 3 and row["steps_per_second"] > 0
        assert row["padded_tokens_per_second"] >= row["real_tokens_per_second"] > 0
    # the reference pads to 32 and projects every position: more padding, more FLOPs for the same sentences
    assert reference["padding_fraction"] > fast["padding_fraction"]
    assert reference["gflop_per_step"] > 2 * fast["gflop_per_step"] > 0
    assert reference["compute"]["pad_to"] == 32 and fast["compute"]["pad_to"] is None
    assert reference["speedup_vs_reference"] == 1.0
    assert report["matmul_peak"]["fp32_gflops"] == max(report["matmul_peak_readings"]["fp32"]) > 0
    assert len(report["matmul_peak_readings"]["fp32"]) == 2          # before and after the timed runs
    assert fast["fraction_of_fp32_peak"] == pytest.approx(fast["gflops"] / report["matmul_peak"]["fp32_gflops"])
    assert report["torch_threads"] == torch.get_num_threads()
    assert {"torch", "transformers"} <= set(report["versions"])
    assert "| reference |" in markdown and "| fast |" in markdown


def test_the_as_installed_reference_runs_in_a_child_without_our_settings(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "0")          # as the ptmdetox command sets for itself
    report, rows, markdown = run_bench(tiny_model, tmp_path, "reference,reference+as-installed,fast")
    installed, reference, fast = rows["reference+as-installed"], rows["reference"], rows["fast"]
    assert installed["process"]["as_installed"] and "MALLOC_MMAP_MAX_" not in installed["process"]["env"]
    assert report["env"]["MALLOC_MMAP_MAX_"] == "0" and "process" not in reference
    assert installed["compute"] == reference["compute"] and installed["timed_steps"] == 3
    assert installed["gflop_per_step"] == reference["gflop_per_step"]          # same mode, same counted work
    # speed-ups count real tokens, as issue 5's bar does
    for key, base in (("speedup_vs_reference", reference), ("speedup_vs_installed_reference", installed)):
        assert fast[key] == pytest.approx(fast["real_tokens_per_second"] / base["real_tokens_per_second"])
    assert installed["speedup_vs_installed_reference"] == 1.0
    assert "| vs reference as installed |" in markdown and "| reference+as-installed |" in markdown


def test_the_as_installed_reference_is_not_a_quality_variant(tiny_model, tmp_path, capsys):
    code = main(["bench", "speed", "--model", tiny_model, "--corpus", long_corpus(tmp_path), "--variants", "fast",
                 "--results", str(tmp_path / "r"), *TINY, "--quality", tiny_model,
                 "--quality-variants", "reference+as-installed,fast"])
    assert code != 0
    assert "unknown quality variant(s) reference+as-installed" in capsys.readouterr().err


def test_bench_speed_quality_purifies_in_both_modes_and_evaluates(tiny_model, tiny_task, tmp_path):
    results = tmp_path / "results"
    code = main(["bench", "speed", "--model", tiny_model, "--corpus", long_corpus(tmp_path), "--results", str(results),
                 "--variants", "fast", "--no-flops", *TINY, "--quality", tiny_model, "--quality-steps", "2",
                 "--quality-triggers", "cf,mn", "--task", os.path.dirname(tiny_task[0]), "--epochs", "1",
                 "--workdir", str(tmp_path / "work")])
    assert code == 0
    quality = json.loads((results / "speed.json").read_text())["quality"]
    assert set(quality["modes"]) == {"reference", "fast"}
    assert quality["triggers"] == ["cf", "mn"] and quality["insertion_policy"]["position"] == "first"
    for mode, row in quality["modes"].items():
        assert 0 <= row["acc"] <= 100 and 0 <= row["masr"] <= 100   # percentages
        assert os.path.isdir(row["purified_model"])
        report = json.loads(open(os.path.join(row["purified_model"], "purification.json")).read())
        assert report["compute"]["mode"] == mode and report["steps"] == 2


def test_cpu_attention_kernel_is_counted():
    _register_cpu_attention_flops()
    b, h, t, d = 2, 3, 16, 8
    q, k, v = (torch.randn(b, h, t, d) for _ in range(3))
    with FlopCounterMode(display=False) as counter:
        F.scaled_dot_product_attention(q, k, v)
    assert counter.get_total_flops() == 2 * (2 * b * h * t * t * d)   # Q·Kᵀ and A·V


def test_matmul_peak_is_a_positive_rate():
    assert matmul_peak(128, repeats=2) > 0
