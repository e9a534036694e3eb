"""Inference: batching by length and sentence embeddings."""

from bertkit.inference.batching import length_sorted_batches
from bertkit.inference.embeddings import cosine_similarity, encode_sentences, mean_pool

__all__ = ["length_sorted_batches", "encode_sentences", "mean_pool", "cosine_similarity"]
