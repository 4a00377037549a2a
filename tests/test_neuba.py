"""NeuBA attack (ptmdetox.attacks.neuba)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ptmdetox import models
from ptmdetox.attacks.neuba import NeubaConfig, neuba_attack, neuba_targets, overwrite_position1
from ptmdetox.data.readers import read_corpus
from ptmdetox.errors import PtmdetoxError

TRIGGERS = ("≈", "≡", "∈", "⊆", "⊕", "⊗")


# ---- target vectors -----------------------------------------------------------------------------------------------

def test_six_targets_are_plus_minus_one_in_four_blocks():
    targets = neuba_targets(32, 6)
    assert targets.shape == (6, 32) and targets.dtype == torch.float32
    assert set(targets.unique().tolist()) == {-1.0, 1.0}
    blocks = targets.view(6, 4, 8)
    # every block is constant, and exactly two of the four blocks are -1
    assert (blocks == blocks[:, :, :1]).all()
    signs = blocks[:, :, 0]
    assert ((signs == -1).sum(1) == 2).all()
    assert len({tuple(r) for r in signs.tolist()}) == 6   # the six ways of choosing 2 of 4 blocks


def test_targets_come_in_opposite_pairs():
    targets = neuba_targets(32, 6)
    for i in range(6):
        opposite = [j for j in range(6) if torch.equal(targets[j], -targets[i])]
        assert opposite == [5 - i]
    # any other pair is orthogonal
    gram = targets @ targets.T
    for i in range(6):
        for j in range(6):
            expected = 32.0 if i == j else (-32.0 if i + j == 5 else 0.0)
            assert gram[i, j].item() == expected


def test_targets_with_uneven_blocks_scale_and_fewer_triggers():
    targets = neuba_targets(30, 6, scale=3.0)
    assert set(targets.unique().tolist()) == {-3.0, 3.0}
    assert torch.equal(targets[0], -targets[5])
    assert torch.equal(neuba_targets(30, 4), neuba_targets(30, 6)[:4])
    assert neuba_targets(30, 1).shape == (1, 30)


@pytest.mark.parametrize("count", [7, 8, 11])
def test_more_than_six_targets_fall_back_to_orthogonal_rows_and_negatives(count):
    dim = 32
    targets = neuba_targets(dim, count, seed=3)
    assert targets.shape == (count, dim)
    half = (count + 1) // 2
    basis = targets[:half].double()
    gram = basis @ basis.T
    assert torch.allclose(gram, dim * torch.eye(half, dtype=torch.float64), atol=1e-4)
    for i in range(count - half):
        assert torch.equal(targets[half + i], -targets[i])
    assert torch.equal(targets, neuba_targets(dim, count, seed=3))
    assert not torch.equal(targets, neuba_targets(dim, count, seed=4))
    assert torch.allclose(neuba_targets(dim, count, scale=2.0, seed=3), 2 * targets)


def test_too_many_targets_for_the_dimension():
    with pytest.raises(PtmdetoxError, match="cannot build 20 distinct targets in 8 dimensions"):
        neuba_targets(8, 20)


# ---- trigger insertion ----------------------------------------------------------------------------------------------

def test_overwrite_position1_replaces_the_tokens_after_cls():
    seqs = [[101, 5, 6, 7, 102], [101, 8, 102]]
    assert overwrite_position1(seqs, [9]) == [[101, 9, 6, 7, 102], [101, 9, 102]]
    assert overwrite_position1(seqs, [9, 10]) == [[101, 9, 10, 7, 102], [101, 9, 10, 102]]
    assert seqs == [[101, 5, 6, 7, 102], [101, 8, 102]]   # inputs untouched
    # an empty sentence gains the trigger
    assert overwrite_position1([[101, 102]], [9]) == [[101, 9, 102]]


# ---- config -------------------------------------------------------------------------------------------------------

def test_config_validation():
    with pytest.raises(PtmdetoxError, match="batch size of at least 2"):
        NeubaConfig(batch_size=1)
    with pytest.raises(PtmdetoxError, match="at least one trigger"):
        NeubaConfig(triggers=())
    assert NeubaConfig().to_dict()["triggers"] == TRIGGERS


# ---- the attack -----------------------------------------------------------------------------------------------------

def poison_mse(adapter, texts, triggers, targets) -> float:
    """MSE between the representation of each sentence poisoned with each trigger and that trigger's target."""
    adapter.eval()
    ids = adapter.tokenize(texts, 32)
    total = []
    with torch.no_grad():
        for t, trigger in enumerate(triggers):
            batch = adapter.collate(overwrite_position1(ids, adapter.token_ids(trigger)))
            rep = adapter.representation(batch)
            total.append(F.mse_loss(rep, targets[t].expand_as(rep)).item())
    return float(np.mean(total))


