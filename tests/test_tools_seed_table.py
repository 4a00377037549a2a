"""tools/seed_table.py: per-seed tables from a suite run split over several `--only` commands (issue 3)."""

from __future__ import annotations

import json

import pytest
from tool_cases import load_tool, suite_run as _run


def _tool():
    return load_tool("seed_table")


def _report(tmp_path, name: str, rows: dict, triggers: dict) -> str:
    report = tmp_path / f"{name}.json"
    report.write_text(json.dumps({"config": {"floor": "clean"}, "results": {"sst2": rows},
                                  "triggers_by_model": triggers}))
    return str(report)


def test_files_merge_and_each_row_is_judged_on_the_seeds_it_shares_with_the_floor(tmp_path, capsys):
    first = _report(tmp_path, "first",
                    {"clean": {"runs": [_run(1, 80.0, {"a": 10.0, "z": 90.0}), _run(2, 82.0, {"a": 30.0, "z": 90.0})]},
                     "attack": {"runs": [_run(1, 70.0, {"a": 99.0})]}},
                    {"clean": ["a", "z"], "attack": ["a"]})
    second = _report(tmp_path, "second",
                     {"attack": {"runs": [_run(1, 79.0, {"a": 20.0}), _run(2, 81.0, {"a": 40.0}),
                                          _run(3, 85.0, {"a": 0.0})]},
                      "late": {"runs": [_run(3, 85.0, {"a": 0.0})]}},
                     {"attack": ["a"], "late": ["a"]})
    _tool().main([first, second])
    lines = capsys.readouterr().out.strip().splitlines()

    # seed 1 comes from the later file; seed 3 has no floor run, so it is left out; z is not the attack's trigger
    assert lines[2] == ("| sst2 | attack | 1, 2 | 80.0 | -1.0 | 30.0 | +10.0 "
                        "| 79.0 / 20.0 (10.0), 81.0 / 40.0 (30.0) |")
    # a row without any seed the floor has is listed, not compared
    assert lines[3] == "| sst2 | late | 3 | no floor run on these seeds |||||"
    assert len(lines) == 4


def test_files_without_the_floor_model_are_a_one_line_error(tmp_path):
    only = _report(tmp_path, "only", {"attack": {"runs": [_run(1, 70.0, {"a": 99.0})]}}, {"attack": ["a"]})
    with pytest.raises(SystemExit, match="no 'clean' rows"):
        _tool().main([only])
