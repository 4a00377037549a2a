"""Vetting checkpoints before loading (ptmdetox.models.loading and ptmdetox.models.create)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest
import torch
from safetensors.torch import load_file, save_file

from ptmdetox import models
from ptmdetox.errors import PtmdetoxError, UnsafeCheckpointError
from ptmdetox.models.loading import resolve

from conftest import tiny_bert


def pickle_only(folder: str, extra: dict | None = None) -> dict[str, torch.Tensor]:
    """Replace the safetensors weights of `folder` with a pytorch_model.bin pickle; returns the state."""
    state = load_file(os.path.join(folder, "model.safetensors"))
    os.remove(os.path.join(folder, "model.safetensors"))
    torch.save({**state, **(extra or {})}, os.path.join(folder, "pytorch_model.bin"))
    return state


class WritesMarker:
    """Unpickling this object runs code: it writes a marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def edit_config(folder: str, **changes) -> None:
    path = os.path.join(folder, "config.json")
    config = json.load(open(path, encoding="utf-8"))
    config.update(changes)
    json.dump(config, open(path, "w", encoding="utf-8"))


# ---- resolve -------------------------------------------------------------------------------------------------

def test_resolve_a_local_folder(tiny_model):
    checkpoint = resolve(tiny_model)
    assert checkpoint.local and checkpoint.path == tiny_model and checkpoint.source == tiny_model
    assert checkpoint.has_safetensors and checkpoint.pickle_files == []
    assert checkpoint.config["model_type"] == "bert"


def test_folder_name_with_glob_characters_loads(tiny_model, tmp_path):
    odd = tmp_path / "run[1]*?"
    shutil.copytree(tiny_model, odd)
    checkpoint = resolve(str(odd))
    assert checkpoint.has_safetensors
    assert models.create(str(odd)).hidden_size > 0


def test_missing_config_json(tiny_model):
    os.remove(os.path.join(tiny_model, "config.json"))
    with pytest.raises(PtmdetoxError, match="no config.json"):
        models.create(tiny_model)


def test_unreadable_config_json(tiny_model):
    with open(os.path.join(tiny_model, "config.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(PtmdetoxError, match="unreadable config"):
        models.create(tiny_model)
    with open(os.path.join(tiny_model, "config.json"), "w") as f:
        f.write("[1, 2]")
    with pytest.raises(PtmdetoxError, match="not a JSON object"):
        models.create(tiny_model)


def test_config_with_auto_map_is_refused(tiny_model):
    edit_config(tiny_model, auto_map={"AutoModel": "evil.EvilModel"})
    with open(os.path.join(tiny_model, "evil.py"), "w") as f:
        f.write("raise SystemExit('remote code ran')\n")
    with pytest.raises(UnsafeCheckpointError, match="auto_map"):
        models.create(tiny_model)


def test_config_asking_for_remote_code_is_refused(tiny_model):
    edit_config(tiny_model, trust_remote_code=True)
    with pytest.raises(UnsafeCheckpointError):
        models.create(tiny_model)


def test_unknown_model_type(tiny_model):
    edit_config(tiny_model, model_type="llama")
    with pytest.raises(PtmdetoxError, match="unsupported model_type 'llama'.*supported: bert"):
        models.create(tiny_model)


def test_missing_model_type(tiny_model):
    edit_config(tiny_model, model_type=None)
    with pytest.raises(PtmdetoxError, match="unsupported model_type 'None'"):
        models.create(tiny_model)


def test_folder_without_weights(tiny_model):
    os.remove(os.path.join(tiny_model, "model.safetensors"))
    with pytest.raises(PtmdetoxError, match="no weight files"):
        models.create(tiny_model)


def test_missing_folder_and_file_instead_of_folder(tmp_path, tiny_model):
    with pytest.raises(PtmdetoxError, match="no such model folder"):
        models.create(str(tmp_path / "nowhere"))
    with pytest.raises(PtmdetoxError, match="is a file"):
        models.create(os.path.join(tiny_model, "config.json"))


def test_weights_that_do_not_match_the_config(tmp_path, tiny_model):
    other = tiny_bert(str(tmp_path / "other"), type_vocab_size=4)   # token_type_embeddings [4, 32], not [2, 32]
    shutil.copy(os.path.join(other, "model.safetensors"), os.path.join(tiny_model, "model.safetensors"))
    with pytest.raises(PtmdetoxError, match="do not match the config|cannot load checkpoint"):
        models.create(tiny_model)


def test_checkpoint_of_another_architecture_is_refused(tiny_model):
    state = load_file(os.path.join(tiny_model, "model.safetensors"))
    save_file({k.replace("bert.", "roberta."): v for k, v in state.items()},
              os.path.join(tiny_model, "model.safetensors"))
    with pytest.raises(PtmdetoxError, match="lacks .* encoder weights"):
        models.create(tiny_model)


# ---- non-finite weights ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["bert.encoder.layer.0.intermediate.dense.weight",
                                 "bert.pooler.dense.bias",
                                 "cls.predictions.transform.dense.weight"])
