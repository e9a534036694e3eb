"""`bertkit finetune` / `evaluate` as Python functions: labelled data -> a task head on a pretrained BERT, with the
same training loop as pretraining and the task's standard metrics. Tasks come from the registry."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import torch

from bertkit.checkpoint import DEFAULT_MODEL
from bertkit.errors import UserError
from bertkit.tasks import DataArgs, get_task, task_names
from bertkit.training import Trainer, TrainingArgs
from bertkit.training.distributed import setup, teardown

logger = logging.getLogger("bertkit")


def load_split(task: str | None, data: DataArgs, split: str):
    """(task name, examples, dataset split or None) for `split` ("train" or "dev") of `data.dataset` or the
    `data.train`/`data.dev` file; examples None when there is no such file."""
    if data.dataset:
        from bertkit.tasks.datasets import load_dataset

        ds = load_dataset(data.dataset, split, data_dir=data.data_dir, skip_bad_rows=data.skip_bad_rows)
        if task is None:
            return ds.task, ds.examples, ds
        expected = get_task(task).dataset_task or task
        if expected != ds.task:
            raise UserError(f"--dataset {data.dataset} is a {ds.task} dataset, not {task}")
        return task, ds.examples, ds
    path = data.train if split == "train" else data.dev
    if path is None:
        return task, None, None
    if task is None:
        raise UserError(f"--task is needed with --train/--dev files ({', '.join(task_names(trainable_only=True))})")
    return task, get_task(task).read(path, data), None


def subsample(examples, n: int | None, seed: int):
    if n is None or n >= len(examples):
        return examples
    return random.Random(seed).sample(list(examples), n)


def carve_validation(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, validation): a seeded `fraction` of the training examples held out for model selection."""
    if not 0 < fraction < 1:
        raise UserError(f"--validation-fraction {fraction}: expected a number between 0 and 1")
    n = max(1, round(fraction * len(examples)))
    if n >= len(examples):
        raise UserError(f"--validation-fraction {fraction}: {len(examples)} training examples are too few to carve "
                        "a validation split from")
    held = set(random.Random(seed + 7919).sample(range(len(examples)), n))
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])


