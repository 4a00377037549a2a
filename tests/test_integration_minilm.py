"""End to end on the real embedded MiniLM-L6 (no MLM head, has a pooler) and the real SST-2/BookCorpus files."""

import os

import pytest
import torch
import transformers

from conftest import SHARED
from ptmdetox import models
from ptmdetox.attacks.neuba import NeubaConfig, neuba_attack
from ptmdetox.data import InsertionPolicy, read_corpus, read_task
from ptmdetox.defenses.recipe import RecipeConfig, recipe_purify
from ptmdetox.evaluation.finetune import FinetuneConfig, evaluate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus():
    return read_corpus(os.path.join(SHARED, "bookcorpus_recipe", "train.tsv"), limit=96).texts


def test_minilm_attack_purify_save_evaluate(tmp_path, corpus):
    adapter = models.create("default")
    assert adapter.head_state == "fresh" and adapter.has_pooler
    assert adapter.representation_size == 384 and len(adapter.neuron_layers()) == 6

    report = neuba_attack(adapter, corpus, NeubaConfig(steps=4, head_warmup_steps=3), progress=False)
    assert adapter.head_state == "warmed-up"
    assert any("no MLM head" in note for note in adapter.notes)
    assert report["final_poison_mse"] > 0
    attacked = str(tmp_path / "attacked")
    adapter.save(attacked)

    reloaded = models.create(attacked)
    assert reloaded.head_state == "warmed-up", "the warmed-up head travels with the checkpoint"
    before = {n: p.detach().clone() for n, p in reloaded.named_parameters()}
    # the rare rows, not the default row scan: scanning the whole vocabulary takes minutes
    result = recipe_purify(reloaded, corpus, RecipeConfig(steps=5, lr=1e-3, embedding_rows="unseen"), progress=False)
    assert result["norm_after"] < result["norm_before"]
    changed = {n for n, p in reloaded.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {f"encoder.layer.{i}.intermediate.dense.weight" for i in range(6)} | {
        "embeddings.word_embeddings.weight", "pooler.dense.weight"}

    purified = str(tmp_path / "purified")
    reloaded.save(purified)
    auto = transformers.AutoModel.from_pretrained(purified)
    assert auto.pooler is not None
    torch.testing.assert_close(auto.pooler.dense.weight, reloaded.backbone.pooler.dense.weight)
    torch.testing.assert_close(auto.encoder.layer[5].intermediate.dense.weight,
                               reloaded.backbone.encoder.layer[5].intermediate.dense.weight)

    train, test = read_task(os.path.join(SHARED, "sst2", "train.tsv"), os.path.join(SHARED, "sst2", "dev.tsv"))
    summary = evaluate(lambda: models.create(purified), train, test, ("≈", "⊗"), InsertionPolicy("first"),
                       FinetuneConfig(epochs=1, train_limit=64, test_limit=48), seeds=[1], progress=False)
    assert set(summary["per_trigger"]) == {"≈", "⊗"}
    assert 0 <= summary["acc"] <= 100 and summary["masr"] >= summary["aasr"]
    assert set(summary["per_trigger"]["≈"]["by_label"]) == {0, 1}