def test_nan_weights_are_refused(tiny_model, key):
    path = os.path.join(tiny_model, "model.safetensors")
    state = load_file(path)
    assert key in state
    state[key][0] = float("nan")
    save_file(state, path)
    with pytest.raises(PtmdetoxError, match="NaN or Inf"):
        models.create(tiny_model)


def test_inf_weights_are_refused(tiny_model):
    path = os.path.join(tiny_model, "model.safetensors")
    state = load_file(path)
    state["bert.embeddings.word_embeddings.weight"][3, 1] = float("inf")
    save_file(state, path)
    with pytest.raises(PtmdetoxError, match="word_embeddings.*NaN or Inf"):
        models.create(tiny_model)


# ---- pickles ------------------------------------------------------------------------------------------------------

def test_pickle_only_checkpoint_is_refused_without_allow_pickle(tiny_model):
    pickle_only(tiny_model)
    checkpoint = resolve(tiny_model)
    assert not checkpoint.has_safetensors
    assert [os.path.basename(f) for f in checkpoint.pickle_files] == ["pytorch_model.bin"]
    with pytest.raises(UnsafeCheckpointError, match="only pickle weights.*--allow-pickle"):
        models.create(tiny_model)


def test_pickle_only_checkpoint_loads_with_allow_pickle(tiny_model, tmp_path, monkeypatch):
    state = pickle_only(tiny_model)
    files = sorted(os.listdir(tiny_model))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    adapter = models.create(tiny_model, allow_pickle=True)
    assert adapter.head_state == "pretrained" and adapter.has_pooler
    loaded = adapter.model.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    batch = adapter.collate(adapter.tokenize(["the movie was good"], 16))
    with torch.no_grad():
        assert torch.isfinite(adapter.representation(batch)).all()
    # the checkpoint folder is left as it was, and the temporary safetensors copy is removed
    assert sorted(os.listdir(tiny_model)) == files
    assert os.listdir(scratch) == []


def test_pickle_that_would_run_code_is_refused_even_with_allow_pickle(tiny_model, tmp_path):
    marker = tmp_path / "marker"
    pickle_only(tiny_model, extra={"evil": WritesMarker(str(marker))})
    with pytest.raises(UnsafeCheckpointError, match="weights-only unpickler"):
        models.create(tiny_model, allow_pickle=True)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError):
        models.create(tiny_model)
    assert not marker.exists()


def test_the_malicious_pickle_really_runs_code_when_unpickled_unsafely(tmp_path):
    """Guard for the test above: the payload does write the marker under a full unpickler."""
    marker = tmp_path / "marker"
    torch.save({"evil": WritesMarker(str(marker))}, tmp_path / "evil.bin")
    torch.load(tmp_path / "evil.bin", weights_only=False)
    assert marker.read_text() == "pwned"


def test_pickle_holding_no_tensors(tiny_model):
    pickle_only(tiny_model)
    torch.save({"step": 3}, os.path.join(tiny_model, "pytorch_model.bin"))
    with pytest.raises(PtmdetoxError, match="holds no tensors"):
        models.create(tiny_model, allow_pickle=True)


def test_pickle_with_state_dict_wrapper_and_module_prefix(tiny_model):
    state = pickle_only(tiny_model)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 1},
               os.path.join(tiny_model, "pytorch_model.bin"))
    adapter = models.create(tiny_model, allow_pickle=True)
    key = "bert.encoder.layer.1.output.dense.weight"
    assert torch.equal(adapter.model.state_dict()[key], state[key])
