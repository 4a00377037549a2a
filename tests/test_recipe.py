"""RECIPE purification (ptmdetox.defenses.recipe)."""

from __future__ import annotations

import pytest
import torch

from ptmdetox import models
from ptmdetox.data.readers import read_corpus
from ptmdetox.defenses.recipe import (RecipeConfig, _keep_loss, _total_steps, preset, recipe_purify, regularisation,
                                      reset_to_mean_row, select_parameters, unseen_embedding_rows,
                                      weight_norm)
from ptmdetox.defenses.reinit import ReinitConfig, reinit_purify
from ptmdetox.defenses.row_scan import token_counts
from ptmdetox.errors import PtmdetoxError

INTERMEDIATE = ["encoder.layer.0.intermediate.dense.weight", "encoder.layer.1.intermediate.dense.weight"]
EXTENDED = ["embeddings.word_embeddings.weight", *INTERMEDIATE, "pooler.dense.weight"]


def fast(**overrides) -> RecipeConfig:
    # the rows of rare tokens: no row scan (tests/test_row_scan.py) to run, or to count in the forward passes
    values = dict(steps=5, batch_size=8, max_length=32, head_warmup_steps=2, log_every=1, embedding_rows="unseen")
    values.update(overrides)
    return RecipeConfig(**values)


def snapshot(adapter) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in adapter.model.state_dict().items()}


# ---- the penalty ------------------------------------------------------------------------------------------------

def test_regularisation_is_the_sum_of_unsquared_frobenius_norms():
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(4, 3, generator=g), torch.randn(5, 2, generator=g), torch.randn(7, generator=g)]
    expected = sum(torch.linalg.matrix_norm(w).item() if w.dim() == 2 else torch.linalg.vector_norm(w).item()
                   for w in weights)
    assert regularisation(weights, "fro").item() == pytest.approx(expected, rel=1e-6)
    assert weight_norm(weights[0], "fro").item() == pytest.approx(torch.linalg.matrix_norm(weights[0]).item())


def test_squared_variant_sums_squared_norms():
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(4, 3, generator=g), torch.randn(6, 6, generator=g)]
    expected = sum((w ** 2).sum().item() for w in weights)
    assert regularisation(weights, "fro2").item() == pytest.approx(expected, rel=1e-6)
    assert regularisation([torch.full((2, 2), 3.0)], "fro").item() == pytest.approx(6.0)
    assert regularisation([torch.full((2, 2), 3.0)], "fro2").item() == pytest.approx(36.0)


def test_regularisation_gradient_is_w_over_its_norm():
    w = torch.tensor([[3.0, 4.0]], requires_grad=True)
    regularisation([w], "fro").backward()
    assert torch.allclose(w.grad, torch.tensor([[0.6, 0.8]]))


# ---- configuration ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    (dict(norm="l1"), "unknown norm"),
    (dict(pretrain_loss="clm"), "unknown pre-training loss"),
    (dict(masking="sometimes"), "unknown masking"),
    (dict(lam=-0.5), "non-negative"),
    (dict(steps=None, epochs=None), "either steps or epochs"),
    (dict(lam=0.0, pretrain_loss="none"), "nothing to train"),
    (dict(embedding_rows="some"), "unknown embedding_rows"),
    (dict(embedding_min_count=0), "embedding_min_count"),
    (dict(embedding_min_count=2.5), "embedding_min_count"),
    (dict(representation_head="drop"), "unknown representation_head"),
    (dict(row_penalty="some"), "unknown row_penalty"),
    (dict(scan_candidates="few"), r"unknown scan_candidates 'few' \(choose from rare, all\)$"),
    (dict(scan_positions="last"), "unknown scan_positions 'last'"),
    (dict(keep_input="noisy"), "unknown keep_input 'noisy'"),
    (dict(keep_positions="some"), "unknown keep_positions 'some'"),
    (dict(keep_weight=-1.0), "keep_weight"),
    (dict(keep_weight=float("nan")), "keep_weight"),
    (dict(dropout_rng="mt19937"), "unknown dropout generator"),
    (dict(mode="reference", dropout_rng="sfc64"), "cannot use sfc64 dropout masks"),
    (dict(reset_rows="no"), "reset_rows must be true or false"),
    (dict(hold_reset_rows=1), "hold_reset_rows must be true or false"),
    (dict(tied_decoder_gradient="no"), "tied_decoder_gradient must be true or false"),
    (dict(tied_decoder_rows="rare"), r"unknown tied_decoder_rows 'rare' \(choose from all, seen\)$"),
    (dict(tied_decoder_gradient=False, tied_decoder_rows="seen"), "tied_decoder_rows needs tied_decoder_gradient"),
    (dict(untie_decoder="yes"), "untie_decoder must be true or false"),
    (dict(untie_decoder=True, tied_decoder_rows="seen"), "untie_decoder leaves the embeddings no decoder gradient"),
    (dict(bf16="false"), "bf16 must be true or false"),
    (dict(lam="0.5"), "lam must be a number"),
    (dict(lr=True), "lr must be a number"),
])
def test_bad_config_values(kwargs, message):
    with pytest.raises(PtmdetoxError, match=message):
        RecipeConfig(**kwargs)


