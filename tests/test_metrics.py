"""Task metrics against values computed by hand, all in percent."""

from __future__ import annotations

import math

import pytest
from seqeval.metrics import f1_score as lenient_f1

from bertkit.tasks.metrics import classification_metrics, multilabel_metrics, ner_metrics, regression_metrics


def test_binary_classification_from_a_confusion_matrix():
    # TP=3, FN=1, FP=2, TN=4
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    preds = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    got = classification_metrics(preds, labels, num_labels=2)
    precision, recall = 3 / 5, 3 / 4
    assert got == pytest.approx({
        "accuracy": 70.0,
        "f1": 100 * 2 * precision * recall / (precision + recall),  # 66.67, class 1 only
        "mcc": 100 * (3 * 4 - 2 * 1) / math.sqrt((3 + 2) * (3 + 1) * (4 + 2) * (4 + 1)),  # 40.82
    })
    assert classification_metrics(preds, labels) == got  # 2 labels read from the ids
    # macro F1 averages class 0's F1 (TP=4, FP=1, FN=2: 8/11) with class 1's (2/3)
    assert classification_metrics(preds, labels, average="macro")["f1"] == pytest.approx(100 * (8 / 11 + 2 / 3) / 2)


def test_multiclass_uses_macro_f1():
    got = classification_metrics([0, 2, 2, 1], [0, 1, 2, 2], num_labels=3)
    # per-class F1: class 0 = 1, class 1 = 0, class 2 = 1/2; MCC = (c*s - sum p_k t_k) / (s^2 - sum t_k^2)
    # with c=2 correct, s=4, counts p = t = (1, 1, 2): (8 - 6) / (16 - 6) = 0.2
    assert got == pytest.approx({"accuracy": 50.0, "f1": 50.0, "mcc": 20.0})


def test_multilabel_subset_accuracy_and_micro_f1():
    got = multilabel_metrics([[1, 0, 1], [0, 1, 0]], [[1, 0, 1], [1, 1, 0]])
    # row 2 misses one label: 1 of 2 rows exact; TP=3, FP=0, FN=1 -> F1 = 6 / 7
    assert got == pytest.approx({"accuracy": 50.0, "f1": 100 * 6 / 7})


def test_regression_correlations():
    got = regression_metrics([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 5.0])
    # deviations x: -1.5 -0.5 0.5 1.5, y: -1.75 0.25 -0.75 2.25; sum xy = 5.5, sum x^2 = 5, sum y^2 = 8.75
    # Spearman: ranks of y are 1 3 2 4, sum d^2 = 2, 1 - 6*2 / (4 * 15) = 0.8
    assert got == pytest.approx({"pearson": 100 * 5.5 / math.sqrt(5 * 8.75), "spearman": 80.0})


def test_ner_strict_rejects_an_entity_that_starts_with_i():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["I-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "B-ORG"]]
    # conlleval's lenient reading takes I-PER I-PER as a PER: 3 of 4 predictions right
    assert lenient_f1(true, pred) == pytest.approx(2 * (3 / 4) * 1 / (3 / 4 + 1))
    got = ner_metrics(true, pred)
    per_type = got.pop("per_type")
    # strict: predicted LOC, ORG, ORG (no PER); right LOC and the first ORG -> P = 2/3, R = 2/3
    assert got == pytest.approx({
        "precision": 100 * 2 / 3, "recall": 100 * 2 / 3, "f1": 100 * 2 / 3,
        "accuracy": 100 * 4 / 6,  # tokens: 2 wrong of 6 (B-PER->I-PER, O->B-ORG)
    })
    assert per_type == pytest.approx({"LOC": 100.0, "ORG": 100 * 2 / 3, "PER": 0.0})
