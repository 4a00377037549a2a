"""ACC / ASR metrics (ptmdetox.evaluation.metrics)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ptmdetox.evaluation.metrics import accuracy, aggregate, asr_by_label, summarize


def test_accuracy_is_percent_of_matches():
    assert accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == pytest.approx(75.0)
    assert accuracy([1, 1], [1, 1]) == 100.0
    assert accuracy([0, 0], [1, 1]) == 0.0


def test_asr_by_label_only_counts_samples_whose_gold_label_differs():
    gold = [0, 0, 0, 1, 1, 2]
    # trigger predictions: everything predicted 1 except the last
    triggered = [1, 1, 1, 1, 1, 0]
    rates = asr_by_label(triggered, gold, num_labels=3)
    # label 0: non-0 samples are indices 3,4,5 -> predicted 0 only at 5 -> 1/3
    assert rates[0] == pytest.approx(100 / 3)
    # label 1: non-1 samples are 0,1,2,5 -> predicted 1 at 0,1,2 -> 3/4 (samples with gold 1 excluded)
    assert rates[1] == pytest.approx(75.0)
    # label 2: non-2 samples 0..4 -> never predicted 2
    assert rates[2] == 0.0


def test_asr_by_label_skips_a_label_that_every_sample_has():
    rates = asr_by_label([0, 0, 0], [0, 0, 0], num_labels=2)
    assert 0 not in rates
    assert rates[1] == 0.0


def test_summarize_takes_max_over_labels_then_mean_and_max_over_triggers():
    gold = [0, 0, 1, 1]
    clean = [0, 1, 1, 1]
    triggered = {
        "cf": [1, 1, 1, 1],   # label 1: 2/2 non-1 flipped -> 100; label 0: 0 -> asr 100
        "mn": [0, 0, 0, 1],   # label 0: 1 of 2 non-0 predicted 0 -> 50; label 1: 0 -> asr 50
    }
    result = summarize(clean, gold, triggered, num_labels=2)
    assert result["acc"] == pytest.approx(75.0)
    assert result["per_trigger"]["cf"] == {"asr": 100.0, "by_label": {0: 0.0, 1: 100.0}}
    assert result["per_trigger"]["mn"]["asr"] == pytest.approx(50.0)
    assert result["per_trigger"]["mn"]["by_label"] == {0: 50.0, 1: 0.0}
    assert result["aasr"] == pytest.approx(75.0)
    assert result["masr"] == pytest.approx(100.0)


def test_summarize_without_triggers_reports_zero_asr():
    result = summarize([0, 1], [0, 1], {}, num_labels=2)
    assert result == {"acc": 100.0, "aasr": 0.0, "masr": 0.0, "per_trigger": {}}


def _run(acc, aasr, masr, asr, by_label):
    return {"acc": acc, "aasr": aasr, "masr": masr, "per_trigger": {"cf": {"asr": asr, "by_label": by_label}}}


def test_aggregate_means_and_sample_standard_deviations():
    runs = [_run(80.0, 10.0, 20.0, 20.0, {0: 20.0, 1: 5.0}),
            _run(90.0, 30.0, 40.0, 40.0, {0: 40.0, 1: 15.0}),
            _run(70.0, 20.0, 30.0, 30.0, {0: 30.0, 1: 10.0})]
    out = aggregate(runs)
    assert out["acc"] == pytest.approx(80.0)
    assert out["acc_std"] == pytest.approx(np.std([80, 90, 70], ddof=1))
    assert out["aasr"] == pytest.approx(20.0)
    assert out["aasr_std"] == pytest.approx(10.0)
    assert out["masr"] == pytest.approx(30.0)
    assert out["per_trigger"]["cf"]["asr"] == pytest.approx(30.0)
    assert out["per_trigger"]["cf"]["asr_std"] == pytest.approx(10.0)
    assert out["per_trigger"]["cf"]["by_label"] == {0: pytest.approx(30.0), 1: pytest.approx(10.0)}


def test_aggregate_mixes_fresh_runs_with_runs_read_back_from_json():
    """A resumed benchmark aggregates runs computed now (int labels) with cached ones (JSON: string labels)."""
    fresh = _run(80.0, 10.0, 20.0, 20.0, {0: 20.0, 1: 5.0})
    cached = json.loads(json.dumps(_run(90.0, 30.0, 40.0, 40.0, {0: 40.0, 1: 15.0})))
    out = aggregate([cached, fresh])
    assert out["per_trigger"]["cf"]["by_label"] == {"0": pytest.approx(30.0), "1": pytest.approx(10.0)}
    first_fresh = aggregate([fresh, cached])["per_trigger"]["cf"]["by_label"]
    assert first_fresh == {0: pytest.approx(30.0), 1: pytest.approx(10.0)}


def test_aggregate_of_a_single_run_has_zero_std():
    out = aggregate([_run(80.0, 10.0, 20.0, 20.0, {0: 20.0, 1: 5.0})])
    assert out["acc"] == 80.0 and out["acc_std"] == 0.0
    assert out["masr_std"] == 0.0
    assert out["per_trigger"]["cf"]["asr_std"] == 0.0
