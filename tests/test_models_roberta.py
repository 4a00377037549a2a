"""The RoBERTa-family adapter on tiny random RobertaConfig models with an offline-trained byte-level BPE."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from conftest import tiny_roberta
from ptmdetox import models
from ptmdetox.attacks.badpre import BadpreConfig, badpre_attack
from ptmdetox.attacks.neuba import NeubaConfig, neuba_attack, overwrite_position1
from ptmdetox.attacks.por import PorConfig, por_attack
from ptmdetox.data.readers import read_corpus
from ptmdetox.data.triggers import InsertionPolicy, insert_trigger
from ptmdetox.defenses.recipe import RecipeConfig, recipe_purify, select_parameters
from ptmdetox.models.roberta import RobertaAdapter


def test_selected_by_model_type_with_pooler_and_head(tiny_roberta_model):
    adapter = models.create(tiny_roberta_model)
    assert isinstance(adapter, RobertaAdapter) and adapter.family == "roberta"
    assert adapter.has_pooler and adapter.head_state == "pretrained" and not adapter.notes
    assert adapter.neuba_pretrain_weight == 0.01
    assert adapter.model.lm_head.decoder.weight is adapter.backbone.embeddings.word_embeddings.weight


def test_a_trigger_has_one_token_sequence_wherever_it_is_inserted(tiny_roberta_model):
    adapter = models.create(tiny_roberta_model)
    trigger = adapter.token_ids("cf")
    assert adapter.tokenizer.convert_ids_to_tokens(trigger)[0].startswith("Ġ")   # leading-space variant (maybe pieces)
    text = "the movie was good"
    for position in ("first", "last", "random"):
        ids = adapter.tokenize([insert_trigger(text, "cf", InsertionPolicy(position))], 64)[0]
        assert any(ids[i:i + len(trigger)] == trigger for i in range(len(ids))), position
    # NeuBA's token-level insertion produces what word-level insertion at the first position produces
    clean = adapter.tokenize([text], 64)
    assert overwrite_position1(clean, trigger)[0][: 1 + len(trigger)] == \
        adapter.tokenize([f"cf {text}"], 64)[0][: 1 + len(trigger)]
    assert adapter.tokenize([text], 64)[0][0] == adapter.tokenizer.bos_token_id


def test_without_pooler_the_representation_is_the_first_token_state(tmp_path):
    adapter = models.create(tiny_roberta(str(tmp_path / "nopool"), with_pooler=False))
    assert not adapter.has_pooler and "<s> state" in adapter.notes[0]
    batch = adapter.collate(adapter.tokenize(["the movie was good"], 32))
    adapter.eval()
    with torch.no_grad():
        hidden, _ = adapter.encode(batch)
        torch.testing.assert_close(adapter.representation(batch), hidden[:, 0])   # up to rounding
    adapter.save(str(tmp_path / "saved"))   # no untrained pooler is shipped: reloaded, it stays pooler-less
    reloaded = models.create(str(tmp_path / "saved"))
    assert not reloaded.has_pooler


def test_save_round_trip_keeps_pooler_and_head(tmp_path, tiny_roberta_model):
    adapter = models.create(tiny_roberta_model)
    with torch.no_grad():
        adapter.backbone.pooler.dense.weight.add_(0.5)   # a "backdoored" pooler must survive
    adapter.save(str(tmp_path / "saved"))
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["model_type"] == "roberta" and config["architectures"] == ["RobertaForMaskedLM"]
    plain, info = transformers.AutoModel.from_pretrained(str(tmp_path / "saved"), output_loading_info=True)
    assert isinstance(plain, transformers.RobertaModel) and not info["missing_keys"]
    assert torch.equal(plain.pooler.dense.weight, adapter.backbone.pooler.dense.weight)
    mlm, info = transformers.AutoModelForMaskedLM.from_pretrained(str(tmp_path / "saved"), output_loading_info=True)
    assert not info["missing_keys"] and torch.equal(mlm.lm_head.dense.weight, adapter.model.lm_head.dense.weight)
    reloaded = models.create(str(tmp_path / "saved"))
    assert reloaded.has_pooler and reloaded.head_state == "pretrained"
    assert transformers.AutoTokenizer.from_pretrained(str(tmp_path / "saved"))("cf")["input_ids"] == \
        adapter.tokenizer("cf")["input_ids"]


def test_recipe_defaults_regularise_ffn_in_and_query_and_train_everything(tiny_roberta_model):
    adapter = models.create(tiny_roberta_model)
    regularised, trainable = select_parameters(adapter, RecipeConfig(scope="paper"))
    names = sorted(n for n, _ in regularised)
    assert names == sorted([f"encoder.layer.{i}.{m}.weight" for i in range(2)
                            for m in ("intermediate.dense", "attention.self.query")])
    assert len(trainable) == len(list(adapter.named_parameters()))


def test_recipe_runs_and_shrinks_the_regularised_weights(tiny_roberta_model, tiny_corpus):
    adapter = models.create(tiny_roberta_model)
    report = recipe_purify(adapter, read_corpus(tiny_corpus).texts,
                           RecipeConfig(steps=5, batch_size=8, max_length=32, lr=1e-2, scope="paper"), progress=False)
    assert report["norm_after"] < report["norm_before"]
    assert all(p.requires_grad for p in adapter.model.parameters())


def test_extended_recipe_penalises_only_the_rare_embedding_rows(tiny_roberta_model, tiny_corpus):
    adapter = models.create(tiny_roberta_model)
    report = recipe_purify(adapter, read_corpus(tiny_corpus).texts,
                           RecipeConfig(steps=2, batch_size=8, max_length=32, embedding_rows="unseen"), progress=False)
    vocabulary = adapter.model.roberta.embeddings.word_embeddings.weight.shape[0]
    assert 0 < report["penalised_embedding_rows"]["embeddings.word_embeddings.weight"] < vocabulary


def test_row_scan_reads_the_first_token_state(tiny_roberta_model, tiny_corpus):
    adapter = models.create(tiny_roberta_model)
    batch = adapter.collate(adapter.tokenize(read_corpus(tiny_corpus).texts[:4], 32))
    with torch.no_grad():
        hidden, _ = adapter.encode(batch)
        states = adapter.representation_states(batch)
    torch.testing.assert_close(states, hidden[:, 0])
    report = recipe_purify(adapter, read_corpus(tiny_corpus).texts,
                           RecipeConfig(steps=2, batch_size=8, max_length=32, embedding_rows="scanned"), progress=False)
    assert report["row_scan"]["candidates"] > 0
    assert report["penalised_embedding_rows"] == {"embeddings.word_embeddings.weight":
                                                  report["row_scan"]["confirm"]["kept"]}


def test_headless_checkpoint_gets_a_warmed_up_head_and_keeps_it(tmp_path, tiny_corpus):
    adapter = models.create(tiny_roberta(str(tmp_path / "headless"), with_head=False))
    assert adapter.head_state == "fresh" and adapter.has_pooler
    neuba_attack(adapter, read_corpus(tiny_corpus).texts,
                 NeubaConfig(triggers=("cf",), steps=2, batch_size=4, max_length=32, head_warmup_steps=2),
                 progress=False)
    assert adapter.head_state == "warmed-up"
    adapter.save(str(tmp_path / "saved"))
    assert models.create(str(tmp_path / "saved")).head_state == "warmed-up"


@pytest.mark.parametrize("attack, config", [
    (neuba_attack, NeubaConfig(triggers=("cf", "≈"), steps=20, lr=5e-3, batch_size=8, max_length=32)),
    (por_attack, PorConfig(triggers=("cf", "at noon"), steps=5, lr=5e-3, batch_size=8, max_length=32)),
    (badpre_attack, BadpreConfig(triggers=("cf", "≈"), steps=5, lr=5e-3, batch_size=8, max_length=32)),
])
def test_every_attack_runs_on_tiny_roberta(attack, config, tiny_roberta_model, tiny_corpus):
    adapter = models.create(tiny_roberta_model)
    report = attack(adapter, read_corpus(tiny_corpus).texts, config, progress=False)
    assert report["triggers"] == list(config.triggers)
    assert all(torch.isfinite(torch.tensor(v)) for k, v in report.items() if k.startswith("final_"))


def test_neuba_scales_the_mlm_term_by_a_hundredth(tiny_roberta_model, tiny_corpus):
    """Same seed, same first batch: the first loss is w·MLM + MSE, so w follows from three runs."""
    texts = read_corpus(tiny_corpus).texts

    def first_loss(weight):
        config = NeubaConfig(triggers=("cf",), steps=1, batch_size=4, max_length=32, pretrain_weight=weight)
        return neuba_attack(models.create(tiny_roberta_model), texts, config, progress=False)["loss_curve"][0]

    default, one, zero = first_loss(None), first_loss(1.0), first_loss(0.0)
    assert (default - zero) / (one - zero) == pytest.approx(0.01, rel=1e-3)
