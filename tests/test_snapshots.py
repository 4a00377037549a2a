"""Snapshots along one RECIPE run (ptmdetox.snapshots): the defense hook, `purify recipe --snapshot-steps`, --resume,
and bench models built from snapshots with their dynamics plot (RECIPE Figure 3)."""

from __future__ import annotations

import json
import os

import pytest
import torch
import transformers
import yaml
from safetensors.torch import load_file

from ptmdetox import checkpointing, models
from ptmdetox.bench import _chain, _resolved, load_suite, model_path, run_suite
from ptmdetox.checkpointing import partial_dir
from ptmdetox.cli import main
from ptmdetox.data.readers import read_corpus
from ptmdetox.defenses.recipe import RecipeConfig, recipe_purify
from ptmdetox.errors import PtmdetoxError

from cli_cases import Case, Scratch, check_case, purify

PNG = b"\x89PNG\r\n\x1a\n"


def fast(**overrides) -> RecipeConfig:
    return RecipeConfig(**{**dict(steps=6, batch_size=8, max_length=32, head_warmup_steps=2), **overrides})


def weights(adapter) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in adapter.backbone.state_dict().items()}


def saved_weights(folder) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(folder, "model.safetensors"))


def purified(tiny_model, tiny_corpus, config, **kwargs):
    adapter = models.create(tiny_model)
    report = recipe_purify(adapter, read_corpus(tiny_corpus).texts, config, progress=False, **kwargs)
    return adapter, report


# ---- the defense hook ------------------------------------------------------------------------------------------

def test_snapshots_are_the_run_at_those_steps_and_leave_it_unchanged(tmp_path, tiny_model, tiny_corpus):
    seen = {}

    def record(step):   # the weights after each optimiser step, as the run holds them
        seen[step + 1] = weights(adapter)

    adapter = models.create(tiny_model)
    report = recipe_purify(adapter, read_corpus(tiny_corpus).texts, fast(snapshot_steps=(4, 2)), progress=False,
                           on_step=record, snapshot_dir=str(tmp_path / "snaps"))
    plain, plain_report = purified(tiny_model, tiny_corpus, fast())

    final, without = weights(adapter), weights(plain)
    assert all(torch.equal(final[k], without[k]) for k in final), "snapshots changed the run"
    assert report["loss_curve"] == plain_report["loss_curve"]
    assert [s["step"] for s in report["snapshots"]] == [2, 4]
    assert sorted(os.listdir(tmp_path / "snaps")) == ["step-2", "step-4"]   # nothing half-written left
    for snapshot in report["snapshots"]:
        step, folder = snapshot["step"], snapshot["path"]
        assert folder == str(tmp_path / "snaps" / f"step-{step}")
        loaded = weights(models.create(folder))
        assert all(torch.equal(loaded[k], seen[step][k]) for k in loaded)
        assert not torch.equal(loaded["encoder.layer.0.intermediate.dense.weight"],
                               final["encoder.layer.0.intermediate.dense.weight"])
        transformers.AutoModel.from_pretrained(folder)
        with open(os.path.join(folder, "snapshot.json"), encoding="utf-8") as f:
            assert json.load(f) == {"step": step, "of_steps": 6}
    assert report["config"]["snapshot_steps"] == (2, 4)


def test_config_without_snapshots_keeps_its_dict():
    assert "snapshot_steps" not in RecipeConfig().to_dict()   # so cached models of earlier runs keep their keys
    assert RecipeConfig(snapshot_steps=(3, 1, 3)).snapshot_steps == (1, 3)


@pytest.mark.parametrize("steps, message", [
    ((0, 2), "at least 1"), ((1.5,), "whole numbers"), (3, "whole numbers"), (("2",), "whole numbers"),
])
def test_bad_snapshot_steps(steps, message):
    with pytest.raises(PtmdetoxError, match=message):
        RecipeConfig(snapshot_steps=steps)


def test_snapshots_at_or_after_the_last_step_or_without_a_folder_are_refused(tiny_model, tiny_corpus, tmp_path):
    with pytest.raises(PtmdetoxError, match=r"snapshot steps \[6\] are not before the run's last step \(6\)"):
        purified(tiny_model, tiny_corpus, fast(snapshot_steps=(2, 6)), snapshot_dir=str(tmp_path / "s"))
    with pytest.raises(PtmdetoxError, match="snapshots need a folder"):
        purified(tiny_model, tiny_corpus, fast(snapshot_steps=(2,)))
    assert not (tmp_path / "s").exists()


# ---- purify recipe --snapshot-steps ----------------------------------------------------------------------------

