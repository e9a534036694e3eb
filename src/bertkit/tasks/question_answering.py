"""question-answering (extractive, SQuAD style): windowed features, span decoding as run_squad (evaluation) and
as transformers 4.x's pipeline (prediction), for the fine-tuning loop, `bertkit evaluate` and `bertkit predict`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bertkit.errors import UserError
from bertkit.tasks import register
from bertkit.tasks.base import HeadLoss, Task
from bertkit.tasks.common import pad_batch, run_model, windows_by_example
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
    word_ids: list[list[int | None]]  # per token, its word of the context (pre-tokenizer words); None elsewhere
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


def truncate_question(question: str, offsets: Sequence[Offset], max_query_length: int | None) -> str:
    """The prefix of `question` that tokenizes to its first `max_query_length` tokens (`offsets`: its tokens;
    None: the whole question).

    Cutting the text where that token ends keeps the WordPiece split: greedy longest-match gives a prefix of a
    word the same first pieces as the whole word."""
    if max_query_length is None or len(offsets) <= max_query_length:
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
                     max_query_length: int | None = 64, train: bool = True) -> QAFeatures:
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
                          [], [] if train else None, [] if train else None, tokenizer.pad_token_id)
    for i, offsets in enumerate(encoded["offset_mapping"]):
        sequence_ids = encoded.sequence_ids(i)
        offsets = [tuple(o) if s == 1 else None for o, s in zip(offsets, sequence_ids)]
        features.offsets.append(offsets)
        features.word_ids.append([w if s == 1 else None for w, s in zip(encoded.encodings[i].word_ids, sequence_ids)])
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
    sources = set(features.example_index)
    if sources != set(range(len(examples))):
        raise UserError(f"the features come from {len(sources)} examples, not these {len(examples)}: pass the "
                        "examples given to prepare_features")
    windows = windows_by_example(features.example_index, len(examples))
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


# ---- decoding as transformers 4.x's question-answering pipeline ----------------------------------------------


def window_spans(start_logits: np.ndarray, end_logits: np.ndarray, context: Sequence[bool], top_k: int,
                 max_answer_len: int) -> tuple[list[tuple[float, int, int]], float]:
    """The `top_k` best (probability, start token, end token) spans of one window, and its null score, as
    transformers 4.x's pipeline scores them: softmax over the window with every non-context token but [CLS]
    (position 0) at -10000, then [CLS] zeroed; a span scores p_start * p_end, at most `max_answer_len` tokens.
    The null score is p_start([CLS]) * p_end([CLS]) before the zeroing."""
    allowed = np.asarray(context, dtype=bool).copy()  # (L,)
    allowed[0] = True
    starts = np.where(allowed, start_logits, -10000.0).astype(np.float32)
    ends = np.where(allowed, end_logits, -10000.0).astype(np.float32)
    starts = np.exp(starts - starts.max())
    starts /= starts.sum()
    ends = np.exp(ends - ends.max())
    ends /= ends.sum()
    null = float(starts[0] * ends[0])
    starts[0] = ends[0] = 0.0
    candidates = np.tril(np.triu(np.outer(starts, ends)), max_answer_len - 1)  # (L, L): s <= e < s + max_answer_len
    flat = candidates.ravel()
    if top_k == 1:
        order = np.array([np.argmax(flat)])
    elif len(flat) < top_k:
        order = np.argsort(-flat)
    else:
        order = np.argpartition(-flat, top_k)[:top_k]
        order = order[np.argsort(-flat[order])]
    spans = [(float(flat[i]), int(i // len(starts)), int(i % len(starts))) for i in order]
    return [(p, s, e) for p, s, e in spans if allowed[s] and allowed[e]], null


def pipeline_answers(examples: Sequence[QAExample], features: QAFeatures, start_logits: Sequence,
                     end_logits: Sequence, top_k: int = 1, max_answer_len: int = 15,
                     handle_impossible_answer: bool = False, align_to_words: bool = True) -> list[list[dict]]:
    """Per example, its `top_k` answers {"score", "start", "end", "answer"}, best first, as transformers 4.x:
    each window proposes its 2*top_k + 10 best spans (top_k without `align_to_words`), widened to whole words;
    answers with the same text (ignoring case) add up their scores; with `handle_impossible_answer` the empty
    answer competes with the smallest null score of the windows."""
    results = []
    for example, windows in zip(examples, windows_by_example(features.example_index, len(examples))):
        answers: list[dict] = []
        null = 1e6
        for i in windows:
            n = len(features.input_ids[i])
            offsets, words = features.offsets[i], features.word_ids[i]
            spans, window_null = window_spans(np.asarray(start_logits[i], dtype=np.float32)[:n],
                                              np.asarray(end_logits[i], dtype=np.float32)[:n],
                                              [o is not None for o in offsets], 2 * top_k + 10 if align_to_words
                                              else top_k, max_answer_len)
            null = min(null, window_null)
            for score, s, e in spans:
                if offsets[s] is None or offsets[e] is None:  # [CLS]: no characters
                    start = end = 0
                elif align_to_words:
                    start = min(o[0] for o, w in zip(offsets, words) if w == words[s])
                    end = max(o[1] for o, w in zip(offsets, words) if w == words[e])
                else:
                    start, end = offsets[s][0], offsets[e][1]
                text = example.context[start:end]
                same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
                if same is not None:
                    same["score"] += score
                else:
                    answers.append({"score": score, "start": start, "end": end, "answer": text})
        if handle_impossible_answer:
            answers.append({"score": null, "start": 0, "end": 0, "answer": ""})
        results.append(sorted(answers, key=lambda a: -a["score"])[:top_k])
    return results


def span_logits(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward `run_model` runs for question answering: (B, L) start and (B, L) end logits."""
    out = model(**inputs)
    return out.start_logits, out.end_logits


