"""Task heads on BertModel. Each computes its own loss when labels are given, exactly as transformers does.

`reduction="mean"` (the default) is transformers' loss; `reduction="sum"` is the same loss summed over the
examples (tokens for MLM and NER, windows for QA), so a training loop can divide by the count of a whole
global batch. The loss is written once, here; the tasks' objectives call the head with `reduction="sum"`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.config import BertConfig
from bertkit.modeling.bert import BertModel, get_activation
from bertkit.modeling.outputs import (
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    NextSentencePredictorOutput,
    PreTrainingOutput,
    QuestionAnsweringOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from bertkit.modeling.pretrained import BertPreTrainedModel

IGNORE_INDEX = -100  # labels at this value take no part in a loss (unmasked MLM positions, sub-word tokens)


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = get_activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    """transform, then the vocabulary projection whose weight is the word embedding matrix (tied)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = self.decoder.bias  # one tensor under both names, as checkpoints carry either

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., H) -> (..., V)
        return self.decoder(self.transform(x))


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)


class BertOnlyNSPHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over positions whose label is not IGNORE_INDEX (their mean, or sum)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX,
                           reduction=reduction)


def mlm_logits(head: BertLMPredictionHead, hidden: torch.Tensor, labels: torch.Tensor | None, sparse: bool):
    """The vocabulary projection dominates an MLM step (V = 30k outputs per token). With `sparse`, it runs only at
    the ~15% of positions that carry a label: returns ((n_masked, V) logits, (n_masked,) targets). Otherwise
    ((B, L, V) logits, labels)."""
    if not sparse or labels is None:
        return head(hidden), labels
    keep = labels != IGNORE_INDEX  # (B, L)
    return head(hidden[keep]), labels[keep]  # (n_masked, H) -> (n_masked, V)


class _MLMTied(BertPreTrainedModel):
    tied_weights_keys = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def tie_weights(self) -> None:
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder


class BertForPreTraining(_MLMTied):
    """MLM + NSP, the original pretraining objective."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels: torch.Tensor | None = None,  # (B, L) token ids at masked positions, IGNORE_INDEX elsewhere
        next_sentence_label: torch.Tensor | None = None,  # (B,) 0 = B follows A, 1 = B is random
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        sparse_mlm: bool = False,  # with labels: run the MLM head only where labels != IGNORE_INDEX
        reduction: str = "mean",  # "sum": each loss summed over masked tokens / sentence pairs
    ) -> PreTrainingOutput:
        out = self.bert(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, output_hidden_states, output_attentions
        )
        prediction_logits, mlm_targets = mlm_logits(self.cls.predictions, out.last_hidden_state, labels, sparse_mlm)
        nsp_logits = self.cls.seq_relationship(out.pooler_output)  # (B, 2)
        loss = lm = ns = None
        if labels is not None:
            lm = mlm_loss(prediction_logits, mlm_targets, reduction)
            loss = lm
        if next_sentence_label is not None:
            ns = F.cross_entropy(nsp_logits.float(), next_sentence_label.reshape(-1), reduction=reduction)
            loss = ns if loss is None else loss + ns
        return PreTrainingOutput(loss, prediction_logits, nsp_logits, lm, ns, out.hidden_states, out.attentions)


class BertForMaskedLM(_MLMTied):
    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels: torch.Tensor | None = None,  # (B, L), IGNORE_INDEX at unmasked positions
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        sparse_mlm: bool = False,  # with labels: run the MLM head only where labels != IGNORE_INDEX
        reduction: str = "mean",
    ) -> MaskedLMOutput:
        out = self.bert(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, output_hidden_states, output_attentions
        )
        logits, targets = mlm_logits(self.cls.predictions, out.last_hidden_state, labels, sparse_mlm)
        loss = mlm_loss(logits, targets, reduction) if labels is not None else None
        return MaskedLMOutput(loss, logits, out.hidden_states, out.attentions)


class BertForNextSentencePrediction(BertPreTrainedModel):
    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertOnlyNSPHead(config)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels: torch.Tensor | None = None,  # (B,) 0 = B follows A, 1 = B is random
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        reduction: str = "mean",
    ) -> NextSentencePredictorOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, output_hidden_states,
                        output_attentions, cls_only=True)  # the pooled [CLS] vector is all this head reads
        logits = self.cls.seq_relationship(out.pooler_output)  # (B, 2)
        loss = F.cross_entropy(logits.float(), labels.reshape(-1), reduction=reduction) if labels is not None else None
        return NextSentencePredictorOutput(loss, logits, out.hidden_states, out.attentions)


def classifier_dropout(config: BertConfig) -> nn.Dropout:
    p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
    return nn.Dropout(p)


def sequence_classification_loss(config: BertConfig, logits: torch.Tensor, labels: torch.Tensor,
                                  reduction: str = "mean") -> torch.Tensor:
    """Regression, single- or multi-label classification, chosen as transformers does and recorded in the config.

    With `reduction="sum"` the sum over examples; a multi-label example's loss is the mean over its labels, so the
    sum divided by the examples is transformers' mean."""
    if config.problem_type is None:
        if config.num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        if config.num_labels == 1:
            return F.mse_loss(logits.squeeze().float(), labels.squeeze().float(), reduction=reduction)
        per_value = F.mse_loss(logits.float(), labels.float(), reduction="none")  # (B, C)
        return per_value.mean() if reduction == "mean" else per_value.mean(-1).sum()
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, config.num_labels).float(), labels.view(-1), reduction=reduction)
    if config.problem_type == "multi_label_classification":
        per_label = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")  # (B, C)
        return per_label.mean() if reduction == "mean" else per_label.mean(-1).sum()
    raise ValueError(f"unknown problem_type {config.problem_type!r}")


