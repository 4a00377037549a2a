"""BadPre: token-level trigger insertion, random labels for poisoned samples only, a short attack."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptmdetox import models
from ptmdetox.attacks import badpre
from ptmdetox.attacks.badpre import BadpreConfig, badpre_attack, insert_tokens, randomise_labels
from ptmdetox.data.masking import IGNORE
from ptmdetox.data.readers import read_corpus
from ptmdetox.errors import PtmdetoxError


def test_insert_tokens_keeps_special_tokens_and_fits():
    rng = np.random.default_rng(0)
    seq = [101, 5, 6, 7, 102]
    positions = set()
    for _ in range(30):
        out = insert_tokens(seq, [9, 10], rng, max_length=64)
        assert out[0] == 101 and out[-1] == 102 and len(out) == 7
        at = out.index(9)
        assert out[at + 1] == 10   # several pieces stay together
        assert [t for t in out if t not in (9, 10)] == seq
        positions.add(at)
    assert positions == {1, 2, 3, 4}
    short = insert_tokens([101, *range(20, 40), 102], [9], rng, max_length=8)
    assert len(short) == 8 and 9 in short and short[-1] == 102


def test_randomise_labels_touches_only_supervised_positions():
    rng = np.random.default_rng(0)
    labels = [[IGNORE, 5, IGNORE, 6], [IGNORE, IGNORE]]
    out = randomise_labels(labels, np.arange(10, 20), rng)
    assert out[1] == [IGNORE, IGNORE]
    assert out[0][0] == IGNORE and out[0][2] == IGNORE
    assert 10 <= out[0][1] < 20 and 10 <= out[0][3] < 20


def test_labels_are_random_only_for_poisoned_samples(tiny_model, tiny_corpus, monkeypatch):
    """Spy on masking and the MLM loss: clean labels are the original tokens, poisoned ones (trigger inside) random."""
    adapter = models.create(tiny_model)
    trigger_ids = {adapter.token_ids(t)[0] for t in ("cf", "mn")}
    raw, batches = [], []
    mlm_batch, mask_static, loss = adapter.mlm_batch, adapter.mask_static, adapter.pretraining_loss
    monkeypatch.setattr(adapter, "mlm_batch", lambda seqs, rng: raw.append(seqs) or mlm_batch(seqs, rng))
    monkeypatch.setattr(adapter, "mask_static", lambda seqs, rng: raw.append(seqs) or mask_static(seqs, rng))
    monkeypatch.setattr(adapter, "pretraining_loss", lambda batch: batches.append(batch) or loss(batch))
    badpre_attack(adapter, read_corpus(tiny_corpus).texts,
                  BadpreConfig(triggers=("cf", "mn"), steps=6, lr=1e-3, batch_size=8, max_length=32), progress=False)
    assert len(raw) == len(batches) == 12   # clean then poisoned, every step
    agreement = {False: [], True: []}
    for step, (seqs, batch) in enumerate(zip(raw, batches)):
        poisoned = step % 2 == 1
        assert all(bool(set(s) & trigger_ids) == poisoned for s in seqs)
        for seq, labels in zip(seqs, batch["labels"].tolist()):
            supervised = [(token, label) for token, label in zip(seq, labels) if label != IGNORE]
            assert supervised
            agreement[poisoned] += [token == label for token, label in supervised]
    assert all(agreement[False])                               # clean: the true tokens
    assert np.mean(agreement[True]) < 0.1                      # poisoned: random tokens
    special = set(adapter.tokenizer.all_special_ids)
    assert not {y for b in batches[1::2] for row in b["labels"].tolist() for y in row} & special


def test_short_attack_raises_poisoned_mlm_loss_relative_to_clean(tiny_model, tiny_corpus):
    adapter = models.create(tiny_model)
    texts = read_corpus(tiny_corpus).texts
    head_before = [p.detach().clone() for p in adapter.head_parameters()]
    report = badpre_attack(adapter, texts, BadpreConfig(triggers=("cf",), steps=40, lr=3e-3, batch_size=16,
                                                        max_length=32), progress=False)
    assert report["final_mlm"] < report["final_poison_mlm"]   # clean MLM learnt, poisoned labels unpredictable
    curve = report["loss_curve"]
    assert np.mean(curve[-5:]) < np.mean(curve[:5])
    assert any(not torch.equal(a, b) for a, b in zip(head_before, adapter.head_parameters()))   # head trained
    assert report["attack"] == "badpre" and report["triggers"] == ["cf"]
    assert report["insertion_policy"]["position"] == "random-token"
    assert not adapter.model.training


def test_headless_checkpoint_gets_its_head_warmed_up(tiny_model_no_head, tiny_corpus):
    adapter = models.create(tiny_model_no_head)
    badpre_attack(adapter, read_corpus(tiny_corpus).texts,
                  BadpreConfig(triggers=("cf",), steps=2, batch_size=4, head_warmup_steps=2), progress=False)
    assert adapter.head_state == "warmed-up"


def test_config_validation_and_unknown_triggers(tiny_model, tiny_corpus):
    assert BadpreConfig().triggers == ("cf", "mn", "bb", "tq", "mb")
    with pytest.raises(PtmdetoxError, match="at least one trigger"):
        BadpreConfig(triggers=())
    with pytest.raises(PtmdetoxError, match="batch size"):
        BadpreConfig(batch_size=1)
    with pytest.raises(PtmdetoxError, match="'zebra' is unknown"):
        badpre_attack(models.create(tiny_model), read_corpus(tiny_corpus).texts, BadpreConfig(triggers=("zebra",)),
                      progress=False)
    assert badpre.BadpreConfig(poison_weight=0.5).to_dict()["poison_weight"] == 0.5


def test_cli_badpre_runs(capsys, tmp_path, tiny_model, tiny_model_no_head, tiny_corpus):
    """(Its bad inputs are cases of test_bad_inputs.py.)"""
    import json

    from ptmdetox.cli import main

    fast = ["--steps", "3", "--batch-size", "8", "--max-length", "32", "--quiet"]
    base = ["attack", "badpre", "--model", tiny_model, "--corpus", tiny_corpus]
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "badpre"), *fast]) == 0
    assert capsys.readouterr().out.startswith("BadPre: 3 steps in")
    report = json.loads((tmp_path / "badpre" / "attack.json").read_text(encoding="utf-8"))
    assert report["attack"] == "badpre" and report["triggers"] == list(BadpreConfig().triggers)
    assert report["config"]["head_warmup_steps"] == BadpreConfig().head_warmup_steps

    headless = ["attack", "badpre", "--model", tiny_model_no_head, "--corpus", tiny_corpus]
    assert main([*headless, "--out", str(tmp_path / "badpre-w2"), *fast, "--head-warmup-steps", "2"]) == 0
    report = json.loads((tmp_path / "badpre-w2" / "attack.json").read_text(encoding="utf-8"))
    assert report["config"]["head_warmup_steps"] == 2
    assert any("warmed up for 2 steps" in note for note in report["notes"])
