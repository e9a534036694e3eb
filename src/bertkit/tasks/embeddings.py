"""feature-extraction and sentence-similarity: sentence embeddings (mean of the token vectors over the attention
mask, L2-normalised: sentence-transformers' recipe for all-MiniLM-L6-v2) from any BERT checkpoint's encoder, and
cosine similarities between them. Evaluation is STS-style: the correlation of cosines with gold pair scores."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache, partial

import torch
import torch.nn.functional as F

from bertkit.errors import UserError
from bertkit.tasks import register
from bertkit.tasks.base import Task
from bertkit.tasks.common import pad_batch, run_model
from bertkit.tasks.examples import TextExample

POOLINGS = ("mean", "cls")


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L, H), (B, L) -> (B, H): the average over real tokens only."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class Pooled:
    """forward(model, inputs) -> (B, H) sentence vectors: the mean of the real tokens' vectors, or [CLS]'s."""

    def __init__(self, pooling: str = "mean"):
        if pooling not in POOLINGS:
            raise UserError(f"pooling={pooling!r}: expected one of {', '.join(POOLINGS)}")
        self.pooling = pooling

    def __call__(self, model, inputs: dict) -> torch.Tensor:
        hidden = model(**inputs).last_hidden_state  # (B, L, H)
        return mean_pool(hidden, inputs["attention_mask"]) if self.pooling == "mean" else hidden[:, 0]

    def __eq__(self, other):
        return isinstance(other, Pooled) and other.pooling == self.pooling

    def __hash__(self):
        return hash(self.pooling)


@lru_cache
def padding_with(pad_id: int):
    """pad_batch with this pad id: one object per id, so the server batches requests' rows together."""
    return partial(pad_batch, pad_id=pad_id)


def encode_sentences(model, tokenizer, texts: Sequence[str], batch_size: int = 32, normalize: bool = True,
                     max_length: int = 256, pooling: str = "mean") -> torch.Tensor:
    """(N, H) embeddings of `texts`, in input order; batches are formed by length to avoid padding work."""
    forward = Pooled(pooling)
    if not texts:
        return torch.empty(0, model.config.hidden_size)
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)  # once; batches pad what they take
    rows = [{"input_ids": ids, "token_type_ids": types} for ids, types in zip(enc["input_ids"], enc["token_type_ids"])]
    out = torch.stack(run_model(model, rows, padding_with(tokenizer.pad_token_id), batch_size, forward=forward))
    return F.normalize(out, dim=-1) if normalize else out


class _EmbeddingTask(Task):
    model_class_name = "BertModel"
    architectures = ("BertModel",)
    runs_on_any_encoder = True  # the encoder of any head's checkpoint
    default_max_length = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
    main_metric = "spearman"
    dataset_task = "text-classification"  # STS-B's scored pairs

    @classmethod
    def read(cls, path, data) -> list[TextExample]:
        """Sentence pairs with a similarity score (STS-B's columns, or text/text_pair/label)."""
        from bertkit.tasks.readers import read_text_examples

        return read_text_examples(path, text_column=data.text_column, pair_column=data.pair_column,
                                  label_column=data.label_column, skip_bad_rows=data.skip_bad_rows)

    def evaluate(self, model, examples, features=None, batch_size: int = 64) -> dict[str, float]:
        """Pearson and Spearman (x100) of the cosine of each pair's embeddings with its gold score."""
        from bertkit.tasks.metrics import regression_metrics

        pairs = [e for e in examples if e.text_pair is not None]
        if not pairs:
            raise UserError(f"{self.name} evaluates on sentence pairs with a score (STS-B); "
                            f"{examples[0].source if examples else 'the data'} has no second sentence")
        try:
            gold = [float(e.label) for e in pairs]
        except (TypeError, ValueError):
            raise UserError(f"{pairs[0].source}: {self.name} evaluates against numeric similarity scores") from None
        a = encode_sentences(model, self.tokenizer, [e.text for e in pairs], batch_size, max_length=self.max_length)
        b = encode_sentences(model, self.tokenizer, [e.text_pair for e in pairs], batch_size,
                             max_length=self.max_length)
        return regression_metrics((a * b).sum(-1).tolist(), gold)


@register
class FeatureExtractionTask(_EmbeddingTask):
    """feature-extraction: one pooled, normalised vector per text (the HF Inference API's shape for sentence
    embedding models)."""

    name = "feature-extraction"

    def predict(self, model, texts, batch_size: int = 64, normalize: bool = True,
                pooling: str = "mean") -> list[list[float]]:
        return encode_sentences(model, self.tokenizer, texts, batch_size, normalize, self.max_length,
                                pooling).tolist()


@register
class SentenceSimilarityTask(_EmbeddingTask):
    """sentence-similarity: {"source_sentence", "sentences"} -> the cosine of each sentence with the source."""

    name = "sentence-similarity"
    input_help = '{"source_sentence": ..., "sentences": [...]}'

    def call_inputs(self, inputs, params):
        if inputs is None and "source_sentence" in params:
            inputs = {"source_sentence": params.pop("source_sentence"), "sentences": params.pop("sentences", None)}
        if isinstance(inputs, dict):
            return [inputs], True
        return super().call_inputs(inputs, params)

    def example(self, value, where: str) -> dict:
        if not (isinstance(value, dict) and isinstance(value.get("source_sentence"), str)
                and isinstance(value.get("sentences"), list) and value["sentences"]
                and all(isinstance(s, str) for s in value["sentences"])):
            raise UserError(f"{where}: sentence-similarity needs {self.input_help} (a text and a non-empty list)")
        return value

    def predict(self, model, examples, batch_size: int = 64) -> list[list[float]]:
        texts = [t for e in examples for t in [e["source_sentence"], *e["sentences"]]]
        vectors = encode_sentences(model, self.tokenizer, texts, batch_size, max_length=self.max_length)
        results, position = [], 0
        for e in examples:
            source, others = vectors[position], vectors[position + 1: position + 1 + len(e["sentences"])]
            results.append((others @ source).tolist())
            position += 1 + len(e["sentences"])
        return results
