"""token-classification (NER and other tagging): word tags onto WordPiece windows and back, words split from raw
text as the training data was, entities as exact character spans, and transformers' aggregation strategies."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NotRequired, TypedDict

import numpy as np
import torch
from seqeval.scheme import IOB2, Entities
from tokenizers import PreTokenizedString

from bertkit.errors import UserError
from bertkit.modeling.heads import IGNORE_INDEX
from bertkit.tasks import register
from bertkit.tasks.base import HeadLoss, Task
from bertkit.tasks.common import pad_batch, run_model, windows_by_example
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
    piece_offsets: list[tuple[int, int] | None]  # per token, its characters in its word; None for [CLS], [SEP]
    labels: NotRequired[list[int]]  # per token: the word's tag id on its first piece of an owned word, else -100


# ---- windows -------------------------------------------------------------------------------------------------


def word_pieces(ids: Sequence, word_ids: Sequence[int], num_words: int) -> list[list]:
    """The WordPiece ids (or any per-token values) of each word, from an encoding of pre-split words without
    special tokens. A word that normalises to nothing (an empty string, a control character) gets no pieces."""
    pieces: list[list] = [[] for _ in range(num_words)]
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
        offsets = word_pieces(encoding.offsets, encoding.word_ids, len(example.tokens))
        windows = word_windows([len(p) for p in pieces], budget, stride_words)
        for (start, end), owned in zip(windows, window_owners(windows)):
            ids, word_ids, labels, piece_offsets = [tokenizer.cls_token_id], [None], [IGNORE_INDEX], [None]
            for word in range(start, end):
                ids += pieces[word]
                word_ids += [word] * len(pieces[word])
                piece_offsets += offsets[word][: len(pieces[word])]
                if pieces[word]:
                    tag = tag_ids[word] if tag_ids is not None and owned[0] <= word < owned[1] else IGNORE_INDEX
                    labels += [tag] + [IGNORE_INDEX] * (len(pieces[word]) - 1)
            ids.append(tokenizer.sep_token_id)
            word_ids.append(None)
            labels.append(IGNORE_INDEX)
            piece_offsets.append(None)
            feature = Feature(input_ids=ids, token_type_ids=[0] * len(ids), word_ids=word_ids, example_index=index,
                              owned_words=owned, piece_offsets=piece_offsets)
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


# ---- words from raw text -------------------------------------------------------------------------------------

WORD_SPLITTERS = ("treebank", "bert")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")  # BERT's Chinese ranges


def _treebank_spans(text: str) -> list[tuple[int, int]]:
    """Penn Treebank word spans, as CoNLL-2003 and WNUT-17 are tokenized ("U.S." one word, a sentence-final "."
    apart, "don't" -> "do" "n't"); each CJK character a word of its own, as the Chinese NER sets are."""
    spans: list[tuple[int, int]] = []
    position = 0
    for match in _CJK.finditer(text):
        spans += _treebank_run(text, position, match.start())
        spans.append((match.start(), match.end()))
        position = match.end()
    return spans + _treebank_run(text, position, len(text))


# Words whose final "." is part of them (Moses' English non-breaking prefixes, the common ones), besides single
# letters ("J.") and words with a "." inside ("U.S.").
ABBREVIATIONS = frozenset("""Adj Adm Adv Apr Asst Aug Bart Bldg Brig Bros Capt Cmdr Co Col Comdr Con Corp Cpl Dec DR Dr
Drs Ens Feb Gen Gov Hon Hosp Hr Inc Insp Jan Jr Jul Jun Lt Ltd MM MR MRS MS Maj Mar Messrs Mlle Mme Mr Mrs Ms Msgr
Mt No Nos Nov Oct Op Ord Pfc Ph Prof Pvt Rep Reps Res Rev Rt Sen Sens Sep Sept Sfc Sgt Sr St Supt Surg Vol approx
cf e.g etc i.e no vs""".split())


def _split_inner_periods(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The Treebank rules split a period off the end of the text only; a sentence ending inside it ("He left.
    She stayed.") gets the same treatment here: "left." -> "left" "." unless the word is an abbreviation."""
    out = []
    for a, b in spans:
        word = text[a:b]
        if len(word) > 2 and word.endswith(".") and word[:-1].isalnum() and word[:-1] not in ABBREVIATIONS:
            out += [(a, b - 1), (b - 1, b)]
        else:
            out.append((a, b))
    return out


