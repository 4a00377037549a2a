"""The last Transformer block computed only at the positions a loss reads.

A BERT-style block's output at one position depends on every position's input through the keys and values, but on
its own query, feed-forward and residual path only. A loss that reads M positions (the masked tokens of MLM, the
representation's position of a classifier) therefore needs the last block's keys and values everywhere and the rest
at those M positions only: the same values and gradients for a fraction of the block's work.

The dropout masks are drawn at full size and in the order the full block draws them, then the needed rows are taken,
so the random stream, and every seeded result that depends on it, stays the one the full block gives.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn


class PassThrough(nn.Module):
    """Stands in for a block: returns its input states unchanged."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


@contextlib.contextmanager
def last_block_removed(blocks: nn.ModuleList):
    """Run the stack without its last block (which is yielded); the stack is restored afterwards."""
    last = blocks[-1]
    blocks[-1] = PassThrough()
    try:
        yield last
    finally:
        blocks[-1] = last


def computes_rows(block: nn.Module) -> bool:
    """Whether `block` has the BERT block layout `block_at_rows` reproduces (self-attention, then feed-forward)."""
    attention = getattr(block, "attention", None)
    heads = getattr(attention, "self", None)
    if heads is None or not all(hasattr(block, name) for name in ("intermediate", "output")):
        return False
    return (hasattr(attention, "output")
            and all(hasattr(heads, name) for name in ("query", "key", "value", "num_attention_heads",
                                                      "attention_head_size"))
            and not getattr(block, "is_decoder", False) and not getattr(block, "chunk_size_feed_forward", 0))


def _dropout_mask(dropout: nn.Dropout, shape, like: torch.Tensor) -> torch.Tensor | None:
    if not dropout.training or dropout.p == 0:
        return None
    return F.dropout(torch.ones(shape, dtype=like.dtype), dropout.p, True)


def _residual(sublayer: nn.Module, inputs: torch.Tensor, skip: torch.Tensor, full_shape, which, where) -> torch.Tensor:
    """dense → dropout → LayerNorm(· + skip), as BERT's SelfOutput and Output, at the selected rows."""
    out = sublayer.dense(inputs)
    mask = _dropout_mask(sublayer.dropout, full_shape, out)
    if mask is not None:
        out = out * mask[which, where]
    return sublayer.LayerNorm(out + skip)


def block_at_rows(block: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor,
                  rows: torch.Tensor) -> torch.Tensor:
    """`block`'s output at the flat positions `rows` of `hidden` [B, T, H] ([M, H]); `attention_mask` [B, T]."""
    batch, length, width = hidden.shape
    attention = block.attention.self
    heads, size = attention.num_attention_heads, attention.attention_head_size
    which, where = rows // length, rows % length
    # index_select, not [·]: its backward (`scatter_add_`) took half the time of indexing's (`index_put_`) in a profile
    inputs = hidden.reshape(-1, width).index_select(0, rows)
    query = attention.query(inputs).view(-1, heads, size)
    key = attention.key(hidden).view(batch, length, heads, size).index_select(0, which)
    value = attention.value(hidden).view(batch, length, heads, size).index_select(0, which)
    scores = torch.einsum("mhd,mthd->mht", query, key) * getattr(attention, "scaling", size ** -0.5)
    scores = scores.masked_fill(~attention_mask.bool()[which, None, :], float("-inf"))
    probs = scores.softmax(-1)
    mask = _dropout_mask(attention.dropout, (batch, heads, length, length), probs)
    if mask is not None:
        probs = probs * mask[which, :, where]
    context = torch.einsum("mht,mthd->mhd", probs, value).reshape(-1, heads * size)
    attended = _residual(block.attention.output, context, inputs, (batch, length, width), which, where)
    return _residual(block.output, block.intermediate(attended), attended, (batch, length, width), which, where)
