"""tools/compare_evals.py: the evaluations two caches share, their results and recorded seconds."""

from __future__ import annotations

import json

import pytest

from tool_cases import load_tool

compare_evals = load_tool("compare_evals")


def write_eval(folder, key, acc, asr, seconds):
    folder.mkdir(exist_ok=True)
    result = {"acc": acc, "aasr": asr, "masr": asr, "seed": 1, "finetune_seconds": seconds, "eval_seconds": 10.0,
              "per_trigger": {"cf": {"asr": asr, "by_label": {"0": asr, "1": 1.0}}}}
    (folder / f"eval-{key}.json").write_text(json.dumps(result), encoding="utf-8")


def test_shared_evaluations_are_compared_and_timed(tmp_path, capsys):
    old, new = tmp_path / "old", tmp_path / "new"
    write_eval(old, "a", 80.0, 20.0, 90.0)
    write_eval(old, "only-old", 50.0, 50.0, 5.0)
    write_eval(new, "a", 80.0, 20.0, 60.0)
    write_eval(old, "b", 70.0, 30.0, 90.0)
    write_eval(new, "b", 70.0, 31.0, 90.0)
    write_eval(new, "only-new", 50.0, 50.0, 5.0)
    compare_evals.main(str(old), str(new))
    out = capsys.readouterr().out
    assert "| eval-a.json | 2 | 80.00 / 80.00 |" in out and "90.0 / 60.0" in out
    assert out.count("identical") == 1 and out.count("differ") == 1
    assert "only" not in out
    assert "recorded seconds: 200 old, 170 new (0.85×)" in out


def test_caches_with_nothing_in_common_are_refused(tmp_path):
    write_eval(tmp_path / "old", "a", 80.0, 20.0, 90.0)
    write_eval(tmp_path / "new", "b", 80.0, 20.0, 90.0)
    with pytest.raises(SystemExit, match="no evaluation"):
        compare_evals.main(str(tmp_path / "old"), str(tmp_path / "new"))
