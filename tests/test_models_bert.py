"""The BERT adapter (ptmdetox.models.bert): loading, representation, MLM head warm-up, saving."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from ptmdetox import models
from ptmdetox.data.masking import IGNORE
from ptmdetox.data.readers import read_corpus
from ptmdetox.errors import PtmdetoxError
from ptmdetox.models.base import ModelAdapter
from ptmdetox.models.bert import BertAdapter

SENTENCES = ["the movie was good", "it was very bad and boring", "a great film at noon", "i was not fun"]


def batch_of(adapter, texts=SENTENCES):
    return adapter.collate(adapter.tokenize(texts, 32))


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ---- loading ------------------------------------------------------------------------------------------------

def test_checkpoint_with_head_loads_as_pretrained(tiny_model):
    adapter = models.create(tiny_model)
    assert isinstance(adapter, BertAdapter)
    assert adapter.family == "bert"
    assert adapter.head_state == "pretrained"
    assert adapter.has_pooler
    assert adapter.notes == []
    assert adapter.representation_size == adapter.hidden_size == 32
    assert not adapter.model.training   # loaded in eval mode
    # head parameters exclude the decoder weight, which is tied to the word embeddings
    shared = {id(p) for p in adapter.backbone.parameters()}
    assert adapter.head_parameters() and all(id(p) not in shared for p in adapter.head_parameters())
    assert adapter.model.cls.predictions.decoder.weight is adapter.backbone.embeddings.word_embeddings.weight


def test_checkpoint_without_head_is_fresh(tiny_model_no_head):
    adapter = models.create(tiny_model_no_head)
    assert adapter.head_state == "fresh"
    assert adapter.has_pooler


def test_checkpoint_without_pooler_uses_the_cls_state(tmp_path, tiny_model):
    folder = tmp_path / "nopooler"
    folder.mkdir()
    state = load_file(os.path.join(tiny_model, "model.safetensors"))
    pooled = [k for k in state if "pooler" in k]
    assert pooled
    save_file({k: v for k, v in state.items() if "pooler" not in k}, str(folder / "model.safetensors"))
    for name in os.listdir(tiny_model):
        if not name.endswith(".safetensors"):
            (folder / name).write_bytes(open(os.path.join(tiny_model, name), "rb").read())
    adapter = models.create(str(folder))
    assert not adapter.has_pooler
    assert any("no trained pooler" in n for n in adapter.notes)
    batch = batch_of(adapter)
    with torch.no_grad():
        hidden, _ = adapter.encode(batch)
        rep = adapter.representation(batch)
    torch.testing.assert_close(rep, hidden[:, 0])   # the last block at [CLS] only: equal up to rounding


# ---- structure and computation -----------------------------------------------------------------------------

def test_representation_is_the_pooler_output(tiny_model):
    adapter = models.create(tiny_model)
    batch = batch_of(adapter)
    with torch.no_grad():
        rep = adapter.representation(batch)
        out = adapter.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        manual = torch.tanh(adapter.backbone.pooler.dense(out.last_hidden_state[:, 0]))
    assert rep.shape == (len(SENTENCES), 32)
    assert torch.allclose(rep, out.pooler_output)
    assert torch.allclose(rep, manual, atol=1e-6)
    assert not torch.allclose(rep, out.last_hidden_state[:, 0])


def test_representation_states_are_the_last_layer_cls_states(tiny_model):
    adapter = models.create(tiny_model)
    batch = batch_of(adapter)
    with torch.no_grad():
        states = adapter.representation_states(batch)
        generic = ModelAdapter.representation_states(adapter, batch)    # from the full forward pass
        hidden, _ = adapter.encode(batch)
    torch.testing.assert_close(states, hidden[:, 0])
    torch.testing.assert_close(generic, hidden[:, 0])


def test_neuron_layers_are_the_ffn_in_layers(tiny_model):
    adapter = models.create(tiny_model)
    layers = adapter.neuron_layers()
    assert len(layers) == 2
    for layer, block in zip(layers, adapter.backbone.encoder.layer):
        assert isinstance(layer, torch.nn.Linear)
        assert layer is block.intermediate.dense
        assert (layer.in_features, layer.out_features) == (32, 64)


def test_first_token_activations(tiny_model):
    adapter = models.create(tiny_model)
    batch = batch_of(adapter)
    captured = []
    handles = [layer.register_forward_hook(lambda m, i, o: captured.append(o[:, 0].detach()))
               for layer in adapter.neuron_layers()]
    with torch.no_grad():
        acts = adapter.first_token_activations(batch)
    for h in handles:
        h.remove()
    assert len(acts) == 2
    assert all(a.shape == (len(SENTENCES), 64) for a in acts)
    act_fn = adapter.backbone.encoder.layer[0].intermediate.intermediate_act_fn
    for act, pre in zip(acts, captured):   # post-activation values of the FFN-in layer at position 0
        assert torch.allclose(act, act_fn(pre), atol=1e-6)
    assert not acts[0].requires_grad
    assert all(not block.intermediate._forward_hooks for block in adapter.backbone.encoder.layer)


def test_collate_and_mlm_batch(tiny_model):
    adapter = models.create(tiny_model)
    seqs = adapter.tokenize(["the movie", "a good film was fun"], 16)
    batch = adapter.collate(seqs)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 7)
    assert batch["input_ids"][0, 4:].tolist() == [adapter.tokenizer.pad_token_id] * 3
    assert batch["attention_mask"].sum(1).tolist() == [4, 7]
    mlm = adapter.mlm_batch(seqs, np.random.default_rng(0))
    assert (mlm["labels"] != IGNORE).sum(1).min() >= 1
    # special tokens and padding are never targets
    assert (mlm["labels"][:, 0] == IGNORE).all() and (mlm["labels"][0, 3:] == IGNORE).all()
    loss = adapter.pretraining_loss(mlm)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.item() > 0


@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_roberta_model"])
def test_the_tied_decoder_gradient_can_be_stopped_kept_for_some_rows_or_untied(fixture, request):
    adapter = models.create(request.getfixturevalue(fixture))
    adapter.train()
    batch = adapter.mlm_batch(adapter.tokenize(SENTENCES, 32), np.random.default_rng(0))
    embedding = adapter.backbone.embeddings.word_embeddings.weight
    head_only = adapter.head_parameters()

    def gradients(tied):
        adapter.model.zero_grad()
        torch.manual_seed(0)
        with adapter.tied_output_gradients(tied):
            loss = adapter.pretraining_loss(batch)
        loss.backward()
        return loss.detach(), embedding.grad.clone(), [p.grad.clone() for p in head_only]

    tied_loss, tied_grad, tied_head = gradients(True)
    input_loss, input_grad, input_head = gradients(False)
    assert adapter.tied_output_gradient    # restored after the block
    assert torch.equal(tied_loss, input_loss)
    rows_in_input = torch.zeros(len(embedding), dtype=torch.bool)
    rows_in_input[batch["input_ids"][batch["attention_mask"].bool()].unique()] = True   # padding has no gradient
    assert input_grad[~rows_in_input].abs().max() == 0
    assert input_grad[rows_in_input].abs().sum(1).gt(0).all()
    assert tied_grad[~rows_in_input].abs().sum(1).gt(0).all()    # the decoder reaches every row
    assert all(torch.allclose(a, b) for a, b in zip(tied_head, input_head))   # the head's own weights learn as before
    given = torch.arange(0, len(embedding), 3)
    rows_loss, rows_grad, rows_head = gradients(given)
    assert adapter.tied_output_gradient is True
    assert torch.equal(rows_loss, tied_loss)
    assert torch.allclose(rows_grad[given], tied_grad[given])            # input side + decoder side
    others = torch.ones(len(embedding), dtype=torch.bool)
    others[given] = False
    assert torch.allclose(rows_grad[others], input_grad[others])         # input side only
    assert all(torch.allclose(a, b) for a, b in zip(tied_head, rows_head))

    adapter.model.zero_grad()
    torch.manual_seed(0)
    with adapter.untied_output() as decoder:
        untied_loss = adapter.pretraining_loss(batch)
        untied_loss.backward()
    assert adapter.output_weight is None and adapter.tied_output_weight() is embedding    # dropped after the block
    assert torch.equal(untied_loss.detach(), tied_loss)
    assert torch.allclose(embedding.grad, input_grad)                                   # input side only
    assert torch.allclose(decoder.grad, tied_grad - input_grad, atol=1e-6)              # decoder side only


def test_tokenize_truncates_and_token_ids_refuses_unknown_words(tiny_model):
    adapter = models.create(tiny_model)
    assert len(adapter.tokenize([" ".join(["good"] * 50)], 10)[0]) == 10
    assert adapter.tokenize([], 10) == []
    assert adapter.token_ids("≈") == [adapter.tokenizer.convert_tokens_to_ids("≈")]
    assert len(adapter.token_ids("at noon")) == 2
    with pytest.raises(PtmdetoxError, match="unknown to this tokenizer"):
        adapter.token_ids("xylophone")
    with pytest.raises(PtmdetoxError, match="unknown to this tokenizer"):
        adapter.token_ids("   ")


# ---- MLM head warm-up ------------------------------------------------------------------------------------------

def test_warm_up_trains_only_the_head(tiny_model_no_head, tiny_corpus):
    adapter = models.create(tiny_model_no_head)
    ids = adapter.tokenize(read_corpus(tiny_corpus).texts, 32)
    head_ids = {id(p) for p in adapter.head_parameters()}
    head_names = {n for n, p in adapter.model.named_parameters() if id(p) in head_ids}
    assert head_names and all(n.startswith("cls.predictions.") for n in head_names)
    before = {n: p.detach().clone() for n, p in adapter.model.named_parameters()}
    adapter.prepare_pretraining(ids, steps=3, lr=1e-2, batch_size=8, progress=False)
    after = dict(adapter.model.named_parameters())
    for name, old in before.items():
        if name in head_names:
            continue
        assert torch.equal(old, after[name]), f"{name} changed during the head warm-up"
    changed = [n for n in head_names if not torch.equal(before[n], after[n])]
    assert changed, "the warm-up did not change the head"
    assert adapter.head_state == "warmed-up"
    assert any("warmed up for 3 steps" in n for n in adapter.notes)
    assert all(p.requires_grad for p in adapter.model.parameters())   # restored
    assert not adapter.model.training


def test_warm_up_needs_a_corpus(tiny_model_no_head):
    adapter = models.create(tiny_model_no_head)
    with pytest.raises(PtmdetoxError, match="no MLM head and no auxiliary text"):
        adapter.prepare_pretraining([], steps=2, progress=False)
    assert adapter.head_state == "fresh"


def test_warm_up_is_a_no_op_for_a_pretrained_head(tiny_model):
    adapter = models.create(tiny_model)
    before = snapshot(adapter.model)
    adapter.prepare_pretraining(None, steps=2, progress=False)
    assert adapter.head_state == "pretrained"
    assert all(torch.equal(v, adapter.model.state_dict()[k]) for k, v in before.items())


# ---- saving -------------------------------------------------------------------------------------------------------

def test_pooler_survives_save_and_automodel_round_trip(tiny_model, tmp_path):
    original = transformers.BertModel.from_pretrained(tiny_model)
    adapter = models.create(tiny_model)
    out = str(tmp_path / "saved")
    adapter.save(out)
    assert os.path.isfile(os.path.join(out, "model.safetensors"))
    assert not any(f.endswith(".bin") for f in os.listdir(out))
    sidecar = json.load(open(os.path.join(out, "ptmdetox.json"), encoding="utf-8"))
    assert sidecar == {"family": "bert", "mlm_head": "pretrained", "has_pooler": True}
    reloaded, info = transformers.AutoModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"]
    assert torch.equal(reloaded.pooler.dense.weight, original.pooler.dense.weight)
    assert torch.equal(reloaded.pooler.dense.bias, original.pooler.dense.bias)
    assert torch.equal(reloaded.pooler.dense.weight, adapter.backbone.pooler.dense.weight)
    for key, value in original.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    # the adapter reloads the saved folder with its head
    again = models.create(out)
    assert again.head_state == "pretrained"
    head = "cls.predictions.transform.dense.weight"
    assert torch.equal(again.model.state_dict()[head], adapter.model.state_dict()[head])
    assert "cls.seq_relationship.weight" not in load_file(os.path.join(out, "model.safetensors"))


def test_saving_a_fresh_head_leaves_it_out(tiny_model_no_head, tmp_path):
    adapter = models.create(tiny_model_no_head)
    out = str(tmp_path / "saved")
    adapter.save(out)
    keys = load_file(os.path.join(out, "model.safetensors")).keys()
    assert not any(k.startswith("cls.") for k in keys)
    assert any("pooler" in k for k in keys)
    assert models.create(out).head_state == "fresh"


def test_warmed_up_head_is_saved_and_recorded(tiny_model_no_head, tiny_corpus, tmp_path):
    adapter = models.create(tiny_model_no_head)
    adapter.prepare_pretraining(adapter.tokenize(read_corpus(tiny_corpus).texts, 32), steps=2, batch_size=8,
                                progress=False)
    out = str(tmp_path / "saved")
    adapter.save(out)
    again = models.create(out)
    assert again.head_state == "warmed-up"
    head = "cls.predictions.transform.dense.weight"
    assert torch.equal(again.model.state_dict()[head], adapter.model.state_dict()[head])