def test_presets():
    cpu = preset("cpu")
    assert (cpu.lr, cpu.steps, cpu.preset) == (2e-4, 600, "cpu")
    paper = preset("paper")
    assert (paper.lr, paper.steps, paper.epochs, paper.preset) == (2e-5, None, 10, "paper")
    assert (cpu.pretrain_loss, paper.pretrain_loss) == ("mlm", "mlm")
    assert _total_steps(paper, 20000) == 6250
    tuned = preset("cpu", lam=0.5, epochs=2, lr=None)
    assert tuned.lam == 0.5 and tuned.steps is None and tuned.epochs == 2 and tuned.lr == 2e-4
    assert _total_steps(tuned, 100) == 7   # ceil(2 * 100 / 32)
    assert preset("cpu", steps=10, epochs=2).steps == 10
    with pytest.raises(PtmdetoxError, match="unknown RECIPE preset"):
        preset("gpu")


def test_default_parameter_sets_for_bert(tiny_model):
    adapter = models.create(tiny_model)
    regularised, trainable = select_parameters(adapter, RecipeConfig(scope="paper"))
    assert [n for n, _ in regularised] == INTERMEDIATE
    assert [n for n, _ in trainable] == INTERMEDIATE
    assert all(p is dict(adapter.named_parameters())[n] for n, p in trainable)
    assert preset("paper").scope == "paper"


def test_extended_scope_is_the_cpu_default_and_adds_embeddings_and_pooler(tiny_model):
    adapter = models.create(tiny_model)
    regularised, trainable = select_parameters(adapter, RecipeConfig())
    assert [n for n, _ in regularised] == EXTENDED == [n for n, _ in trainable]
    with pytest.raises(PtmdetoxError, match="unknown scope"):
        RecipeConfig(scope="everything")


def test_trainable_all_and_patterns(tiny_model):
    adapter = models.create(tiny_model)
    _, trainable = select_parameters(adapter, RecipeConfig(trainable="all"))
    assert [n for n, _ in trainable] == [n for n, _ in adapter.named_parameters()]
    _, trainable = select_parameters(adapter, RecipeConfig(trainable=(r"pooler\.", r"layer\.1\.output\.dense")))
    assert sorted(n for n, _ in trainable) == ["encoder.layer.1.output.dense.bias",
                                               "encoder.layer.1.output.dense.weight",
                                               "pooler.dense.bias", "pooler.dense.weight"]
    regularised, _ = select_parameters(adapter, RecipeConfig(regularised=(r"attention\.self\.query\.weight",)))
    assert [n for n, _ in regularised] == [f"encoder.layer.{i}.attention.self.query.weight" for i in range(2)]


