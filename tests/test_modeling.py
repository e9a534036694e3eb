"""Every head equals transformers' on the same weights: outputs, losses and gradients, tiny and MiniLM sizes."""

from __future__ import annotations


import pytest
import torch
from conftest import require_module

import bertkit
from bertkit import BertConfig

transformers = require_module("transformers")
transformers.logging.set_verbosity_error()
TOL = 1e-5

# (our class, transformers class, how to make labels for a batch of B x L with `vocab` tokens and `n` labels)
HEADS = {
    "BertModel": None,
    "BertForPreTraining": lambda B, L, V, n: {
        "labels": _mlm_labels(B, L, V),
        "next_sentence_label": torch.randint(0, 2, (B,)),
    },
    "BertForMaskedLM": lambda B, L, V, n: {"labels": _mlm_labels(B, L, V)},
    "BertForNextSentencePrediction": lambda B, L, V, n: {"labels": torch.randint(0, 2, (B,))},
    "BertForSequenceClassification": lambda B, L, V, n: {"labels": torch.randint(0, n, (B,))},
    "BertForTokenClassification": lambda B, L, V, n: {"labels": _mlm_labels(B, L, n)},
    "BertForQuestionAnswering": lambda B, L, V, n: {
        "start_positions": torch.randint(0, L, (B,)),
        "end_positions": torch.tensor([L + 5] + [1] * (B - 1)),  # one out of range: ignored by both
    },
    "BertForMultipleChoice": lambda B, L, V, n: {"labels": torch.randint(0, 2, (B // 2,))},
}


def _mlm_labels(B, L, V):
    labels = torch.randint(0, V, (B, L))
    labels[torch.rand(B, L) > 0.3] = -100
    labels[0, 1] = V - 1  # never an all-ignored batch
    return labels


def tiny_config(**kw) -> dict:
    d = dict(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=3,
    )
    d.update(kw)
    return d


def make_inputs(B, L, V, generator_seed=0, pairs=True):
    g = torch.Generator().manual_seed(generator_seed)
    input_ids = torch.randint(5, V, (B, L), generator=g)
    attention_mask = torch.ones(B, L, dtype=torch.long)
    attention_mask[0, L - 3 :] = 0  # padded rows of different lengths
    attention_mask[-1, L // 2 :] = 0
    input_ids[attention_mask == 0] = 0
    token_type_ids = torch.zeros(B, L, dtype=torch.long)
    if pairs:
        token_type_ids[:, L // 3 :] = 1
        token_type_ids[attention_mask == 0] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


def reshape_for(head, inputs, labels):
    if head == "BertForMultipleChoice":  # (B, L) -> (B/2, 2, L)
        inputs = {k: v.view(v.shape[0] // 2, 2, *v.shape[1:]) for k, v in inputs.items()}
    return inputs, labels


def pair_of_models(head, tmp_path, hf_source=None, **cfg):
    """A transformers model (random, or loaded from hf_source) and ours loaded from what it saved."""
    hf_cls = getattr(transformers, "BertModel" if head == "BertModel" else head)
    torch.manual_seed(0)
    if hf_source is None:
        hf = hf_cls(transformers.BertConfig(**cfg))
    else:
        hf = hf_cls.from_pretrained(hf_source, **cfg)
    hf.save_pretrained(tmp_path)
    ours = getattr(bertkit, head).from_pretrained(tmp_path)
    assert ours.loading_info["missing_keys"] == [], ours.loading_info
    return hf.eval(), ours.eval()


def max_diff(a, b):
    return (a.float() - b.float()).abs().max().item()


def compare_outputs(head, hf, ours, inputs, labels=None, hidden=False, attentions=False):
    kw = dict(output_hidden_states=hidden, output_attentions=attentions)
    out_hf = hf(**inputs, **(labels or {}), **kw)
    out = ours(**inputs, **(labels or {}), **kw)
    names = {
        "BertModel": ["last_hidden_state", "pooler_output"],
        "BertForPreTraining": ["prediction_logits", "seq_relationship_logits"],
        "BertForQuestionAnswering": ["start_logits", "end_logits"],
    }.get(head, ["logits"])
    for name in names:
        assert max_diff(getattr(out, name), getattr(out_hf, name)) <= TOL, name
    if labels:
        assert abs(out.loss.item() - out_hf.loss.item()) <= TOL
    if hidden:
        assert len(out.hidden_states) == len(out_hf.hidden_states)
        for a, b in zip(out.hidden_states, out_hf.hidden_states):
            assert max_diff(a, b) <= TOL
    if attentions:
        assert len(out.attentions) == len(out_hf.attentions)
        for a, b in zip(out.attentions, out_hf.attentions):
            assert max_diff(a, b) <= TOL
    return out, out_hf


def compare_gradients(hf, ours):
    hf_grads = {n: p.grad for n, p in hf.named_parameters() if p.grad is not None}
    checked = 0
    for name, p in ours.named_parameters():
        if name in hf_grads:
            assert max_diff(p.grad, hf_grads[name]) <= TOL, name
            checked += 1
    assert checked == len(hf_grads) > 0


@pytest.mark.parametrize("head", list(HEADS))
def test_tiny_head_matches_transformers(head, tmp_path):
    # transformers sizes qa_outputs by num_labels: 2 (start, end) is the only meaningful value.
    cfg = tiny_config(num_labels=2) if head == "BertForQuestionAnswering" else tiny_config()
    hf, ours = pair_of_models(head, tmp_path, **cfg)
    inputs, labels = reshape_for(head, make_inputs(4, 12, 99), HEADS[head] and HEADS[head](4, 12, 99, 3))
    with torch.no_grad():
        compare_outputs(head, hf, ours, inputs, hidden=True)
    if labels:
        out, out_hf = compare_outputs(head, hf, ours, inputs, labels)
        out.loss.backward()
        out_hf.loss.backward()
        compare_gradients(hf, ours)


@pytest.mark.parametrize("head", list(HEADS))
def test_eager_attention_probabilities_match(head, tmp_path):
    hf_cls = getattr(transformers, head)
    torch.manual_seed(0)
    cfg = tiny_config(num_labels=2) if head == "BertForQuestionAnswering" else tiny_config()
    hf = hf_cls._from_config(transformers.BertConfig(**cfg), attn_implementation="eager").eval()
    hf.save_pretrained(tmp_path)
    ours = getattr(bertkit, head).from_pretrained(tmp_path)
    inputs, _ = reshape_for(head, make_inputs(4, 12, 99), None)
    with torch.no_grad():
        compare_outputs(head, hf, ours, inputs, attentions=True)


@pytest.mark.parametrize("problem", ["regression", "multi_label_classification", "single_label_classification"])
def test_sequence_classification_problem_types(problem, tmp_path):
    n = 1 if problem == "regression" else 3
    hf, ours = pair_of_models("BertForSequenceClassification", tmp_path, **tiny_config(num_labels=n))
    inputs = make_inputs(4, 12, 99)
    if problem == "regression":
        labels = torch.rand(4)
    elif problem == "multi_label_classification":
        labels = torch.randint(0, 2, (4, 3)).float()
    else:
        labels = torch.randint(0, 3, (4,))
    out, out_hf = compare_outputs("BertForSequenceClassification", hf, ours, inputs, {"labels": labels})
    assert ours.config.problem_type == hf.config.problem_type == problem
    out.loss.backward()
    out_hf.loss.backward()
    compare_gradients(hf, ours)


@pytest.fixture(scope="module")
def minilm_dir():
    return str(bertkit.checkpoint.resolve_model_dir("all-MiniLM-L6-v2"))


@pytest.mark.parametrize("head", list(HEADS))
def test_minilm_head_matches_transformers(head, minilm_dir, tmp_path):
    kw = {"num_labels": 3} if head in ("BertForSequenceClassification", "BertForTokenClassification") else {}
    kw.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    hf, ours = pair_of_models(head, tmp_path, hf_source=minilm_dir, **kw)
    V = hf.config.vocab_size
    inputs = make_inputs(4, 24, 30000)
    inputs, labels = reshape_for(head, inputs, HEADS[head] and HEADS[head](4, 24, V, 3))
    if labels is None:
        with torch.no_grad():
            compare_outputs(head, hf, ours, inputs, hidden=True)
        return
    out, out_hf = compare_outputs(head, hf, ours, inputs, labels)
    out.loss.backward()
    out_hf.loss.backward()
    compare_gradients(hf, ours)


def test_minilm_sentence_embedding_matches_reference(minilm_dir):
    """The bundled checkpoint through our model gives transformers' hidden states on real tokenised text."""
    ours = bertkit.BertModel.from_pretrained("all-MiniLM-L6-v2")
    hf = transformers.AutoModel.from_pretrained(minilm_dir).eval()
    tok = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    batch = tok(["I love this movie!", "A man is playing a guitar on stage tonight."], ["Great.", None][:1] * 2,
                padding=True, return_tensors="pt")
    with torch.no_grad():
        a = ours(**batch).last_hidden_state
        b = hf(**batch).last_hidden_state
    assert max_diff(a, b) <= TOL


def test_mlm_decoder_is_tied_to_word_embeddings():
    model = bertkit.BertForPreTraining(BertConfig(**{k: v for k, v in tiny_config().items() if k != "num_labels"}))
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.bias is model.cls.predictions.decoder.bias


def test_init_follows_bert():
    torch.manual_seed(0)
    cfg = BertConfig.from_preset("mini", vocab_size=2000)
    model = bertkit.BertForPreTraining(cfg)
    q = model.bert.encoder.layer[0].attention.self.query
    assert abs(q.weight.std().item() - 0.02) < 0.002 and q.bias.abs().max() == 0
    assert model.bert.embeddings.word_embeddings.weight[0].abs().max() == 0  # padding row
    assert model.bert.encoder.layer[0].output.LayerNorm.weight.eq(1).all()
    assert model.cls.predictions.bias.abs().max() == 0


@pytest.mark.parametrize("head", ["BertForPreTraining", "BertForMaskedLM"])
def test_sparse_mlm_head_gives_the_dense_loss(head):
    torch.manual_seed(0)
    model = getattr(bertkit, head)(BertConfig(**{k: v for k, v in tiny_config().items() if k != "num_labels"}))
    inputs = make_inputs(4, 12, 99)
    labels = _mlm_labels(4, 12, 99)
    dense = model(**inputs, labels=labels)
    sparse = model(**inputs, labels=labels, sparse_mlm=True)
    assert abs(dense.loss.item() - sparse.loss.item()) <= 1e-6
    logits = dense.prediction_logits if head == "BertForPreTraining" else dense.logits
    sparse_logits = sparse.prediction_logits if head == "BertForPreTraining" else sparse.logits
    keep = labels != -100
    assert sparse_logits.shape == (int(keep.sum()), 99)  # only the masked positions were projected
    torch.testing.assert_close(sparse_logits, logits[keep], rtol=0, atol=1e-6)
