"""The Task protocol: everything one kind of head knows, from reading its data to decoding its outputs.

A task is built either for training (`for_training`: labels from the data) or from a checkpoint's config
(`from_config`: labels and settings as fine-tuning saved them). `finetune`, `evaluate`, `predict`, `pipeline()`
and the server look tasks up by name in the registry (`bertkit.tasks`) and call only what is defined here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from bertkit.errors import UserError

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
UNSET: Any = object()  # a pipeline parameter the caller did not pass (None can be a value: top_k=None is "all")


@dataclass
class DataArgs:
    """Where a task's examples come from: a named dataset or files, and how to read the files."""

    train: str | None = None
    dev: str | None = None
    dataset: str | None = None
    data_dir: str | None = None
    text_column: str | None = None
    pair_column: str | None = None
    label_column: str | None = None
    skip_bad_rows: bool = False


class HeadLoss:
    """A task's training objective: its head's own loss with `reduction="sum"` (written once, in the head), the
    count the loop divides that sum by, and optionally how many predictions were right, reported as a share.

    `count(batch)` is the number of things the summed loss is over (examples, labelled tokens, windows);
    `correct(output, batch)` counts right predictions among them, reported under `correct_name`."""

    def __init__(self, label_keys: tuple[str, ...], count: Callable[[dict], float],
                 correct: Callable[[Any, dict], float] | None = None, correct_name: str = "accuracy"):
        self.label_keys, self.count, self.correct, self.correct_name = label_keys, count, correct, correct_name

    def counts(self, batch: dict) -> dict[str, float]:
        return {"loss": float(self.count(batch))}

    def __call__(self, model, batch: dict) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        out = model(**{k: batch[k] for k in MODEL_INPUTS + self.label_keys}, reduction="sum")
        stats = {self.correct_name: float(self.correct(out, batch))} if self.correct else {}
        return {"loss": out.loss}, stats

    def report(self, sums: dict[str, float], counts: dict[str, float]) -> dict[str, float]:
        n = max(counts["loss"], 1.0)
        return {"loss": sums["loss"] / n, **({self.correct_name: sums[self.correct_name] / n} if self.correct else {})}


class Task:
    """One kind of head. Subclasses set the class attributes and override what their family needs."""

    name: ClassVar[str]  # the registered name, transformers' pipeline task name
    model_class_name: ClassVar[str]  # the bertkit.modeling class it trains and runs
    architectures: ClassVar[tuple[str, ...]] = ()  # checkpoints whose config names one of these are this task's
    runs_on_any_encoder: ClassVar[bool] = False  # uses only the encoder: runs on every BERT checkpoint
    trainable: ClassVar[bool] = False  # `bertkit finetune` trains it
    default_max_length: ClassVar[int] = 128  # tokens per sequence (window) unless the config or caller says
    input_help: ClassVar[str] = '"text"'  # what one input is, for messages and `predict --input`
    dataset_task: ClassVar[str | None] = None  # the named datasets it reads are of this task (None: its own)
    main_metric: str | None = None  # the evaluation metric that picks the best checkpoint
    predict_defaults: ClassVar[dict] = {}  # `bertkit predict`'s parameters where they differ from the pipeline's

    def __init__(self, tokenizer, max_length: int | None = None):
        self.tokenizer = tokenizer
        self.max_length = max_length or self.default_max_length

    # ---- construction and what goes into config.json -----------------------------------------------------

    @classmethod
    def for_training(cls, tokenizer, examples: Sequence, dataset=None, max_length: int | None = None,
                     **options) -> Task:
        """A task whose labels come from the training `examples` (or the named `dataset`'s label set)."""
        raise UserError(f"{cls.name} is not trained by `bertkit finetune`")

    @classmethod
    def from_config(cls, tokenizer, config, max_length: int | None = None, **options) -> Task:
        """The task a checkpoint was fine-tuned for, with the labels and settings its config saved."""
        return cls(tokenizer, cls.window(config, max_length))

    @classmethod
    def window(cls, config, max_length: int | None = None) -> int:
        """Tokens per sequence: the given, else the saved, else the task's default, but never more than the
        model has positions for (a longer input is truncated or windowed, not an error deep in the model)."""
        return min(max_length or config.extra.get("max_seq_length") or cls.default_max_length,
                   config.max_position_embeddings)

    def config_fields(self) -> dict:
        """BertConfig fields the head is built with (labels, problem type)."""
        return {}

    def config_extra(self) -> dict:
        """Settings saved beside them in config.json so `from_config` rebuilds this task as it was trained."""
        return {"finetuning_task": self.name, "max_seq_length": self.max_length}

    @property
    def model_class(self):
        import bertkit.modeling

        return getattr(bertkit.modeling, self.model_class_name)

    # ---- data and training -------------------------------------------------------------------------------

    @classmethod
    def read(cls, path: str, data: DataArgs) -> list:
        """The labelled examples in a file."""
        raise UserError(f"{cls.name} reads no training or evaluation files")

    def features(self, examples: Sequence, train: bool = True, skip_bad_rows: bool = False):
        raise NotImplementedError

    def collate(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        from bertkit.tasks.common import pad_batch

        return pad_batch(rows, pad_id=self.tokenizer.pad_token_id)

    @property
    def objective(self) -> HeadLoss:
        raise UserError(f"{self.name} has no training objective")

    def evaluate(self, model, examples: Sequence, features=None, batch_size: int = 64) -> dict[str, float]:
        raise NotImplementedError

    # ---- prediction (the pipeline) -----------------------------------------------------------------------

    def call_inputs(self, inputs, params: dict) -> tuple[list, bool]:
        """(inputs as a list, whether one input was given) from a pipeline call's arguments."""
        if inputs is None:
            raise UserError(f"{self.name}: give an input ({self.input_help}) or a list of them")
        single = isinstance(inputs, (str, dict))
        return ([inputs] if single else list(inputs)), single

    def example(self, value, where: str):
        """One user input (a string, or a dict of the task's fields) as the task's example; `where` names it.
        By default a text, or {"text": ...}."""
        if isinstance(value, dict) and "text" in value:
            value = value["text"]
        if not isinstance(value, str):
            raise UserError(f"{where}: {self.name} takes a text (or {{\"text\": ...}}), got {value!r:.80}")
        return value

    def predict(self, model, examples: Sequence, batch_size: int = 64, **params) -> list:
        """One output per example, in input order, shaped as transformers' pipeline returns it. A task's own
        `predict` names its pipeline parameters as keywords after these three."""
        raise NotImplementedError

    def check_params(self, params: dict) -> None:
        """A pipeline parameter the task does not take is a mistake worth naming, not something to ignore."""
        known = list(inspect.signature(self.predict).parameters)[3:]  # after model, examples, batch_size
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise UserError(f"{self.name}: unknown parameter {unknown[0]!r}; it takes {', '.join(known) or 'none'}")

    def shape_output(self, results: list, single: bool, params: dict, inputs=None):
        """The call's return value from its per-input `results` (`inputs`: the call's first argument)."""
        return results[0] if single else results