def test_patterns_that_match_nothing(tiny_model):
    adapter = models.create(tiny_model)
    with pytest.raises(PtmdetoxError, match="no parameter matches the regularised patterns"):
        select_parameters(adapter, RecipeConfig(regularised=("decoder_of_nothing",)))
    with pytest.raises(PtmdetoxError, match="no parameter matches the trainable patterns"):
        select_parameters(adapter, RecipeConfig(trainable=("nothing_here",)))
    # with λ = 0 an empty regularised set is fine
    regularised, _ = select_parameters(adapter, RecipeConfig(lam=0.0, regularised=("nothing",), trainable="all"))
    assert regularised == []


# ---- purification -------------------------------------------------------------------------------------------------

def test_default_purification_changes_only_the_regularised_weights(tiny_model, tiny_corpus):
    adapter = models.create(tiny_model)
    before = snapshot(adapter)
    report = recipe_purify(adapter, read_corpus(tiny_corpus).texts, fast(scope="paper"), progress=False)
    after = adapter.model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == [f"bert.{n}" for n in INTERMEDIATE]
    assert report["regularised"] == INTERMEDIATE and report["trainable"] == INTERMEDIATE
    for name in INTERMEDIATE:
        old = torch.linalg.matrix_norm(before[f"bert.{name}"]).item()
        new = torch.linalg.matrix_norm(after[f"bert.{name}"]).item()
        assert new < old
        assert report["norms_before"][name] == pytest.approx(old, rel=1e-5)
        assert report["norms_after"][name] == pytest.approx(new, rel=1e-5)
    assert report["norm_after"] < report["norm_before"]
    assert report["steps"] == 5 and len(report["loss_curve"]) == 5
    assert set(report["final_parts"]) == {"norm", "mlm"}     # the cpu preset: MLM, as the paper
    assert report["defense"] == "recipe" and report["config"]["lam"] == 1.0
    assert all(p.requires_grad for p in adapter.model.parameters())   # restored
    assert not adapter.model.training


def test_extended_purification_shrinks_embeddings_and_pooler_too(tiny_model, tiny_corpus):
    adapter = models.create(tiny_model)
    before = snapshot(adapter)
    report = recipe_purify(adapter, read_corpus(tiny_corpus).texts, fast(embedding_rows="all"), progress=False)
    after = adapter.model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    # the MLM decoder is tied to the word embeddings, so it changes with them
    assert changed == sorted([f"bert.{n}" for n in EXTENDED] + ["cls.predictions.decoder.weight"])
    assert report["regularised"] == EXTENDED
    for name in EXTENDED:
        assert report["norms_after"][name] < report["norms_before"][name], name


def test_reinit_gives_the_pooler_a_fresh_seeded_initialisation_after_purification(tiny_model, tiny_corpus):
    texts = read_corpus(tiny_corpus).texts
    decayed, fresh, again = (models.create(tiny_model) for _ in range(3))
    before = snapshot(decayed)
    recipe_purify(decayed, texts, fast(lr=0.05, steps=20), progress=False)
    report = recipe_purify(fresh, texts, fast(lr=0.05, steps=20, representation_head="reinit"), progress=False)
    recipe_purify(again, texts, fast(lr=0.05, steps=20, representation_head="reinit"), progress=False)
    weight, bias = "bert.pooler.dense.weight", "bert.pooler.dense.bias"
    state = fresh.model.state_dict()
    assert sorted(report["reinitialised"]) == ["pooler.dense.bias", "pooler.dense.weight"]
    assert decayed.model.state_dict()[weight].norm() < 0.5 * before[weight].norm()
    std = fresh.model.config.initializer_range
    assert state[weight].std().item() == pytest.approx(std, rel=0.2)
    assert torch.equal(state[bias], torch.zeros_like(state[bias]))
    assert torch.equal(state[weight], again.model.state_dict()[weight])
    # everything but the pooler is what the decaying run produced
    for name, value in decayed.model.state_dict().items():
        if ".pooler." not in name:
            assert torch.equal(value, state[name]), name
    assert "representation_head" not in fast().to_dict() and fast(representation_head="reinit").to_dict()[
        "representation_head"] == "reinit"
    # the reinit defense with RECIPE's seed, run on the decayed result, gives the same model (bench/recipe-head.yaml)
    reinit_purify(decayed, [], ReinitConfig(seed=fast().seed), progress=False)
    for name, value in decayed.model.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_penalty_covers_only_embedding_rows_of_tokens_rare_in_the_corpus(tiny_model, tiny_corpus):
    adapter = models.create(tiny_model)
    texts = read_corpus(tiny_corpus).texts
    config = fast(pretrain_loss="none")
    assert config.embedding_min_count == 5
    tokens = torch.tensor([t for seq in adapter.tokenize(texts, 32) for t in seq])
    before = adapter.model.bert.embeddings.word_embeddings.weight.detach().clone()
    report = recipe_purify(adapter, texts, config, progress=False)
    after = adapter.model.bert.embeddings.word_embeddings.weight.detach()
    unseen = torch.bincount(tokens, minlength=before.shape[0])[: before.shape[0]] < config.embedding_min_count
    assert (~unseen).sum() > 10                                  # some rows are exercised often enough to be spared
    assert report["penalised_embedding_rows"] == {"embeddings.word_embeddings.weight": int(unseen.sum())}
    assert torch.equal(after[~unseen], before[~unseen])       # rows the corpus exercises: no penalty, no change
    norms_before, norms_after = before[unseen].norm(dim=1), after[unseen].norm(dim=1)
    nonzero = norms_before > 0                                   # the padding row starts at zero
    assert nonzero.sum() > 10 and (norms_after[nonzero] < norms_before[nonzero]).all()


