"""Compute modes (ptmdetox.compute): the reference layout of the released code against the fast path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ptmdetox import models
from ptmdetox.cli import main
from ptmdetox.compute import compute_options, config_dict
from ptmdetox.data.batching import StepBatches
from ptmdetox.data.masking import IGNORE
from ptmdetox.defenses.recipe import RecipeConfig, recipe_purify
from ptmdetox.errors import PtmdetoxError
from ptmdetox.models.bert import MASKED_ROWS_MULTIPLE, padded_masked_rows
from ptmdetox.training import TrainConfig, train_loop

SENTENCES = ["the movie was good", "it was very bad and boring", "a film", "i was not fun at noon",
             "the great movie of the weekend was awful and not very good at all"]
REFERENCE = compute_options("reference", 64)
FAST = compute_options("fast", 64)


def masked_batch_sequences(adapter, seed=0):
    ids = adapter.tokenize(SENTENCES, 64)
    return adapter.mask_static(ids, np.random.default_rng(seed))


def mlm_loss(adapter, options, masked, labels):
    with adapter.computing(options):
        batch = adapter.collate(masked, labels)
        hidden, _ = adapter.encode(batch)
        return adapter.mlm_loss_from_hidden(hidden, batch["labels"]), batch


def head_inputs(adapter):
    """Record the shape of every input the MLM head sees."""
    shapes = []
    adapter.mlm_head.register_forward_hook(lambda module, inputs, output: shapes.append(tuple(inputs[0].shape)))
    return shapes


def test_reference_pads_every_batch_to_64_and_fast_to_the_longest(tiny_model):
    adapter = models.create(tiny_model)
    masked, labels = masked_batch_sequences(adapter)
    longest = max(len(s) for s in masked)
    with adapter.computing(REFERENCE):
        reference = adapter.collate(masked, labels)
    fast = adapter.collate(masked, labels)
    assert reference["input_ids"].shape == (len(SENTENCES), 64)
    assert reference["labels"].shape == (len(SENTENCES), 64)
    assert fast["input_ids"].shape == (len(SENTENCES), longest) and longest < 64
    assert int(reference["attention_mask"].sum()) == int(fast["attention_mask"].sum()) == sum(map(len, masked))
    assert (reference["labels"][:, longest:] == IGNORE).all()


def test_reference_projects_every_position_fast_only_the_masked_ones(tiny_model):
    adapter = models.create(tiny_model).eval()
    shapes = head_inputs(adapter)
    masked, labels = masked_batch_sequences(adapter)
    n_masked = sum(label != IGNORE for row in labels for label in row)
    mlm_loss(adapter, REFERENCE, masked, labels)
    mlm_loss(adapter, FAST, masked, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mlm_loss(adapter, FAST, masked, labels)
    hidden = adapter.representation_size
    rounded = -(-n_masked // MASKED_ROWS_MULTIPLE) * MASKED_ROWS_MULTIPLE
    assert shapes == [(len(SENTENCES) * 64, hidden), (n_masked, hidden), (rounded, hidden)]
    assert 0 < n_masked < rounded < n_masked + MASKED_ROWS_MULTIPLE < len(SENTENCES) * 64   # bf16 rounds the count up


def test_masked_rows_are_rounded_only_under_autocast():
    labels = torch.full((2, 9), IGNORE)
    labels[0, 3], labels[1, 4] = 5, 6
    assert padded_masked_rows(labels)[0].tolist() == [3, 13]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rows, targets = padded_masked_rows(labels)
    assert len(rows) == MASKED_ROWS_MULTIPLE and rows[:2].tolist() == [3, 13]
    assert (targets[2:] == IGNORE).all() and targets[:2].tolist() == [5, 6]


def test_padded_masked_rows_round_the_count_up_and_ignore_the_pads():
    labels = torch.full((3, 7), IGNORE)
    labels[0, 2], labels[1, 5], labels[2, 1] = 11, 12, 13
    rows, targets = padded_masked_rows(labels, multiple=4)
    assert rows.tolist() == [2, 12, 15, 0] and targets.tolist() == [11, 12, 13, IGNORE]
    rows, targets = padded_masked_rows(labels, multiple=3)
    assert rows.tolist() == [2, 12, 15] and targets.tolist() == [11, 12, 13]


def test_same_masks_give_the_same_mlm_loss_and_gradients_in_both_modes(tiny_model):
    adapter = models.create(tiny_model).eval()   # no dropout: the two computations must agree
    masked, labels = masked_batch_sequences(adapter, seed=3)
    weight = adapter.neuron_layers()[0].weight
    losses, grads = [], []
    for options in (REFERENCE, FAST):
        loss, _ = mlm_loss(adapter, options, masked, labels)
        weight.grad = None
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(weight.grad.clone())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_different_masks_give_different_losses(tiny_model):
    """The equality above is not vacuous: the loss does depend on which tokens are masked."""
    adapter = models.create(tiny_model).eval()
    a = mlm_loss(adapter, FAST, *masked_batch_sequences(adapter, seed=3))[0]
    b = mlm_loss(adapter, FAST, *masked_batch_sequences(adapter, seed=4))[0]
    assert float(a.detach()) != pytest.approx(float(b.detach()), rel=1e-3)


def batch_widths(adapter, sentences, config):
    widths = []
    encode = adapter.encode
    adapter.encode = lambda batch: (widths.append(tuple(batch["input_ids"].shape)), encode(batch))[1]
    report = recipe_purify(adapter, sentences, config, progress=False)
    return widths, report


def test_recipe_reference_mode_pads_to_max_length_and_records_it(tiny_model):
    sentences = [" ".join(["good"] * (1 + i % 9)) for i in range(40)]
    config = RecipeConfig(mode="reference", steps=4, batch_size=8, max_length=32, scope="paper",
                          pretrain_loss="mlm")
    widths, report = batch_widths(models.create(tiny_model), sentences, config)
    assert widths == [(8, 32)] * 4
    assert report["compute"] == {"mode": "reference", "bf16_autocast": False, "pad_to": 32, "mlm_all_positions": True,
                                 "compile": False, "last_block_rows": False, "length_bucketing": False,
                                 "fused_adamw": False, "dropout_masks": "torch"}
    assert report["config"]["mode"] == "reference"


def test_recipe_fast_mode_pads_each_batch_to_its_longest(tiny_model):
    sentences = [" ".join(["good"] * (1 + i % 9)) for i in range(40)]
    config = RecipeConfig(steps=5, batch_size=8, max_length=32, scope="paper")
    widths, report = batch_widths(models.create(tiny_model), sentences, config)
    assert all(width < 32 for _, width in widths)
    assert len({width for _, width in widths}) > 1
    assert report["compute"]["mode"] == "fast" and report["compute"]["length_bucketing"]
    assert report["compute"]["last_block_rows"] and report["compute"]["fused_adamw"]


def test_unbucketed_batches_are_plain_random_epochs_indexed_by_step():
    lengths = [i % 40 for i in range(100)]
    batches = StepBatches(lengths, 10, seed=0, bucket=False)
    epoch = [batches(k) for k in range(10)]
    assert sorted(i for b in epoch for i in b) == list(range(100))
    spread = np.mean([np.ptp([lengths[i] for i in b]) for b in epoch])
    assert spread > 20   # bucketed batches would hold near-equal lengths
    assert StepBatches(lengths, 10, seed=0, bucket=False)(13) == batches(13) != batches(3)   # resumable
    assert [batches(k) for k in range(10, 20)] != epoch                                        # reshuffled


def test_bf16_autocast_runs_the_forward_in_bf16_and_keeps_weights_fp32():
    layer = torch.nn.Linear(8, 8)
    seen = []

    def step_loss(_step):
        out = layer(torch.randn(4, 8))
        seen.append(out.dtype)
        return out.float().pow(2).mean()

    train_loop(list(layer.parameters()), step_loss, TrainConfig(lr=1e-3, steps=2, bf16=True), progress=False)
    train_loop(list(layer.parameters()), step_loss, TrainConfig(lr=1e-3, steps=1), progress=False)
    assert seen == [torch.bfloat16, torch.bfloat16, torch.float32]
    assert layer.weight.dtype == torch.float32


@pytest.mark.parametrize("kwargs", [dict(mode="turbo"), dict(mode="reference", bf16=True),
                                    dict(mode="reference", compile=True), dict(mode="reference", masking="dynamic")])
def test_invalid_mode_combinations_are_refused(kwargs):
    with pytest.raises(PtmdetoxError):
        RecipeConfig(**kwargs)


def test_default_speed_fields_leave_the_config_dict_as_before():
    """Bench caches models by a hash of config dicts: defaults must not change older configs' keys."""
    default = config_dict(RecipeConfig())
    assert not {"mode", "bf16", "compile"} & set(default)
    assert config_dict(RecipeConfig(mode="reference"))["mode"] == "reference"
    assert config_dict(RecipeConfig(bf16=True))["bf16"] is True


