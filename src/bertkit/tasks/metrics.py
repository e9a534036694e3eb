"""Evaluation metrics for every task, in percent (×100, as GLUE, SQuAD and CoNLL tables report them)."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from scipy.stats import pearsonr, spearmanr
from seqeval.metrics import accuracy_score as token_accuracy
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from bertkit.errors import UserError

if TYPE_CHECKING:
    from bertkit.tasks.examples import QAExample


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


# ---- question answering: SQuAD's and CMRC 2018's official definitions ---------------------------------------

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
