"""What the task readers return: one example per row, sentence or question, each knowing where it came from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TextExample:
    """A text (or a text pair) to classify or score."""

    text: str
    text_pair: str | None  # the second sentence of a pair task (STS-B, MRPC, AFQMC), else None
    label: str | float | list[str] | None  # as written in the file (the task maps it); a list for multi-label
    source: str  # "file:line", for error messages


@dataclass
class TokenExample:
    """A sentence as tokens (words, or characters for Chinese), with one tag per token."""

    tokens: list[str]
    tags: list[str] | None  # None when the file has no tag column (input to predict on)
    source: str  # "file:line" of the sentence's first line


@dataclass
class Answer:
    text: str
    start: int  # character offset into the context: context[start:start + len(text)] == text; -1: a reference
    # answer that is not in the context (CMRC 2018's free-form ones), scored against but never trained on


@dataclass
class QAExample:
    """An extractive question over a context (SQuAD v1.1 / v2, CMRC 2018)."""

    id: str
    question: str
    context: str
    answers: list[Answer]  # every reference answer; empty for an unanswerable (v2) or unlabelled question
    is_impossible: bool  # SQuAD v2: the context holds no answer
    source: str  # "file:question id"
