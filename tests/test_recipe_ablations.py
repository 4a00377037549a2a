"""RECIPE's ablations as named configs of RECIPE's own loop (ptmdetox.defenses.recipe_ablations)."""

from __future__ import annotations

import pytest

from ptmdetox import models
from ptmdetox.data.readers import read_corpus
from ptmdetox.defenses import DEFENSES
from ptmdetox.defenses.recipe import RecipeConfig, recipe_purify
from ptmdetox.defenses.recipe_ablations import OnlyPretrainConfig, OnlyRegularisationConfig
from ptmdetox.errors import PtmdetoxError
from ptmdetox.registry import config_from_dict

FAST = dict(steps=3, batch_size=8, max_length=32, head_warmup_steps=2)


def test_ablations_are_registered_with_recipes_loop_and_step_count():
    assert DEFENSES["recipe-only-pretrain"] == (OnlyPretrainConfig, recipe_purify)
    assert DEFENSES["recipe-only-reg"] == (OnlyRegularisationConfig, recipe_purify)
    # "only pre-train" keeps RECIPE's own pre-training loss (MLM), without the penalty
    assert OnlyPretrainConfig().lam == 0 and OnlyPretrainConfig().pretrain_loss == RecipeConfig().pretrain_loss
    assert OnlyRegularisationConfig().lam == 1 and OnlyRegularisationConfig().pretrain_loss == "none"
    assert OnlyPretrainConfig().steps == OnlyRegularisationConfig().steps == RecipeConfig().steps


def test_from_dict_starts_from_the_preset_and_keeps_the_ablation():
    paper = config_from_dict(OnlyPretrainConfig, {"preset": "paper"}, "test")
    assert isinstance(paper, OnlyPretrainConfig)
    assert (paper.lam, paper.lr, paper.epochs, paper.steps, paper.scope) == (0.0, 2e-5, 10, None, "paper")
    cpu = config_from_dict(OnlyRegularisationConfig, {"steps": 7, "regularised": ["pooler"]}, "test")
    assert (cpu.pretrain_loss, cpu.steps, cpu.lr, cpu.regularised) == ("none", 7, 2e-4, ("pooler",))
    plain = config_from_dict(RecipeConfig, {"lam": 0.5}, "test")
    assert type(plain) is RecipeConfig and plain.lam == 0.5 and plain.preset == "cpu"
    with pytest.raises(PtmdetoxError, match="unknown option lamda"):
        config_from_dict(RecipeConfig, {"lamda": 1}, "test")


def test_only_pretrain_has_no_penalty_and_only_regularisation_no_mlm(tiny_model_no_head, tiny_corpus):
    texts = read_corpus(tiny_corpus, limit=40).texts
    pretrain = models.create(tiny_model_no_head)
    report = recipe_purify(pretrain, texts, OnlyPretrainConfig(**FAST), progress=False)
    assert set(report["final_parts"]) == {"mlm"} and pretrain.head_state == "warmed-up"
    regularised = models.create(tiny_model_no_head)
    report = recipe_purify(regularised, texts, OnlyRegularisationConfig(**FAST), progress=False)
    assert set(report["final_parts"]) == {"norm"} and regularised.head_state == "fresh"
    assert report["norm_after"] < report["norm_before"] and report["steps"] == 3