def test_tokens_seen_fewer_than_min_count_times_count_as_unseen(tiny_model, tiny_corpus):
    adapter = models.create(tiny_model)
    ids = adapter.tokenize(read_corpus(tiny_corpus).texts, 32)
    counts = torch.bincount(torch.tensor([t for seq in ids for t in seq]), minlength=adapter.tokenizer.vocab_size)
    regularised = adapter.parameters_matching([adapter.token_embedding])
    weight = regularised[0][1]
    once = set((counts == 1).nonzero().squeeze(1).tolist())
    assert once, "the tiny corpus has tokens seen exactly once"
    unseen = set(unseen_embedding_rows(adapter, regularised, ids)[id(weight)].tolist())
    rare = set(unseen_embedding_rows(adapter, regularised, ids, min_count=2)[id(weight)].tolist())
    assert unseen == set((counts[: weight.shape[0]] == 0).nonzero().squeeze(1).tolist())
    assert rare == unseen | once


def test_unseen_row_penalty_is_the_norm_of_those_rows():
    weight = torch.randn(6, 3)
    rows = torch.tensor([1, 4])
    assert regularisation([weight], "fro", {id(weight): rows}) == pytest.approx(float(weight[rows].norm()))
    assert regularisation([weight], "fro") == pytest.approx(float(weight.norm()))


def test_each_row_penalty_sums_every_penalised_row_norm():
    weight = torch.tensor([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0], [5.0, 12.0]])
    rows = {id(weight): torch.tensor([0, 2, 3])}
    assert regularisation([weight], "fro", rows, each_row=True) == pytest.approx(5.0 + 10.0 + 13.0)
    assert regularisation([weight], "fro", rows) == pytest.approx((25.0 + 100.0 + 169.0) ** 0.5)
    # the squared norm is a sum over rows already
    assert regularisation([weight], "fro2", rows, each_row=True) == regularisation([weight], "fro2", rows)
    # matrices without named rows are normed whole either way
    other = torch.full((2, 2), 3.0)
    assert regularisation([other], "fro", rows, each_row=True) == pytest.approx(6.0)


def test_each_row_penalty_pulls_every_row_with_a_unit_gradient():
    weight = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]], requires_grad=True)
    rows = {id(weight): torch.tensor([0, 1, 2])}
    regularisation([weight], "fro", rows, each_row=True).backward()
    assert torch.allclose(weight.grad, torch.tensor([[0.6, 0.8], [0.6, 0.8], [0.0, 0.0]]))   # a zero row: no NaN
    weight.grad = None
    regularisation([weight], "fro", rows).backward()          # joint: each row feels its share, the small one little
    assert torch.allclose(weight.grad[1], torch.tensor([0.06, 0.08]), atol=1e-3)


