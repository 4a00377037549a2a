"""Model adapters, one per architecture family, created by name with `create()`."""

from __future__ import annotations

from ..errors import PtmdetoxError
from .base import ModelAdapter
from .bert import BertAdapter
from .loading import DEFAULT_MODEL, resolve
from .roberta import RobertaAdapter

#: model_type (from config.json) -> adapter class
ADAPTERS: dict[str, type[ModelAdapter]] = {"bert": BertAdapter, "roberta": RobertaAdapter}


def register(model_type: str, adapter: type[ModelAdapter]) -> None:
    ADAPTERS[model_type] = adapter


def create(source: str | None = DEFAULT_MODEL, allow_pickle: bool = False) -> ModelAdapter:
    """Load the model `source` names ('default', a local folder or a hub name) behind its family's adapter."""
    checkpoint = resolve(source)
    model_type = checkpoint.config.get("model_type")
    if model_type not in ADAPTERS:
        raise PtmdetoxError(f"{checkpoint.source}: unsupported model_type '{model_type}' "
                            f"(supported: {', '.join(sorted(ADAPTERS))})")
    return ADAPTERS[model_type].from_checkpoint(checkpoint, allow_pickle=allow_pickle)


__all__ = ["ADAPTERS", "DEFAULT_MODEL", "ModelAdapter", "create", "register"]
