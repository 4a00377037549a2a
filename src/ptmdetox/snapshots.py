"""Snapshots of a model taken along one training run (RECIPE Figure 3: ACC and MASR after each purification epoch).

A `SnapshotSaver` is a `train_loop` `on_step` hook: after the requested optimiser steps it saves the adapter's model
(`adapter.save`, a loadable checkpoint) to `<folder>/step-<n>/`, atomically. It only reads the weights, so a run
with snapshots ends with the same weights as one without. Under an active checkpointer the folder lives in the
checkpoint folder, so a resumed run still has the snapshots taken before the kill; the output then gets a copy as
`<out>/snapshots/step-<n>/`.
"""

from __future__ import annotations

import os
import shutil
import time

from . import checkpointing
from .errors import PtmdetoxError
from .models.base import ModelAdapter
from .outputs import atomic_dir, write_json_atomic

SUBFOLDER = "snapshots"
INFO_FILE = "snapshot.json"


def folder_name(step: int) -> str:
    return f"step-{step}"


def check_steps(steps) -> tuple[int, ...]:
    """Snapshot steps as a sorted tuple of distinct positive integers."""
    if isinstance(steps, (int, str)) or not all(isinstance(s, int) and not isinstance(s, bool) for s in steps):
        raise PtmdetoxError(f"snapshot steps must be a list of whole numbers, got {steps!r}")
    if any(s < 1 for s in steps):
        raise PtmdetoxError(f"snapshot steps must be at least 1, got {list(steps)}")
    return tuple(sorted(set(steps)))


def default_folder() -> str:
    """Where a run keeps its snapshots: in the active checkpoint folder (so that --resume finds them)."""
    checkpointer = checkpointing.active()
    if checkpointer is None:
        raise PtmdetoxError("snapshots need a folder: pass snapshot_dir (or run under a checkpointer)")
    return checkpointer.folder(SUBFOLDER)


class SnapshotSaver:
    """`saver(step)` after optimiser step `step` (0-based) saves the model when `step + 1` is a snapshot step."""

    def __init__(self, adapter: ModelAdapter, steps: tuple[int, ...], total_steps: int, folder: str | None = None):
        """`folder` None: `default_folder()`. Checks the steps first, so a refused run leaves no folder behind."""
        late = [s for s in steps if s >= total_steps]
        if late:
            raise PtmdetoxError(f"snapshot steps {late} are not before the run's last step ({total_steps}); the "
                                "final model is the output itself")
        self.adapter, self.steps, self.total_steps = adapter, set(steps), total_steps
        self.folder = folder or default_folder()
        self.seconds = 0.0

    def path(self, step: int) -> str:
        return os.path.join(self.folder, folder_name(step))

    def __call__(self, step: int) -> None:
        if step + 1 in self.steps:
            started = time.perf_counter()
            self.save(step + 1)
            self.seconds += time.perf_counter() - started

    def save(self, step: int) -> None:
        os.makedirs(self.folder, exist_ok=True)
        with atomic_dir(self.path(step), overwrite=True) as tmp:   # a resumed run may take it again, identically
            self.adapter.save(tmp)
            write_json_atomic(os.path.join(tmp, INFO_FILE), {"step": step, "of_steps": self.total_steps})

    def record(self) -> list[dict]:
        """[{step, path}] of every snapshot, once the run is over; refuses a missing one."""
        missing = [s for s in sorted(self.steps) if not os.path.isdir(self.path(s))]
        if missing:
            raise PtmdetoxError(f"{self.folder}: the snapshots of steps {missing} are missing (removed after an "
                                "interrupted run?); remove the checkpoint folder to start over")
        return [{"step": s, "path": self.path(s)} for s in sorted(self.steps)]


def copy_into_output(report: dict, tmp: str, out: str) -> None:
    """Copy the report's snapshots into the output being written (`tmp`, renamed to `out`); the report then
    names them under `out`. Copied, not moved: until the output is in place, a resumed run still needs them."""
    if not report.get("snapshots"):
        return
    os.makedirs(os.path.join(tmp, SUBFOLDER))
    for snapshot in report["snapshots"]:
        name = os.path.join(SUBFOLDER, folder_name(snapshot["step"]))
        shutil.copytree(snapshot["path"], os.path.join(tmp, name))
        snapshot["path"] = os.path.join(out, name)


def in_output(out: str, step: int) -> str:
    """The folder of the snapshot of `step` in a finished output."""
    return os.path.join(out, SUBFOLDER, folder_name(step))
