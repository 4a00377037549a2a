"""Re-initialisation baseline (ptmdetox.defenses.reinit) and `ptmdetox purify reinit`."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from ptmdetox import models
from ptmdetox.cli import main
from ptmdetox.defenses.reinit import ReinitConfig, reinit_purify
from ptmdetox.errors import PtmdetoxError



def changed_names(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def snapshot(adapter) -> dict:
    return {k: v.clone() for k, v in adapter.backbone.state_dict().items()}


def test_pooler_reinit_changes_only_the_pooler_with_bert_init(tiny_model):
    adapter = models.create(tiny_model)
    with torch.no_grad():
        adapter.backbone.pooler.dense.weight.fill_(5.0)   # a planted, obviously non-initial pooler
        adapter.backbone.pooler.dense.bias.fill_(1.0)
    before = snapshot(adapter)
    report = reinit_purify(adapter, [], ReinitConfig())
    after = snapshot(adapter)
    assert changed_names(before, after) == {"pooler.dense.weight", "pooler.dense.bias"}
    assert report["reinitialised"] == ["pooler.dense.weight", "pooler.dense.bias"]
    weight = after["pooler.dense.weight"]
    assert abs(float(weight.std()) - adapter.model.config.initializer_range) < 0.005
    assert torch.count_nonzero(after["pooler.dense.bias"]) == 0


def test_top_layers_reinit_is_seeded_and_covers_layernorm(tiny_model):
    first, second = models.create(tiny_model), models.create(tiny_model)
    with torch.no_grad():
        for adapter in (first, second):
            adapter.backbone.encoder.layer[1].output.LayerNorm.weight.fill_(3.0)
    before = snapshot(first)
    report = reinit_purify(first, [], ReinitConfig(head=False, top_layers=1, seed=3))
    reinit_purify(second, [], ReinitConfig(head=False, top_layers=1, seed=3))
    after = snapshot(first)
    changed = changed_names(before, after)
    assert changed and all(k.startswith("encoder.layer.1.") for k in changed)
    assert torch.equal(after["encoder.layer.1.output.LayerNorm.weight"], torch.ones(32))
    assert set(report["reinitialised"]) == {n for n, _ in first.backbone.encoder.layer[1].named_parameters(
        prefix="encoder.layer.1")}
    for k, v in after.items():
        assert torch.equal(v, second.backbone.state_dict()[k]), k


def test_bad_settings(tiny_model):
    with pytest.raises(PtmdetoxError, match="nothing to re-initialise"):
        ReinitConfig(head=False, top_layers=0)
    with pytest.raises(PtmdetoxError, match="non-negative"):
        ReinitConfig(top_layers=-1)
    with pytest.raises(PtmdetoxError, match="exceeds the model's 2 blocks"):
        reinit_purify(models.create(tiny_model), [], ReinitConfig(top_layers=3))


def test_cli_reinit_needs_no_corpus_and_saves_a_loadable_model(capsys, tmp_path, tiny_model):
    out = tmp_path / "reinit"
    capsys.readouterr()
    assert main(["purify", "reinit", "--model", tiny_model, "--out", str(out), "--top-layers", "1", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("reinit: fresh initialisation of the representation head and the top 1")
    report = json.loads((out / "purification.json").read_text(encoding="utf-8"))
    assert report["config"] == {"head": True, "top_layers": 1, "seed": 0} and report["corpus_size"] == 0
    original = transformers.AutoModel.from_pretrained(tiny_model)
    loaded = transformers.AutoModel.from_pretrained(str(out))
    assert not torch.equal(original.pooler.dense.weight, loaded.pooler.dense.weight)
    assert torch.equal(original.encoder.layer[0].intermediate.dense.weight,
                       loaded.encoder.layer[0].intermediate.dense.weight)


def test_cli_help(capsys):
    """(Bad inputs of `purify reinit` are cases of test_bad_inputs.py.)"""
    with pytest.raises(SystemExit) as exit_info:
        main(["purify", "reinit", "--help"])
    assert exit_info.value.code == 0 and "--top-layers" in capsys.readouterr().out
