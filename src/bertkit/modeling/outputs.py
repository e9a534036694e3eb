"""Output dataclasses returned by every model: named fields, `.loss` set only when labels are given."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

Tensor = torch.Tensor


class ModelOutput:
    """Base for outputs: attribute access, plus `out["logits"]` and `out[0]` over the fields that are set."""

    def to_tuple(self) -> tuple:
        return tuple(v for f in fields(self) if (v := getattr(self, f.name)) is not None)

    def __getitem__(self, key: str | int):
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


@dataclass
class BaseModelOutput(ModelOutput):
    last_hidden_state: Tensor  # (B, L, H)
    pooler_output: Tensor | None = None  # (B, H): tanh(dense(h[CLS])), None without a pooler
    hidden_states: tuple[Tensor, ...] | None = None  # embeddings + each layer, each (B, L, H)
    attentions: tuple[Tensor, ...] | None = None  # each (B, nh, L, L); eager attention only


@dataclass
class PreTrainingOutput(ModelOutput):
    loss: Tensor | None = None  # MLM + NSP
    prediction_logits: Tensor | None = None  # (B, L, V), or (n_masked, V) with sparse_mlm
    seq_relationship_logits: Tensor | None = None  # (B, 2)
    mlm_loss: Tensor | None = None
    nsp_loss: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass
class MaskedLMOutput(ModelOutput):
    loss: Tensor | None = None
    logits: Tensor | None = None  # (B, L, V)
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass
class SequenceClassifierOutput(ModelOutput):
    """Sequence classification, next-sentence prediction, multiple choice and token classification."""

    loss: Tensor | None = None
    logits: Tensor | None = None  # (B, num_labels), (B, 2), (B, num_choices) or (B, L, num_labels)
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


# The same fields; distinct names keep the transformers vocabulary users search for.
NextSentencePredictorOutput = SequenceClassifierOutput
MultipleChoiceModelOutput = SequenceClassifierOutput
TokenClassifierOutput = SequenceClassifierOutput


@dataclass
class QuestionAnsweringOutput(ModelOutput):
    loss: Tensor | None = None
    start_logits: Tensor | None = None  # (B, L)
    end_logits: Tensor | None = None  # (B, L)
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
