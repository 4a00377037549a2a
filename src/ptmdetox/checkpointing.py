"""Periodic checkpoints of training runs, so a killed run can be resumed to the result an unbroken run gives.

A `Checkpointer` owns one folder (by default `.<out>.partial/` next to the output). While it is active
(`with checkpointing(checkpointer):`), every `training.train_loop` saves its phase there every N steps and at
least every few minutes: trainable weights, optimizer, scheduler, global RNG states, loss history and the step,
which with step-indexed data streams (`data.batching.StepBatches`, `step_rng`) is also the data-stream position.
A finished phase keeps a final snapshot, so resuming skips it. Results computed outside a loop (an evaluation
seed) are kept as JSON with `remember`.

Files are written to a temporary name and renamed, so a kill never leaves a torn checkpoint, and read back with
`torch.load(weights_only=True)`: a planted file cannot run code.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import time
from collections import Counter
from typing import Callable

import numpy as np
import torch

from .errors import PtmdetoxError

DEFAULT_EVERY_STEPS = 500
DEFAULT_EVERY_SECONDS = 300.0
RUN_FILE = "run.json"


def fingerprint(settings) -> str:
    """A short hash of everything that determines a run's result."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def partial_dir(out: str) -> str:
    """The default checkpoint folder of an output: a hidden sibling `.<name>.partial`."""
    out = os.path.abspath(out)
    return os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.partial")


def rng_states() -> dict:
    numpy_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]]}


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    kind, keys, *rest = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))


