"""Sentence embeddings: mean of the token vectors over the attention mask, L2-normalised (sentence-transformers'
recipe for all-MiniLM-L6-v2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from bertkit.inference.batching import length_sorted_batches


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L, H), (B, L) -> (B, H): the average over real tokens only."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


@torch.inference_mode()
def encode_sentences(
    model, tokenizer, texts: Sequence[str], batch_size: int = 32, normalize: bool = True, max_length: int = 256
) -> torch.Tensor:
    """(N, H) embeddings of `texts`, in input order; batches are formed by length to avoid padding work."""
    if not texts:
        return torch.empty(0, model.config.hidden_size)
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    out = torch.empty(len(texts), model.config.hidden_size)
    for idx in length_sorted_batches(lengths, batch_size):
        batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt").to(model.device)
        hidden = model(**batch).last_hidden_state
        out[idx] = mean_pool(hidden, batch["attention_mask"]).float().cpu()
    return F.normalize(out, dim=-1) if normalize else out


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a[None], b[None]).item()
