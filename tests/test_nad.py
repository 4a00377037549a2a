"""NAD attention distillation (ptmdetox.defenses.nad), a task-specific defense, and `ptmdetox purify nad`."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from ptmdetox import models
from ptmdetox.cli import main
from ptmdetox.defenses import TASK_SPECIFIC
from ptmdetox.defenses.nad import NadConfig, attention_loss, attention_map, nad_purify
from ptmdetox.errors import PtmdetoxError


def test_attention_map_is_normalised_and_ignores_padding():
    hidden = torch.tensor([[[1.0, -1.0], [2.0, 0.0], [5.0, 5.0]]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    values = attention_map(hidden, mask, 2.0)
    expected = torch.tensor([[1.0, 2.0, 0.0]]) / (5 ** 0.5)   # mean |h|^2 = 1 and 2; padding 0
    torch.testing.assert_close(values, expected)
    assert attention_loss([hidden], [hidden * 3], mask, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert attention_loss([hidden], [hidden.flip(1)], mask, 2.0).item() > 0.1


def test_config_is_task_specific():
    assert "nad" in TASK_SPECIFIC
    with pytest.raises(PtmdetoxError, match="task-specific"):
        NadConfig()
    with pytest.raises(PtmdetoxError, match="fraction"):
        NadConfig(train="t.tsv", fraction=0)


def test_distillation_pulls_the_student_towards_the_teacher(tiny_model, tiny_task):
    adapter = models.create(tiny_model)
    before = {k: v.clone() for k, v in adapter.backbone.state_dict().items()}
    config = NadConfig(train=tiny_task[0], fraction=0.5, teacher_epochs=2, epochs=8, lr=1e-3, beta=50,
                       batch_size=8, max_length=32)
    report = nad_purify(adapter, [], config, progress=False)
    assert report["clean_examples"] == 20 and report["task_specific"] and report["steps"] == 20
    assert report["final_attention_loss"] < report["first_attention_loss"]
    changed = [k for k, v in adapter.backbone.state_dict().items() if not torch.equal(v, before[k])]
    assert any("encoder.layer" in k for k in changed)


def test_cli_nad_needs_no_corpus_and_saves_the_encoder(capsys, tmp_path, tiny_model, tiny_task):
    out = tmp_path / "nad"
    capsys.readouterr()
    assert main(["purify", "nad", "--model", tiny_model, "--train", tiny_task[0], "--out", str(out),
                 "--fraction", "0.5", "--epochs", "1", "--teacher-epochs", "1", "--batch-size", "8",
                 "--max-length", "32", "--quiet"]) == 0
    assert "(task-specific)" in capsys.readouterr().out
    report = json.loads((out / "purification.json").read_text(encoding="utf-8"))
    assert report["defense_name"] == "nad" and report["config"]["train"] == tiny_task[0]
    assert "task-specific defense" in (out / "README.md").read_text(encoding="utf-8")
    assert transformers.AutoModel.from_pretrained(str(out)).pooler is not None
    with pytest.raises(SystemExit):
        main(["purify", "nad", "--help"])
    assert "TASK-SPECIFIC" in capsys.readouterr().out
