"""tools/sweep_table.py: the paper-sweeps tables in docs/results.md (issue 4), rows with different seed counts."""

from __future__ import annotations

import json

import pytest
from tool_cases import load_tool, suite_run as _run


def _tool():
    return load_tool("sweep_table")


def _report(tmp_path, floor="clean") -> str:
    rows = {"clean": {"runs": [_run(1, 80.0, {"a": 10.0, "b": 20.0, "z": 90.0}),
                               _run(2, 82.0, {"a": 30.0, "b": 50.0, "z": 90.0})]},
            "lam[lam=0.1]": {"runs": [_run(2, 70.0, {"a": 60.0, "b": 0.0})]},
            "dynamics": {"runs": [_run(1, 79.0, {"a": 25.0, "b": 5.0}), _run(2, 81.0, {"a": 15.0, "b": 45.0})]}}
    report = tmp_path / "suite.json"
    report.write_text(json.dumps({"config": {"floor": floor}, "results": {"sst2": rows},
                                  "triggers_by_model": {"clean": ["a", "b", "z"], "lam[lam=0.1]": ["a", "b"],
                                                        "dynamics": ["a", "b"]}}))
    return str(report)


def test_each_row_against_the_floor_on_the_same_seeds_over_its_own_triggers(tmp_path, capsys):
    _tool().main(_report(tmp_path), seed=1)
    lines = capsys.readouterr().out.strip().splitlines()

    assert lines[2] == "| clean | 80.0 | 90.0 | +0.0 | 2 | 81.0 | 90.0 | +0.0 |"
    # lam has no seed-1 run; on seed 2 its MASR 60 is 10 above the clean model's 50 over a and b (z excluded)
    assert lines[3] == "| lam[lam=0.1] | – | – | – | 1 | 70.0 | 60.0 | +10.0 |"
    # seed 1: 25 against 20; both seeds: mean(25, 45) = 35 against mean(20, 50) = 35
    assert lines[4] == "| dynamics | 79.0 | 25.0 | +5.0 | 2 | 80.0 | 35.0 | +0.0 |"


def test_a_missing_floor_seed_or_task_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="no run on seed 3"):
        _tool().main(_report(tmp_path), seed=3)
    with pytest.raises(SystemExit, match="no task 'hsol'"):
        _tool().main(_report(tmp_path), task="hsol")
    with pytest.raises(SystemExit, match="floor model 'none' has no result"):
        _tool().main(_report(tmp_path, floor="none"))
