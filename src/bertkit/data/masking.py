"""Masked-LM masking at batch time, as BERT's recipe, reproducible from (seed, epoch, example index)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from tokenizers import Tokenizer

from bertkit.data.pretraining import IGNORE_INDEX, SpecialTokens


def num_to_predict(length: int, mlm_probability: float, max_predictions: int) -> int:
    """How many tokens BERT masks in a sequence of `length` tokens ([CLS] and [SEP] included)."""
    return min(max_predictions, max(1, int(round(length * mlm_probability))))


def random_non_special(
    shape: tuple[int, ...], vocab_size: int, special_ids: Sequence[int], generator: torch.Generator
) -> torch.Tensor:
    """Token ids drawn uniformly from the vocabulary less the special tokens."""
    ids = torch.randint(vocab_size - len(set(special_ids)), shape, generator=generator)
    for special in sorted(set(special_ids)):  # step over each special id, in increasing order
        ids += (ids >= special).long()
    return ids


def mask_tokens(
    input_ids: torch.Tensor,
    word_start: torch.Tensor,
    special_mask: torch.Tensor,
    *,
    mask_id: int,
    special_ids: Sequence[int],
    vocab_size: int,
    generator: torch.Generator,
    mlm_probability: float = 0.15,
    max_predictions: int = 20,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask one sequence. All inputs are (L,); returns (masked_ids, labels), both (L,) int64.

    Words (a word-start token and the tokens up to the next start; pass `word_start` all True to
    mask tokens one by one) are taken in random order, skipping a word that would overshoot, until
    `num_to_predict` tokens are chosen, as BERT's whole-word masking does. Special tokens
    (`special_mask`) are never chosen. Of the chosen tokens 80% become `mask_id`, 10% a random
    non-special token and 10% stay; `labels` holds their original ids and -100 everywhere else.
    """
    length = input_ids.shape[0]
    after_special = torch.zeros_like(special_mask)
    after_special[1:] = special_mask[:-1]
    starts = word_start | special_mask | after_special  # a special token is a word of its own
    starts[0] = True
    word = torch.cumsum(starts.long(), 0) - 1  # (L,) word index of each token
    sizes = torch.bincount(word).tolist()  # (words,) tokens per word
    special_words = set(word[special_mask].tolist())
    budget = num_to_predict(length, mlm_probability, max_predictions)
    chosen_words, count = [], 0
    for w in torch.randperm(len(sizes), generator=generator).tolist():
        if count >= budget:
            break
        if w in special_words or count + sizes[w] > budget:
            continue
        chosen_words.append(w)
        count += sizes[w]
    chosen = torch.isin(word, torch.tensor(chosen_words, dtype=torch.long))  # (L,)

    # One uniform per token picks [MASK] (< 0.8), a random token (< 0.9) or the token itself.
    u = torch.rand(length, generator=generator)
    random_ids = random_non_special((length,), vocab_size, special_ids, generator)
    masked = torch.where(chosen & (u < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(chosen & (u >= 0.8) & (u < 0.9), random_ids, masked)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return masked, labels


def example_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one example's masks: hashed so that neighbouring (epoch, index) give unrelated masks."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class MaskingCollator:
    """Masks dataset items and pads them into a batch (the `collate_fn` of a DataLoader).

    The masks of an item are a pure function of (seed, epoch, item["index"]): each item gets its
    own generator, so a resumed run makes exactly the same masks whatever its batch size, worker
    count or order, and every epoch makes new ones. A training loop passes the epoch with
    `DataLoader(dataset, shuffle=True, collate_fn=functools.partial(collator, epoch=epoch))`.

    `max_predictions` caps the masks per sequence: BERT used 20 for length 128 and 80 for 512.
    """

    def __init__(
        self,
        specials: SpecialTokens,
        vocab_size: int,
        mlm_probability: float = 0.15,
        wwm: bool = False,
        pad_to_multiple_of: int | None = None,
        max_predictions: int = 20,
        seed: int = 0,
    ):
        self.specials = specials
        self.vocab_size = vocab_size
        self.mlm_probability = mlm_probability
        self.wwm = wwm  # mask whole words (from the items' word_start) instead of single tokens
        self.pad_to_multiple_of = pad_to_multiple_of
        self.max_predictions = max_predictions
        self.seed = seed

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer, **kwargs) -> MaskingCollator:
        return cls(SpecialTokens.from_tokenizer(tokenizer), tokenizer.get_vocab_size(with_added_tokens=True), **kwargs)

    def __call__(self, items: Sequence[dict], epoch: int = 0) -> dict[str, torch.Tensor]:
        """items: dataset items (`input_ids`, `token_type_ids`, `word_start`, `next_sentence_label`, `index`).

        Returns `input_ids`, `token_type_ids`, `attention_mask`, `labels`, all (B, L) padded to the
        longest item (and up to `pad_to_multiple_of`), and `next_sentence_label` (B,) unless no item
        has one (MLM without a pair task).
        """
        longest = max(len(item["input_ids"]) for item in items)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {
            "input_ids": torch.full((len(items), longest), self.specials.pad, dtype=torch.long),
            "token_type_ids": torch.zeros((len(items), longest), dtype=torch.long),
            "attention_mask": torch.zeros((len(items), longest), dtype=torch.long),
            "labels": torch.full((len(items), longest), IGNORE_INDEX, dtype=torch.long),
        }
        special_ids = torch.tensor(self.specials.ids)
        for row, item in enumerate(items):
            ids = torch.as_tensor(item["input_ids"], dtype=torch.long)  # (L_row,)
            if self.wwm:
                word_start = torch.as_tensor(item["word_start"], dtype=torch.bool)
            else:
                word_start = torch.ones_like(ids, dtype=torch.bool)  # every token a word of its own
            generator = torch.Generator().manual_seed(example_seed(self.seed, epoch, int(item["index"])))
            masked, labels = mask_tokens(
                ids,
                word_start,
                torch.isin(ids, special_ids),
                mask_id=self.specials.mask,
                special_ids=self.specials.ids,
                vocab_size=self.vocab_size,
                generator=generator,
                mlm_probability=self.mlm_probability,
                max_predictions=self.max_predictions,
            )
            n = len(ids)
            batch["input_ids"][row, :n] = masked
            batch["token_type_ids"][row, :n] = torch.as_tensor(item["token_type_ids"], dtype=torch.long)
            batch["attention_mask"][row, :n] = 1
            batch["labels"][row, :n] = labels
        nsp = torch.tensor([int(item["next_sentence_label"]) for item in items], dtype=torch.long)
        if (nsp != IGNORE_INDEX).any():
            batch["next_sentence_label"] = nsp
        return batch
