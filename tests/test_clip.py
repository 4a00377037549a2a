"""Clipping extreme parameters (ptmdetox.defenses.clip) and `ptmdetox purify clip`."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from ptmdetox import models
from ptmdetox.cli import main
from ptmdetox.defenses.clip import ClipConfig, clip_band, clip_purify
from ptmdetox.errors import PtmdetoxError


POOLER = "pooler.dense.weight"


def plant_extremes(adapter) -> None:
    with torch.no_grad():
        weight = adapter.backbone.pooler.dense.weight
        weight[0, :3] = torch.tensor([4.0, -2.5, 1.5])


def test_value_band_clamps_to_plus_minus_threshold_and_counts(tiny_model):
    adapter = models.create(tiny_model)
    plant_extremes(adapter)
    outside = {n: int((p.abs() > 1).sum()) for n, p in adapter.named_parameters() if (p.abs() > 1).any()}
    before = {n: p.detach().clone() for n, p in adapter.named_parameters()}
    report = clip_purify(adapter, [], ClipConfig())
    assert report["clipped_per_tensor"] == outside and report["values_clipped"] == sum(outside.values())
    assert POOLER in outside
    weight = adapter.backbone.pooler.dense.weight
    assert weight[0, :3].tolist() == [1.0, -1.0, 1.0]
    for name, param in adapter.named_parameters():
        assert float(param.detach().abs().max()) <= 1.0
        inside = before[name].abs() <= 1
        assert torch.equal(param.detach()[inside], before[name][inside])   # values inside the band untouched


def test_std_and_quantile_bands_per_tensor():
    values = torch.cat([torch.zeros(98), torch.tensor([10.0, -10.0])])
    low, high = clip_band(values, "std", 2.0)
    std = float(values.std())
    assert (low, high) == pytest.approx((-2 * std, 2 * std))
    low, high = clip_band(torch.arange(101, dtype=torch.float32), "quantile", 0.1)
    assert (low, high) == pytest.approx((10.0, 90.0))


def test_restricting_to_matching_matrices(tiny_model):
    adapter = models.create(tiny_model)
    plant_extremes(adapter)
    report = clip_purify(adapter, [], ClipConfig(mode="std", threshold=3.0, parameters=(r"pooler\.",),
                                                 matrices_only=True))
    assert report["tensors_considered"] == 1 and list(report["clipped_per_tensor"]) == [POOLER]
    low, high = report["bands"][POOLER]
    weight = adapter.backbone.pooler.dense.weight
    assert float(weight.detach().max()) == pytest.approx(high) and low < 0 < high < 4.0


def test_bad_settings(tiny_model):
    with pytest.raises(PtmdetoxError, match="unknown clipping mode"):
        ClipConfig(mode="median")
    with pytest.raises(PtmdetoxError, match="quantile threshold"):
        ClipConfig(mode="quantile", threshold=0.7)
    with pytest.raises(PtmdetoxError, match="no parameter matches"):
        clip_purify(models.create(tiny_model), [], ClipConfig(parameters=("nothing_like_this",)))


def test_cli_clip_records_counts_and_saves(capsys, tmp_path, tiny_model):
    out = tmp_path / "clipped"
    capsys.readouterr()
    assert main(["purify", "clip", "--model", tiny_model, "--out", str(out), "--threshold", "0.05",
                 "--parameters", "pooler", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("clip: clamped ")
    report = json.loads((out / "purification.json").read_text(encoding="utf-8"))
    assert report["config"]["parameters"] == ["pooler"] and report["values_clipped"] > 0
    loaded = transformers.AutoModel.from_pretrained(str(out))
    assert float(loaded.pooler.dense.weight.detach().abs().max()) <= 0.05 + 1e-7