def test_each_row_penalty_shrinks_exercised_rows_more_than_the_joint_norm(tiny_model, tiny_corpus):
    texts = read_corpus(tiny_corpus).texts
    rows_after = {}
    for kind in ("joint", "each"):
        adapter = models.create(tiny_model)
        report = recipe_purify(adapter, texts, fast(embedding_rows="all", row_penalty=kind, lr=0.01, steps=20),
                               progress=False)
        named = {"embeddings.word_embeddings.weight": adapter.tokenizer.vocab_size} if kind == "each" else {}
        assert report["penalised_embedding_rows"] == named       # joint: the whole matrix, as one norm
        rows_after[kind] = adapter.model.bert.embeddings.word_embeddings.weight.detach().norm(dim=1)
        assert report["config"].get("row_penalty") == (None if kind == "joint" else "each")   # joint keeps old keys
    seen = torch.tensor(sorted({t for seq in models.create(tiny_model).tokenize(texts, 32) for t in seq}))
    assert rows_after["each"][seen].mean() < 0.5 * rows_after["joint"][seen].mean()


def test_reset_sets_the_chosen_rows_to_the_mean_of_the_others():
    weight = torch.nn.Parameter(torch.tensor([[1.0, 2.0], [9.0, 9.0], [3.0, 4.0], [5.0, 0.0]]))
    other = torch.nn.Parameter(torch.ones(2, 2))
    reset_to_mean_row([("w", weight), ("o", other)], {id(weight): torch.tensor([1])})
    assert torch.equal(weight.detach(), torch.tensor([[1.0, 2.0], [3.0, 2.0], [3.0, 4.0], [5.0, 0.0]]))
    assert torch.equal(other.detach(), torch.ones(2, 2))


def test_trainable_all_trains_the_encoder_but_not_the_head(tiny_model, tiny_corpus):
    adapter = models.create(tiny_model)
    before = snapshot(adapter)
    head_ids = {id(p) for p in adapter.head_parameters()}
    head_names = [n for n, p in adapter.model.named_parameters() if id(p) in head_ids]
    report = recipe_purify(adapter, read_corpus(tiny_corpus).texts, fast(trainable="all"), progress=False)
    after = adapter.model.state_dict()
    assert report["trainable"] == [n for n, _ in adapter.named_parameters()]
    for name in ("bert.encoder.layer.0.attention.self.query.weight", "bert.encoder.layer.1.output.dense.weight",
                 "bert.embeddings.word_embeddings.weight", *[f"bert.{n}" for n in INTERMEDIATE]):
        assert not torch.equal(before[name], after[name]), name
    for name in head_names:
        assert torch.equal(before[name], after[name]), name
    assert report["norm_after"] < report["norm_before"]


DECODER_OPTIONS = {"all": {}, "seen": dict(tied_decoder_rows="seen"), "none": dict(tied_decoder_gradient=False),
                   "untied": dict(untie_decoder=True)}


def purified_embedding_rows(adapter, texts, decoder: str):
    """(rows that moved, the report) after a short purification with the decoder option `decoder`."""
    before = snapshot(adapter)["bert.embeddings.word_embeddings.weight"]
    report = recipe_purify(adapter, texts, fast(scope="paper", **DECODER_OPTIONS[decoder],
                                                trainable=(r"intermediate\.dense\.weight", "word_embeddings")),
                           progress=False)
    after = snapshot(adapter)["bert.embeddings.word_embeddings.weight"]
    return (after != before).any(1), report


