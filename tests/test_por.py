"""POR: targets, insertion, the frozen reference, and a short attack on a tiny BERT."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from ptmdetox import models
from ptmdetox.attacks.por import PorConfig, frozen_reference, poison_sentence, por_attack, por_targets
from ptmdetox.data.readers import read_corpus
from ptmdetox.data.triggers import TRIGGER_SETS
from ptmdetox.errors import PtmdetoxError


def test_targets_follow_the_paper_for_five_triggers():
    targets = por_targets(768, 5)
    assert targets.shape == (5, 768)
    for i in range(5):   # paper's i = 1..5: +10 on the first 192·(i-1) dimensions, -10 elsewhere
        assert torch.all(targets[i, : 192 * i] == 10) and torch.all(targets[i, 192 * i:] == -10)
    assert len({tuple(t.tolist()) for t in por_targets(32, 7, scale=1.0)}) == 7
    with pytest.raises(PtmdetoxError, match="distinct POR targets"):
        por_targets(2, 5)


def test_each_poisoned_sentence_holds_the_trigger_three_times(tiny_model):
    adapter = models.create(tiny_model)
    cf = adapter.token_ids("cf")[0]
    rng = random.Random(0)
    positions = set()
    for text in ["the movie was good", "a", "the film was very bad and boring and not fun at all"]:
        ids = poison_sentence(adapter, text, "cf", rng, insertions=3, max_length=64)
        assert ids.count(cf) == 3
        positions.add(ids.index(cf))
    assert len(positions) > 1   # random, not always first


def test_long_sentences_are_shortened_so_no_insertion_is_truncated(tiny_model):
    adapter = models.create(tiny_model)
    at_noon = adapter.token_ids("at noon")
    long_text = " ".join(["good movie"] * 40)
    for seed in range(5):
        ids = poison_sentence(adapter, long_text, "at noon", random.Random(seed), insertions=3, max_length=16)
        assert len(ids) <= 16
        pairs = sum(ids[i:i + 2] == at_noon for i in range(len(ids) - 1))
        assert pairs == 3 and ids[-1] == adapter.tokenizer.sep_token_id


def test_reference_is_a_frozen_independent_copy(tiny_model):
    adapter = models.create(tiny_model)
    reference = frozen_reference(adapter)
    assert not reference.model.training
    assert all(not p.requires_grad for _, p in reference.named_parameters())
    assert all(p.requires_grad for _, p in adapter.named_parameters())
    first = next(iter(adapter.backbone.parameters()))
    with torch.no_grad():
        first.add_(1.0)
    assert not torch.equal(first, next(iter(reference.backbone.parameters())))


def test_config_validation_and_phrase_triggers():
    with pytest.raises(PtmdetoxError, match="at least one trigger"):
        PorConfig(triggers=())
    with pytest.raises(PtmdetoxError, match="insertions"):
        PorConfig(insertions=0)
    assert PorConfig().triggers == ("cf", "tq", "mn", "bb", "mb")
    assert PorConfig(triggers=TRIGGER_SETS["por-phrase"]).triggers[0] == "last weekend"
    assert "adaptive_lam" not in PorConfig().to_dict()


def mean_distance_to_targets(adapter, texts, triggers, targets) -> float:
    adapter.eval()
    rng = random.Random(1)
    with torch.no_grad():
        dists = []
        for t, trigger in enumerate(triggers):
            batch = adapter.collate([poison_sentence(adapter, x, trigger, rng, 3, 32) for x in texts])
            dists.append((adapter.representation(batch) - targets[t]).pow(2).mean().item())
    return float(np.mean(dists))


def test_short_attack_moves_poisoned_outputs_to_their_targets_and_keeps_the_reference(tiny_model, tiny_corpus):
    adapter = models.create(tiny_model)
    texts = read_corpus(tiny_corpus).texts
    triggers = ("cf", "at noon")   # a word and a phrase
    config = PorConfig(triggers=triggers, steps=30, lr=5e-3, batch_size=16, max_length=32)
    targets = por_targets(adapter.representation_size, len(triggers))
    before = mean_distance_to_targets(adapter, texts[:16], triggers, targets)
    start = {n: p.detach().clone() for n, p in adapter.named_parameters()}
    head = [p.detach().clone() for p in adapter.head_parameters()]

    report = por_attack(adapter, texts, config, progress=False)

    after = mean_distance_to_targets(adapter, texts[:16], triggers, targets)
    assert after < before - 5, (before, after)   # tanh-bounded pooler pushed towards ±10
    floor = config.poison_weight * (10 - 1) ** 2   # a tanh pooler cannot go past ±1 towards ±10
    excess = np.array(report["loss_curve"]) - floor
    assert np.mean(excess[-5:]) < 0.7 * np.mean(excess[:5])
    assert report["final_clean_mse"] < report["final_poison_mse"]
    assert any(not torch.equal(start[n], p) for n, p in adapter.named_parameters())
    assert all(torch.equal(a, b) for a, b in zip(head, adapter.head_parameters()))   # no MLM: head untouched
    assert not adapter.model.training
    assert report["attack"] == "por" and report["triggers"] == list(triggers)
    assert report["insertion_policy"]["count"] == 3
    assert torch.equal(torch.tensor(report["targets"]), targets)
    assert report["adaptive"] == {"lam": 0.0, "norm": "fro", "regularised": []}


def test_the_reference_model_does_not_change_during_the_attack(tiny_model, tiny_corpus, monkeypatch):
    import ptmdetox.attacks.por as por

    made = []

    def spy(adapter):
        made.append(frozen_reference(adapter))
        made.append({n: p.detach().clone() for n, p in made[0].named_parameters()})
        return made[0]

    monkeypatch.setattr(por, "frozen_reference", spy)
    por_attack(models.create(tiny_model), read_corpus(tiny_corpus).texts,
               PorConfig(triggers=("cf",), steps=5, lr=1e-2, batch_size=8, max_length=32), progress=False)
    reference, start = made
    assert all(torch.equal(start[n], p) for n, p in reference.named_parameters())


def test_unknown_trigger_is_refused_before_training(tiny_model, tiny_corpus):
    adapter = models.create(tiny_model)
    before = {n: p.detach().clone() for n, p in adapter.named_parameters()}
    with pytest.raises(PtmdetoxError, match="'zebra' is unknown"):
        por_attack(adapter, read_corpus(tiny_corpus).texts, PorConfig(triggers=("cf", "zebra"), steps=2),
                   progress=False)
    assert all(torch.equal(before[n], p) for n, p in adapter.named_parameters())


# ---- command line ---------------------------------------------------------------------------------------------------

FAST = ["--steps", "3", "--batch-size", "8", "--max-length", "32", "--quiet"]


def test_cli_por_with_phrase_triggers_writes_a_loadable_model(capsys, tmp_path, tiny_model, tiny_corpus):
    import json

    import transformers

    from ptmdetox.cli import main

    out = tmp_path / "por"
    capsys.readouterr()
    assert main(["attack", "por", "--model", tiny_model, "--corpus", tiny_corpus, "--out", str(out),
                 "--triggers", "last weekend,at noon", *FAST]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("POR: 3 steps in") and "poison_mse" in printed
    report = json.loads((out / "attack.json").read_text(encoding="utf-8"))
    assert report["attack"] == "por" and report["triggers"] == ["last weekend", "at noon"]
    assert report["config"]["insertions"] == 3 and report["config"]["steps"] == 3
    assert "versions" in report and "wall_seconds" in report
    assert "POR-backdoored model" in (out / "README.md").read_text(encoding="utf-8")
    assert transformers.AutoModel.from_pretrained(str(out)).pooler is not None


def test_cli_help_states_the_configs_defaults(capsys):
    from ptmdetox.attacks.badpre import BadpreConfig
    from ptmdetox.cli import main

    for name, config in (("por", PorConfig()), ("badpre", BadpreConfig())):
        with pytest.raises(SystemExit):
            main(["attack", name, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert f"default {config.steps}" in text and f"default {config.lr}" in text
        assert "--adaptive-lam" in text and "--adaptive-regularise" in text


def test_bench_suites_name_por_like_any_attack():
    from ptmdetox import bench

    method, config, limit = bench._config({"attack": {"method": "por", "steps": 5, "triggers": "por-phrase",
                                                      "corpus_limit": 100}, "aux": "x"})
    assert method == "por" and isinstance(config, PorConfig) and limit == 100
    assert config.steps == 5 and config.triggers[1] == "at noon"
    with pytest.raises(PtmdetoxError, match="unknown option 'lamda' for attack por"):
        bench._config({"attack": {"method": "por", "lamda": 1}, "aux": "x"})
