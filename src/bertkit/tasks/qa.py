"""Extractive question answering (SQuAD, CMRC 2018): windowed features, span decoding, and the official metrics."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from bertkit.errors import UserError
from bertkit.tasks.common import pad_batch

if TYPE_CHECKING:
    from bertkit.tasks.examples import QAExample

Offset = tuple[int, int]


# ---- features ------------------------------------------------------------------------------------------------


@dataclass
class QAFeatures:
    """One row per question/context window, unpadded so batches can be grouped by length.

    `offsets[i][t]` is token t's characters in its example's context, None for question, [CLS], [SEP];
    `start_positions`/`end_positions` (training only) index the answer's tokens, 0 ([CLS]) when it is not wholly
    inside the window or there is none. `features[i]` is row i as a dict, the form `common.run_model` takes."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    offsets: list[list[Offset | None]]
    example_index: list[int]  # the example each window comes from
    start_positions: list[int] | None = None
    end_positions: list[int] | None = None
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        row = {"input_ids": self.input_ids[i], "token_type_ids": self.token_type_ids[i]}
        if self.start_positions is not None:
            row["start_positions"] = self.start_positions[i]
            row["end_positions"] = self.end_positions[i]
        return row

    def collate(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Rows `indices` padded to the longest of them: (B, L) input_ids, token_type_ids, attention_mask, and
        (B,) start_positions/end_positions when the features were made for training."""
        return pad_batch([self[i] for i in indices], pad_id=self.pad_id)


def truncate_question(question: str, offsets: Sequence[Offset], max_query_length: int) -> str:
    """The prefix of `question` that tokenizes to its first `max_query_length` tokens (`offsets`: its tokens).

    Cutting the text where that token ends keeps the WordPiece split: greedy longest-match gives a prefix of a
    word the same first pieces as the whole word."""
    if len(offsets) <= max_query_length:
        return question
    return question[: offsets[max_query_length - 1][1]]


def answer_token_span(offsets: Sequence[Offset | None], start_char: int, end_char: int) -> tuple[int, int]:
    """(start, end) token indices, inclusive, of the context characters [start_char, end_char) in one window,
    or (0, 0), the [CLS] token, when the answer is not wholly inside the window's context tokens.

    The start is the first token that ends after start_char, so an answer that starts with a space starts at
    the next word (transformers' run_qa would take the word before the space)."""
    context = [t for t, offset in enumerate(offsets) if offset is not None]
    if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return 0, 0
    start = next(t for t in context if offsets[t][1] > start_char)
    end = next(t for t in reversed(context) if offsets[t][0] < end_char)
    # An answer made only of characters the tokenizer drops (spaces, control characters) has no tokens.
    return (start, end) if start <= end else (0, 0)


def prepare_features(examples: Sequence[QAExample], tokenizer, max_length: int = 384, doc_stride: int = 128,
                     max_query_length: int = 64, train: bool = True) -> QAFeatures:
    """Tokenize each (question, context) as `[CLS] question [SEP] context window [SEP]`, windows of at most
    `max_length` tokens that overlap by `doc_stride` tokens (transformers' `stride`, as in run_qa), after cutting
    the question to `max_query_length` tokens (as Google's run_squad). With `train`, the first gold answer's
    token span in each window."""
    questions = [e.question for e in examples]
    question_offsets = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    questions = [truncate_question(q, o, max_query_length) for q, o in zip(questions, question_offsets)]
    encoded = tokenizer(questions, [e.context for e in examples], truncation="only_second", max_length=max_length,
                        stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)

    features = QAFeatures(encoded["input_ids"], encoded["token_type_ids"], [], encoded["overflow_to_sample_mapping"],
                          [] if train else None, [] if train else None, tokenizer.pad_token_id)
    for i, offsets in enumerate(encoded["offset_mapping"]):
        offsets = [tuple(o) if s == 1 else None for o, s in zip(offsets, encoded.sequence_ids(i))]
        features.offsets.append(offsets)
        if train:
            example = examples[features.example_index[i]]
            answer = next((a for a in example.answers if a.start >= 0), None)
            if example.is_impossible or answer is None:
                start, end = 0, 0
            else:
                start, end = answer_token_span(offsets, answer.start, answer.start + len(answer.text))
            features.start_positions.append(start)
            features.end_positions.append(end)
    return features


# ---- decoding ------------------------------------------------------------------------------------------------


@dataclass
class Prediction:
    """An answer as characters of the original context: text == context[start:end] ("" and 0, 0 for no answer).

    `score` is a probability: the softmax of start+end logits over the example's n_best distinct candidate
    spans from all its windows (plus the no-answer candidate with version_2)."""

    text: str
    start: int
    end: int
    score: float


def top_spans(start_logits: np.ndarray, end_logits: np.ndarray, offsets: Sequence[Offset | None], n_best: int,
              max_answer_length: int) -> list[tuple[float, int, int]]:
    """(start+end logit, start token, end token) of every valid pair among one window's `n_best` highest start
    and `n_best` highest end logits: both tokens in the context, start <= end, at most `max_answer_length` tokens.
    Logits are (L,) for the window's L tokens; best first."""
    starts = np.argsort(-start_logits, kind="stable")[:n_best]
    ends = np.argsort(-end_logits, kind="stable")[:n_best]
    spans = [(float(start_logits[s] + end_logits[e]), int(s), int(e)) for s in starts for e in ends
             if offsets[s] is not None and offsets[e] is not None and s <= e < s + max_answer_length]
    return sorted(spans, key=lambda span: -span[0])


def _softmax(scores: list[float]) -> list[float]:
    exp = np.exp(np.asarray(scores) - max(scores))
    return (exp / exp.sum()).tolist()


def postprocess(examples: Sequence[QAExample], features: QAFeatures, start_logits: Sequence, end_logits: Sequence,
                n_best: int = 20, max_answer_length: int = 30, version_2: bool = False,
                null_threshold: float = 0.0) -> dict[str, Prediction]:
    """The best answer span of each example over all its windows, as exact characters of its context.

    `start_logits[i]`/`end_logits[i]` are feature i's (L_i,) logits, or a row of a (F, L) padded array. With
    `version_2` the answer is "" when the null score (the smallest [CLS] start+end logit over the example's
    windows) beats the best span by more than `null_threshold`, as in Google's and transformers' run_squad."""
    if not len(start_logits) == len(end_logits) == len(features):
        raise UserError(f"{len(features)} features but {len(start_logits)} start and {len(end_logits)} end logits")
    windows: dict[int, list[int]] = {}
    for i, example_index in enumerate(features.example_index):
        windows.setdefault(example_index, []).append(i)
    if sorted(windows) != list(range(len(examples))):
        raise UserError(f"the features come from {len(windows)} examples, not these {len(examples)}: pass the "
                        "examples given to prepare_features")
    predictions = {}
    for example_index, example in enumerate(examples):
        best_by_chars: dict[Offset, float] = {}  # overlapping windows propose the same span: keep its best score
        null_score = float("inf")
        for i in windows[example_index]:
            n = len(features.input_ids[i])
            starts = np.asarray(start_logits[i], dtype=np.float64)[:n]
            ends = np.asarray(end_logits[i], dtype=np.float64)[:n]
            null_score = min(null_score, starts[0] + ends[0])
            offsets = features.offsets[i]
            for score, s, e in top_spans(starts, ends, offsets, n_best, max_answer_length):
                chars = (offsets[s][0], offsets[e][1])
                best_by_chars[chars] = max(score, best_by_chars.get(chars, -np.inf))
        candidates = sorted(best_by_chars.items(), key=lambda item: -item[1])[:n_best]
        scores = [score for _, score in candidates] + ([null_score] if version_2 else [])
        if not scores:
            predictions[example.id] = Prediction("", 0, 0, 0.0)
            continue
        probabilities = _softmax(scores)
        if not candidates or (version_2 and null_score - candidates[0][1] > null_threshold):
            predictions[example.id] = Prediction("", 0, 0, probabilities[-1])
        else:
            (start, end), _ = candidates[0]
            predictions[example.id] = Prediction(example.context[start:end], start, end, probabilities[0])
    return predictions


# ---- metrics -------------------------------------------------------------------------------------------------

_SQUAD_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation: lower-case, drop ASCII punctuation, drop the articles a/an/the, and
    collapse whitespace (in that order, as evaluate-v1.1.py)."""
    text = "".join(ch for ch in text.lower() if ch not in _SQUAD_PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_exact(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    """Token-level F1 of the normalised answers; when either is empty, 1 if both are (evaluate-v2.0.py)."""
    predicted, wanted = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not wanted:
        return float(predicted == wanted)
    common = sum((Counter(predicted) & Counter(wanted)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


# CMRC 2018's list, in its script's order. The script also lists "……", which never equals the single character
# it is compared with, so "…" is kept; ASCII . , ! ? ( ) " are not in the list and count as tokens.
_CMRC_PUNCTUATION = frozenset(["-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=", "，", "。", "：", "？", "！",
                               "“", "”", "；", "’", "《", "》", "·", "、", "「", "」", "（", "）", "－", "～", "『", "』"])
_CJK = re.compile(r"[\u4e00-\u9fa5]")  # the script's test for a Chinese character
# NLTK's word_tokenize (Treebank rules), which the script applies to the text between Chinese characters: the
# rules that can fire once its punctuation is gone. Left out: punkt's sentence splitting (a period inside the text
# stays on its word, "a. b" -> "a.", "b"; NLTK would split it off when punkt sees a sentence end).
_TREEBANK_PUNCTUATION = [(re.compile(pattern), replacement) for pattern, replacement in [
    (r"([«‘„]|`+)", r" \1 "), (r'^"', "``"), (r"(``)", r" \1 "), (r'([ (\[{<])"', r"\1 `` "),  # opening quotes
    (r"(?i)(?<!\w)(')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)", r"\1 "),
    (r"""([^.])(\.)([\])}>"'»’ ]*)\s*$""", r"\1 \2 \3 "),  # a final period, not the one in 1.5 or u.s.a
    (r",([^\d])", r" , \1"), (r",$", r" , "),  # a comma, unless inside a number (1,000)
    (r"\.{2,}", r" \g<0> "), (r"[;@#$%&?!\u2012-\u2015]", r" \g<0> "),
    (r"([^'])' ", r"\1 ' "), (r"[\][(){}<>]", r" \g<0> "), (r"([»’])", r" \1 "), (r"''|\"", " '' "),
]]
# Clitics and MacIntyre's contractions, split in two: "it's" -> "it 's", "cannot" -> "can not".
_TREEBANK_CLITICS = [re.compile(pattern) for pattern in [
    r"([^' ])('s|'m|'d|') ", r"([^' ])('ll|'re|'ve|n't) ", r"\b(can)(not)\b", r"\b(d)('ye)\b", r"\b(gim)(me)\b",
    r"\b(gon)(na)\b", r"\b(got)(ta)\b", r"\b(lem)(me)\b", r"\b(more)('n)\b", r"\b(wan)(na)(?=\s)",
    r"(?<= )('t)(is)\b", r"(?<= )('t)(was)\b",
]]


