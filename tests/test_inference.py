"""Length-sorted batching and sentence embeddings (checked against transformers + hand-written mean pooling)."""

from __future__ import annotations

import torch
from conftest import require_module

from bertkit.inference import encode_sentences, length_sorted_batches, mean_pool


def test_length_sorted_batches_cover_every_index_once_longest_first():
    lengths = [3, 9, 1, 9, 4, 7, 2]
    batches = list(length_sorted_batches(lengths, batch_size=3))
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert batches == [[1, 3, 5], [4, 0, 6], [2]]  # stable among equal lengths


def test_length_sorted_batches_respect_token_budget():
    lengths = [10, 10, 10, 4, 4, 4, 4, 4]
    batches = list(length_sorted_batches(lengths, batch_size=100, max_tokens=20))
    assert batches == [[0, 1], [2, 3], [4, 5, 6, 7]]  # 2x10, 2x10 (longest 10), 4x4 = 16 <= 20
    assert all(len(b) * max(lengths[i] for i in b) <= 20 for b in batches)


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert mean_pool(hidden, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 3.0]]


def test_embeddings_match_transformers_mean_pooling():
    transformers = require_module("transformers")
    from bertkit import BertModel, BertTokenizer
    from bertkit.checkpoint import resolve_model_dir

    path = str(resolve_model_dir("all-MiniLM-L6-v2"))
    texts = ["A man is playing a guitar.", "Hi", "The quick brown fox jumps over the lazy dog near the river bank."]
    ours = encode_sentences(BertModel.from_pretrained(path), BertTokenizer.from_pretrained(path), texts, batch_size=2)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    hf = transformers.AutoModel.from_pretrained(path).eval()
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = hf(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    assert ours.shape == (3, 384) and torch.allclose(ours.norm(dim=-1), torch.ones(3))