def _atomic_write(path: str, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path))
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Checkpointer:
    """One run's checkpoint folder: created at the first save, checked against the run's fingerprint."""

    def __init__(self, directory: str, run_fingerprint: str, *, resume: bool = False,
                 every_steps: int = DEFAULT_EVERY_STEPS, every_seconds: float = DEFAULT_EVERY_SECONDS):
        if every_steps < 1:
            raise PtmdetoxError(f"checkpoint interval must be at least 1 step, got {every_steps}")
        self.directory = os.path.abspath(directory)
        self.fingerprint = run_fingerprint
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self._phases: Counter = Counter()
        self.resumed: list[str] = []
        self._check_existing(resume)

    def _check_existing(self, resume: bool) -> None:
        if not os.path.lexists(self.directory):
            return
        if not resume:
            raise PtmdetoxError(f"{self.directory}: holds an interrupted run; pass --resume to continue it, "
                                "or remove the folder to start over")
        if not os.path.isdir(self.directory) or os.path.islink(self.directory):
            raise PtmdetoxError(f"{self.directory}: checkpoint path is not a folder")
        try:
            with open(os.path.join(self.directory, RUN_FILE), encoding="utf-8") as f:
                recorded = json.load(f).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if recorded != self.fingerprint and os.listdir(self.directory):
            raise PtmdetoxError(f"{self.directory}: checkpoints of a run with other settings; resume with the "
                                "same options, or remove the folder to start over")

    # -- files -------------------------------------------------------------------------------------------------
    def _ensure_dir(self) -> None:
        if os.path.isdir(self.directory):
            return
        os.makedirs(self.directory)
        _atomic_write(os.path.join(self.directory, RUN_FILE),
                      lambda tmp: open(tmp, "w", encoding="utf-8").write(json.dumps({"fingerprint": self.fingerprint})))

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-"))

    def save_state(self, name: str, state: dict) -> None:
        self._ensure_dir()
        _atomic_write(self._path(name) + ".pt", lambda tmp: torch.save(state, tmp))

    def load_state(self, name: str) -> dict | None:
        path = self._path(name) + ".pt"
        if not os.path.isfile(path):
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise PtmdetoxError(f"{path}: unreadable checkpoint ({type(exc).__name__}); remove "
                                f"{self.directory} to start over") from None

    def save_json(self, name: str, data: dict) -> None:
        self._ensure_dir()
        _atomic_write(self._path(name) + ".json",
                      lambda tmp: open(tmp, "w", encoding="utf-8").write(json.dumps(data, ensure_ascii=False)))

    def load_json(self, name: str) -> dict | None:
        path = self._path(name) + ".json"
        if not os.path.isfile(path):
            return None
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError) as exc:
            raise PtmdetoxError(f"{path}: unreadable checkpoint ({type(exc).__name__}); remove "
                                f"{self.directory} to start over") from None

    def folder(self, name: str) -> str:
        """A subfolder for files a run writes along the way (kept for --resume, removed with the checkpoints)."""
        self._ensure_dir()
        path = self._path(name)
        os.makedirs(path, exist_ok=True)
        return path

    def discard(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- training phases ---------------------------------------------------------------------------------------
    def phase(self, desc: str) -> "Phase":
        """The checkpoint slot of the next `train_loop` called `desc` (numbered when a run repeats a name)."""
        self._phases[desc] += 1
        label = desc + (f" #{self._phases[desc]}" if self._phases[desc] > 1 else "")
        return Phase(self, label)


class Phase:
    """The checkpoints of one `train_loop` call."""

    def __init__(self, checkpointer: Checkpointer, label: str):
        self.checkpointer, self.label, self.name = checkpointer, label, f"phase-{label}"
        self._last_save = time.monotonic()

    def due(self, steps_done: int) -> bool:
        return (steps_done % self.checkpointer.every_steps == 0
                or time.monotonic() - self._last_save >= self.checkpointer.every_seconds)

    def save(self, state: dict) -> None:
        self.checkpointer.save_state(self.name, state)
        self._last_save = time.monotonic()

    def load(self) -> dict | None:
        state = self.checkpointer.load_state(self.name)
        if state is not None:
            self.checkpointer.resumed.append(f"{self.label} at step {state['step']}")
        return state


_ACTIVE: contextvars.ContextVar[Checkpointer | None] = contextvars.ContextVar("ptmdetox_checkpointer", default=None)


def active() -> Checkpointer | None:
    return _ACTIVE.get()


@contextlib.contextmanager
def checkpointing(checkpointer: Checkpointer | None):
    """Make `checkpointer` the one every train_loop inside uses. A divergence discards it (resuming would
    diverge again); any other failure or a kill keeps it for --resume; success leaves it to the caller."""
    from .errors import DivergenceError

    token = _ACTIVE.set(checkpointer)
    try:
        yield checkpointer
    except DivergenceError:
        if checkpointer:
            checkpointer.discard()
        raise
    finally:
        _ACTIVE.reset(token)


def remember(name: str, compute: Callable[[], dict]) -> dict:
    """`compute()` once per run: kept as JSON in the active checkpoint folder and read back on resume.

    Under a checkpointer the result always takes the JSON round trip, so fresh and resumed values have one shape."""
    checkpointer = active()
    if checkpointer is None:
        return compute()
    kept = checkpointer.load_json(name)
    if kept is not None:
        checkpointer.resumed.append(name)
        return kept
    value = json.loads(json.dumps(compute(), ensure_ascii=False))
    checkpointer.save_json(name, value)
    return value


class CheckpointOptions:
    """What the user asked for: where checkpoints go, how often, and whether to resume."""

    def __init__(self, resume: bool = False, directory: str | None = None, every_steps: int = DEFAULT_EVERY_STEPS,
                 every_seconds: float = DEFAULT_EVERY_SECONDS):
        if every_steps < 1:
            raise PtmdetoxError(f"checkpoint interval must be at least 1 step, got {every_steps}")
        self.resume, self.directory = resume, directory
        self.every_steps, self.every_seconds = every_steps, every_seconds

    def checkpointer(self, out: str | None, settings) -> Checkpointer | None:
        """The run's checkpointer: `directory`, else `.<out>.partial` next to the output; None without either."""
        directory = self.directory or (partial_dir(out) if out else None)
        if directory is None:
            if self.resume:
                raise PtmdetoxError("--resume needs --out or --checkpoint-dir (where the checkpoints are)")
            return None
        return Checkpointer(directory, fingerprint(settings), resume=self.resume, every_steps=self.every_steps,
                            every_seconds=self.every_seconds)
