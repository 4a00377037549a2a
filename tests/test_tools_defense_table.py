"""tools/defense_table.py: the seed-1 comparison of defenses in docs/results.md (issue 4)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "defense_table.py"


def _tool():
    spec = importlib.util.spec_from_file_location("defense_table", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(seed: int, acc: float, asr: dict) -> dict:
    return {"seed": seed, "acc": acc, "per_trigger": {t: {"asr": v} for t, v in asr.items()}}


def test_rows_compare_each_defense_on_one_seed_against_that_seeds_floor(tmp_path, capsys):
    rows = {"clean": {"runs": [_run(1, 80.0, {"a": 10.0, "b": 20.0, "z": 90.0}),
                               _run(2, 82.0, {"a": 30.0, "b": 10.0, "z": 90.0})]}}
    for suffix, asr in (("", 100.0), ("+fp", 90.0), ("+fp-gm", 50.0), ("+fp-ga", 40.0)):
        rows["por" + suffix] = {"runs": [_run(1, 70.0, {"a": asr, "b": 0.0}), _run(2, 0.0, {"a": 0.0, "b": 0.0})]}
    rows["por+recipe"] = {"runs": [_run(1, 79.0, {"a": 25.0, "b": 5.0}), _run(2, 81.0, {"a": 15.0, "b": 45.0})]}
    report = tmp_path / "suite.json"
    report.write_text(json.dumps({"results": {"sst2": rows}, "triggers_by_model": {"por": ["a", "b"]}}))

    _tool().main(str(report), seed=1)
    line = capsys.readouterr().out.strip().splitlines()[-1]

    # seed-1 floor over the attack's own triggers is 20 (z is another attack's trigger); the all-seed floor is 25
    assert line == ("| sst2 | por | 80.0 | 70.0 / +80.0 | 70.0 / +70.0 | 70.0 / +30.0 | 70.0 / +20.0 | 79.0 / +5.0 | "
                    "80.0 / +10.0 (2 seeds) |")
