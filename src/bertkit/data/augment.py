"""TinyBERT-style data augmentation (Jiao et al. 2020, Algorithm 1): new sentences made by replacing words with
what a masked language model would put in their place, for distilling on small datasets.

Each word is masked alone, in its sentence, and the MLM's top-K whole-word predictions are its candidates (TinyBERT
takes GloVe neighbours for words of several pieces; here the MLM predicts those too, as one [MASK]). Each
augmented copy then replaces every word with probability p by a candidate drawn at random. Seeded: the same
inputs give the same sentences.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch


@torch.inference_mode()
def word_candidates(mlm, tokenizer, sentences: Sequence[Sequence[str]], top_k: int = 15, batch_size: int = 64,
                    max_length: int = 128) -> list[list[list[str]]]:
    """For every word of every sentence, the MLM's `top_k` whole words (no '##' pieces, no special tokens, not
    the word itself) at that word's place; [sentence][word] -> candidates. Words past `max_length` tokens get
    none."""
    mask_id = tokenizer.mask_token_id
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    banned = torch.tensor([t.startswith("##") or (t.startswith("[") and t.endswith("]")) or not any(c.isalnum()
                           for c in t) for t in vocab])
    queries = [(s, w) for s, words in enumerate(sentences) for w in range(len(words))]
    result: list[list[list[str]]] = [[[] for _ in words] for words in sentences]
    mlm.eval()
    for start in range(0, len(queries), batch_size):
        chunk = queries[start: start + batch_size]
        texts = [[tokenizer.mask_token if i == w else word for i, word in enumerate(sentences[s])] for s, w in chunk]
        enc = tokenizer(texts, is_split_into_words=True, truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
        ids = enc["input_ids"].to(mlm.device)
        hidden = mlm.bert(ids, enc["attention_mask"].to(mlm.device), enc["token_type_ids"].to(mlm.device))
        at_mask = ids == mask_id  # (B, L): one [MASK] per row unless truncated away
        logits = mlm.cls.predictions(hidden.last_hidden_state[at_mask]).float()  # (n, V): at the masks only
        logits[:, banned[: logits.shape[1]].to(logits.device)] = float("-inf")
        rows = at_mask.any(-1).nonzero().squeeze(-1).tolist()
        best = logits.topk(min(top_k + 1, logits.shape[1]), dim=-1).indices.tolist()
        for row, picks in zip(rows, best):
            s, w = chunk[row]
            own = sentences[s][w].lower()
            result[s][w] = [vocab[i] for i in picks if vocab[i] != own][:top_k]
    return result


def augment_words(words: Sequence[str], candidates: Sequence[Sequence[str]], copies: int, p: float,
                  rng: random.Random) -> list[list[str]]:
    """`copies` new versions of `words`, each word replaced with probability `p` by one of its candidates; copies
    equal to the original or to an earlier copy are dropped (so fewer may come back)."""
    seen = {tuple(words)}
    out = []
    for _ in range(copies):
        new = [rng.choice(c) if c and rng.random() < p else word for word, c in zip(words, candidates)]
        if tuple(new) not in seen:
            seen.add(tuple(new))
            out.append(new)
    return out
