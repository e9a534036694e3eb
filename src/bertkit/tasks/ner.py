"""Named-entity recognition: word tags onto WordPiece windows and back, and entities as character spans."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import NotRequired, TypedDict

import torch
from seqeval.scheme import IOB2, Entities
from tokenizers import PreTokenizedString

from bertkit.errors import UserError
from bertkit.modeling.heads import IGNORE_INDEX
from bertkit.tasks.common import pad_batch
from bertkit.tasks.examples import TokenExample

OUTSIDE = "O"  # the tag of a word that no window can predict: it has no WordPiece tokens


class Feature(TypedDict):
    """One window of one sentence, `[CLS] pieces of words [start, end) [SEP]`, unpadded. A dict, the row form that
    `common.run_model` and the training loop take; `pad_batch` ignores the bookkeeping keys."""

    input_ids: list[int]
    token_type_ids: list[int]
    word_ids: list[int | None]  # per token, the index of its word in the example; None for [CLS] and [SEP]
    example_index: int  # the example the window comes from
    owned_words: tuple[int, int]  # [start, end): the words this window, and no other, is trained on and predicts
    labels: NotRequired[list[int]]  # per token: the word's tag id on its first piece of an owned word, else -100


# ---- windows -------------------------------------------------------------------------------------------------


def word_pieces(ids: Sequence[int], word_ids: Sequence[int], num_words: int) -> list[list[int]]:
    """The WordPiece ids of each word, from an encoding of pre-split words without special tokens.

    A word that normalises to nothing (an empty string, a control character) gets no pieces."""
    pieces: list[list[int]] = [[] for _ in range(num_words)]
    for piece, word in zip(ids, word_ids):
        pieces[word].append(piece)
    return pieces


def word_windows(piece_counts: Sequence[int], budget: int, overlap_words: int | None = None) -> list[tuple[int, int]]:
    """Windows [start, end) of whole words, each as many words as fit in `budget` pieces (every count must be at
    most `budget`). A window starts `overlap_words` words before the previous one ends (None: a quarter of that
    window's words), fewer when that is needed to make room for the next word, so every window takes new words.

    e.g. counts [2, 2, 2, 2, 2], budget 5, overlap 1 -> [(0, 2), (1, 3), (2, 4), (3, 5)]."""
    windows: list[tuple[int, int]] = []
    start = end = used = 0  # used: the pieces of words [start, end)
    num_words = len(piece_counts)
    while start < num_words:
        while end < num_words and used + piece_counts[end] <= budget:
            used += piece_counts[end]
            end += 1
        windows.append((start, end))
        if end == num_words:
            break
        overlap = (end - start) // 4 if overlap_words is None else overlap_words
        next_start = max(end - overlap, start + 1)
        used -= sum(piece_counts[start:next_start])
        start = next_start
        while used + piece_counts[end] > budget:
            used -= piece_counts[start]
            start += 1
    return windows


def window_owners(windows: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The words [start, end) each window owns: each overlap of consecutive windows is split at its middle, so a
    word goes to the window where it has more words of context on its nearer edge (the earlier window on a tie).

    e.g. [(0, 2), (1, 3), (2, 4), (3, 5)] -> [(0, 2), (2, 3), (3, 4), (4, 5)]."""
    if not windows:
        return []
    cuts = [(next_start + end + 1) // 2 for (_, end), (next_start, _) in zip(windows, windows[1:])]
    bounds = [windows[0][0], *cuts, windows[-1][1]]
    return list(zip(bounds, bounds[1:]))


# ---- features ------------------------------------------------------------------------------------------------


def _tag_ids(example: TokenExample, label2id: Mapping[str, int]) -> list[int]:
    if example.tags is None:
        raise UserError(f"{example.source}: the sentence has no tags; every training or evaluation sentence needs them")
    if len(example.tags) != len(example.tokens):
        raise UserError(f"{example.source}: {len(example.tokens)} tokens but {len(example.tags)} tags")
    unknown = [tag for tag in example.tags if tag not in label2id]
    if unknown:
        raise UserError(f"{example.source}: tag {unknown[0]!r} is not one of the model's labels {sorted(label2id)}")
    return [label2id[tag] for tag in example.tags]


def prepare_features(examples: Sequence[TokenExample], tokenizer, label2id: Mapping[str, int] | None,
                     max_length: int = 128, stride_words: int | None = None) -> list[Feature]:
    """Each sentence as windows of whole words that fit `max_length` tokens with [CLS] and [SEP] (one window when
    it fits), overlapping by `stride_words` words (None: a quarter of a window); see `word_windows`, and
    `window_owners` for which window owns a word. With `label2id`, `labels` put a word's tag on its first piece.

    A word with more pieces than a window holds keeps its first pieces (its tag is on the first). A word with no
    pieces is in no window's tokens; `word_predictions` tags it "O" and training never sees its tag."""
    budget = max_length - 2
    if budget < 1:
        raise UserError(f"max_length={max_length} leaves no room for words beside [CLS] and [SEP]; use at least 3")
    if stride_words is not None and stride_words < 0:
        raise UserError(f"stride_words={stride_words}: the overlap between windows is a number of words, at least 0")
    # is_split_into_words keeps the caller's words: the pre-tokenizer may still split one (U.S. -> u . s .), and
    # word_ids map every piece back to it.
    encodings = tokenizer([e.tokens for e in examples], is_split_into_words=True, add_special_tokens=False).encodings
    features: list[Feature] = []
    for index, (example, encoding) in enumerate(zip(examples, encodings)):
        tag_ids = _tag_ids(example, label2id) if label2id is not None else None
        pieces = [p[:budget] for p in word_pieces(encoding.ids, encoding.word_ids, len(example.tokens))]
        windows = word_windows([len(p) for p in pieces], budget, stride_words)
        for (start, end), owned in zip(windows, window_owners(windows)):
            ids, word_ids, labels = [tokenizer.cls_token_id], [None], [IGNORE_INDEX]
            for word in range(start, end):
                ids += pieces[word]
                word_ids += [word] * len(pieces[word])
                if pieces[word]:
                    tag = tag_ids[word] if tag_ids is not None and owned[0] <= word < owned[1] else IGNORE_INDEX
                    labels += [tag] + [IGNORE_INDEX] * (len(pieces[word]) - 1)
            ids.append(tokenizer.sep_token_id)
            word_ids.append(None)
            labels.append(IGNORE_INDEX)
            feature = Feature(input_ids=ids, token_type_ids=[0] * len(ids), word_ids=word_ids, example_index=index,
                              owned_words=owned)
            if tag_ids is not None:
                feature["labels"] = labels
            features.append(feature)
    return features


def collate(features: Sequence[Feature], indices: Sequence[int] | None = None, pad_id: int = 0
            ) -> dict[str, torch.Tensor]:
    """Features `indices` (all when None) padded to the longest of them: (B, L) input_ids, token_type_ids,
    attention_mask, and labels (padded with -100) when the features have them."""
    rows = features if indices is None else [features[i] for i in indices]
    return pad_batch(rows, token_labels=True, pad_id=pad_id)


def word_predictions(examples: Sequence[TokenExample], features: Sequence[Feature], logits_per_feature: Sequence,
                     id2label: Mapping[int, str] | Sequence[str]) -> list[list[str]]:
    """A tag for every word of every example: the argmax at the word's first piece in the window that owns it.

    `logits_per_feature[i]` is feature i's (L_i, num_labels) logits (a tensor or array; padded rows are fine)."""
    tags = [[OUTSIDE] * len(example.tokens) for example in examples]
    for feature, logits in zip(features, logits_per_feature):
        best = logits.argmax(-1).tolist()  # (L,) label ids
        start, end = feature["owned_words"]
        sentence, previous = tags[feature["example_index"]], None
        for position, word in enumerate(feature["word_ids"]):
            if word is not None and word != previous and start <= word < end:
                sentence[word] = id2label[best[position]]
            previous = word
    return tags


# ---- entities ------------------------------------------------------------------------------------------------


def words_with_offsets(text: str, tokenizer) -> list[tuple[str, int, int]]:
    """The words the tokenizer sees in `text` (its normaliser, then its pre-tokenizer: punctuation apart, each
    Chinese character a word), as (word, start, end) with word == text[start:end] in the ORIGINAL string, so
    lower-casing, accent stripping and dropped control characters never shift a span."""
    backend = tokenizer.backend_tokenizer
    pretokenized = PreTokenizedString(text)
    if backend.normalizer is not None:
        pretokenized.normalize(backend.normalizer.normalize)
    backend.pre_tokenizer.pre_tokenize(pretokenized)
    spans = pretokenized.get_splits(offset_referential="original", offset_type="char")
    return [(text[start:end], start, end) for _, (start, end), _ in spans]


def join_words(words: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """A text for pre-split words, and each word's (start, end) in it: single spaces between words, none when
    every word is one character and some are East Asian wide (a character-split Chinese sentence)."""
    wide = any(unicodedata.east_asian_width(w) in "WF" for w in words if len(w) == 1)
    separator = "" if wide and all(len(w) == 1 for w in words) else " "
    offsets, position = [], 0
    for word in words:
        offsets.append((position, position + len(word)))
        position += len(word) + len(separator)
    return separator.join(words), offsets


def extract_entities(text_or_tokens: str | Sequence[str], tags: Sequence[str],
                     offsets: Sequence[tuple[int, int]] | None = None) -> list[dict]:
    """Entities of IOB2 `tags` (one per word) as {"type", "text", "start", "end"}, text == source[start:end].

    For a string, `offsets` are its words' (start, end), as `words_with_offsets` gives them; for a list of words,
    spans are in `join_words(words)`. Entities are read strictly, as `ner_metrics` scores them: an I- tag that
    does not continue a B- of its type starts no entity."""
    if isinstance(text_or_tokens, str):
        if offsets is None:
            raise ValueError("extract_entities on a string needs its words' offsets (see words_with_offsets)")
        text = text_or_tokens
    else:
        if offsets is not None:
            raise ValueError("extract_entities on a list of words computes the offsets itself; pass offsets=None")
        text, offsets = join_words(text_or_tokens)
    if len(offsets) != len(tags):
        raise ValueError(f"{len(tags)} tags for {len(offsets)} words")
    found = []
    for entity in Entities([list(tags)], IOB2).entities[0]:
        start, end = offsets[entity.start][0], offsets[entity.end - 1][1]  # entity.end is exclusive
        found.append({"type": entity.tag, "text": text[start:end], "start": start, "end": end})
    return found
