"""Evaluation metrics for every task, in percent (×100, as GLUE, SQuAD and CoNLL tables report them)."""

from __future__ import annotations

from collections.abc import Sequence

from scipy.stats import pearsonr, spearmanr
from seqeval.metrics import accuracy_score as token_accuracy
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def _percent(fraction: float) -> float:
    return 100.0 * float(fraction)


def classification_metrics(preds: Sequence[int], labels: Sequence[int], num_labels: int | None = None,
                           average: str | None = None) -> dict[str, float]:
    """Accuracy, F1 and Matthews correlation of predicted class ids against gold ids, in percent.

    F1 is `average` (a scikit-learn name: "binary", "macro", "micro", "weighted") when given; otherwise the F1
    of class 1 for a 2-label task (MRPC's and QQP's convention) and the macro F1 over the classes seen in labels
    or predictions for more labels. Without `num_labels`, a task is 2-label when every id is 0 or 1."""
    if average is None:
        binary = num_labels == 2 if num_labels is not None else set(labels) | set(preds) <= {0, 1}
        average = "binary" if binary else "macro"
    f1 = f1_score(labels, preds, average=average, pos_label=1, zero_division=0)
    return {"accuracy": _percent(accuracy_score(labels, preds)), "f1": _percent(f1),
            "mcc": _percent(matthews_corrcoef(labels, preds))}


def multilabel_metrics(pred_matrix: Sequence[Sequence[int]], label_matrix: Sequence[Sequence[int]]) -> dict[str, float]:
    """Subset accuracy (a row counts only when all its labels are right) and micro F1 over every (row, label)
    decision, in percent; both matrices are (N, num_labels) of 0/1."""
    return {"accuracy": _percent(accuracy_score(label_matrix, pred_matrix)),
            "f1": _percent(f1_score(label_matrix, pred_matrix, average="micro", zero_division=0))}


def regression_metrics(preds: Sequence[float], labels: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman correlation ×100 (STS-B's metrics); NaN, with scipy's warning, when either side is
    constant, since a correlation is then undefined."""
    return {"pearson": _percent(pearsonr(preds, labels)[0]), "spearman": _percent(spearmanr(preds, labels)[0])}


def ner_metrics(true_tag_seqs: Sequence[Sequence[str]], pred_tag_seqs: Sequence[Sequence[str]]) -> dict:
    """Entity-level micro precision, recall and F1, token accuracy, and each entity type's F1 under "per_type",
    in percent, from IOB2 tags.

    Strict mode: an entity counts only when its B- tag, every I- tag and its type match exactly, so a
    predicted entity that starts with I- is no entity at all (conlleval's lenient reading would accept it)."""
    report = classification_report(true_tag_seqs, pred_tag_seqs, mode="strict", scheme=IOB2, output_dict=True,
                                   zero_division=0)
    micro = report["micro avg"]
    types = sorted(key for key in report if not key.endswith(" avg"))
    return {"precision": _percent(micro["precision"]), "recall": _percent(micro["recall"]),
            "f1": _percent(micro["f1-score"]), "accuracy": _percent(token_accuracy(true_tag_seqs, pred_tag_seqs)),
            "per_type": {name: _percent(report[name]["f1-score"]) for name in types}}
