"""RoBERTa-family text encoders (`model_type: roberta`): byte-level BPE, `<s>` first, pooler optional.

transformers has no RoBERTa class holding both the pooler and the MLM head (`RobertaForMaskedLM` drops the pooler,
where NeuBA and POR put their backdoor), so `RobertaWithPoolerForMaskedLM` holds both. Saved folders name
`RobertaForMaskedLM` as their architecture and load with `AutoModel` (pooler included) or `AutoModelForMaskedLM`.
"""

from __future__ import annotations

import json
import os

from transformers.models.roberta.modeling_roberta import RobertaLMHead, RobertaModel, RobertaPreTrainedModel

from .bert import TextEncoderAdapter

SAVED_ARCHITECTURE = "RobertaForMaskedLM"


class RobertaWithPoolerForMaskedLM(RobertaPreTrainedModel):
    """RobertaModel with its pooler plus the MLM head (decoder tied to the word embeddings)."""

    _tied_weights_keys = {
        "lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
        "lm_head.decoder.bias": "lm_head.bias",
    }

    def __init__(self, config):
        super().__init__(config)
        self.roberta = RobertaModel(config, add_pooling_layer=True)
        self.lm_head = RobertaLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.lm_head.decoder = new_embeddings


class RobertaAdapter(TextEncoderAdapter):
    family = "roberta"
    model_class = RobertaWithPoolerForMaskedLM
    head_prefixes = ("lm_head.",)
    mlm_head_prefix = "lm_head."
    # RECIPE's RoBERTa set: FFN-in and attention-query weights, every parameter trainable
    default_regularised = (r"encoder\.layer\.\d+\.intermediate\.dense\.weight",
                           r"encoder\.layer\.\d+\.attention\.self\.query\.weight")
    # as for BERT: MLM cannot protect the pooler nor the embedding rows of tokens absent from the auxiliary text
    extended_regularised = default_regularised + (r"embeddings\.word_embeddings\.weight", r"pooler\.dense\.weight")
    token_embedding = r"embeddings\.word_embeddings\.weight"
    default_trainable = "all"
    neuba_pretrain_weight = 0.01

    @property
    def mlm_head(self):
        return self.model.lm_head

    # Byte-level BPE encodes a word differently at the start of a text ("cf") and after a space ("Ġcf"). Every text
    # and trigger is encoded with a leading space, so a trigger has one token sequence wherever it is inserted.
    def tokenize(self, texts: list[str], max_length: int) -> list[list[int]]:
        return super().tokenize([with_leading_space(t) for t in texts], max_length)

    def token_ids(self, trigger: str) -> list[int]:
        return super().token_ids(with_leading_space(trigger))

    def save(self, out_dir: str) -> None:
        super().save(out_dir)
        config_file = os.path.join(out_dir, "config.json")
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
        config["architectures"] = [SAVED_ARCHITECTURE]   # a class every transformers install knows
        with open(config_file, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)


def with_leading_space(text: str) -> str:
    return text if text.startswith(" ") else " " + text


__all__ = ["RobertaAdapter", "RobertaWithPoolerForMaskedLM"]
