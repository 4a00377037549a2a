"""Attacks by name: `ATTACKS[name] = (ConfigDataclass, run(adapter, texts, config, progress) -> report)`."""

from __future__ import annotations

from ..registry import Registry, lookup
from .neuba import NeubaConfig, neuba_attack

ATTACKS: Registry = {
    "neuba": (NeubaConfig, neuba_attack),
}


def create(name: str):
    """(config class, run function) of the attack `name`."""
    return lookup(ATTACKS, name, "attack")