def cli(tiny_model, tiny_corpus, out, *extra) -> list[str]:
    return ["purify", "recipe", "--model", tiny_model, "--corpus", tiny_corpus, "--out", str(out), "--steps", "6",
            "--batch-size", "8", "--max-length", "32", "--quiet", *extra]


def test_cli_writes_snapshots_into_the_output(capsys, tmp_path, tiny_model, tiny_corpus):
    out, plain = tmp_path / "purified", tmp_path / "plain"
    assert main(cli(tiny_model, tiny_corpus, out, "--snapshot-steps", "2,4")) == 0
    printed = capsys.readouterr().out
    assert main(cli(tiny_model, tiny_corpus, plain)) == 0
    assert f"snapshot after step 2 -> {out}/snapshots/step-2" in printed
    report = json.loads((out / "purification.json").read_text(encoding="utf-8"))
    assert report["snapshots"] == [{"step": s, "path": str(out / "snapshots" / f"step-{s}")} for s in (2, 4)]
    assert sorted(os.listdir(out / "snapshots")) == ["step-2", "step-4"]
    assert not os.path.exists(partial_dir(str(out)))          # the staged copies went with the checkpoints
    final, without = saved_weights(out), saved_weights(plain)
    assert all(torch.equal(final[k], without[k]) for k in final)
    models.create(str(out))                                    # the output still loads with the subfolder in it
    for snapshot in report["snapshots"]:
        transformers.AutoModel.from_pretrained(snapshot["path"])
    assert not (plain / "snapshots").exists() and "snapshots" not in json.loads(
        (plain / "purification.json").read_text(encoding="utf-8"))


def test_interrupted_run_resumes_with_its_earlier_snapshots(capsys, tmp_path, tiny_model, tiny_corpus, monkeypatch):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    extra = ["--snapshot-steps", "2,4", "--checkpoint-every", "3"]
    assert main(cli(tiny_model, tiny_corpus, reference, *extra)) == 0

    real_due = checkpointing.Phase.due

    def interrupted_after_step_5(self, steps_done):   # checkpoint at step 3, snapshots at 2 and 4, Ctrl-C at 5
        if self.name == "phase-RECIPE" and steps_done == 5:
            raise KeyboardInterrupt
        return real_due(self, steps_done)

    monkeypatch.setattr(checkpointing.Phase, "due", interrupted_after_step_5)
    assert main(cli(tiny_model, tiny_corpus, resumed, *extra)) == 130
    assert sorted(os.listdir(os.path.join(partial_dir(str(resumed)), "snapshots"))) == ["step-2", "step-4"]
    monkeypatch.setattr(checkpointing.Phase, "due", real_due)
    capsys.readouterr()
    assert main([*cli(tiny_model, tiny_corpus, resumed, *extra), "--resume"]) == 0
    assert "RECIPE at step 3" in capsys.readouterr().out
    for folder in ("", "snapshots/step-2", "snapshots/step-4"):
        left, right = saved_weights(reference / folder), saved_weights(resumed / folder)
        assert all(torch.equal(left[k], right[k]) for k in left), folder


SNAPSHOT_CASES = [
    Case("snapshot-at-last-step", "`--snapshot-steps` at the run's last step",
         lambda s: purify(s, "--snapshot-steps", "1,3"), "are not before the run's last step (3)"),
    Case("snapshot-step-zero", "`--snapshot-steps 0`", lambda s: purify(s, "--snapshot-steps", "0"), "at least 1"),
    Case("snapshot-steps-not-numbers", "`--snapshot-steps a,b`", lambda s: purify(s, "--snapshot-steps", "a,b"),
         "comma-separated step numbers"),
]


@pytest.mark.parametrize("case", SNAPSHOT_CASES, ids=[case.id for case in SNAPSHOT_CASES])
def test_bad_snapshot_options_leave_outputs_untouched(tmp_path, tiny_model, tiny_model_no_head, tiny_corpus, tiny_task,
                                                      case):
    check_case(case, Scratch(tmp_path, tiny_model, tiny_model_no_head, tiny_corpus, tiny_task))


# ---- bench: snapshots as models, one dynamics plot -------------------------------------------------------------

ATTACK = {"method": "neuba", "steps": 2, "head_warmup_steps": 1, "batch_size": 4}
RECIPE = {"method": "recipe", "steps": 3, "batch_size": 8, "max_length": 32}


