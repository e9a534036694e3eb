"""BertConfig: the fields of a Hugging Face BERT `config.json`, plus named size presets."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertkit.errors import UserError

CONFIG_NAME = "config.json"


@dataclass
class BertConfig:
    vocab_size: int = 30522  # WordPiece vocabulary (bert-base-uncased size)
    hidden_size: int = 768  # width of every token representation
    num_hidden_layers: int = 12  # Transformer blocks
    num_attention_heads: int = 12  # heads per block; hidden_size must divide evenly
    intermediate_size: int = 3072  # feed-forward width, 4 x hidden in all BERT presets
    hidden_act: str = "gelu"  # exact (erf) GELU, as the original BERT
    hidden_dropout_prob: float = 0.1  # dropout on embeddings and every residual branch
    attention_probs_dropout_prob: float = 0.1  # dropout on attention weights
    max_position_embeddings: int = 512  # longest sequence the learned positions cover
    type_vocab_size: int = 2  # segment A / segment B
    initializer_range: float = 0.02  # std of the truncated-normal-like init
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    classifier_dropout: float | None = None  # None: use hidden_dropout_prob in task heads
    id2label: dict[int, str] | None = None  # task heads: label names, saved so predictions print names
    label2id: dict[str, int] | None = None
    problem_type: str | None = None  # "single_label_classification" | "multi_label_classification" | "regression"
    architectures: list[str] | None = None  # the head class that wrote the checkpoint (transformers reads it)
    # Keys of a config.json we do not model (e.g. transformers_version, use_cache); written back unchanged.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise UserError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            if self.label2id is None:
                self.label2id = {v: k for k, v in self.id2label.items()}
        if self.label2id is not None:
            self.label2id = {str(k): int(v) for k, v in self.label2id.items()}
            if self.id2label is None:
                self.id2label = {v: k for k, v in self.label2id.items()}

    @property
    def num_labels(self) -> int:
        return len(self.id2label) if self.id2label else 2

    @num_labels.setter
    def num_labels(self, n: int) -> None:
        self.id2label = {i: f"LABEL_{i}" for i in range(n)}
        self.label2id = {v: k for k, v in self.id2label.items()}

    def label_names(self) -> list[str]:
        """Label names in id order; LABEL_i where the config names none (transformers 5 saves no id2label for
        its default two labels, and reads them back as LABEL_0, LABEL_1)."""
        names = self.id2label or {}
        return [names.get(i, f"LABEL_{i}") for i in range(self.num_labels)]

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    # ---- JSON ---------------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BertConfig":
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        num_labels = d.pop("num_labels", None)
        kwargs = {k: d.pop(k) for k in list(d) if k in known}
        model_type = d.get("model_type", "bert")
        if model_type != "bert":
            raise UserError(f"config model_type is {model_type!r}; bertkit reads BERT checkpoints (model_type 'bert')")
        pet = d.get("position_embedding_type", "absolute")
        if pet != "absolute":
            raise UserError(f"position_embedding_type {pet!r} is not supported; only 'absolute' (original BERT)")
        config = cls(**kwargs, extra=d)
        if num_labels is not None and config.id2label is None:
            config.num_labels = int(num_labels)
        return config

    def to_dict(self) -> dict[str, Any]:
        d = {"model_type": "bert", **self.extra}
        for f in dataclasses.fields(self):
            if f.name != "extra":
                d[f.name] = getattr(self, f.name)
        if self.id2label is None:
            del d["id2label"], d["label2id"]
        for key in ("problem_type", "architectures", "classifier_dropout"):
            if d[key] is None:
                del d[key]
        d.setdefault("position_embedding_type", "absolute")
        return d

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "BertConfig":
        """A config.json as a BertConfig; a missing, unreadable or malformed file, or a field of the wrong type or
        value, is a one-line UserError naming the file (and the line or field)."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise UserError(f"{path}: config file not found") from None
        except OSError as e:
            raise UserError(f"{path}: cannot read the config ({e.strerror})") from None
        try:
            d = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            raise UserError(f"{path}:{line}: not a valid JSON config (not UTF-8: byte 0x{data[e.start]:02x})") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: not a valid JSON config ({e.msg} at column {e.colno})") from None
        except (RecursionError, ValueError) as e:  # arrays nested too deep; an integer of more than 4300 digits
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise UserError(f"{path}: not a valid JSON config ({reason})") from None
        if not isinstance(d, dict):
            raise UserError(f"{path}: expected a JSON object, got {type(d).__name__}")
        problem = config_problem(d)
        if problem:
            raise UserError(f"{path}: {problem}")
        try:
            return cls.from_dict(d)
        except (UserError, TypeError) as e:  # model_type, position_embedding_type, hidden_size / num_attention_heads
            raise UserError(f"{path}: {e}") from None

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike) -> "BertConfig":
        from bertkit.checkpoint import resolve_model_dir

        return cls.from_json_file(resolve_model_dir(name_or_path) / CONFIG_NAME)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        from bertkit.checkpoint import atomic_write_text

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(directory / CONFIG_NAME, self.to_json_string())

    # ---- presets ------------------------------------------------------------------------------------------

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "BertConfig":
        if name not in PRESETS:
            raise UserError(f"unknown config preset {name!r}; choose one of {', '.join(PRESETS)}")
        layers, hidden, heads = PRESETS[name]
        return cls(
            num_hidden_layers=layers,
            hidden_size=hidden,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            **overrides,
        )


