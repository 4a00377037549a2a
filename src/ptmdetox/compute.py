"""Compute modes: how training is laid out on the machine, separately from what it optimises.

- `fast` (default): length-bucketed batches padded to their longest sentence, the MLM vocabulary projection and the
  last block only at the positions a loss reads (masked tokens, the representation's position); optionally bf16
  autocast and `torch.compile` (which runs the whole last block). AdamW runs its fused kernel (same updates).
  RECIPE draws its dropout masks from SFC64 (`ptmdetox.dropout`; other masks than torch's, same distribution).
- `reference`: the layout of RECIPE's released code: random batches, every sequence padded to `max_length` (64),
  the full-vocabulary MLM head at every position (`BertForMaskedLM` style), static masks, fp32, torch's default AdamW.

Both modes compute gradients only for the trainable weights (the released code sets `requires_grad` the same way).
"""

from __future__ import annotations

from dataclasses import asdict

from .dropout import check_generator
from .errors import PtmdetoxError, check_choice
from .models.base import ComputeOptions

MODES = ("fast", "reference")
#: Speed fields and their defaults; left out of `config_dict` at these values so that configs written before these
#: fields existed keep their cache keys (bench caches models by a hash of their config).
SPEED_DEFAULTS = {"mode": "fast", "bf16": False, "compile": False}


def check_mode(mode: str, *, bf16: bool = False, compile: bool = False, masking: str = "static",
               dropout_rng: str = "torch") -> None:
    check_choice("compute mode", mode, MODES)
    check_generator(dropout_rng)
    if mode == "reference":
        clashes = [name for name, on in (("bf16", bf16), ("compile", compile), ("dynamic masking", masking == "dynamic"),
                                         (f"{dropout_rng} dropout masks", dropout_rng != "torch")) if on]
        if clashes:
            raise PtmdetoxError(f"reference mode reproduces the released code (fp32, eager, static masks): "
                                f"it cannot use {', '.join(clashes)}")


def compute_options(mode: str, max_length: int, compile: bool = False) -> ComputeOptions:
    if mode == "reference":
        return ComputeOptions(pad_to=max_length, mlm_all_positions=True, last_block_rows=False)
    return ComputeOptions(compile=compile, last_block_rows=not compile)


def bucketed(mode: str) -> bool:
    """Length-bucketed batches in fast mode; plain random batches (a random sampler's) in reference mode."""
    return mode == "fast"


def fused_adamw(mode: str) -> bool:
    """Whether training in `mode` uses AdamW's fused kernel (the reference keeps torch's default, as released)."""
    return mode == "fast"


def compute_record(mode: str, max_length: int, bf16: bool = False, compile: bool = False,
                   dropout_rng: str = "torch") -> dict:
    """What a result records about how it was computed."""
    options = compute_options(mode, max_length, compile)
    return {"mode": mode, "bf16_autocast": bf16, **asdict(options), "length_bucketing": bucketed(mode),
            "fused_adamw": fused_adamw(mode), "dropout_masks": dropout_rng}


def config_dict(config) -> dict:
    """`asdict(config)` without the fields that are at the defaults of fields added after cached results existed:
    the speed fields, and those a config class lists in its `LATER_DEFAULTS`."""
    data = asdict(config)
    for name, default in {**SPEED_DEFAULTS, **getattr(config, "LATER_DEFAULTS", {})}.items():
        if name in data and data[name] == default:
            del data[name]
    return data