def write_suite(tmp_path, tiny_model, tiny_corpus, tiny_task, models_: dict) -> str:
    suite = {"model": tiny_model, "aux": tiny_corpus, "triggers": "≈,⊗", "seeds": [1], "floor": "clean",
             "policy": {"position": "first"}, "finetune": {"epochs": 1, "batch_size": 8, "max_length": 32},
             "tasks": {"toy": {"train": tiny_task[0], "test": tiny_task[1]}}, "models": models_}
    path = tmp_path / "dyn.yaml"
    path.write_text(yaml.safe_dump(suite, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return str(path)


def test_bench_evaluates_snapshots_of_one_run_and_plots_the_dynamics(tmp_path, tiny_model, tiny_corpus, tiny_task):
    path = write_suite(tmp_path, tiny_model, tiny_corpus, tiny_task, {
        "clean": {}, "neuba": {"attack": ATTACK},
        "dynamics": {"from": "neuba", "defense": RECIPE, "snapshots": [2, 1]},
        "plain": {"from": "neuba", "defense": RECIPE}})
    suite = load_suite(path)
    assert list(suite["models"]) == ["clean", "neuba", "dynamics[step=1]", "dynamics[step=2]", "dynamics", "plain"]
    assert suite["_sweeps"]["dynamics"] == {"param": "steps", "one_run": True, "models": {
        "neuba": 0, "dynamics[step=1]": 1, "dynamics[step=2]": 2, "dynamics": 3}}
    assert "snapshot_steps" not in _resolved(_chain(suite, "plain")[-1])["config"]

    cache, results = tmp_path / "cache", tmp_path / "results"
    report = run_suite(path, cache=str(cache), results=str(results), progress=False)
    builds = [k for k in report["timings_this_run"] if k.startswith("build")]
    assert sorted(builds) == ["build dynamics[step=1] step 2", "build neuba step 1",
                              "build plain step 2"], "one RECIPE run serves every snapshot"
    rows = report["results"]["toy"]
    assert {"dynamics[step=1]", "dynamics[step=2]", "dynamics"} <= set(rows)
    folders = {name: model_path(suite, name, str(cache), False, {}) for name in suite["models"]}
    assert folders["dynamics[step=2]"] == os.path.join(folders["dynamics"], "snapshots", "step-2")
    final, without = saved_weights(folders["dynamics"]), saved_weights(folders["plain"])
    assert all(torch.equal(final[k], without[k]) for k in final)
    assert rows["dynamics"]["masr"] == rows["plain"]["masr"] and rows["dynamics"]["acc"] == rows["plain"]["acc"]
    plot = results / "dyn-sweep-dynamics.png"
    assert str(plot) in report["plots"] and plot.read_bytes()[:8] == PNG
    assert "| dynamics[step=1] |" in (results / "dyn.md").read_text(encoding="utf-8")

    again = run_suite(path, cache=str(cache), results=str(results), progress=False)
    assert again["timings_this_run"] == {}, "every model and evaluation comes from the cache"
    assert again["results"]["toy"]["dynamics[step=2]"]["masr"] == rows["dynamics[step=2]"]["masr"]


@pytest.mark.parametrize("spec, message", [
    ({"from": "neuba", "attack": ATTACK, "snapshots": [1]}, "taken along a defense run"),
    ({"from": "neuba", "defense": {"method": "clip"}, "snapshots": [1]}, "defense 'clip' takes no snapshots"),
    ({"from": "neuba", "defense": RECIPE, "snapshots": [3]}, r"snapshot steps \[3\] are not before"),
    ({"from": "neuba", "defense": {**RECIPE, "steps": None, "epochs": 1}, "snapshots": [1]}, "fixed 'steps'"),
    ({"from": "neuba", "defense": RECIPE, "snapshots": "often"}, "whole numbers"),
])
def test_bad_snapshot_models_fail_when_the_suite_loads(tmp_path, tiny_model, tiny_corpus, tiny_task, spec, message):
    path = write_suite(tmp_path, tiny_model, tiny_corpus, tiny_task, {"neuba": {"attack": ATTACK}, "d": spec})
    with pytest.raises(PtmdetoxError, match=f"suite model 'd': .*{message}"):
        load_suite(path)


def test_each_swept_model_gets_its_own_snapshots(tmp_path, tiny_model, tiny_corpus, tiny_task):
    path = write_suite(tmp_path, tiny_model, tiny_corpus, tiny_task, {
        "neuba": {"attack": ATTACK},
        "r": {"from": "neuba", "defense": RECIPE, "snapshots": [1], "sweep": {"param": "lam", "values": [0.5, 1]}}})
    suite = load_suite(path)
    assert list(suite["models"]) == ["neuba", "r[lam=0.5][step=1]", "r[lam=0.5]", "r[lam=1][step=1]", "r[lam=1]"]
    assert suite["_sweeps"]["r[lam=1]"]["models"] == {"neuba": 0, "r[lam=1][step=1]": 1, "r[lam=1]": 3}
    assert suite["_sweeps"]["r"]["models"] == {"r[lam=0.5]": 0.5, "r[lam=1]": 1}
