"""bertkit: BERT end to end on PyTorch, with checkpoints interchangeable with Hugging Face transformers."""

from bertkit.config import BertConfig
from bertkit.errors import UserError
from bertkit.modeling import (
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForNextSentencePrediction,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertPreTrainedModel,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    # The tokenizer pulls in the `tokenizers` library; load it on first use so `import bertkit` stays light.
    if name == "BertTokenizer":
        from bertkit.tokenization import BertTokenizer

        return BertTokenizer
    if name == "pipeline":
        from bertkit.inference.pipeline import pipeline

        return pipeline
    if name in ("finetune", "evaluate"):
        from bertkit.commands import finetune

        return getattr(finetune, name)
    if name in ("pretrain", "predict", "distill"):
        import importlib

        return getattr(importlib.import_module(f"bertkit.commands.{name}"), name)
    raise AttributeError(f"module 'bertkit' has no attribute {name!r}")


__all__ = [
    "BertConfig",
    "BertTokenizer",
    "UserError",
    "pipeline",
    "finetune",
    "evaluate",
    "pretrain",
    "predict",
    "distill",
    "BertModel",
    "BertPreTrainedModel",
    "BertForPreTraining",
    "BertForMaskedLM",
    "BertForNextSentencePrediction",
    "BertForSequenceClassification",
    "BertForMultipleChoice",
    "BertForTokenClassification",
    "BertForQuestionAnswering",
]