def test_cli_purify_in_reference_mode(tiny_model, tiny_corpus, tmp_path, capsys):
    out = tmp_path / "purified"
    code = main(["purify", "recipe", "--model", tiny_model, "--corpus", tiny_corpus, "--out", str(out), "--steps", "2",
                 "--batch-size", "8", "--max-length", "32", "--mode", "reference", "--quiet"])
    assert code == 0
    report = json.loads((out / "purification.json").read_text())
    assert report["compute"]["mode"] == "reference" and report["compute"]["pad_to"] == 32


def test_cli_refuses_reference_mode_with_bf16(tiny_model, tiny_corpus, tmp_path, capsys):
    capsys.readouterr()
    code = main(["purify", "recipe", "--model", tiny_model, "--corpus", tiny_corpus, "--out", str(tmp_path / "x"),
                 "--mode", "reference", "--bf16"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("ptmdetox: error: reference mode")
    assert not (tmp_path / "x").exists()


def spy_widths(adapter) -> list[int]:
    widths = []
    encode = adapter.encode
    adapter.encode = lambda batch: (widths.append(batch["input_ids"].shape[1]), encode(batch))[1]
    return widths


@pytest.mark.parametrize("mode", ["reference", "fast"])
def test_neuba_attack_follows_the_mode(tiny_model, mode):
    from ptmdetox.attacks.neuba import NeubaConfig, neuba_attack

    adapter = models.create(tiny_model)
    widths = spy_widths(adapter)
    sentences = [" ".join(["good"] * (1 + i % 5)) for i in range(32)]
    report = neuba_attack(adapter, sentences, NeubaConfig(steps=2, batch_size=8, max_length=24, mode=mode),
                          progress=False)
    assert report["compute"]["mode"] == mode
    assert (set(widths) == {24}) == (mode == "reference")


@pytest.mark.parametrize("mode", ["reference", "fast"])
def test_finetuning_and_prediction_follow_the_mode(tiny_model, tiny_task, mode):
    from ptmdetox.data.readers import read_task
    from ptmdetox.data.triggers import InsertionPolicy
    from ptmdetox.evaluation.finetune import FinetuneConfig, evaluate_seed

    train, test = read_task(*tiny_task)
    adapter = models.create(tiny_model)
    widths = spy_widths(adapter)
    config = FinetuneConfig(epochs=1, batch_size=16, max_length=40, mode=mode)
    result = evaluate_seed(lambda: adapter, train, test, ("cf",), InsertionPolicy("first"), config, seed=1,
                           progress=False)
    assert 0 <= result["acc"] <= 100 and widths
    assert (set(widths) == {40}) == (mode == "reference")
