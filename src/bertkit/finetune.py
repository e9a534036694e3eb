"""`bertkit finetune` / `evaluate` / `predict`: labelled data -> a task head on a pretrained BERT, with the same
training loop as pretraining, the task's standard metrics, and predictions that print label names."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from bertkit.errors import UserError
from bertkit.training import Trainer, TrainingArgs
from bertkit.training.checkpointing import find_resume_checkpoint
from bertkit.training.distributed import setup, teardown

logger = logging.getLogger("bertkit")
TASKS = ("text-classification", "token-classification", "question-answering")
ARCHITECTURE_TASK = {
    "BertForSequenceClassification": "text-classification",
    "BertForTokenClassification": "token-classification",
    "BertForQuestionAnswering": "question-answering",
}


@dataclass
class DataArgs:
    train: str | None = None
    dev: str | None = None
    dataset: str | None = None
    data_dir: str | None = None
    text_column: str | None = None
    pair_column: str | None = None
    label_column: str | None = None
    skip_bad_rows: bool = False


@dataclass
class FinetuneArgs:
    task: str | None
    model: str
    out_dir: Path
    data: DataArgs
    training: TrainingArgs
    seq_len: int = 128
    doc_stride: int = 128  # question answering: overlap of context windows, in tokens
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    resume: str | None = None


# ---- data ---------------------------------------------------------------------------------------------------


def read_file(task: str, path: str, d: DataArgs):
    from bertkit.tasks import readers

    if task == "text-classification":
        return readers.read_text_examples(path, text_column=d.text_column, pair_column=d.pair_column,
                                          label_column=d.label_column, skip_bad_rows=d.skip_bad_rows)
    if task == "token-classification":
        return readers.read_token_examples(path, skip_bad_rows=d.skip_bad_rows)
    return readers.read_squad(path, skip_bad_rows=d.skip_bad_rows)


def load_split(task: str | None, d: DataArgs, split: str):
    """(task, examples, dataset info or None) for `split` ("train" or "dev") of --dataset or the --train/--dev file."""
    if d.dataset:
        from bertkit.tasks.datasets import load_dataset

        ds = load_dataset(d.dataset, split, data_dir=d.data_dir, skip_bad_rows=d.skip_bad_rows)
        if task and task != ds.task:
            raise UserError(f"--dataset {d.dataset} is a {ds.task} dataset, not {task}")
        return ds.task, ds.examples, ds
    path = d.train if split == "train" else d.dev
    if path is None:
        return task, None, None
    if task is None:
        raise UserError("--task is needed with --train/--dev files (text-classification, token-classification, "
                        "question-answering)")
    return task, read_file(task, path, d), None


def subsample(examples, n: int | None, seed: int):
    if n is None or n >= len(examples):
        return examples
    return random.Random(seed).sample(list(examples), n)


# ---- tasks --------------------------------------------------------------------------------------------------


def make_task(task: str, tokenizer, seq_len: int, doc_stride: int, train_examples=None, info=None, config=None):
    """The task object, its labels from the training data (or dataset) or, with `config`, from a trained model."""
    if task == "text-classification":
        from bertkit.tasks.classification import ClassificationTask, LabelSpace, infer_label_space

        if config is not None:
            space = LabelSpace.from_config(config)
        else:
            labels = info.labels if info is not None else None
            regression = info.is_regression if info is not None else None
            space = infer_label_space(train_examples, labels, regression)
        main = getattr(info, "main_metric", None)
        return ClassificationTask(tokenizer, seq_len, space, main_metric=main)
    if task == "token-classification":
        from bertkit.tasks.token_classification import TokenClassificationTask

        if config is not None:
            return TokenClassificationTask.from_config(tokenizer, seq_len, config)
        return TokenClassificationTask.from_examples(tokenizer, seq_len, train_examples, info)
    if task == "question-answering":
        from bertkit.tasks.question_answering import QuestionAnsweringTask

        language = getattr(info, "language", None) or (config.extra.get("language") if config is not None else None)
        return QuestionAnsweringTask(tokenizer, seq_len, doc_stride, language=language or "en")
    raise UserError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


def load_trained(model_dir: str, seq_len: int | None = None, doc_stride: int | None = None, backend: str = "torch",
                 int8: bool = False):
    """(task, model, tokenizer) of a fine-tuned checkpoint directory. `backend="onnx"` runs the model under ONNX
    Runtime (exported once, see `inference.onnx.onnx_for`); `int8` quantizes its Linear layers' weights."""
    from bertkit.config import BertConfig
    from bertkit.tokenization import BertTokenizer

    config = BertConfig.from_pretrained(model_dir)
    arch = (config.architectures or [None])[0]
    task_name = config.extra.get("finetuning_task") or ARCHITECTURE_TASK.get(arch)
    if task_name not in TASKS:
        raise UserError(f"{model_dir}: not a fine-tuned task model (architectures {config.architectures}); "
                        "fine-tune it first with `bertkit finetune`")
    tokenizer = BertTokenizer.from_pretrained(model_dir)
    # A checkpoint fine-tuned elsewhere (transformers) has no max_seq_length: 384 for QA (run_qa's), else 128.
    default = 384 if task_name == "question-answering" else 128
    seq_len = seq_len or config.extra.get("max_seq_length") or min(default, config.max_position_embeddings)
    doc_stride = min(doc_stride or config.extra.get("doc_stride", 128), seq_len // 2)  # windows must move forward
    task = make_task(task_name, tokenizer, seq_len, doc_stride, config=config)
    if backend == "onnx":
        from bertkit.inference.onnx import OnnxModel, onnx_for

        return task, OnnxModel(onnx_for(model_dir, int8=int8)), tokenizer
    if backend != "torch":
        raise UserError(f"--backend {backend}: expected torch or onnx")
    model = task.model_class.from_pretrained(model_dir, config=config)
    if int8:
        from bertkit.inference.onnx import quantize_int8

        model = quantize_int8(model)
    return task, model, tokenizer


# ---- fine-tuning --------------------------------------------------------------------------------------------


def run_finetune(a: FinetuneArgs) -> dict:
    from bertkit.tokenization import BertTokenizer

    dist, device = setup()
    try:
        task_name, train_examples, info = load_split(a.task, a.data, "train")
        if train_examples is None:
            raise UserError("give --train FILE (and --dev FILE) or --dataset NAME")
        _, dev_examples, _ = load_split(task_name, a.data, "dev")
        train_examples = subsample(train_examples, a.max_train_examples, a.training.seed)
        if dev_examples is not None:
            dev_examples = subsample(dev_examples, a.max_eval_examples, a.training.seed)
        tokenizer = BertTokenizer.from_pretrained(a.model)
        task = make_task(task_name, tokenizer, a.seq_len, a.doc_stride, train_examples, info)
        train_features = task.features(train_examples, skip_bad_rows=a.data.skip_bad_rows)
        dev_features = task.features(dev_examples, skip_bad_rows=a.data.skip_bad_rows) if dev_examples else None
        if dist.is_main:
            logger.info("%s: %d training features, %d dev examples", task_name, len(train_features),
                        len(dev_examples or []))
        torch.manual_seed(a.training.seed)  # the new head's initialisation
        model = task.model_class.from_pretrained(a.model, ignore_mismatched_sizes=True, **task.config_fields())
        model.config.extra.update(finetuning_task=task_name, max_seq_length=a.seq_len,
                                  language=getattr(info, "language", None) or "en")
        if task_name == "question-answering":
            model.config.extra["doc_stride"] = a.doc_stride  # predict windows contexts as training did
        evaluate = None
        if dev_examples:
            evaluate = lambda m: task.evaluate(m, dev_examples, dev_features, batch_size=2 * a.training.batch_size)
        a.training.out_dir = a.out_dir
        trainer = Trainer(
            model, train_features, lambda rows, idx, epoch: task.collate(rows), task.objective, a.training, dist,
            device, evaluate=evaluate, save_extra=tokenizer.save_pretrained,
            best_metric=task.main_metric if dev_examples else None,
            lengths=[len(f["input_ids"]) for f in train_features],
        )
        if a.resume:
            path = find_resume_checkpoint(a.resume, a.out_dir)
            if path is not None:
                trainer.resume_from(path)
        result = trainer.train()
        result["main_metric"] = task.main_metric
        return result
    finally:
        teardown()


def run_evaluate(model_dir: str, task_name: str | None, data: DataArgs, batch_size: int = 64,
                 max_examples: int | None = None, backend: str = "torch", int8: bool = False) -> dict[str, float]:
    task, model, _ = load_trained(model_dir, backend=backend, int8=int8)
    if task_name and task_name != task.name:
        raise UserError(f"--task {task_name}: {model_dir} is a {task.name} model")
    if not data.dataset and data.dev is None:
        raise UserError("give --data FILE or --dataset NAME")
    _, examples, _ = load_split(task.name, data, "dev")
    examples = subsample(examples, max_examples, 0)
    return task.evaluate(model, examples, task.features(examples, skip_bad_rows=data.skip_bad_rows), batch_size)
