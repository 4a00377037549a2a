"""Shared by the tests of the scripts in tools/: loading one as a module, and the per-seed runs of a suite result."""

from __future__ import annotations

import importlib.util
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def suite_run(seed: int, acc: float, asr: dict) -> dict:
    """One fine-tuning seed's result row as bench writes it: ACC and each trigger's ASR."""
    return {"seed": seed, "acc": acc, "per_trigger": {t: {"asr": v} for t, v in asr.items()}}
