"""Sequence classification of a text or a text pair: single-label, multi-label, or regression on float scores."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bertkit.errors import UserError
from bertkit.tasks import register
from bertkit.tasks.base import UNSET, HeadLoss, Task
from bertkit.tasks.common import run_model
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
        return cls(problem, None if problem == REGRESSION else config.label_names())


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
    if has_pairs and not all(p is not None for p in pairs) and space is not None:
        raise UserError(f"{examples[kept[0]].source}: some rows have a second text and some do not")
    encoded: list = [None] * len(kept)  # prediction inputs are independent: texts and pairs may be mixed
    for group in ([j for j, p in enumerate(pairs) if p is None], [j for j, p in enumerate(pairs) if p is not None]):
        if group:
            enc = tokenizer([texts[j] for j in group], [pairs[j] for j in group] if pairs[group[0]] is not None
                            else None, truncation=True, max_length=max_length)
            for k, j in enumerate(group):
                encoded[j] = (enc["input_ids"][k], enc["token_type_ids"][k])
    features = []
    for j in range(len(kept)):
        row = {"input_ids": encoded[j][0], "token_type_ids": encoded[j][1]}
        if space is not None:
            row["labels"] = labels[j]
        features.append(row)
    return features, kept




def metrics(logits: torch.Tensor, labels: list, space: LabelSpace) -> dict[str, float]:
    from bertkit.tasks.metrics import classification_metrics, multilabel_metrics, regression_metrics

    if space.problem_type == REGRESSION:
        return regression_metrics(logits.squeeze(-1).tolist(), labels)
    if space.problem_type == MULTI:
        return multilabel_metrics((logits > 0).int().tolist(), [[int(x) for x in row] for row in labels])
    return classification_metrics(logits.argmax(-1).tolist(), labels, num_labels=space.num_labels)


FUNCTIONS = ("softmax", "sigmoid", "none")


def default_function(space: LabelSpace) -> str:
    """transformers' rule: nothing for regression, sigmoid for multi-label or a single output, else softmax."""
    if space.problem_type == REGRESSION:
        return "none"
    return "sigmoid" if space.problem_type == MULTI or space.num_labels == 1 else "softmax"


def decode(logits: torch.Tensor, names: Sequence[str], function: str, top_k=UNSET) -> list:
    """Per row, as transformers' text-classification pipeline: without `top_k`, the best {"label", "score"};
    with it, the `top_k` best (None: every label) as a list, best first."""
    if function not in FUNCTIONS:
        raise UserError(f"function_to_apply={function!r}: expected one of {', '.join(FUNCTIONS)}")
    scores = {"softmax": lambda x: x.softmax(-1), "sigmoid": torch.sigmoid, "none": lambda x: x}[function](logits.float())
    rows = []
    for row in scores.tolist():
        if top_k is UNSET:
            best = max(range(len(row)), key=row.__getitem__)
            rows.append({"label": names[best], "score": row[best]})
            continue
        ranked = sorted(({"label": names[i], "score": v} for i, v in enumerate(row)), key=lambda d: -d["score"])
        rows.append(ranked if top_k is None else ranked[:top_k])
    return rows


@register
class TextClassificationTask(Task):
    """text-classification: one text or a pair -> classes, several labels, or a score (regression)."""

    name = "text-classification"
    model_class_name = "BertForSequenceClassification"
    architectures = ("BertForSequenceClassification",)
    trainable = True
    input_help = '"text", or {"text": ..., "text_pair": ...}'

    def __init__(self, tokenizer, space: LabelSpace, max_length: int | None = None, main_metric: str | None = None):
        super().__init__(tokenizer, max_length)
        self.space = space
        self.main_metric = main_metric or {REGRESSION: "spearman", MULTI: "f1"}.get(space.problem_type, "accuracy")

    @classmethod
    def for_training(cls, tokenizer, examples, dataset=None, max_length=None, **options):
        labels = dataset.labels if dataset is not None else None
        regression = dataset.is_regression if dataset is not None else None
        return cls(tokenizer, infer_label_space(examples, labels, regression), max_length,
                   getattr(dataset, "main_metric", None))

    @classmethod
    def from_config(cls, tokenizer, config, max_length=None, **options):
        return cls(tokenizer, LabelSpace.from_config(config), cls.window(config, max_length),
                   config.extra.get("main_metric"))

    def config_fields(self) -> dict:
        return self.space.config_fields()

    def config_extra(self) -> dict:
        return {**super().config_extra(), "main_metric": self.main_metric}

    @classmethod
    def read(cls, path, data):
        from bertkit.tasks import readers

        return readers.read_text_examples(path, text_column=data.text_column, pair_column=data.pair_column,
                                          label_column=data.label_column, skip_bad_rows=data.skip_bad_rows)

    def features(self, examples, train: bool = True, skip_bad_rows: bool = False) -> list[dict]:
        space = self.space if train else None
        return prepare_features(examples, self.tokenizer, space, self.max_length, skip_bad_rows)[0]

    @property
    def objective(self) -> HeadLoss:
        if self.space.problem_type == REGRESSION:
            return HeadLoss(("labels",), lambda b: b["labels"].shape[0])
        if self.space.problem_type == MULTI:
            correct = lambda out, b: ((out.logits > 0) == b["labels"].bool()).all(-1).sum()  # noqa: E731
        else:
            correct = lambda out, b: (out.logits.argmax(-1) == b["labels"]).sum()  # noqa: E731
        return HeadLoss(("labels",), lambda b: b["labels"].shape[0], correct)

    def evaluate(self, model, examples, features=None, batch_size: int = 64) -> dict[str, float]:
        if features is None:
            features = self.features(examples)
        return metrics(self.logits(model, features, batch_size), [f["labels"] for f in features], self.space)

    def logits(self, model, features, batch_size: int = 64) -> torch.Tensor:
        """(N, num_labels) logits in input order."""
        return torch.stack(run_model(model, features, self.collate, batch_size))

    def example(self, value, where: str) -> TextExample:
        if isinstance(value, str):
            return TextExample(value, None, None, where)
        if isinstance(value, dict) and isinstance(value.get("text"), str) and \
                isinstance(value.get("text_pair"), (str, type(None))):
            return TextExample(value["text"], value.get("text_pair"), None, where)
        raise UserError(f"{where}: expected a text or {{\"text\": ..., \"text_pair\": ...}}, got {value!r:.80}")

    def predict(self, model, examples, batch_size: int = 64, top_k=UNSET,
                function_to_apply: str | None = None) -> list:
        names = self.space.labels or ["score"]
        return decode(self.logits(model, self.features(examples, train=False), batch_size), names,
                      function_to_apply or default_function(self.space), top_k)

    def shape_output(self, results, single, params, inputs=None):
        # transformers: one string (not one pair) without top_k gives a list holding the one best label
        if isinstance(inputs, str) and params.get("top_k", UNSET) is UNSET:
            return results
        return results[0] if single else results