# ---- the task ------------------------------------------------------------------------------------------------


@register
class QuestionAnsweringTask(Task):
    """question-answering: the span of a context that answers a question (SQuAD v1.1 / v2, CMRC 2018)."""

    name = "question-answering"
    model_class_name = "BertForQuestionAnswering"
    architectures = ("BertForQuestionAnswering",)
    trainable = True
    default_max_length = 384  # run_qa's and the pipeline's window
    main_metric = "f1"
    input_help = '{"question": ..., "context": ...}'

    def __init__(self, tokenizer, max_length: int | None = None, doc_stride: int = 128, language: str = "en",
                 version_2: bool = False, null_threshold: float = 0.0):
        super().__init__(tokenizer, max_length)
        self.doc_stride = min(doc_stride, self.max_length // 2)  # windows must move forward
        self.language, self.version_2, self.null_threshold = language, version_2, null_threshold

    @classmethod
    def for_training(cls, tokenizer, examples, dataset=None, max_length=None, doc_stride=None, **options):
        return cls(tokenizer, max_length, doc_stride or 128, getattr(dataset, "language", None) or "en",
                   version_2=any(e.is_impossible for e in examples))

    @classmethod
    def from_config(cls, tokenizer, config, max_length=None, doc_stride=None, **options):
        # a checkpoint fine-tuned elsewhere has no max_seq_length: the pipeline's 384, as transformers'
        extra = config.extra
        return cls(tokenizer, cls.window(config, max_length), doc_stride or extra.get("doc_stride", 128), extra.get("language", "en"),
                   extra.get("version_2", False), extra.get("null_threshold", 0.0))

    def config_extra(self) -> dict:
        return {**super().config_extra(), "doc_stride": self.doc_stride, "language": self.language,
                "version_2": self.version_2, "null_threshold": self.null_threshold}

    @classmethod
    def read(cls, path, data):
        from bertkit.tasks.readers import read_squad

        return read_squad(path, skip_bad_rows=data.skip_bad_rows)

    def features(self, examples, train: bool = True, skip_bad_rows: bool = False) -> QAFeatures:
        return prepare_features(examples, self.tokenizer, self.max_length, self.doc_stride, train=train)

    def collate(self, rows):
        return pad_batch(rows, pad_id=self.tokenizer.pad_token_id)

    @property
    def objective(self) -> HeadLoss:
        def exact(out, batch):
            return ((out.start_logits.argmax(-1) == batch["start_positions"])
                    & (out.end_logits.argmax(-1) == batch["end_positions"])).sum()

        return HeadLoss(("start_positions", "end_positions"), lambda b: b["start_positions"].shape[0], exact,
                        "span_accuracy")

    def logits(self, model, features: QAFeatures, batch_size: int = 64) -> tuple[list, list]:
        out = run_model(model, features, self.collate, batch_size, forward=span_logits, per_token=True)
        return [s for s, _ in out], [e for _, e in out]

    def answers(self, model, examples, features=None, batch_size: int = 64) -> dict[str, Prediction]:
        """run_squad's decoding (n best pairs of start and end logits over all windows), as evaluation uses."""
        if features is None:
            features = self.features(examples, train=False)
        starts, ends = self.logits(model, features, batch_size)
        version_2 = self.version_2 or any(e.is_impossible for e in examples)
        return postprocess(examples, features, starts, ends, version_2=version_2, null_threshold=self.null_threshold)

    def evaluate(self, model, examples, features=None, batch_size: int = 64) -> dict[str, float]:
        from bertkit.tasks.metrics import squad_scores

        predictions = self.answers(model, examples, features, batch_size)
        return squad_scores({k: p.text for k, p in predictions.items()}, examples, language=self.language)

    def call_inputs(self, inputs, params):
        question, context = params.pop("question", None), params.pop("context", None)
        if inputs is None and question is not None and context is not None:
            if isinstance(question, str) and isinstance(context, str):
                return [{"question": question, "context": context}], True
            if isinstance(question, str):
                question = [question] * len(context)
            if isinstance(context, str):
                context = [context] * len(question)
            if len(question) != len(context):
                raise UserError(f"question-answering: {len(question)} questions but {len(context)} contexts")
            return [{"question": q, "context": c} for q, c in zip(question, context)], False
        return super().call_inputs(inputs, params)

    def example(self, value, where: str) -> QAExample:
        if not (isinstance(value, dict) and isinstance(value.get("question"), str)
                and isinstance(value.get("context"), str)):
            raise UserError(f"{where}: question answering needs {{\"question\": ..., \"context\": ...}}")
        return QAExample(where, value["question"], value["context"], [], False, where)

    def predict(self, model, examples, batch_size: int = 64, top_k: int = 1, doc_stride: int | None = None,
                max_answer_len: int = 15, max_seq_len: int | None = None, max_question_len: int | None = None,
                handle_impossible_answer: bool | None = None, align_to_words: bool = True) -> list:
        """transformers 4.x's question-answering pipeline: windows of `max_seq_len` (the model's, 384 by default)
        overlapping by `doc_stride` (at most half a window), the question whole unless `max_question_len` is
        given (as its fast-tokenizer path), spans of at most `max_answer_len` tokens. A SQuAD v2 model
        (`version_2` in its config) may answer "" unless `handle_impossible_answer=False`."""
        if not isinstance(top_k, int) or not isinstance(max_answer_len, int) or top_k < 1 or max_answer_len < 1:
            raise UserError(f"question-answering: top_k={top_k} and max_answer_len={max_answer_len} must be >= 1")
        max_seq_len = max_seq_len or self.max_length
        doc_stride = min(doc_stride or self.doc_stride, max_seq_len // 2)
        features = prepare_features(examples, self.tokenizer, max_seq_len, doc_stride, max_question_len, train=False)
        starts, ends = self.logits(model, features, batch_size)
        impossible = self.version_2 if handle_impossible_answer is None else handle_impossible_answer
        answers = pipeline_answers(examples, features, starts, ends, top_k, max_answer_len, impossible,
                                   align_to_words)
        return [a[0] if len(a) == 1 else a for a in answers]
