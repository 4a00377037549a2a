"""tools/defense_table.py: the seed-1 comparison of defenses in docs/results.md (issue 4)."""

from __future__ import annotations

import json

import pytest
from tool_cases import load_tool, suite_run as _run


def _tool():
    return load_tool("defense_table")


def _report(tmp_path) -> str:
    rows = {"clean": {"runs": [_run(1, 80.0, {"a": 10.0, "b": 20.0, "z": 90.0}),
                               _run(2, 82.0, {"a": 30.0, "b": 10.0, "z": 90.0})]}}
    for suffix, asr in (("", 100.0), ("+fp", 90.0), ("+fp-gm", 50.0), ("+fp-ga", 40.0)):
        rows["por" + suffix] = {"runs": [_run(1, 70.0, {"a": asr, "b": 0.0}), _run(2, 0.0, {"a": 0.0, "b": 0.0})]}
    rows["por+recipe"] = {"runs": [_run(1, 79.0, {"a": 25.0, "b": 5.0}), _run(2, 81.0, {"a": 15.0, "b": 45.0})]}
    report = tmp_path / "suite.json"
    report.write_text(json.dumps({"results": {"sst2": rows}, "triggers_by_model": {"por": ["a", "b"]}}))
    return str(report)


def test_rows_compare_each_defense_on_one_seed_against_that_seeds_floor(tmp_path, capsys):
    _tool().main(_report(tmp_path), seed=1)
    line = capsys.readouterr().out.strip().splitlines()[-1]

    # seed-1 floor over the attack's own triggers is 20 (z is another attack's trigger); the all-seed floor is 25
    assert line == ("| sst2 | por | 80.0 | 70.0 / +80.0 | 70.0 / +70.0 | 70.0 / +30.0 | 70.0 / +20.0 | 79.0 / +5.0 | "
                    "80.0 / +10.0 (2 seeds) |")


def test_all_seeds_averages_every_cell_against_the_mean_floor(tmp_path, capsys):
    _tool().main(_report(tmp_path), seed=None)
    header, _, line = capsys.readouterr().out.strip().splitlines()

    # floor: mean of the clean MASRs over a and b (20, 30) = 25; no extra all-seeds column
    assert header.count("|") == 9
    assert line == "| sst2 | por | 81.0 | 35.0 / +25.0 | 35.0 / +20.0 | 35.0 / +0.0 | 35.0 / -5.0 | 80.0 / +10.0 |"


def test_a_seed_missing_from_a_row_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="no run on seed 3"):
        _tool().main(_report(tmp_path), seed=3)
