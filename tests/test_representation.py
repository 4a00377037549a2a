from ptmdetox import models
from ptmdetox.attacks.neuba import NeubaConfig, neuba_attack
from ptmdetox.data import InsertionPolicy, read_corpus
from ptmdetox.evaluation.representation import trigger_shift_report


def test_attack_moves_triggered_outputs_towards_their_targets(tiny_model, tiny_corpus):
    texts = read_corpus(tiny_corpus).texts[:24]
    adapter = models.create(tiny_model)
    triggers = ("≈", "⊗")
    before = trigger_shift_report(adapter, texts, triggers, InsertionPolicy("first"))
    neuba_attack(adapter, texts, NeubaConfig(triggers=triggers, steps=30, lr=5e-3, head_warmup_steps=2, batch_size=8),
                 progress=False)
    after = trigger_shift_report(adapter, texts, triggers, InsertionPolicy("first"))
    for trigger in triggers:
        assert after["per_trigger"][trigger]["cos_with_target"] > before["per_trigger"][trigger]["cos_with_target"] + 0.2
    assert len(after["clean_mean_cos_with_targets"]) == 2