def test_the_tied_decoder_gradient_reaches_the_rows_it_is_given(tiny_model, tiny_corpus):
    texts = read_corpus(tiny_corpus).texts
    moved, reports = {}, {}
    for decoder in DECODER_OPTIONS:
        adapter = models.create(tiny_model)
        moved[decoder], reports[decoder] = purified_embedding_rows(adapter, texts, decoder)
        assert adapter.tied_output_gradient is True     # the adapter is left as it was
    counts = token_counts(adapter.tokenize(texts, 32), len(moved["all"]))
    in_corpus, seen = counts > 0, counts >= RecipeConfig().embedding_min_count
    assert 0 < seen.sum() < in_corpus.sum()
    assert moved["all"].all()                    # the decoder's softmax reaches every row
    assert moved["seen"][seen].all()             # ... every row it is given
    # elsewhere only where MLM's random replacement of a masked token put one in the input: the same rows either way
    assert moved["none"][~in_corpus].float().mean() < 0.2
    assert torch.equal(moved["seen"][~seen], moved["none"][~seen])
    assert torch.equal(moved["untied"], moved["none"])     # the untied decoder moves no embedding row
    assert "tied_decoder_gradient" not in reports["all"]["config"]      # the default keeps older cache keys
    assert "tied_decoder_rows" not in reports["none"]["config"]
    assert reports["seen"]["config"]["tied_decoder_rows"] == "seen"
    assert reports["seen"]["tied_decoder_rows"] == int(seen.sum())
    assert reports["none"]["tied_decoder_rows"] == 0 and reports["all"]["tied_decoder_rows"] == len(counts)
    assert reports["untied"]["tied_decoder_rows"] == 0 and reports["untied"]["config"]["untie_decoder"] is True


def test_penalty_alone_shrinks_either_norm_kind(tiny_model, tiny_corpus):
    texts = read_corpus(tiny_corpus).texts
    reports = {}
    for norm in ("fro", "fro2"):
        adapter = models.create(tiny_model)
        config = fast(norm=norm, pretrain_loss="none", lam=1.0, embedding_rows="all")
        reports[norm] = recipe_purify(adapter, texts, config, progress=False)
        assert set(reports[norm]["final_parts"]) == {"norm"}
        assert reports[norm]["norm_after"] < reports[norm]["norm_before"]
    # the penalty on its own: the logged value is the norm sum of the configured kind
    assert reports["fro"]["final_parts"]["norm"] == pytest.approx(
        sum(reports["fro"]["norms_before"].values()), rel=0.05)
    assert reports["fro2"]["final_parts"]["norm"] == pytest.approx(
        sum(v ** 2 for v in reports["fro2"]["norms_before"].values()), rel=0.05)


def test_keep_loss_uses_a_frozen_teacher(tiny_model, tiny_corpus):
    adapter = models.create(tiny_model)
    report = recipe_purify(adapter, read_corpus(tiny_corpus).texts, fast(pretrain_loss="keep", steps=3),
                           progress=False)
    assert set(report["final_parts"]) == {"norm", "keep"}
    assert report["final_parts"]["keep"] >= 0.0
    assert report["norm_after"] < report["norm_before"]


@pytest.mark.parametrize("keep_input, passes_per_step", [("masked", 1), ("clean", 2)])
def test_keep_with_mlm_reuses_the_mlm_forward_unless_asked_for_a_clean_pass(tiny_model, tiny_corpus, monkeypatch,
                                                                          keep_input, passes_per_step):
    adapter = models.create(tiny_model)
    calls = []
    encode = adapter.encode
    monkeypatch.setattr(adapter, "encode", lambda batch: calls.append(batch) or encode(batch))
    report = recipe_purify(adapter, read_corpus(tiny_corpus).texts,
                           fast(pretrain_loss="mlm+keep", keep_input=keep_input, steps=3), progress=False)
    assert set(report["final_parts"]) == {"norm", "mlm", "keep"}
    assert report["final_parts"]["keep"] > 0.0          # the student has moved away from its frozen start
    assert len(calls) == 3 * passes_per_step
    assert sum("labels" in b for b in calls) == 3        # one masked MLM pass per step either way


def test_unknown_keep_input_is_refused():
    with pytest.raises(PtmdetoxError, match="keep_input"):
        RecipeConfig(keep_input="both")
    with pytest.raises(PtmdetoxError, match="keep_positions"):
        RecipeConfig(keep_positions="cls")


