"""Pretraining instances for BERT: sentence pairs for masked LM plus next-sentence (or sentence-order) prediction.

The recipe is that of Google's `create_pretraining_data.py`: per document, sentences are gathered
into a chunk until it reaches a target length (the full `max_seq_len - 3`, or with probability
`short_seq_prob` a random shorter one), the chunk is cut at a random sentence into A and B, and
half the time B is replaced by a span of another document, the unused sentences going back to
be read again. Two deviations, both so that corpora larger than RAM can stream through:

- The random B comes from a buffer of the `buffer_docs` most recent documents, not from the whole
  corpus held in memory. Each document waits until the next one is read, so even the first one
  has another document to borrow from.
- The short target is drawn again for every instance; the original draws it once per document,
  which for book-length documents makes the share of short instances all or nothing per book.

Masking is not done here: `masking.py` masks at batch time, so every epoch sees new masks.
"""

from __future__ import annotations

import functools
import logging
import random
import re
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from bertkit.data.text import DataError, Document
from bertkit.errors import UserError

PAIR_TASKS = ("nsp", "sop", "none")
IGNORE_INDEX = -100  # the label of instances without a sentence-pair task, as in transformers
_ENCODE_BATCH = 1024  # sentences per encode_batch call: Encoding objects are large, a whole book of them is not
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")


@dataclass(frozen=True)
class PretrainingSettings:
    """Everything that decides the instances; all of it goes into the cache key."""

    max_seq_len: int = 128  # [CLS] A [SEP] B [SEP] fits in this many tokens
    short_seq_prob: float = 0.1  # share of instances aiming at a random shorter length, to match fine-tuning
    # "nsp": B follows A (label 0) or is random (1); "sop": B follows A, swapped (1) or not (0); "none": A only
    pair_task: str = "nsp"
    dupe_factor: int = 1  # passes over each document, each cut differently
    seed: int = 12345  # the seed of Google's script
    buffer_docs: int = 64  # random B segments come from this many recent documents
    chinese_words: bool = True  # group Chinese characters into jieba words for whole-word masking
    utf8_errors: str = "strict"  # "strict": a byte that is not UTF-8 is an error; "replace": it is dropped

    def check(self) -> None:
        """Raise `UserError` naming the first setting out of range."""
        if self.max_seq_len < 5:
            raise UserError(f"max_seq_len={self.max_seq_len}: needs at least 5 ([CLS] A [SEP] B [SEP])")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise UserError(f"short_seq_prob={self.short_seq_prob}: must be in [0, 1]")
        if self.pair_task not in PAIR_TASKS:
            raise UserError(f"pair_task={self.pair_task!r}: must be one of {', '.join(PAIR_TASKS)}")
        if self.dupe_factor < 1:
            raise UserError(f"dupe_factor={self.dupe_factor}: must be at least 1")
        if self.buffer_docs < 2:
            raise UserError(f"buffer_docs={self.buffer_docs}: must be at least 2 (a document and another)")
        if self.utf8_errors not in ("strict", "replace"):
            raise UserError(f"utf8_errors={self.utf8_errors!r}: must be 'strict' or 'replace'")


@dataclass(frozen=True)
class SpecialTokens:
    pad: int
    unk: int
    cls: int
    sep: int
    mask: int

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer) -> SpecialTokens:
        ids = {name: tokenizer.token_to_id(f"[{name.upper()}]") for name in ("pad", "unk", "cls", "sep", "mask")}
        missing = [f"[{name.upper()}]" for name, i in ids.items() if i is None]
        if missing:
            raise UserError(f"the tokenizer has no {' '.join(missing)}; BERT needs [PAD] [UNK] [CLS] [SEP] [MASK]")
        return cls(**ids)

    @property
    def ids(self) -> tuple[int, ...]:
        return (self.pad, self.unk, self.cls, self.sep, self.mask)


@dataclass(frozen=True)
class TokenizedDocument:
    index: int  # position of the file in the sorted corpus: the document id instances record
    ids: np.ndarray  # (T,) int32, all sentences back to back
    word_start: np.ndarray  # (T,) bool, the token begins a word: the unit of whole-word masking
    bounds: np.ndarray  # (S+1,) int64, sentence s is ids[bounds[s]:bounds[s + 1]]

    @property
    def num_sentences(self) -> int:
        return len(self.bounds) - 1