def finetune(out: str | Path, model: str = DEFAULT_MODEL, task: str | None = None, *, dataset: str | None = None,
             train: str | None = None, dev: str | None = None, data_dir: str | None = None,
             text_column: str | None = None, pair_column: str | None = None, label_column: str | None = None,
             skip_bad_rows: bool = False, epochs: float | None = None, max_steps: int | None = None,
             max_train_examples: int | None = None, max_eval_examples: int | None = None,
             seq_len: int | None = None, doc_stride: int | None = None, word_splitter: str | None = None,
             resume: str | None = None, validation_fraction: float | None = None,
             lr: float = 5e-5, batch_size: int = 32, **training) -> dict:
    """Fine-tune `model` for `task` (implied by `dataset`) on `dataset`'s train split or the `train` file, and
    evaluate on the dev split or `dev` file. `out` gets the final model; with `validation_fraction`, that share of
    the training examples is held out instead and `out` gets the model with the best main metric on it (the dev
    set is never used to choose: it reports the kept model).

    `seq_len` defaults to the task's (384 for question answering, else 128), `doc_stride` to 128; `epochs`
    to 3 unless `max_steps` is given; `word_splitter` (token classification) is how `predict` splits raw text
    into words: "treebank" (the default, as CoNLL) or "bert" (BERT's pre-tokenizer). Other keywords are the
    training loop's settings (`TrainingArgs`: `max_time`, `warmup`, `seed`, `eval_every`, `save_every`,
    `precision`, `progress`, ...). Returns the loop's summary: `step`, `eval` (dev metrics of the kept model),
    `validation` and `best` (with `validation_fraction`), `main_metric`, `out_dir`, ...
    """
    from bertkit.tokenization import BertTokenizer

    data = DataArgs(train, dev, dataset, data_dir, text_column, pair_column, label_column, skip_bad_rows)
    if max_steps is None and epochs is None:
        epochs = 3.0
    out = Path(out)
    args = TrainingArgs(out_dir=out, max_steps=max_steps or 1, epochs=None if max_steps else epochs, lr=lr,
                        batch_size=batch_size, **training)
    dist, device = setup()
    try:
        task_name, train_examples, info = load_split(task, data, "train")
        if train_examples is None:
            raise UserError("give --train FILE (and --dev FILE) or --dataset NAME")
        task_class = get_task(task_name)
        if not task_class.trainable:
            raise UserError(f"{task_name} is not fine-tuned by `bertkit finetune`; trainable tasks: "
                            f"{', '.join(task_names(trainable_only=True))}")
        _, dev_examples, _ = load_split(task_name, data, "dev")
        train_examples = subsample(train_examples, max_train_examples, args.seed)
        validation_examples = None
        if validation_fraction:
            train_examples, validation_examples = carve_validation(list(train_examples), validation_fraction,
                                                                   args.seed)
            validation_examples = subsample(validation_examples, max_eval_examples, args.seed)
        if dev_examples is not None:
            dev_examples = subsample(dev_examples, max_eval_examples, args.seed)
        tokenizer = BertTokenizer.from_pretrained(model)
        the_task = task_class.for_training(tokenizer, train_examples, info, max_length=seq_len, doc_stride=doc_stride,
                                           word_splitter=word_splitter)
        train_features = the_task.features(train_examples, skip_bad_rows=skip_bad_rows)
        dev_features = the_task.features(dev_examples, skip_bad_rows=skip_bad_rows) if dev_examples else None
        validation_features = the_task.features(validation_examples, skip_bad_rows=skip_bad_rows) \
            if validation_examples else None
        if dist.is_main:
            logger.info("%s: %d training features, %d validation examples, %d dev examples", task_name,
                        len(train_features), len(validation_examples or []), len(dev_examples or []))
        torch.manual_seed(args.seed)  # the new head's initialisation
        net = the_task.model_class.from_pretrained(model, ignore_mismatched_sizes=True, **the_task.config_fields())
        net.config.extra.update(the_task.config_extra())
        def evaluator(examples, features):
            return lambda m: the_task.evaluate(m, examples, features, batch_size=2 * args.batch_size)

        # During training: the validation split when there is one (it chooses the kept model), else dev (curves only).
        evaluate = None
        if validation_examples:
            evaluate = evaluator(validation_examples, validation_features)
        elif dev_examples:
            evaluate = evaluator(dev_examples, dev_features)
        trainer = Trainer(
            net, train_features, lambda rows, idx, epoch: the_task.collate(rows), the_task.objective, args, dist,
            device, evaluate=evaluate, save_extra=tokenizer.save_pretrained,
            best_metric=the_task.main_metric if validation_examples else None,
            lengths=[len(f["input_ids"]) for f in train_features],
        )
        trainer.start_or_resume(resume)
        result = trainer.train()
        result["selected_by"] = f"validation ({validation_fraction:g} of train)" if validation_examples else "final"
        if validation_examples:
            result["validation"] = result["eval"]
            result["eval"] = None
            if dev_examples and dist.is_main:  # the kept (best) model on dev
                kept = the_task.model_class.from_pretrained(out).to(device).eval()
                with torch.no_grad():
                    result["eval"] = evaluator(dev_examples, dev_features)(kept)
        return {**result, "main_metric": the_task.main_metric, "task": task_name, "out_dir": str(out)}
    finally:
        teardown()


def evaluate(model: str, task: str | None = None, *, dataset: str | None = None, data: str | None = None,
             split: str = "dev",
             data_dir: str | None = None, text_column: str | None = None, pair_column: str | None = None,
             label_column: str | None = None, skip_bad_rows: bool = False, batch_size: int = 64,
             max_examples: int | None = None, backend: str = "torch", int8: bool = False) -> dict[str, float]:
    """The task's metrics of `model` on `dataset`'s `split` ("dev", or "test" where the dataset has one) or the
    labelled `data` file (percent)."""
    from bertkit.inference.pipeline import load

    if not dataset and data is None:
        raise UserError("give --data FILE or --dataset NAME")
    the_task, net = load(model, task, backend=backend, int8=int8)
    source = DataArgs(None, data, dataset, data_dir, text_column, pair_column, label_column, skip_bad_rows)
    _, examples, _ = load_split(the_task.name, source, split)
    examples = subsample(examples, max_examples, 0)
    features = the_task.features(examples, skip_bad_rows=skip_bad_rows) if the_task.trainable else None
    return the_task.evaluate(net, examples, features, batch_size)