def _treebank_run(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Treebank spans inside text[start:end] (a run without CJK characters), in the string's coordinates."""
    from nltk.tokenize import TreebankWordTokenizer

    chunk = text[start:end]
    if not chunk.strip():
        return []
    try:  # span_tokenize finds each token again in the original, quotes it rewrites ("" -> `` '') included
        spans = list(TreebankWordTokenizer().span_tokenize(chunk))
    except ValueError:  # a rewritten token it cannot find again: whitespace words for this run
        spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", chunk)]
    return [(start + a, start + b) for a, b in _split_inner_periods(chunk, spans)]


def split_words(text: str, tokenizer, splitter: str = "treebank") -> list[tuple[int, int]]:
    """The words of raw `text` as (start, end) character spans of the original string, in order.

    "treebank": as CoNLL-style training data is tokenized (see `_treebank_spans`), so the model is asked for a
    label where it learned one. "bert": BERT's own pre-tokenizer (every punctuation mark a word), the words
    transformers' pipeline aggregates over."""
    if splitter == "treebank":
        return _treebank_spans(text)
    if splitter == "bert":
        return [(start, end) for _, start, end in words_with_offsets(text, tokenizer)]
    raise UserError(f"word_splitter={splitter!r}: expected one of {', '.join(WORD_SPLITTERS)}")


# ---- aggregation, as transformers' token-classification pipeline ---------------------------------------------

AGGREGATIONS = ("none", "simple", "first", "average", "max")


@dataclass
class Piece:
    """One WordPiece token of a text with its label probabilities."""

    token: str  # the vocabulary token ("##burn"), or the text itself for [UNK]
    scores: np.ndarray  # (num_labels,) softmax probabilities
    start: int  # characters of the original text
    end: int
    index: int  # position in the model's input ([CLS] is 0), counted over the whole text
    is_subword: bool  # not the first piece of its word


def _tag(label: str) -> tuple[str, str]:
    """("B" or "I", type): B- begins an entity, anything else continues one of its type (O is type "O")."""
    if label.startswith("B-"):
        return "B", label[2:]
    if label.startswith("I-"):
        return "I", label[2:]
    return "I", label


def group_entities(entities: list[dict], tokenizer) -> list[dict]:
    """Adjacent tokens or words of one type, not split by a B-, as one entity: its score the mean of theirs."""
    groups: list[list[dict]] = []
    for entity in entities:
        bi, tag = _tag(entity["entity"])
        if groups and bi != "B" and _tag(groups[-1][-1]["entity"])[1] == tag:
            groups[-1].append(entity)
        else:
            groups.append([entity])
    return [{"entity_group": group[0]["entity"].split("-", 1)[-1],
             "score": float(np.nanmean([e["score"] for e in group])),
             "word": tokenizer.convert_tokens_to_string([e["word"] for e in group]),
             "start": group[0]["start"], "end": group[-1]["end"]} for group in groups]


def aggregate(pieces: Sequence[Piece], labels: Sequence[str], strategy: str, tokenizer, strict: bool = False
              ) -> list[dict]:
    """Entities of one text from its pieces, as transformers' `aggregation_strategy`: "none" each token, "simple"
    tokens grouped; "first"/"average"/"max" first give each word the label of its first piece, of the average of
    its pieces' probabilities, or of its most confident piece, then group words: as transformers does, or with
    `strict`, as strict IOB2 (see `group_strictly`)."""
    if strategy in ("none", "simple"):
        entities = []
        for p in pieces:
            best = int(p.scores.argmax())
            entities.append({"entity": labels[best], "score": float(p.scores[best]), "index": p.index,
                             "word": p.token, "start": p.start, "end": p.end})
        return entities if strategy == "none" else group_entities(entities, tokenizer)
    if strategy not in AGGREGATIONS:
        raise UserError(f"aggregation_strategy={strategy!r}: expected one of {', '.join(AGGREGATIONS)}")
    words: list[list[Piece]] = []
    for p in pieces:
        if words and p.is_subword:
            words[-1].append(p)
        else:
            words.append([p])
    entities = []
    for word in words:
        if strategy == "first":
            scores = word[0].scores
        elif strategy == "max":
            scores = max(word, key=lambda p: p.scores.max()).scores
        else:
            scores = np.nanmean(np.stack([p.scores for p in word]), axis=0)
        best = int(scores.argmax())
        entities.append({"entity": labels[best], "score": float(scores[best]),
                         "word": tokenizer.convert_tokens_to_string([p.token for p in word]),
                         "start": word[0].start, "end": word[-1].end})
    return group_strictly(entities, tokenizer) if strict else group_entities(entities, tokenizer)


def group_strictly(words: list[dict], tokenizer) -> list[dict]:
    """Words' IOB2 tags read as evaluation reads them (seqeval, strict): an entity is a B- and the I- of its type
    after it; an I- that continues nothing starts no entity. Scores are the mean of the entity's words'."""
    entities = Entities([[w["entity"] if w["entity"][:2] in ("B-", "I-") else "O" for w in words]], IOB2)
    return [{"entity_group": e.tag, "score": float(np.mean([w["score"] for w in words[e.start:e.end]])),
             "word": tokenizer.convert_tokens_to_string([w["word"] for w in words[e.start:e.end]]),
             "start": words[e.start]["start"], "end": words[e.end - 1]["end"]} for e in entities.entities[0]]


def text_pieces(text: str, spans: Sequence[tuple[int, int]], features: Sequence[Feature], logits: Sequence,
                tokenizer) -> list[Piece]:
    """The pieces of one text, in order, each from the window that owns its word (`features` and their per-token
    `logits` are that text's windows)."""
    pieces: list[Piece] = []
    for feature, window_logits in zip(features, logits):
        probs = torch.softmax(torch.as_tensor(window_logits, dtype=torch.float32), -1).numpy()  # (L, C)
        first, last = feature["owned_words"]
        previous = None
        for t, word in enumerate(feature["word_ids"]):
            if word is not None and first <= word < last:
                a, b = feature["piece_offsets"][t]
                start, end = spans[word][0] + a, spans[word][0] + b
                token_id = feature["input_ids"][t]
                unknown = token_id == tokenizer.unk_token_id
                token = text[start:end] if unknown else tokenizer.convert_ids_to_tokens(token_id)
                pieces.append(Piece(token, probs[t], start, end, len(pieces) + 1,
                                    is_subword=word == previous and not unknown))
            previous = word
    return pieces


# ---- the task ------------------------------------------------------------------------------------------------


def iob2_label_set(examples) -> list[str]:
    """O first, then B-/I- of each entity type, sorted: the label ids of a new model."""
    types = sorted({t[2:] for e in examples for t in e.tags if t != "O"})
    return ["O"] + [f"{p}-{t}" for t in types for p in "BI"]


@register
class TokenClassificationTask(Task):
    """token-classification: a tag per word (NER), trained and evaluated on gold words, predicted on raw text."""

    name = "token-classification"
    model_class_name = "BertForTokenClassification"
    architectures = ("BertForTokenClassification",)
    trainable = True
    main_metric = "f1"
    predict_defaults = {"aggregation_strategy": "first"}  # entities of words, read where the model learned them

    def __init__(self, tokenizer, labels: list[str], max_length: int | None = None, word_splitter: str = "treebank"):
        super().__init__(tokenizer, max_length)
        self.labels, self.label2id = labels, {t: i for i, t in enumerate(labels)}
        self.word_splitter = word_splitter

    @classmethod
    def for_training(cls, tokenizer, examples, dataset=None, max_length=None, word_splitter=None, **options):
        labels = list(dataset.labels) if dataset is not None and dataset.labels else iob2_label_set(examples)
        splitter = word_splitter or "treebank"
        if splitter not in WORD_SPLITTERS:
            raise UserError(f"--word-splitter {splitter}: expected one of {', '.join(WORD_SPLITTERS)}")
        return cls(tokenizer, labels, max_length, splitter)

    @classmethod
    def from_config(cls, tokenizer, config, max_length=None, **options):
        return cls(tokenizer, config.label_names(), cls.window(config, max_length),
                   config.extra.get("word_splitter", "treebank"))

    def config_fields(self) -> dict:
        return {"id2label": dict(enumerate(self.labels)), "label2id": dict(self.label2id)}

    def config_extra(self) -> dict:
        return {**super().config_extra(), "word_splitter": self.word_splitter}

    @classmethod
    def read(cls, path, data):
        from bertkit.tasks.readers import read_token_examples

        return read_token_examples(path, skip_bad_rows=data.skip_bad_rows)

    def features(self, examples, train: bool = True, skip_bad_rows: bool = False) -> list[Feature]:
        labelled = train and all(e.tags is not None for e in examples)
        if labelled:
            for e in examples:
                unknown = [t for t in e.tags if t not in self.label2id]
                if unknown:
                    raise UserError(f"{e.source}: unknown tag {unknown[0]!r}; the model's tags are {self.labels}")
        return prepare_features(examples, self.tokenizer, self.label2id if labelled else None, self.max_length)

    def collate(self, rows):
        return collate(rows, pad_id=self.tokenizer.pad_token_id)

    @property
    def objective(self) -> HeadLoss:
        def correct(out, batch):
            keep = batch["labels"] != IGNORE_INDEX
            return (out.logits.argmax(-1)[keep] == batch["labels"][keep]).sum()

        return HeadLoss(("labels",), lambda b: (b["labels"] != IGNORE_INDEX).sum(), correct, "token_accuracy")

    def logits(self, model, features, batch_size: int = 64) -> list[torch.Tensor]:
        return run_model(model, features, self.collate, batch_size, per_token=True)

    def evaluate(self, model, examples, features=None, batch_size: int = 64) -> dict[str, float]:
        from bertkit.tasks.metrics import ner_metrics

        if features is None:
            features = self.features(examples)
        predicted = word_predictions(examples, features, self.logits(model, features, batch_size), self.labels)
        scores = ner_metrics([e.tags for e in examples], predicted)
        scores.pop("per_type", None)  # flat numbers only: the loop logs them
        return scores

    def predict(self, model, texts, batch_size: int = 64, aggregation_strategy: str = "none",
                ignore_labels: Sequence[str] | None = None, word_splitter: str | None = None) -> list:
        """Per text, its entities as transformers' pipeline gives them (see `aggregate`), character spans of the
        original string; labels in `ignore_labels` (default ["O"]) are left out.

        With `word_splitter="bert"` words and entities are exactly transformers'. With "treebank" (the default)
        the words are those of CoNLL-style data and "first"/"average"/"max" read the words' tags as strict IOB2,
        as `evaluate` scores gold words, so raw text is predicted as the model was trained and measured."""
        ignore = ["O"] if ignore_labels is None else list(ignore_labels)
        splitter = word_splitter or self.word_splitter
        spans = [split_words(text, self.tokenizer, splitter) for text in texts]
        examples = [TokenExample([text[a:b] for a, b in s], None, "input") for text, s in zip(texts, spans)]
        features = self.features(examples, train=False)
        logits = self.logits(model, features, batch_size)
        windows = windows_by_example([f["example_index"] for f in features], len(texts))
        results = []
        for text, s, rows in zip(texts, spans, windows):
            pieces = text_pieces(text, s, [features[i] for i in rows], [logits[i] for i in rows], self.tokenizer)
            entities = aggregate(pieces, self.labels, aggregation_strategy, self.tokenizer,
                                 strict=splitter == "treebank")
            results.append([e for e in entities if e.get("entity", e.get("entity_group")) not in ignore])
        return results
