"""Inference: `pipeline()` over the task registry, backends (PyTorch, ONNX Runtime, int8)."""

from bertkit.tasks.common import length_sorted_batches
from bertkit.tasks.embeddings import encode_sentences, mean_pool

__all__ = ["length_sorted_batches", "encode_sentences", "mean_pool"]