class BertForSequenceClassification(BertPreTrainedModel):
    """Dropout + linear on the pooled [CLS] vector: sentence and sentence-pair classification or regression."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config)
        self.dropout = classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels: torch.Tensor | None = None,  # (B,) class ids, (B,) floats for regression, (B, C) multi-hot
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        reduction: str = "mean",
    ) -> SequenceClassifierOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, output_hidden_states,
                        output_attentions, cls_only=True)  # the pooled [CLS] vector is all this head reads
        logits = self.classifier(self.dropout(out.pooler_output))  # (B, C)
        loss = sequence_classification_loss(self.config, logits, labels, reduction) if labels is not None else None
        return SequenceClassifierOutput(loss, logits, out.hidden_states, out.attentions)


class BertForMultipleChoice(BertPreTrainedModel):
    """Scores each of C (prompt, choice) pairs with one linear unit; softmax over the choices."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.dropout = classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(
        self,
        input_ids=None,  # (B, C, L)
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,  # (B, C, L, H)
        labels: torch.Tensor | None = None,  # (B,) index of the right choice
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        reduction: str = "mean",
    ) -> MultipleChoiceModelOutput:
        B, C = (input_ids if input_ids is not None else inputs_embeds).shape[:2]

        def flat(t):  # (B, C, L, ...) -> (B*C, L, ...)
            return t.reshape(B * C, *t.shape[2:]) if t is not None else None

        out = self.bert(
            flat(input_ids),
            flat(attention_mask),
            flat(token_type_ids),
            flat(position_ids),
            flat(inputs_embeds),
            output_hidden_states,
            output_attentions,
            cls_only=True,
        )
        logits = self.classifier(self.dropout(out.pooler_output)).view(B, C)  # (B, C)
        loss = F.cross_entropy(logits.float(), labels, reduction=reduction) if labels is not None else None
        return MultipleChoiceModelOutput(loss, logits, out.hidden_states, out.attentions)


class BertForTokenClassification(BertPreTrainedModel):
    """A label per token (NER); label IGNORE_INDEX on specials, padding and non-first sub-words."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels: torch.Tensor | None = None,  # (B, L)
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        reduction: str = "mean",  # "sum": over labelled tokens
    ) -> TokenClassifierOutput:
        out = self.bert(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, output_hidden_states, output_attentions
        )
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, L, C)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, self.num_labels).float(), labels.reshape(-1),
                                   ignore_index=IGNORE_INDEX, reduction=reduction)
        return TokenClassifierOutput(loss, logits, out.hidden_states, out.attentions)


class BertForQuestionAnswering(BertPreTrainedModel):
    """Extractive QA: a start and an end logit per token."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        start_positions: torch.Tensor | None = None,  # (B,) token index of the answer start
        end_positions: torch.Tensor | None = None,  # (B,)
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        reduction: str = "mean",  # "sum": over windows
    ) -> QuestionAnsweringOutput:
        out = self.bert(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, output_hidden_states, output_attentions
        )
        logits = self.qa_outputs(out.last_hidden_state)  # (B, L, 2)
        start_logits, end_logits = (t.squeeze(-1).contiguous() for t in logits.split(1, dim=-1))  # (B, L) each
        loss = None
        if start_positions is not None and end_positions is not None:
            # Positions outside the sequence (answer truncated away) are ignored, as transformers does.
            L = start_logits.shape[1]
            start = start_positions.reshape(-1).clamp(0, L)
            end = end_positions.reshape(-1).clamp(0, L)
            loss = (
                F.cross_entropy(start_logits.float(), start, ignore_index=L, reduction=reduction)
                + F.cross_entropy(end_logits.float(), end, ignore_index=L, reduction=reduction)
            ) / 2
        return QuestionAnsweringOutput(loss, start_logits, end_logits, out.hidden_states, out.attentions)
