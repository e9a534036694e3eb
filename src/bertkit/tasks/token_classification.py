"""token-classification (NER and other tagging) for the fine-tuning loop, `bertkit evaluate` and `bertkit predict`."""

from __future__ import annotations

import torch.nn.functional as F

from bertkit.errors import UserError
from bertkit.modeling.heads import IGNORE_INDEX
from bertkit.tasks import ner
from bertkit.tasks.common import run_model
from bertkit.tasks.examples import TokenExample


def iob2_label_set(examples) -> list[str]:
    """O first, then B-/I- of each entity type, sorted: the label ids of a new model."""
    types = sorted({t[2:] for e in examples for t in e.tags if t != "O"})
    return ["O"] + [f"{p}-{t}" for t in types for p in "BI"]


class TokenObjective:
    """Summed cross-entropy over labelled tokens (first pieces of owned words); accuracy over the same tokens."""

    def counts(self, batch: dict) -> dict[str, float]:
        return {"loss": float((batch["labels"] != IGNORE_INDEX).sum())}

    def __call__(self, model, batch: dict):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"])
        logits, labels = out.logits.float(), batch["labels"]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX,
                               reduction="sum")
        keep = labels != IGNORE_INDEX
        return {"loss": loss}, {"correct": float((logits.argmax(-1)[keep] == labels[keep]).sum())}

    def report(self, sums: dict, counts: dict) -> dict[str, float]:
        n = max(counts["loss"], 1.0)
        return {"loss": sums["loss"] / n, "token_accuracy": sums["correct"] / n}


class TokenClassificationTask:
    name = "token-classification"
    main_metric = "f1"

    def __init__(self, tokenizer, max_length: int, labels: list[str]):
        self.tokenizer, self.max_length, self.labels = tokenizer, max_length, labels
        self.label2id = {t: i for i, t in enumerate(labels)}
        self.objective = TokenObjective()
        self.collate = ner.collate

    @classmethod
    def from_examples(cls, tokenizer, max_length: int, examples, info=None) -> TokenClassificationTask:
        labels = list(info.labels) if info is not None and info.labels else iob2_label_set(examples)
        return cls(tokenizer, max_length, labels)

    @classmethod
    def from_config(cls, tokenizer, max_length: int, config) -> TokenClassificationTask:
        return cls(tokenizer, max_length, [config.id2label[i] for i in range(config.num_labels)])

    @property
    def model_class(self):
        from bertkit.modeling import BertForTokenClassification

        return BertForTokenClassification

    def config_fields(self) -> dict:
        return {"id2label": dict(enumerate(self.labels)), "label2id": dict(self.label2id)}

    def _check_tags(self, examples) -> None:
        for e in examples:
            unknown = [t for t in (e.tags or []) if t not in self.label2id]
            if unknown:
                raise UserError(f"{e.source}: unknown tag {unknown[0]!r}; the model's tags are {self.labels}")

    def features(self, examples, skip_bad_rows: bool = False) -> list[dict]:
        labelled = all(e.tags is not None for e in examples)
        if labelled:
            self._check_tags(examples)
        return ner.prepare_features(examples, self.tokenizer, self.label2id if labelled else None, self.max_length)

    def tag_words(self, model, examples, features=None, batch_size: int = 64) -> list[list[str]]:
        if features is None:
            features = ner.prepare_features(examples, self.tokenizer, None, self.max_length)
        logits = run_model(model, features, self.collate, batch_size, per_token=True)
        return ner.word_predictions(examples, features, logits, self.labels)

    def evaluate(self, model, examples, features=None, batch_size: int = 64) -> dict[str, float]:
        from bertkit.tasks.metrics import ner_metrics

        predicted = self.tag_words(model, examples, features, batch_size)
        scores = ner_metrics([e.tags for e in examples], predicted)
        scores.pop("per_type", None)  # flat numbers only: the loop logs them
        return scores

    def predict(self, model, texts, batch_size: int = 64) -> list[dict]:
        """Raw strings -> entities with type, text and character span in the original string."""
        bad = [i for i, t in enumerate(texts, 1) if not isinstance(t, str)]
        if bad:
            raise UserError(f"input {bad[0]}: token classification takes plain text")
        spans = [ner.words_with_offsets(t, self.tokenizer) for t in texts]
        examples = [TokenExample([w for w, _, _ in s], None, f"input {i + 1}") for i, s in enumerate(spans)]
        tags = self.tag_words(model, examples, batch_size=batch_size)
        return [{"entities": ner.extract_entities(text, t, [(a, b) for _, a, b in s])}
                for text, t, s in zip(texts, tags, spans)]
