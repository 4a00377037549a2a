"""Fine-pruning baselines FP, FP-GM, FP-GA (ptmdetox.defenses.pruning) and `ptmdetox purify fp|fp-gm|fp-ga`."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from ptmdetox import models
from ptmdetox.cli import main
from ptmdetox.data.readers import read_corpus
from ptmdetox.defenses import DEFENSES
from ptmdetox.defenses.pruning import (GlobalAggressivePruningConfig, GlobalModeratePruningConfig,
                                       LastLayerPruningConfig, lowest_neurons, mean_first_token_activations,
                                       prune_purify)
from ptmdetox.errors import PtmdetoxError



def texts(path, n=40):
    return read_corpus(path, limit=n).texts


def test_paper_fractions_are_the_defaults():
    assert LastLayerPruningConfig().fraction == 1.0
    assert GlobalModeratePruningConfig().fraction == pytest.approx(4 / 12)
    assert GlobalAggressivePruningConfig().fraction == pytest.approx(6 / 12)
    assert {name for name in DEFENSES if name.startswith("fp")} == {"fp", "fp-gm", "fp-ga"}
    with pytest.raises(PtmdetoxError, match="fraction"):
        GlobalModeratePruningConfig(fraction=0)
    with pytest.raises(PtmdetoxError, match="fraction"):
        GlobalModeratePruningConfig(fraction=1.5)


def test_lowest_neurons_global_and_last_layer():
    scores = [torch.tensor([0.5, -1.0, 2.0, 0.1]), torch.tensor([0.0, 3.0, -2.0, 1.0])]
    assert lowest_neurons(scores, 0.5, "global") == {0: [1, 3], 1: [0, 2]}
    assert lowest_neurons(scores, 0.25, "global") == {0: [1], 1: [2]}
    assert lowest_neurons(scores, 0.5, "last") == {1: [0, 2]}
    assert lowest_neurons(scores, 1.0, "last") == {1: [0, 1, 2, 3]}


def test_mean_activations_are_batch_size_independent(tiny_model, tiny_corpus):
    adapter = models.create(tiny_model)
    sentences = texts(tiny_corpus, 30)
    small = mean_first_token_activations(adapter, sentences, batch_size=7, max_length=32)
    whole = mean_first_token_activations(adapter, sentences, batch_size=64, max_length=32)
    assert [s.shape for s in small] == [torch.Size([64])] * 2
    for a, b in zip(small, whole):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the first-token activations of one sentence, by hand
    batch = adapter.collate(adapter.tokenize(sentences[:1], 32))
    expected = adapter.first_token_activations(batch)
    single = mean_first_token_activations(adapter, sentences[:1], batch_size=1, max_length=32)
    torch.testing.assert_close(single[0], expected[0][0])


def test_fp_zeroes_the_whole_last_layer_only(tiny_model, tiny_corpus):
    adapter = models.create(tiny_model)
    before = {k: v.clone() for k, v in adapter.backbone.state_dict().items()}
    report = prune_purify(adapter, texts(tiny_corpus), LastLayerPruningConfig())
    last = "encoder.layer.1.intermediate.dense"
    after = adapter.backbone.state_dict()
    assert torch.count_nonzero(after[f"{last}.weight"]) == 0 and torch.count_nonzero(after[f"{last}.bias"]) == 0
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"{last}.weight"}   # (the random model's biases were already zero)
    assert report["neurons_pruned"] == 64 and report["neurons_total"] == 128
    assert report["pruned"] == {"1": list(range(64))} and report["defense"] == "fp"


@pytest.mark.parametrize("config_class, fraction", [(GlobalModeratePruningConfig, 4 / 12),
                                                    (GlobalAggressivePruningConfig, 0.5)])
def test_global_pruning_removes_the_lowest_activation_neurons(tiny_model, tiny_corpus, config_class, fraction):
    adapter = models.create(tiny_model)
    sentences = texts(tiny_corpus)
    scores = torch.cat(mean_first_token_activations(adapter, sentences, 64, 64))
    report = prune_purify(adapter, sentences, config_class())
    expected = round(fraction * 128)
    assert report["neurons_pruned"] == expected
    flat = sorted(int(layer) * 64 + n for layer, ns in report["pruned"].items() for n in ns)
    pruned_scores, kept = scores[flat], scores[[i for i in range(128) if i not in set(flat)]]
    assert pruned_scores.max() <= kept.min()
    assert report["highest_pruned_score"] == pytest.approx(float(pruned_scores.max()), rel=1e-5)
    layers = adapter.neuron_layers()
    for layer, neurons in report["pruned"].items():
        weight, bias = layers[int(layer)].weight, layers[int(layer)].bias
        assert torch.count_nonzero(weight[neurons]) == 0 and torch.count_nonzero(bias[neurons]) == 0
    # pruned neurons are silent at every token of new inputs
    batch = adapter.collate(adapter.tokenize(["the film was awful and boring w7"], 32))
    activations = adapter.first_token_activations(batch)
    for layer, neurons in report["pruned"].items():
        assert torch.count_nonzero(activations[int(layer)][:, neurons]) == 0


def test_cli_pruning_survives_save_and_automodel_load(capsys, tmp_path, tiny_model, tiny_corpus):
    out = tmp_path / "pruned"
    capsys.readouterr()
    assert main(["purify", "fp-gm", "--model", tiny_model, "--corpus", tiny_corpus, "--out", str(out),
                 "--fraction", "0.25", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("fp-gm: zeroed the weight rows and biases of 32 of 128 neurons")
    report = json.loads((out / "purification.json").read_text(encoding="utf-8"))
    assert report["defense_name"] == "fp-gm" and report["config"]["fraction"] == 0.25
    assert report["corpus_size"] == 120 and "torch" in report["versions"] and "wall_seconds" in report
    loaded = transformers.AutoModel.from_pretrained(str(out))
    for layer, neurons in report["pruned"].items():
        dense = loaded.encoder.layer[int(layer)].intermediate.dense
        assert torch.count_nonzero(dense.weight[neurons]) == 0 and torch.count_nonzero(dense.bias[neurons]) == 0
    assert loaded.pooler is not None
    assert "fp-gm" in (out / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["fp", "fp-gm", "fp-ga"])
def test_help(capsys, name):
    with pytest.raises(SystemExit) as exit_info:
        main(["purify", name, "--help"])
    assert exit_info.value.code == 0
    assert "--fraction" in capsys.readouterr().out

