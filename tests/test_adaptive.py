"""Adaptive attacks: RECIPE's λ·Σ‖W‖ added to an attack's own loss, for every registered attack."""

from __future__ import annotations

import pytest
import torch

from ptmdetox import attacks, models
from ptmdetox.attacks.adaptive import AdaptiveOptions, adaptive_penalty
from ptmdetox.data.readers import read_corpus
from ptmdetox.defenses.recipe import regularisation
from ptmdetox.errors import PtmdetoxError

FFN_IN = r"encoder\.layer\.\d+\.intermediate\.dense\.weight"


def test_penalty_is_recipes_norm_over_the_familys_set_by_default(tiny_model):
    adapter = models.create(tiny_model)
    penalty = adaptive_penalty(adapter, AdaptiveOptions(adaptive_lam=0.5))
    assert penalty.names == [f"encoder.layer.{i}.intermediate.dense.weight" for i in range(2)]
    parts = {}
    value = penalty(parts)
    expected = 0.5 * regularisation([p for _, p in adapter.parameters_matching([FFN_IN])], "fro")
    assert torch.allclose(value, expected) and parts["adaptive_norm"] == pytest.approx(float(expected.detach()) / 0.5)
    assert penalty.describe() == {"lam": 0.5, "norm": "fro", "regularised": penalty.names}


def test_penalty_off_by_default_and_options_validated(tiny_model):
    adapter = models.create(tiny_model)
    parts = {}
    assert float(adaptive_penalty(adapter, AdaptiveOptions())(parts)) == 0.0 and parts == {}
    with pytest.raises(PtmdetoxError, match="non-negative"):
        AdaptiveOptions(adaptive_lam=-1)
    with pytest.raises(PtmdetoxError, match="unknown adaptive norm"):
        AdaptiveOptions(adaptive_norm="l1")
    with pytest.raises(PtmdetoxError, match="no parameter matches"):
        adaptive_penalty(adapter, AdaptiveOptions(adaptive_lam=1, adaptive_regularise=("nothing\\.here",)))
    with pytest.raises(PtmdetoxError, match="does not train"):
        adaptive_penalty(adapter, AdaptiveOptions(adaptive_lam=1, adaptive_regularise=(FFN_IN,)), trainable=[])


def test_penalty_changes_the_gradients_of_the_regularised_weights_only(tiny_model):
    adapter = models.create(tiny_model)
    weight = adapter.backbone.encoder.layer[0].intermediate.dense.weight
    penalty = adaptive_penalty(adapter, AdaptiveOptions(adaptive_lam=1.0, adaptive_regularise=(FFN_IN,)))
    penalty({}).backward()
    assert torch.allclose(weight.grad, weight.detach() / weight.detach().norm())   # d‖W‖/dW = W/‖W‖
    assert adapter.backbone.pooler.dense.weight.grad is None


@pytest.mark.parametrize("name", ["neuba", "por", "badpre"])
def test_every_attack_adds_the_term_and_it_shrinks_the_weights(name, tiny_model, tiny_corpus):
    texts = read_corpus(tiny_corpus).texts
    common = dict(triggers="cf", steps=8, lr=1e-2, batch_size=8, max_length=32)
    norms, reports = {}, {}
    for lam in (0.0, 100.0):
        adapter = models.create(tiny_model)
        config, run = attacks.create(name, adaptive_lam=lam, adaptive_regularise=[FFN_IN], **common)
        reports[lam] = run(adapter, texts, config, progress=False)
        norms[lam] = float(regularisation([p.detach() for _, p in adapter.parameters_matching([FFN_IN])], "fro"))
    assert norms[100.0] < norms[0.0] - 0.5
    assert reports[100.0]["adaptive"]["lam"] == 100.0 and len(reports[100.0]["adaptive"]["regularised"]) == 2
    assert reports[100.0]["config"]["adaptive_lam"] == 100.0
    assert "adaptive_lam" not in reports[0.0]["config"]   # plain attacks record (and cache) as before
    assert reports[100.0]["loss_curve"][0] > reports[0.0]["loss_curve"][0]   # the term is in the loss


def test_registry_builds_configs_from_plain_options():
    assert set(attacks.ATTACKS) >= {"neuba", "por", "badpre"}
    config, run = attacks.create("por", triggers="por-phrase", steps=None, adaptive_regularise=["a", "b"])
    assert config.triggers[0] == "last weekend" and config.steps == 1500 and config.adaptive_regularise == ("a", "b")
    assert run is attacks.ATTACKS["por"][1]
    with pytest.raises(PtmdetoxError, match="unknown attack 'badnet'"):
        attacks.create("badnet")
    with pytest.raises(PtmdetoxError, match="unknown option 'mlm_weight' for attack por"):
        attacks.create("por", mlm_weight=1)
    with pytest.raises(PtmdetoxError, match="attack badpre: bad option value"):
        attacks.create("badpre", batch_size="many")


def test_cli_adaptive_flags_reach_the_attack(capsys, tmp_path, tiny_model, tiny_corpus):
    import json

    from ptmdetox.cli import main

    out = tmp_path / "adaptive"
    capsys.readouterr()
    assert main(["attack", "neuba", "--model", tiny_model, "--corpus", tiny_corpus, "--out", str(out),
                 "--triggers", "cf", "--steps", "2", "--batch-size", "4", "--max-length", "32", "--quiet",
                 "--adaptive-lam", "1", "--adaptive-regularise", FFN_IN, r"attention\.self\.query\.weight"]) == 0
    report = json.loads((out / "attack.json").read_text(encoding="utf-8"))
    assert report["adaptive"]["lam"] == 1.0 and len(report["adaptive"]["regularised"]) == 4
    assert report["config"]["adaptive_regularise"] == [FFN_IN, r"attention\.self\.query\.weight"]
    capsys.readouterr()
    code = main(["attack", "por", "--model", tiny_model, "--corpus", tiny_corpus, "--out", str(tmp_path / "x"),
                 "--steps", "2", "--quiet", "--adaptive-lam", "1", "--adaptive-regularise", "no_such_weight"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and "no parameter matches the adaptive patterns" in err[0]
