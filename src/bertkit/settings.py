"""Where bertkit reads and writes, and how it chooses precision: the few settings every layer may import."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """`override`, else $BERTKIT_DATA_DIR, else ../shared/data from the working directory. Read only."""
    if override is not None:
        return Path(override)
    return Path(os.environ.get("BERTKIT_DATA_DIR") or Path.cwd().parent / "shared" / "data")


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """`override`, else $BERTKIT_CACHE_DIR, else ~/.cache/bertkit: tokenized data, ONNX exports."""
    if override is not None:
        return Path(override)
    return Path(os.environ.get("BERTKIT_CACHE_DIR") or Path.home() / ".cache" / "bertkit")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` (auto | fp32 | bf16 | fp16) on `device`; None means plain fp32.

    auto: fp32 on CPU (no bf16 speed there), bf16 (else fp16) on CUDA, in training and inference alike."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
