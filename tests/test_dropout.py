"""Dropout masks from SFC64 (ptmdetox.dropout): torch's dropout distribution, seeded by torch, every dropout caught."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ptmdetox.dropout import GENERATORS, dropout_masks, sfc64_keep_mask
from ptmdetox.errors import PtmdetoxError


def mask(shape=(1000, 1000), p=0.1, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return sfc64_keep_mask(shape, p, dtype)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_masks_drop_with_probability_p_and_keep_the_expected_value(p):
    drawn = mask(p=p)
    kept = drawn != 0
    assert drawn.shape == (1000, 1000)
    assert float(1 - kept.float().mean()) == pytest.approx(p, abs=2e-3)
    assert torch.unique(drawn[kept]).numel() == 1                       # one scale for every kept element
    assert float(drawn[kept][0]) == pytest.approx(1 / (1 - p), rel=1e-4)
    assert float(drawn.mean()) == pytest.approx(1.0, abs=5e-3)


def test_a_mask_is_determined_by_torchs_seed():
    assert torch.equal(mask(seed=3), mask(seed=3))
    assert not torch.equal(mask(seed=3), mask(seed=4))
    torch.manual_seed(3)
    first, second = sfc64_keep_mask((100,), 0.5, torch.float32), sfc64_keep_mask((100,), 0.5, torch.float32)
    assert not torch.equal(first, second)                                # each call draws afresh


def test_drop_probability_one_drops_everything():
    assert torch.count_nonzero(mask((10,), p=1.0)) == 0


def test_module_and_functional_dropout_use_the_sfc64_mask_and_keep_their_gradient():
    x = torch.randn(4, 7, 16, requires_grad=True)
    expected = mask(x.shape, p=0.1, seed=9)
    layer = nn.Dropout(0.1).train()
    torch.manual_seed(9)
    with dropout_masks("sfc64"):
        out = layer(x)
    torch.testing.assert_close(out, x * expected)
    out.sum().backward()
    torch.testing.assert_close(x.grad, expected)
    torch.manual_seed(9)
    with dropout_masks("sfc64"):
        functional = F.dropout(x, 0.1, training=True)
    torch.testing.assert_close(functional, x * expected)


def test_evaluation_and_zero_probability_dropout_are_untouched():
    x = torch.randn(3, 5)
    with dropout_masks("sfc64"):
        assert torch.equal(nn.Dropout(0.1).eval()(x), x)
        assert torch.equal(F.dropout(x, 0.0, training=True), x)


def test_outside_the_context_and_with_torch_torchs_own_masks_are_drawn():
    x = torch.ones(64, 64)
    torch.manual_seed(2)
    plain = F.dropout(x, 0.3, training=True)
    torch.manual_seed(2)
    with dropout_masks("torch"):
        torch_generator = F.dropout(x, 0.3, training=True)
    torch.manual_seed(2)
    with dropout_masks("sfc64"):
        sfc64 = F.dropout(x, 0.3, training=True)
    assert torch.equal(plain, torch_generator)
    assert not torch.equal(plain, sfc64)


@pytest.mark.parametrize("boolean_mask", [True, False])
def test_attention_dropout_inside_sdpa_uses_the_sfc64_mask(boolean_mask):
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=generator) for _ in range(3))
    allowed = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    allowed[1, :, :, 3:] = False
    attn_mask = allowed if boolean_mask else torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))
    probs = torch.softmax((q @ k.transpose(-2, -1) / 8 ** 0.5).masked_fill(~allowed, float("-inf")), dim=-1)
    expected = (probs * mask(probs.shape, p=0.2, seed=4)) @ v
    torch.manual_seed(4)
    with dropout_masks("sfc64"):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=0.2)
        no_dropout = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(no_dropout, probs @ v)


def test_hugging_face_style_keywords_and_causal_attention():
    q = k = v = torch.randn(1, 2, 4, 8)
    torch.manual_seed(1)
    with dropout_masks("sfc64"):
        keywords = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.3, scale=None, is_causal=False,
                                                  enable_gqa=False)
    probs = torch.softmax(q @ k.transpose(-2, -1) / 8 ** 0.5, dim=-1)
    torch.testing.assert_close(keywords, (probs * mask(probs.shape, p=0.3, seed=1)) @ v)
    torch.manual_seed(1)
    plain = F.scaled_dot_product_attention(q, k, v, dropout_p=0.3, is_causal=True)
    torch.manual_seed(1)
    with dropout_masks("sfc64"):
        causal = F.scaled_dot_product_attention(q, k, v, dropout_p=0.3, is_causal=True)
    torch.testing.assert_close(causal, plain)                            # left to torch


def test_an_unknown_generator_is_refused():
    assert GENERATORS == ("torch", "sfc64")
    with pytest.raises(PtmdetoxError, match="unknown dropout generator 'mt'"):
        with dropout_masks("mt"):
            pass