def test_keep_on_token_positions_leaves_the_representation_position_free(tiny_model, tiny_corpus):
    """With keep_positions="tokens" and keep alone, nothing anchors the [CLS] state: a batch's keep term is blind
    to it, while "all" is not."""
    adapter = models.create(tiny_model)
    batch = adapter.collate(adapter.tokenize(read_corpus(tiny_corpus).texts[:4], 32))
    teacher = adapter.backbone
    hidden, _ = adapter.encode(batch)
    moved = hidden.detach().clone()
    moved[:, 0] += 1.0
    tokens, real = adapter.token_positions(batch), batch["attention_mask"].bool()
    assert not tokens[:, 0].any() and tokens[:, 1:].equal(real[:, 1:])
    with torch.no_grad():
        blind = float(_keep_loss(teacher, batch, moved, tokens)), float(_keep_loss(teacher, batch, hidden, tokens))
        seen = float(_keep_loss(teacher, batch, moved, real)), float(_keep_loss(teacher, batch, hidden, real))
    assert blind[0] == pytest.approx(blind[1], abs=1e-6)
    assert seen[0] > seen[1] + 0.01


def test_dynamic_masking_and_epochs(tiny_model, tiny_corpus):
    adapter = models.create(tiny_model)
    texts = read_corpus(tiny_corpus).texts[:40]
    report = recipe_purify(adapter, texts, fast(masking="dynamic", steps=None, epochs=0.5), progress=False)
    assert report["steps"] == 3   # ceil(0.5 * 40 / 8)


def test_purifying_a_headless_checkpoint_warms_up_the_head_first(tiny_model_no_head, tiny_corpus):
    adapter = models.create(tiny_model_no_head)
    report = recipe_purify(adapter, read_corpus(tiny_corpus).texts, fast(steps=2), progress=False)
    assert adapter.head_state == "warmed-up"
    assert any("warmed up for 2 steps" in n for n in report["notes"])


def test_no_pretraining_loss_needs_no_head(tiny_model_no_head, tiny_corpus):
    adapter = models.create(tiny_model_no_head)
    recipe_purify(adapter, read_corpus(tiny_corpus).texts, fast(steps=2, pretrain_loss="none"), progress=False)
    assert adapter.head_state == "fresh"


def test_empty_corpus_is_refused(tiny_model):
    with pytest.raises(PtmdetoxError, match="corpus is empty"):
        recipe_purify(models.create(tiny_model), [], fast(), progress=False)


# ---- dropout masks ----------------------------------------------------------------------------------------------

def test_fast_mode_draws_sfc64_masks_and_reference_mode_torchs():
    assert (fast().dropout_generator, fast(mode="reference").dropout_generator) == ("sfc64", "torch")
    assert preset("cpu", mode="reference").dropout_generator == "torch"   # the mode picks it, not the preset's copy
    assert fast(dropout_rng="torch").dropout_generator == "torch"


def test_results_made_with_torchs_masks_keep_their_cache_keys():
    assert fast().to_dict()["dropout_rng"] == "sfc64"
    assert "dropout_rng" not in fast(dropout_rng="torch").to_dict()
    assert "dropout_rng" not in fast(mode="reference").to_dict()


def test_purification_is_seeded_under_either_generator_and_records_it(tiny_model, tiny_corpus):
    texts = read_corpus(tiny_corpus).texts
    weights, reports = {}, {}
    for name, config in {"sfc64": fast(), "sfc64 again": fast(), "torch": fast(dropout_rng="torch")}.items():
        adapter = models.create(tiny_model)
        reports[name] = recipe_purify(adapter, texts, config, progress=False)
        weights[name] = snapshot(adapter)
    assert [reports[n]["compute"]["dropout_masks"] for n in ("sfc64", "torch")] == ["sfc64", "torch"]
    layer = f"bert.{INTERMEDIATE[0]}"
    assert torch.equal(weights["sfc64"][layer], weights["sfc64 again"][layer])
    assert not torch.equal(weights["sfc64"][layer], weights["torch"][layer])
