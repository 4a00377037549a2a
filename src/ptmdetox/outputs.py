"""Atomic outputs and run provenance: nothing half-written ever appears at the requested path."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
from importlib import metadata

from .errors import PtmdetoxError

PACKAGES = ("ptmdetox", "torch", "transformers", "safetensors", "datasets", "numpy")


def cpu_model() -> str:
    """The CPU's model name (timings are only comparable on the same one)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict:
    found = {"python": platform.python_version(), "cpu": cpu_model(), "cpu_count": os.cpu_count()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def check_writable_parent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(parent):
        raise PtmdetoxError(f"{path}: parent folder {parent} does not exist")
    try:   # a real probe: access() says yes to root even where the file system says no
        fd, probe = tempfile.mkstemp(prefix=".ptmdetox-probe-", dir=parent)
    except OSError:
        raise PtmdetoxError(f"{path}: cannot write in {parent}") from None
    os.close(fd)
    os.unlink(probe)


def check_output_dir(path: str, overwrite: bool) -> None:
    """Validate an output folder up front, before any long work starts."""
    check_writable_parent(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise PtmdetoxError(f"{path}: exists and is not a folder; choose another output path")
    if os.path.exists(path) and not overwrite:
        raise PtmdetoxError(f"{path}: already exists (pass --overwrite to replace it)")


def check_output_file(path: str) -> None:
    """Validate an output file path (replaced atomically when it exists) before any long work starts."""
    check_writable_parent(path)
    if os.path.isdir(path):
        raise PtmdetoxError(f"{path}: is a folder; --out takes a file name")


def usual_permissions(path: str) -> None:
    """Give a temporary file or folder (created private, 0600/0700) the mode a plain open/mkdir would have."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_dir(path: str, overwrite: bool = False):
    """Yield a temporary sibling folder; on success it replaces `path` in one rename."""
    check_output_dir(path, overwrite)
    parent = os.path.dirname(os.path.abspath(path))
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(path))}.tmp-", dir=parent)
    try:
        usual_permissions(tmp)
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(path):
        old = tmp + ".old"
        os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, path)


@contextlib.contextmanager
def atomic_file(path: str, suffix: str = ""):
    """Yield a temporary sibling file name; on success it replaces `path` in one rename, on failure it is removed."""
    check_writable_parent(path)
    parent = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=parent)
    os.close(fd)
    try:
        usual_permissions(tmp)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_text_atomic(path: str, text: str) -> None:
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def command_line() -> str:
    return " ".join(["ptmdetox", *sys.argv[1:]])
