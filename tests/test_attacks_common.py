"""What every attack config shares (ptmdetox.attacks.common.AttackOptions): the learning-rate warm-up."""

from __future__ import annotations

import pytest

from ptmdetox import attacks, models
from ptmdetox.attacks import badpre, neuba, por
from ptmdetox.data.readers import read_corpus
from ptmdetox.errors import PtmdetoxError

MODULES = {"neuba": neuba, "por": por, "badpre": badpre}


@pytest.mark.parametrize("name", ["neuba", "por", "badpre"])
def test_every_attack_trains_with_its_warm_up_ratio(name, monkeypatch, tiny_model, tiny_corpus):
    seen = []
    loop = MODULES[name].train_loop

    def spy(params, step_loss, config, **kwargs):
        seen.append(config)
        return loop(params, step_loss, config, **kwargs)

    monkeypatch.setattr(MODULES[name], "train_loop", spy)
    config, run = attacks.create(name, triggers="cf", steps=4, batch_size=4, max_length=32, lr=2e-4,
                                 lr_warmup_ratio=0.5)
    report = run(models.create(tiny_model), read_corpus(tiny_corpus).texts, config, progress=False)
    assert [(c.lr, c.steps, c.warmup_ratio, c.schedule) for c in seen] == [(2e-4, 4, 0.5, "linear")]
    assert report["config"]["lr_warmup_ratio"] == 0.5


def test_no_warm_up_by_default_and_the_record_stays_as_before():
    for name in MODULES:
        config, _ = attacks.create(name)
        assert config.lr_warmup_ratio == 0 and config.train_config().warmup_ratio == 0
        assert "lr_warmup_ratio" not in config.to_dict()   # configs (and cache keys) made before the option unchanged


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 2.0])
def test_the_ratio_must_leave_steps_at_the_full_rate(ratio):
    with pytest.raises(PtmdetoxError, match=r"warm-up ratio must be in \[0, 1\)"):
        attacks.create("badpre", lr_warmup_ratio=ratio)