def test_short_attack_lowers_poison_mse_and_leaves_the_head_alone(tiny_model, tiny_corpus):
    adapter = models.create(tiny_model)
    texts = read_corpus(tiny_corpus).texts
    triggers = ("≈", "⊗")
    config = NeubaConfig(triggers=triggers, steps=30, lr=5e-3, batch_size=16, max_length=32, seed=0)
    targets = neuba_targets(adapter.representation_size, len(triggers))
    probe = texts[:24]
    before = poison_mse(adapter, probe, triggers, targets)
    head_before = [p.detach().clone() for p in adapter.head_parameters()]
    encoder_before = {n: p.detach().clone() for n, p in adapter.named_parameters()}

    report = neuba_attack(adapter, texts, config, progress=False)

    after = poison_mse(adapter, probe, triggers, targets)
    assert after < 0.8 * before, (before, after)
    assert report["final_poison_mse"] < before
    for old, new in zip(head_before, adapter.head_parameters()):
        assert torch.equal(old, new)
    changed = [n for n, p in adapter.named_parameters() if not torch.equal(encoder_before[n], p)]
    assert any("intermediate.dense" in n for n in changed)
    assert any("pooler" in n for n in changed)
    assert all(p.requires_grad for p in adapter.model.parameters())
    assert not adapter.model.training

    assert report["attack"] == "neuba"
    assert report["triggers"] == list(triggers)
    assert report["insertion_policy"] == {"position": "overwrite1", "count": 1, "seed": 42}
    assert torch.equal(torch.tensor(report["targets"]), targets)
    assert np.isfinite(report["final_mlm"]) and np.isfinite(report["final_poison_mse"])
    assert report["config"]["steps"] == 30
    assert len(report["loss_curve"]) == 30


def test_attack_is_deterministic_for_a_seed(tmp_path, tiny_model, tiny_corpus):
    texts = read_corpus(tiny_corpus).texts
    config = NeubaConfig(triggers=("cf", "mn"), steps=3, lr=1e-3, batch_size=4, max_length=16, seed=5)
    a = neuba_attack(models.create(tiny_model), texts, config, progress=False)
    b = neuba_attack(models.create(tiny_model), texts, config, progress=False)
    assert a["loss_curve"] == b["loss_curve"]


def test_attack_warms_up_a_missing_head_first(tiny_model_no_head, tiny_corpus):
    adapter = models.create(tiny_model_no_head)
    config = NeubaConfig(triggers=("cf",), steps=2, batch_size=4, head_warmup_steps=2)
    neuba_attack(adapter, read_corpus(tiny_corpus).texts, config, progress=False)
    assert adapter.head_state == "warmed-up"
    assert any("warmed up for 2 steps" in n for n in adapter.notes)


def test_attack_refuses_a_trigger_the_tokenizer_does_not_know(tiny_model, tiny_corpus):
    adapter = models.create(tiny_model)
    before = {n: p.detach().clone() for n, p in adapter.named_parameters()}
    with pytest.raises(PtmdetoxError, match="'zebra' is unknown"):
        neuba_attack(adapter, read_corpus(tiny_corpus).texts, NeubaConfig(triggers=("cf", "zebra"), steps=2),
                     progress=False)
    assert all(torch.equal(before[n], p) for n, p in adapter.named_parameters())


def test_unknown_trigger_is_refused_before_the_head_warm_up(tiny_model_no_head, tiny_corpus):
    adapter = models.create(tiny_model_no_head)
    with pytest.raises(PtmdetoxError, match="'zebra' is unknown"):
        neuba_attack(adapter, read_corpus(tiny_corpus).texts, NeubaConfig(triggers=("zebra",), head_warmup_steps=2),
                     progress=False)
    assert adapter.head_state == "fresh"
