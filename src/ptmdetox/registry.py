"""Name → (config dataclass, run function) registries for attacks and defenses, and configs from plain dicts."""

from __future__ import annotations

import dataclasses
from typing import Callable

from .errors import PtmdetoxError

Registry = dict[str, tuple[type, Callable]]


def lookup(registry: Registry, name: str, kind: str) -> tuple[type, Callable]:
    """The (config class, run function) registered under `name`; a one-line error naming the known ones otherwise."""
    if name not in registry:
        raise PtmdetoxError(f"unknown {kind} '{name}' (known: {', '.join(sorted(registry))})")
    return registry[name]


def config_from_dict(config_class: type, values: dict | None, what: str):
    """Build a config from YAML/CLI values: unknown keys are refused by name, lists become tuples.

    A config class may define `from_dict(values)` (e.g. to start from a named preset); otherwise `Class(**values)`.
    """
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in (values or {}).items()}
    known = {f.name for f in dataclasses.fields(config_class)} | set(getattr(config_class, "extra_keys", ()))
    unknown = sorted(set(values) - known)
    if unknown:
        raise PtmdetoxError(f"{what}: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                            f"(options: {', '.join(sorted(known))})")
    builder = getattr(config_class, "from_dict", None)
    try:
        return builder(values) if builder else config_class(**values)
    except (TypeError, ValueError) as exc:   # e.g. a string where a number belongs
        raise PtmdetoxError(f"{what}: bad option value ({exc})") from None
