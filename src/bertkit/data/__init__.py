"""Data for BERT: reading text corpora, pretraining instances (NSP/SOP) in a memory-mapped cache, MLM masking."""

from bertkit.data.dataset import PretrainingDataset, build_or_load
from bertkit.data.masking import MaskingCollator, mask_tokens
from bertkit.data.pretraining import PretrainingSettings, SpecialTokens
from bertkit.data.text import DataError, iter_documents, split_sentences

__all__ = [
    "DataError",
    "MaskingCollator",
    "PretrainingDataset",
    "PretrainingSettings",
    "SpecialTokens",
    "build_or_load",
    "iter_documents",
    "mask_tokens",
    "split_sentences",
]
