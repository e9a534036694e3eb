"""BertPreTrainedModel: BERT initialisation, weight tying, and from_pretrained / save_pretrained for every model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bertkit.config import BertConfig


class BertPreTrainedModel(nn.Module):
    base_model_prefix = "bert"  # heads keep the encoder under `bert.`, as in transformers' checkpoints
    # State-dict keys that alias another tensor (tied); not written to disk, never reported missing.
    tied_weights_keys: dict[str, str] = {}

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.loading_info: dict[str, list] | None = None

    def post_init(self) -> None:
        self.apply(self._init_weights)
        self.tie_weights()

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation: N(0, initializer_range) weights, zero biases, unit LayerNorm."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def tie_weights(self) -> None:
        """Heads with an MLM decoder share its weight with the word embeddings."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Unique parameters (a tied weight counts once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def gradient_checkpointing_enable(self) -> None:
        base = getattr(self, self.base_model_prefix, self)
        base.encoder.gradient_checkpointing = True

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        config: BertConfig | None = None,
        ignore_mismatched_sizes: bool = False,
        **config_overrides: Any,
    ):
        """Load a Hugging Face BERT checkpoint directory (or a known name) into this class.

        `config_overrides` set config fields before the model is built, e.g. `num_labels=3` or `id2label={...}`.
        Heads absent from the checkpoint are initialised and listed in a warning; `model.loading_info` has the
        missing, unexpected and mismatched keys.

        A damaged checkpoint is a one-line UserError naming the file: config.json missing, not JSON or with a
        field of the wrong type (`checkpoint.load_config`); weights missing, truncated or corrupt, or a tensor of
        the wrong shape or dtype, named too (`checkpoint.load_into_model`: float16, bfloat16 and float64 weights
        are cast to the model's dtype, integer, bool and float8 tensors are refused).
        """
        from bertkit.checkpoint import load_config, load_into_model, resolve_model_dir

        directory = resolve_model_dir(name_or_path)
        if config is None:
            config = load_config(directory)
        for key, value in config_overrides.items():
            if not hasattr(config, key):
                raise TypeError(f"{cls.__name__}.from_pretrained got an unknown config field {key!r}")
            setattr(config, key, value)
        model = cls(config)
        load_into_model(model, directory, ignore_mismatched_sizes=ignore_mismatched_sizes)
        model.eval()  # as transformers: from_pretrained returns a model ready for inference
        return model

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write `config.json` and `model.safetensors` (atomically) in the layout transformers reads."""
        from bertkit.checkpoint import save_model

        return save_model(self, directory)