def word_starts(
    word_ids: Sequence[int], offsets: Sequence[tuple[int, int]], text: str, chinese_words: bool
) -> list[bool]:
    """Which tokens of one encoded sentence begin a word.

    A word is what BERT's pre-tokenizer keeps together (so "##" pieces continue a word); with
    `chinese_words`, sentences with Chinese characters are also cut by jieba and a token begins a
    word only where a jieba word begins, so 天安门 is one word rather than three.
    """
    starts = [i == 0 or word_ids[i] != word_ids[i - 1] for i in range(len(word_ids))]
    if chinese_words and _HAN.search(text):
        jieba_starts = {start for _, start, _ in _jieba().tokenize(text)}
        starts = [i == 0 or (s and offsets[i][0] in jieba_starts) for i, s in enumerate(starts)]
    return starts


@functools.cache
def _jieba():
    try:
        import jieba
    except ImportError:
        raise UserError("Chinese text needs jieba for its words: pip install jieba, or set chinese_words=False") from None
    jieba.setLogLevel(logging.WARNING)  # its dictionary loading talks on stderr otherwise
    return jieba


def plain_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """A copy without truncation or padding: a tokenizer.json often carries both, and either would cut sentences."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def tokenize_document(document: Document, index: int, tokenizer: Tokenizer, chinese_words: bool) -> TokenizedDocument:
    """Encode every sentence without special tokens; sentences that tokenize to nothing are dropped."""
    ids: list[int] = []
    starts: list[bool] = []
    bounds = [0]
    for batch in range(0, len(document.sentences), _ENCODE_BATCH):
        sentences = document.sentences[batch : batch + _ENCODE_BATCH]
        for sentence, encoding in zip(sentences, tokenizer.encode_batch(sentences, add_special_tokens=False)):
            if encoding.ids:
                ids += encoding.ids
                starts += word_starts(encoding.word_ids, encoding.offsets, sentence, chinese_words)
                bounds.append(len(ids))
    if len(bounds) == 1:
        raise DataError(f"{document.path}: no sentences (the tokenizer found no tokens in the text)")
    return TokenizedDocument(index, np.array(ids, np.int32), np.array(starts, bool), np.array(bounds, np.int64))


@dataclass(frozen=True)
class Span:
    """Tokens `doc.ids[start:end]` of one document."""

    doc: TokenizedDocument
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Instance:
    a: Span
    b: Span | None  # None without a pair task
    label: int  # NSP: 0 = B follows A, 1 = B is random; SOP: 0 = in order, 1 = swapped; else IGNORE_INDEX


def target_length(max_tokens: int, short_seq_prob: float, rng: random.Random) -> int:
    """Usually fill the sequence; sometimes aim shorter so pretraining also sees short inputs."""
    if rng.random() < short_seq_prob:
        return rng.randint(2, max_tokens)
    return max_tokens


def truncate_seq_pair(a: Span, b: Span | None, max_tokens: int, rng: random.Random) -> tuple[Span, Span | None]:
    """Cut one token at a time from the longer segment (B on ties), from its front or back at random.

    Removing from both ends avoids a bias towards sentence openings; since only the longer side
    loses tokens, both stay non-empty whenever `max_tokens >= 2`.
    """
    a0, a1 = a.start, a.end
    b0, b1 = (b.start, b.end) if b is not None else (0, 0)
    while (a1 - a0) + (b1 - b0) > max_tokens:
        front = rng.random() < 0.5
        if a1 - a0 > b1 - b0:
            a0, a1 = (a0 + 1, a1) if front else (a0, a1 - 1)
        else:
            b0, b1 = (b0 + 1, b1) if front else (b0, b1 - 1)
    return Span(a.doc, a0, a1), (Span(b.doc, b0, b1) if b is not None else None)


def random_span(others: Sequence[TokenizedDocument], target: int, rng: random.Random) -> Span:
    """Whole sentences of a random document from a random sentence on, until `target` tokens or its end."""
    doc = others[rng.randint(0, len(others) - 1)]
    first = rng.randint(0, doc.num_sentences - 1)
    last = first + 1
    while last < doc.num_sentences and doc.bounds[last] - doc.bounds[first] < target:
        last += 1
    return Span(doc, int(doc.bounds[first]), int(doc.bounds[last]))


def create_instances(
    doc: TokenizedDocument, others: Sequence[TokenizedDocument], settings: PretrainingSettings, rng: random.Random
) -> Iterator[Instance]:
    """One pass over a document, as in the module docstring. `others` must not include `doc`."""
    max_tokens = settings.max_seq_len - (2 if settings.pair_task == "none" else 3)
    bounds = doc.bounds.tolist()  # Python ints: this loop runs once per sentence
    target = target_length(max_tokens, settings.short_seq_prob, rng)
    first = i = 0  # the chunk grows from sentence `first` to sentence `i`
    while i < doc.num_sentences:
        if i < doc.num_sentences - 1 and bounds[i + 1] - bounds[first] < target:
            i += 1
            continue
        instance, first = _cut_chunk(doc, bounds, first, i + 1, others, target, max_tokens, settings, rng)
        if instance is not None:
            yield instance
        i = first
        target = target_length(max_tokens, settings.short_seq_prob, rng)


def _cut_chunk(
    doc: TokenizedDocument,
    bounds: list[int],
    first: int,
    stop: int,
    others: Sequence[TokenizedDocument],
    target: int,
    max_tokens: int,
    settings: PretrainingSettings,
    rng: random.Random,
) -> tuple[Instance | None, int]:
    """The instance made of sentences first..stop-1, and the first sentence it left unused."""
    if settings.pair_task == "none":
        a, _ = truncate_seq_pair(Span(doc, bounds[first], bounds[stop]), None, max_tokens, rng)
        return Instance(a, None, IGNORE_INDEX), stop
    chunk = stop - first
    cut = first + (rng.randint(1, chunk - 1) if chunk >= 2 else 1)  # A is sentences first..cut-1
    a = Span(doc, bounds[first], bounds[cut])
    if settings.pair_task == "nsp" and (chunk == 1 or rng.random() < 0.5):
        a, b = truncate_seq_pair(a, random_span(others, target - len(a), rng), max_tokens, rng)
        return Instance(a, b, 1), cut  # the sentences after A go back, to start the next chunk
    if chunk == 1:  # SOP takes both segments from the true text: cut the one sentence inside
        if len(a) < 2:
            return None, stop
        middle = rng.randint(a.start + 1, a.end - 1)
        a, b = Span(doc, a.start, middle), Span(doc, middle, a.end)
    else:
        b = Span(doc, bounds[cut], bounds[stop])
    label = 0
    if settings.pair_task == "sop" and rng.random() < 0.5:
        a, b, label = b, a, 1
    a, b = truncate_seq_pair(a, b, max_tokens, rng)
    return Instance(a, b, label), stop


def iter_instances(
    documents: Iterable[TokenizedDocument], settings: PretrainingSettings, rng: random.Random
) -> Iterator[Instance]:
    """Instances of a stream of documents, holding at most `settings.buffer_docs` documents at a time.

    Document k is cut once document k + 1 has been read, so its random B segments can come from
    any of the buffered documents, older or newer, except itself.
    """
    recent: deque[TokenizedDocument] = deque(maxlen=settings.buffer_docs)
    waiting: TokenizedDocument | None = None
    for doc in documents:
        recent.append(doc)
        if waiting is not None:
            yield from _instances_of(waiting, recent, settings, rng)
        waiting = doc
    if waiting is None:
        return
    if len(recent) == 1 and settings.pair_task == "nsp":
        raise DataError(
            "the corpus is a single document, but next-sentence prediction takes its random B segments "
            "from other documents; add files or use pair_task='sop' or 'none'"
        )
    yield from _instances_of(waiting, recent, settings, rng)


def _instances_of(
    doc: TokenizedDocument, recent: Iterable[TokenizedDocument], settings: PretrainingSettings, rng: random.Random
) -> Iterator[Instance]:
    others = [d for d in recent if d is not doc]
    for _ in range(settings.dupe_factor):
        yield from create_instances(doc, others, settings, rng)
