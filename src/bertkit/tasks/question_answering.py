"""question-answering (extractive, SQuAD style) for the fine-tuning loop, `bertkit evaluate` and `bertkit predict`."""

from __future__ import annotations

import torch.nn.functional as F

from bertkit.errors import UserError
from bertkit.tasks import qa
from bertkit.tasks.common import pad_batch, run_model
from bertkit.tasks.examples import QAExample


class SpanObjective:
    """Summed (start CE + end CE) / 2 over windows; windows without the answer point at [CLS] (index 0)."""

    def counts(self, batch: dict) -> dict[str, float]:
        return {"loss": float(batch["start_positions"].shape[0])}

    def __call__(self, model, batch: dict):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"])
        start, end = out.start_logits.float(), out.end_logits.float()
        loss = (F.cross_entropy(start, batch["start_positions"], reduction="sum")
                + F.cross_entropy(end, batch["end_positions"], reduction="sum")) / 2
        exact = (start.argmax(-1) == batch["start_positions"]) & (end.argmax(-1) == batch["end_positions"])
        return {"loss": loss}, {"exact_span": float(exact.sum())}

    def report(self, sums: dict, counts: dict) -> dict[str, float]:
        n = max(counts["loss"], 1.0)
        return {"loss": sums["loss"] / n, "span_accuracy": sums["exact_span"] / n}


class QuestionAnsweringTask:
    name = "question-answering"
    main_metric = "f1"

    def __init__(self, tokenizer, max_length: int = 384, doc_stride: int = 128, language: str = "en"):
        self.tokenizer, self.max_length, self.doc_stride, self.language = tokenizer, max_length, doc_stride, language
        self.objective = SpanObjective()
        self.collate = pad_batch

    @property
    def model_class(self):
        from bertkit.modeling import BertForQuestionAnswering

        return BertForQuestionAnswering

    def config_fields(self) -> dict:
        return {}

    def features(self, examples, skip_bad_rows: bool = False, train: bool = True) -> qa.QAFeatures:
        return qa.prepare_features(examples, self.tokenizer, self.max_length, self.doc_stride, train=train)

    def answers(self, model, examples, features=None, batch_size: int = 64) -> dict[str, qa.Prediction]:
        if features is None:
            features = self.features(examples, train=False)
        logits = run_model(model, features, self.collate, batch_size,
                           outputs=lambda out: (out.start_logits, out.end_logits), per_token=True)
        version_2 = any(e.is_impossible for e in examples)
        return qa.postprocess(examples, features, [s for s, _ in logits], [e for _, e in logits],
                              version_2=version_2)

    def evaluate(self, model, examples, features=None, batch_size: int = 64) -> dict[str, float]:
        predictions = self.answers(model, examples, features, batch_size)
        return qa.squad_scores({k: p.text for k, p in predictions.items()}, examples, language=self.language)

    def predict(self, model, rows, batch_size: int = 64) -> list[dict]:
        """{"question", "context"} dicts -> {"answer", "start", "end", "score"} (characters of the context)."""
        examples = []
        for i, row in enumerate(rows, 1):
            if not (isinstance(row, dict) and isinstance(row.get("question"), str)
                    and isinstance(row.get("context"), str)):
                raise UserError(f"input {i}: question answering needs {{\"question\": ..., \"context\": ...}}")
            examples.append(QAExample(str(i), row["question"], row["context"], [], False, f"input {i}"))
        predictions = self.answers(model, examples, batch_size=batch_size)
        return [{"answer": p.text, "start": p.start, "end": p.end, "score": round(p.score, 6)}
                for p in (predictions[e.id] for e in examples)]
