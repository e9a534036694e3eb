"""Sequence classification of a text or a text pair: single-label, multi-label, or regression on float scores."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bertkit.errors import UserError
from bertkit.tasks.common import pad_batch, run_model
from bertkit.tasks.examples import TextExample

SINGLE, MULTI, REGRESSION = "single_label_classification", "multi_label_classification", "regression"


@dataclass
class LabelSpace:
    problem_type: str  # SINGLE | MULTI | REGRESSION, as transformers names them in config.problem_type
    labels: list[str] | None  # label names in id order; None for regression

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    def config_fields(self) -> dict:
        id2label = {0: "score"} if self.labels is None else dict(enumerate(self.labels))
        return {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}, "problem_type": self.problem_type}

    @classmethod
    def from_config(cls, config) -> LabelSpace:
        problem = config.problem_type or (REGRESSION if config.num_labels == 1 else SINGLE)
        labels = None if problem == REGRESSION else [config.id2label[i] for i in range(config.num_labels)]
        return cls(problem, labels)


def _is_number(x) -> bool:
    try:
        float(x)
        return True
    except (TypeError, ValueError):
        return False


def infer_label_space(examples: Sequence[TextExample], labels: list[str] | None = None,
                      regression: bool | None = None) -> LabelSpace:
    """Multi-label when labels are lists; regression when asked or when labels are numbers that are not all
    integers (STS-B's 0-5 scores); otherwise classes, sorted (numerically when they are integers)."""
    values = [e.label for e in examples if e.label is not None]
    if not values:
        raise UserError(f"{examples[0].source if examples else 'data'}: no labels to train on")
    if any(isinstance(v, list) for v in values):
        names = labels or sorted({x for v in values for x in (v if isinstance(v, list) else [v])})
        return LabelSpace(MULTI, [str(x) for x in names])
    if regression is None:
        regression = all(_is_number(v) for v in values) and any(float(v) != int(float(v)) for v in values)
    if regression:
        return LabelSpace(REGRESSION, None)
    if labels is None:
        found = {str(v) for v in values}
        labels = sorted(found, key=lambda x: (0, int(x), "") if x.lstrip("-").isdigit() else (1, 0, x))
    return LabelSpace(SINGLE, [str(x) for x in labels])


def encode_label(example: TextExample, space: LabelSpace):
    label = example.label
    if space.problem_type == REGRESSION:
        if not _is_number(label):
            raise UserError(f"{example.source}: label {label!r} is not a number (this is a regression task)")
        return float(label)
    index = {name: i for i, name in enumerate(space.labels)}
    names = label if isinstance(label, list) else [label]
    unknown = [x for x in names if str(x) not in index]
    if unknown:
        raise UserError(f"{example.source}: unknown label {unknown[0]!r}; the model's labels are {space.labels}")
    if space.problem_type == MULTI:
        row = [0.0] * len(space.labels)
        for x in names:
            row[index[str(x)]] = 1.0
        return row
    return index[str(label)]


def prepare_features(examples: Sequence[TextExample], tokenizer, space: LabelSpace | None, max_length: int,
                     skip_bad_rows: bool = False) -> tuple[list[dict], list[int]]:
    """Tokenized rows (lists, unpadded) with `labels` when `space` is given; returns (features, kept example indices).
    A bad label is an error naming file:line, or with `skip_bad_rows` a counted warning."""
    kept, labels, bad = [], [], 0
    for i, e in enumerate(examples):
        if space is not None:
            try:
                if e.label is None:
                    raise UserError(f"{e.source}: this row has no label")
                labels.append(encode_label(e, space))
            except UserError:
                if not skip_bad_rows:
                    raise
                bad += 1
                continue
        kept.append(i)
    if bad:
        warnings.warn(f"skipped {bad} rows with a bad label", stacklevel=2)
    texts = [examples[i].text for i in kept]
    pairs = [examples[i].text_pair for i in kept]
    has_pairs = any(p is not None for p in pairs)
    if has_pairs and not all(p is not None for p in pairs):
        raise UserError(f"{examples[kept[0]].source}: some rows have a second text and some do not")
    enc = tokenizer(texts, pairs if has_pairs else None, truncation=True, max_length=max_length)
    features = []
    for j in range(len(kept)):
        row = {"input_ids": enc["input_ids"][j], "token_type_ids": enc["token_type_ids"][j]}
        if space is not None:
            row["labels"] = labels[j]
        features.append(row)
    return features, kept


def collate(rows: Sequence[dict]) -> dict[str, torch.Tensor]:
    return pad_batch(rows, token_labels=False)


class ClassificationObjective:
    """Summed losses over examples (the loop divides by the global example count)."""

    def __init__(self, space: LabelSpace):
        self.space = space

    def counts(self, batch: dict) -> dict[str, float]:
        return {"loss": float(batch["labels"].shape[0])}

    def __call__(self, model, batch: dict):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"])
        logits, labels = out.logits.float(), batch["labels"]
        if self.space.problem_type == REGRESSION:
            loss = F.mse_loss(logits.squeeze(-1), labels.float(), reduction="sum")
            stats = {}
        elif self.space.problem_type == MULTI:
            loss = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").mean(-1).sum()
            stats = {"correct": float(((logits > 0) == labels.bool()).all(-1).sum())}
        else:
            loss = F.cross_entropy(logits, labels, reduction="sum")
            stats = {"correct": float((logits.argmax(-1) == labels).sum())}
        return {"loss": loss}, stats

    def report(self, sums: dict, counts: dict) -> dict[str, float]:
        r = {"loss": sums["loss"] / max(counts["loss"], 1.0)}
        if "correct" in sums:
            r["accuracy"] = sums["correct"] / max(counts["loss"], 1.0)
        return r


def predict_logits(model, features, batch_size: int = 64) -> torch.Tensor:
    """(N, num_labels) logits in input order."""
    return torch.stack(run_model(model, features, collate, batch_size))


def metrics(logits: torch.Tensor, labels: list, space: LabelSpace) -> dict[str, float]:
    from bertkit.tasks.metrics import classification_metrics, multilabel_metrics, regression_metrics

    if space.problem_type == REGRESSION:
        return regression_metrics(logits.squeeze(-1).tolist(), labels)
    if space.problem_type == MULTI:
        return multilabel_metrics((logits > 0).int().tolist(), [[int(x) for x in row] for row in labels])
    return classification_metrics(logits.argmax(-1).tolist(), labels, num_labels=space.num_labels)


def decode(logits: torch.Tensor, space: LabelSpace, all_scores: bool = False) -> list[dict]:
    """Per row: {"label", "score"} (+ "scores" for every label); regression: {"score"}; multi-label: the labels
    whose sigmoid is above 0.5."""
    rows = []
    for row in logits:
        if space.problem_type == REGRESSION:
            rows.append({"score": round(row.item(), 6)})
            continue
        probs = torch.sigmoid(row) if space.problem_type == MULTI else row.softmax(-1)
        if space.problem_type == MULTI:
            out = {"labels": [space.labels[i] for i in range(len(row)) if probs[i] > 0.5]}
        else:
            best = int(probs.argmax())
            out = {"label": space.labels[best], "score": round(probs[best].item(), 6)}
        if all_scores or space.problem_type == MULTI:
            out["scores"] = {space.labels[i]: round(p, 6) for i, p in enumerate(probs.tolist())}
        rows.append(out)
    return rows


class ClassificationTask:
    """text-classification for the fine-tuning loop, `bertkit evaluate` and `bertkit predict`."""

    name = "text-classification"

    def __init__(self, tokenizer, max_length: int, space: LabelSpace, main_metric: str | None = None):
        self.tokenizer, self.max_length, self.space = tokenizer, max_length, space
        self.main_metric = main_metric or {REGRESSION: "spearman", MULTI: "f1"}.get(space.problem_type, "accuracy")
        self.objective = ClassificationObjective(space)
        self.collate = collate

    @property
    def model_class(self):
        from bertkit.modeling import BertForSequenceClassification

        return BertForSequenceClassification

    def config_fields(self) -> dict:
        return self.space.config_fields()

    def features(self, examples, skip_bad_rows: bool = False) -> list[dict]:
        return prepare_features(examples, self.tokenizer, self.space, self.max_length, skip_bad_rows)[0]

    def evaluate(self, model, examples, features=None, batch_size: int = 64) -> dict[str, float]:
        if features is None:
            features = self.features(examples)
        return metrics(predict_logits(model, features, batch_size), [f["labels"] for f in features], self.space)

    def predict(self, model, examples, batch_size: int = 64, all_scores: bool = False) -> list[dict]:
        features, _ = prepare_features(examples, self.tokenizer, None, self.max_length)
        return decode(predict_logits(model, features, batch_size), self.space, all_scores)
