"""Attacks by name: `ATTACKS[name] = (ConfigDataclass, run(adapter, texts, config, progress) -> report)`."""

from __future__ import annotations

import dataclasses
from typing import Callable

from ..data.triggers import parse_triggers
from ..errors import PtmdetoxError, check_choice
from .badpre import BadpreConfig, badpre_attack
from .neuba import NeubaConfig, neuba_attack
from .por import PorConfig, por_attack

ATTACKS: dict[str, tuple[type, Callable]] = {
    "neuba": (NeubaConfig, neuba_attack),
    "por": (PorConfig, por_attack),
    "badpre": (BadpreConfig, badpre_attack),
}

#: How model cards and messages spell each attack.
DISPLAY_NAMES = {"neuba": "NeuBA", "por": "POR", "badpre": "BadPre"}


def register(name: str, config_class: type, run: Callable, display_name: str | None = None) -> None:
    ATTACKS[name] = (config_class, run)
    DISPLAY_NAMES[name] = display_name or name


def lookup(name: str) -> tuple[type, Callable]:
    check_choice("attack", name, ATTACKS)
    return ATTACKS[name]


def make_config(name: str, options: dict | None = None):
    """The attack's config from plain options (YAML/CLI); unknown options are refused, None means 'default'."""
    config_class, _ = lookup(name)
    options = {k: v for k, v in (options or {}).items() if v is not None}
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise PtmdetoxError(f"unknown option '{unknown[0]}' for attack {name} (known: {', '.join(sorted(known))})")
    if "triggers" in options:
        options["triggers"] = parse_triggers(options["triggers"])
    if isinstance(options.get("adaptive_regularise"), list):
        options["adaptive_regularise"] = tuple(options["adaptive_regularise"])
    try:
        return config_class(**options)
    except (TypeError, ValueError) as exc:   # e.g. a string where a number belongs
        raise PtmdetoxError(f"attack {name}: bad option value ({exc})") from None


def create(name: str, **options):
    """(config, run) for attack `name`."""
    return make_config(name, options), lookup(name)[1]


__all__ = ["ATTACKS", "DISPLAY_NAMES", "create", "lookup", "make_config", "register"]