def _treebank_words(text: str) -> list[str]:
    for pattern, replacement in _TREEBANK_PUNCTUATION:
        text = pattern.sub(replacement, text)
    text = f" {text} "  # the clitic rules need a space after the word
    for pattern in _TREEBANK_CLITICS:
        text = pattern.sub(r"\1 \2 ", text)
    return text.split()


def cmrc_segments(text: str) -> list[str]:
    """CMRC 2018's `mixed_segmentation(text, rm_punc=True)`: lower-cased, its punctuation dropped (which joins
    what it separated: "ω-force" -> "ωforce"), each Chinese character a unit, other text split into words."""
    segments, run = [], ""
    for ch in text.lower().strip():
        if ch in _CMRC_PUNCTUATION:
            continue
        if _CJK.match(ch):
            segments += _treebank_words(run) + [ch]
            run = ""
        else:
            run += ch
    return segments + _treebank_words(run)


def _longest_common_substring(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest contiguous run shared by `a` and `b` (the script's `find_lcs`)."""
    best, previous = 0, [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                current[j + 1] = previous[j] + 1
                best = max(best, current[j + 1])
        previous = current
    return best


def cmrc_exact(prediction: str, gold: str) -> float:
    """1 when the answers agree after lower-casing, stripping the ends and dropping CMRC's punctuation (spaces
    inside are kept, as in the script)."""
    def strip(text: str) -> str:
        return "".join(ch for ch in text.lower().strip() if ch not in _CMRC_PUNCTUATION)
    return float(strip(prediction) == strip(gold))


def cmrc_f1(prediction: str, gold: str) -> float:
    """F1 over CMRC segments where the overlap is the longest common contiguous run of segments, not a bag."""
    predicted, wanted = cmrc_segments(prediction), cmrc_segments(gold)
    common = _longest_common_substring(wanted, predicted)
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


_METRICS = {"en": (normalize_answer, squad_exact, squad_f1),
            "zh": (lambda text: "".join(cmrc_segments(text)), cmrc_exact, cmrc_f1)}


def squad_scores(predictions: dict[str, str], examples: Sequence[QAExample], language: str = "en") -> dict[str, float]:
    """{"exact_match", "f1"} in percent over all `examples`, each the best over its gold answers: SQuAD's
    official definition for "en", CMRC 2018's for "zh". A question without a gold answer (SQuAD 2.0) scores 1
    for an empty prediction and 0 otherwise; a question missing from `predictions` scores 0."""
    if language not in _METRICS:
        raise UserError(f"language={language!r}; expected 'en' (SQuAD) or 'zh' (CMRC 2018)")
    normalize, exact, f1 = _METRICS[language]
    total_exact = total_f1 = 0.0
    for example in examples:
        if example.id not in predictions:
            continue
        prediction = predictions[example.id]
        golds = [a.text for a in example.answers if normalize(a.text)] if not example.is_impossible else []
        if not golds:
            total_exact += float(not normalize(prediction))
            total_f1 += float(not normalize(prediction))
            continue
        total_exact += max(exact(prediction, gold) for gold in golds)
        total_f1 += max(f1(prediction, gold) for gold in golds)
    count = max(len(examples), 1)
    return {"exact_match": 100 * total_exact / count, "f1": 100 * total_f1 / count}
