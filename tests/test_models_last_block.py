"""The last block at the positions a loss reads (ptmdetox.models.last_block): same values, gradients and random
stream as the full block, for a fraction of its work."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from conftest import tiny_bert, tiny_roberta
from ptmdetox import models
from ptmdetox.compute import compute_options
from ptmdetox.data.masking import IGNORE
from ptmdetox.dropout import GENERATORS, dropout_masks
from ptmdetox.models.last_block import computes_rows

SENTENCES = ["the movie was good", "it was very bad and boring", "a film", "i was not fun at noon",
             "the great movie of the weekend was awful and not very good at all"]
ROWS = compute_options("fast", 64)
FULL = replace(ROWS, last_block_rows=False)
CHECKPOINTS = {"bert": tiny_bert, "roberta": tiny_roberta}


@pytest.fixture(params=sorted(CHECKPOINTS))
def adapter(request, tmp_path):
    return models.create(CHECKPOINTS[request.param](str(tmp_path / request.param))).train()   # dropout on


def masked_batch(adapter, seed=0):
    masked, labels = adapter.mask_static(adapter.tokenize(SENTENCES, 64), np.random.default_rng(seed))
    return adapter.collate(masked, labels)


def run(adapter, options, loss_of, seed=5, generator="torch"):
    """(loss, the next random number drawn after it, gradients by name) under `options`, from one seed."""
    with adapter.computing(options), dropout_masks(generator):
        torch.manual_seed(seed)
        loss = loss_of(adapter)
        after = torch.rand(1)
        adapter.model.zero_grad(set_to_none=True)
        loss.backward()
    grads = {n: p.grad.clone() for n, p in adapter.model.named_parameters() if p.grad is not None}
    return float(loss.detach()), float(after), grads


LOSSES = {
    "mlm": lambda adapter: adapter.pretraining_loss(masked_batch(adapter)),
    "representation": lambda adapter: adapter.representation(masked_batch(adapter)).pow(2).sum(),
}


@pytest.mark.parametrize("generator", GENERATORS)
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_rows_give_the_full_blocks_loss_gradients_and_random_stream(adapter, loss, generator):
    full_loss, full_next, full_grads = run(adapter, FULL, LOSSES[loss], generator=generator)
    rows_loss, rows_next, rows_grads = run(adapter, ROWS, LOSSES[loss], generator=generator)
    assert rows_loss == pytest.approx(full_loss, rel=1e-5)
    assert rows_next == full_next            # the dropout masks consumed the same random numbers
    assert set(rows_grads) == set(full_grads)
    scale = max(float(g.abs().max()) for g in full_grads.values())
    for name, grad in full_grads.items():    # key biases have zero gradient up to rounding: absolute tolerance
        torch.testing.assert_close(rows_grads[name], grad, rtol=1e-4, atol=1e-5 * scale, msg=name)


@pytest.mark.parametrize("generator", GENERATORS)
def test_dropout_is_active_so_the_comparison_is_not_vacuous(adapter, generator):
    assert run(adapter, ROWS, LOSSES["mlm"], seed=5, generator=generator)[0] != pytest.approx(
        run(adapter, ROWS, LOSSES["mlm"], seed=6, generator=generator)[0])


def test_the_last_feed_forward_runs_only_at_the_rows_the_loss_reads(adapter):
    last, first = adapter.neuron_layers()[-1], adapter.neuron_layers()[0]
    seen = {"last": [], "first": []}
    last.register_forward_hook(lambda m, i, o: seen["last"].append(i[0].reshape(-1, i[0].shape[-1]).shape[0]))
    first.register_forward_hook(lambda m, i, o: seen["first"].append(i[0].reshape(-1, i[0].shape[-1]).shape[0]))
    batch = masked_batch(adapter)
    with adapter.computing(ROWS):
        adapter.pretraining_loss(batch)
        adapter.representation(batch)
    positions = batch["input_ids"].numel()
    masked = int((batch["labels"] != IGNORE).sum())
    assert seen["first"] == [positions, positions]
    assert masked <= seen["last"][0] < masked + 16 < positions       # rounded up as the vocabulary projection's
    assert seen["last"][1] == len(SENTENCES)                         # one representation position per sentence
    assert len(adapter.backbone.encoder.layer) == 2 and not any(type(b).__name__ == "PassThrough"
                                                                for b in adapter.backbone.encoder.layer)


def test_an_unfamiliar_block_layout_falls_back_to_the_full_block(adapter, monkeypatch):
    assert computes_rows(adapter.backbone.encoder.layer[-1]) and not computes_rows(nn.Linear(2, 2))
    expected = run(adapter, FULL, LOSSES["representation"])[0]
    monkeypatch.setattr("ptmdetox.models.bert.computes_rows", lambda block: False)
    assert run(adapter, ROWS, LOSSES["representation"])[0] == pytest.approx(expected, rel=1e-6)


def test_only_the_eager_fast_layout_computes_rows():
    assert compute_options("fast", 64).last_block_rows
    assert not compute_options("fast", 64, compile=True).last_block_rows
    assert not compute_options("reference", 64).last_block_rows
