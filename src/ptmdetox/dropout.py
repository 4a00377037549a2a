"""Dropout masks from a faster random generator (fast-mode RECIPE).

On a CPU, torch draws dropout masks (`bernoulli_`) with a serial Mersenne-Twister kernel: ≈ 10 ns per element on
the AMD EPYC hosts, about a tenth of a fast-mode RECIPE step on MiniLM. Under `dropout_masks("sfc64")` the
dropouts of the forward pass (`F.dropout`, `nn.Dropout`, and the attention-probability dropout inside
`F.scaled_dot_product_attention`) draw their masks from numpy's SFC64 generator instead, ≈ 4× cheaper including the
multiplication, seeded from torch's generator at each call, so that `torch.manual_seed` (and a checkpoint's saved
torch state) still determines every mask. In-place dropout and causal or grouped-query attention keep torch's.

Each element is kept when a 16-bit random word is at least round(p · 65536), and kept elements are scaled by the
inverse of the realised keep probability: the drop probability is p to within 8·10⁻⁶, and the expected output
equals the input (exactly in fp32), as with torch's dropout. The masks differ from torch's, so seeded results differ from
runs with torch's masks (`dropout_rng="torch"`); the 16-bit words are read in the machine's byte order.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .errors import check_choice

GENERATORS = ("torch", "sfc64")
_WORD = 1 << 16


def sfc64_keep_mask(shape, p: float, dtype: torch.dtype) -> torch.Tensor:
    """A dropout mask of `shape`: 0 with probability ≈ p, else 1 / (realised keep probability)."""
    count = int(np.prod(shape, dtype=np.int64))
    threshold = int(round(p * _WORD))
    if threshold >= _WORD:
        return torch.zeros(shape, dtype=dtype)
    seed = int(torch.randint(0, 2**62, (1,)))
    words = np.random.SFC64(seed).random_raw((count + 3) // 4).view(np.uint16)[:count]
    # as 0/1 bytes: torch converts uint8 to floats ≈ 5× faster than bool (measured on the AMD hosts)
    keep = torch.from_numpy((words >= threshold).view(np.uint8)).view(shape)
    return keep.to(dtype).mul_(_WORD / (_WORD - threshold))


def _argument(args, kwargs, position: int, name: str, default):
    if name in kwargs:
        return kwargs[name]
    return args[position] if len(args) > position else default


def _attention_with_dropout(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """Scaled dot-product attention as torch's math kernel computes it (not causal, no grouped heads), with an SFC64
    dropout mask."""
    scores = torch.matmul(query, key.transpose(-2, -1)) * (scale if scale is not None else query.shape[-1] ** -0.5)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs * sfc64_keep_mask(probs.shape, dropout_p, probs.dtype), value)


class _SFC64Dropout(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.dropout:
            p = _argument(args, kwargs, 1, "p", 0.5)
            training = _argument(args, kwargs, 2, "training", True)
            inplace = _argument(args, kwargs, 3, "inplace", False)
            if training and p > 0 and not inplace:
                return args[0] * sfc64_keep_mask(args[0].shape, p, args[0].dtype)
        elif func is F.scaled_dot_product_attention:
            dropout_p = _argument(args, kwargs, 4, "dropout_p", 0.0)
            plain = not _argument(args, kwargs, 5, "is_causal", False) and not _argument(args, kwargs, 7,
                                                                                        "enable_gqa", False)
            if dropout_p > 0 and plain:
                return _attention_with_dropout(*args, **kwargs)
        return func(*args, **kwargs)


def check_generator(name: str) -> None:
    check_choice("dropout generator", name, GENERATORS)


@contextlib.contextmanager
def dropout_masks(generator: str):
    """Draw the dropout masks of the code run inside from `generator` ("torch": torch's own dropout, unchanged)."""
    check_generator(generator)
    if generator == "torch":
        yield
        return
    with _SFC64Dropout():
        yield