# name -> (layers, hidden, heads); the BERT paper's base/large and Turc et al.'s compact models (64-dim heads).
PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}


def load_config(preset_or_file: str | os.PathLike, **overrides: Any) -> BertConfig:
    """A preset name (`mini`) or a path to a config.json / checkpoint directory."""
    s = str(preset_or_file)
    if s in PRESETS:
        return BertConfig.from_preset(s, **overrides)
    path = Path(s)
    if path.is_dir():
        path = path / CONFIG_NAME
    if not path.exists():
        raise UserError(f"--config {s}: neither a preset ({', '.join(PRESETS)}) nor an existing config file")
    config = BertConfig.from_json_file(path)
    for k, v in overrides.items():
        setattr(config, k, v)
    return config


# ---- checking a config.json's fields -----------------------------------------------------------------------

HIDDEN_ACTS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish", "tanh")  # modeling's ACT2FN


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON's true is no number


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_from(low: int):
    return lambda v: _is_int(v) and v >= low, f"an integer >= {low}"


_PROBABILITY = (lambda v: _is_number(v) and 0 <= v <= 1, "a number from 0 to 1")
_PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")
# config.json field -> (whether a value is usable, what is expected): the fields BertConfig and the modules read.
# A missing field takes BertConfig's default; null is only for those whose default is None.
_CONFIG_FIELDS = {
    **{key: _int_from(1) for key in ("vocab_size", "hidden_size", "num_attention_heads", "intermediate_size",
                                     "max_position_embeddings", "type_vocab_size", "num_labels")},
    "num_hidden_layers": _int_from(0),
    "hidden_dropout_prob": _PROBABILITY,
    "attention_probs_dropout_prob": _PROBABILITY,
    "classifier_dropout": (lambda v: v is None or _PROBABILITY[0](v), "null or a number from 0 to 1"),
    "initializer_range": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "layer_norm_eps": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "problem_type": (lambda v: v is None or v in _PROBLEM_TYPES, f"null or one of {', '.join(_PROBLEM_TYPES)}"),
    "architectures": (lambda v: v is None or (isinstance(v, list) and all(isinstance(a, str) for a in v)),
                      "null or a list of class names"),
    "id2label": (lambda v: v is None or (isinstance(v, dict) and all(
        re.fullmatch(r"[0-9]{1,9}", k) and isinstance(name, str) for k, name in v.items())),
        'null or an object of "id": "name"'),
    "label2id": (lambda v: v is None or (isinstance(v, dict) and all(map(_is_int, v.values()))),
                 'null or an object of "name": id'),
}


def config_problem(d: dict) -> str | None:
    """What is wrong with the fields of a config.json object `d`, or None. Each field BertConfig and the modules
    read must have its JSON type and a usable value; otherwise building the model fails deep inside torch (a
    TypeError for a float size, a ZeroDivisionError for 0 heads, a ValueError for a dropout of 2)."""
    def bad(key: str, want: str) -> str:
        return f"field {key!r} is {json.dumps(d[key])[:40]}; expected {want}"

    for key, (usable, want) in _CONFIG_FIELDS.items():
        if key in d and not usable(d[key]):
            return bad(key, want)
    if "hidden_act" in d and not (isinstance(d["hidden_act"], str) and d["hidden_act"] in HIDDEN_ACTS):
        return bad("hidden_act", f"one of {', '.join(HIDDEN_ACTS)}")
    vocab_size = d.get("vocab_size", BertConfig.vocab_size)
    pad = d.get("pad_token_id")
    if pad is not None and not (_is_int(pad) and 0 <= pad < vocab_size):  # null: no padding row in the embedding
        return bad("pad_token_id", f"null or a token id from 0 to vocab_size - 1 ({vocab_size - 1})")
    return None
