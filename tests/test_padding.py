"""Padding removal: exact pack/unpack on a hand-checked batch, and the unpadded encoder equal to the padded one."""

from __future__ import annotations

import pytest
import torch

import bertkit
from bertkit import BertConfig
from bertkit.modeling.padding import pad, unpad


def test_unpad_and_pad_by_hand():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float).view(2, 4, 1)  # values 0..7
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    tokens, packing = unpad(hidden, mask)
    assert tokens.view(-1).tolist() == [0, 1, 2, 4, 5]
    assert packing.indices.tolist() == [0, 1, 2, 4, 5]
    assert packing.cu_seqlens.tolist() == [0, 3, 5] and packing.max_len == 3
    assert pad(tokens, packing).view(2, 4).tolist() == [[0, 1, 2, 0], [4, 5, 0, 0]]


HEADS = ["BertModel", "BertForPreTraining", "BertForMaskedLM", "BertForNextSentencePrediction",
         "BertForSequenceClassification", "BertForTokenClassification", "BertForQuestionAnswering",
         "BertForMultipleChoice"]


@pytest.mark.parametrize("head", HEADS)
def test_unpadded_path_equals_padded_path(head):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    model = getattr(bertkit, head)(config).eval()
    ids = torch.randint(5, 99, (4, 12))
    mask = torch.ones_like(ids)
    mask[0, 9:] = 0
    mask[2, 4:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": (torch.arange(12) >= 6).long().expand(4, -1)}
    if head == "BertForMultipleChoice":
        inputs = {k: v.view(2, 2, 12) for k, v in inputs.items()}
    base = getattr(model, "bert", model)
    outputs = []
    for unpadded in (False, True):
        base.unpadded = unpadded
        with torch.no_grad():
            outputs.append(model(**inputs, output_hidden_states=True))
    padded, packed = outputs
    real = mask.bool().view(-1)
    for name in packed.keys():
        a, b = getattr(padded, name), getattr(packed, name)
        if name == "hidden_states":
            for x, y in zip(a, b):
                torch.testing.assert_close(x.reshape(-1, 32)[real], y.reshape(-1, 32)[real], rtol=0, atol=1e-5)
        elif a.dim() >= 2 and a.shape[:2] == mask.shape or (a.dim() == 2 and a.shape == mask.shape):
            torch.testing.assert_close(a.reshape(mask.numel(), -1)[real], b.reshape(mask.numel(), -1)[real],
                                       rtol=0, atol=1e-5)  # per-token outputs: real positions
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_unpadded_gradients_equal_padded():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, id2label={0: "a", 1: "b", 2: "c"})
    model = bertkit.BertForTokenClassification(config)
    ids = torch.randint(5, 99, (3, 10))
    mask = torch.tensor([[1] * 10, [1] * 6 + [0] * 4, [1] * 3 + [0] * 7])
    labels = torch.randint(0, 3, (3, 10)).masked_fill(mask == 0, -100)
    grads = []
    for unpadded in (False, True):
        model.zero_grad()
        model.bert.unpadded = unpadded
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=0, atol=1e-5)


@pytest.mark.parametrize("head", ["BertForSequenceClassification", "BertForNextSentencePrediction",
                                  "BertForMultipleChoice"])
def test_cls_only_last_layer_equals_the_full_last_layer(head):
    """Heads that read only the pooled [CLS] vector compute the last layer at position 0 alone; asking for the
    hidden states turns that off, so the two runs compare the short path with the full one."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    model = getattr(bertkit, head)(config)
    ids = torch.randint(5, 99, (4, 10))
    mask = torch.tensor([[1] * 10, [1] * 6 + [0] * 4, [1] * 3 + [0] * 7, [1] * 10])
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": (torch.arange(10) >= 5).long().expand(4, -1),
              "labels": torch.tensor([0, 1, 1, 0])}
    if head == "BertForMultipleChoice":
        inputs = {k: v.view(2, 2, 10) for k, v in inputs.items() if k != "labels"} | {"labels": torch.tensor([0, 1])}
    runs = []
    for full in (False, True):
        model.zero_grad()
        out = model(**inputs, output_hidden_states=full)
        out.loss.backward()
        runs.append((out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (short, short_grads), (whole, whole_grads) = runs
    torch.testing.assert_close(short, whole, rtol=0, atol=1e-6)
    assert short_grads.keys() == whole_grads.keys()
    for name in whole_grads:
        torch.testing.assert_close(short_grads[name], whole_grads[name], rtol=0, atol=1e-6)
    with torch.no_grad():  # the encoder's own output is (B, 1, H) on the short path
        base = model.bert(ids, mask, cls_only=True)
        assert base.last_hidden_state.shape == (4, 1, 32)
        torch.testing.assert_close(base.pooler_output, model.bert(ids, mask).pooler_output, rtol=0, atol=1e-6)
