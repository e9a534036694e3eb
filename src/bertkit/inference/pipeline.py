"""`bertkit.pipeline(task, model=DIR)`: any registered task on plain Python inputs, shaped as transformers' pipelines.

    classify = bertkit.pipeline("text-classification", model="runs/sst2")
    classify("I love this movie!")                  # [{"label": "positive", "score": 0.99...}]
    ner = bertkit.pipeline(model="runs/conll", aggregation_strategy="simple")
    ner("Peter Blackburn lives in Brussels.")       # [{"entity_group": "PER", "score": ..., "word": ..., ...}]

The task comes from the checkpoint's config (`finetuning_task`, else its architecture) unless given; keyword
arguments that are not loading options become the call's defaults, as in transformers.
"""

from __future__ import annotations

import os

import torch

from bertkit.errors import UserError


def load(model: str | os.PathLike, task: str | None = None, backend: str = "torch", int8: bool = False,
         device: str | torch.device | None = None, **task_options):
    """(task, model) for a checkpoint directory or bundled name: the registered task built from its config and
    the model it runs, on `device`; `backend="onnx"` runs it under ONNX Runtime (exported once, see
    `inference.onnx.onnx_for`), `int8` with int8 Linear weights (either backend, CPU)."""
    check_backend(backend, int8, device)
    directory, config, the_task = load_task(model, task, **task_options)
    return the_task, load_model(the_task, directory, config, backend, int8, device)


def check_backend(backend: str, int8: bool, device) -> None:
    if backend not in ("torch", "onnx"):
        raise UserError(f"backend={backend!r}: expected torch or onnx")
    if (backend != "torch" or int8) and device not in (None, "cpu"):
        raise UserError(f"backend={backend!r}, int8={int8}: CPU only; device={device!r} needs backend='torch'")


def load_task(model: str | os.PathLike, task: str | None = None, **task_options):
    """(directory, config, task) of a checkpoint: everything but the weights (a tokenizer and a config read)."""
    from bertkit.checkpoint import resolve_model_dir
    from bertkit.config import BertConfig
    from bertkit.tasks import task_for_config
    from bertkit.tokenization import BertTokenizer

    directory = resolve_model_dir(model)
    config = BertConfig.from_pretrained(directory)
    task_class = task_for_config(config, task, where=str(model))
    return directory, config, task_class.from_config(BertTokenizer.from_pretrained(directory), config, **task_options)


def load_model(the_task, directory, config, backend: str = "torch", int8: bool = False, device=None):
    """The model `the_task` runs, from `directory` (see `load`)."""
    check_backend(backend, int8, device)
    if backend == "onnx":
        from bertkit.inference.onnx import OnnxModel, onnx_for

        arch = (config.architectures or ["BertModel"])[0]
        if arch != the_task.model_class_name:
            raise UserError(f"backend='onnx' runs a checkpoint as its own architecture ({arch}); "
                            f"{the_task.name} needs {the_task.model_class_name}")
        return OnnxModel(onnx_for(directory, int8=int8))
    net = the_task.model_class.from_pretrained(directory, config=config)
    if int8:
        from bertkit.inference.onnx import quantize_int8

        net = quantize_int8(net)
    elif device is not None:
        net.to(device)
    return net.eval()


class Pipeline:
    """A task and its model; called on one input or a list, it returns what transformers' pipeline of that task
    returns (one result for one input, a list of results for a list), in input order."""

    def __init__(self, task, model, batch_size: int = 64, **defaults):
        self.task, self.model, self.batch_size, self.defaults = task, model, batch_size, defaults
        self.tokenizer = task.tokenizer

    def __call__(self, inputs=None, **params):
        params = {**self.defaults, **params}
        rows, single = self.task.call_inputs(inputs, params)
        results = self.predict([(f"input {i}", row) for i, row in enumerate(rows, 1)], params)
        return self.task.shape_output(results, single, params, inputs)

    def predict(self, rows: list[tuple[str, object]], params: dict) -> list:
        """One result per (where, input) row, in order; `where` names the row in an error ("input 2",
        "file.jsonl:7"). Unknown parameters are an error before any work."""
        self.task.check_params(params)
        examples = [self.task.example(row, where) for where, row in rows]
        return self.task.predict(self.model, examples, self.batch_size, **params) if examples else []


LOADING_OPTIONS = ("backend", "int8", "device")


def pipeline(task: str | None = None, model: str | os.PathLike | None = None, batch_size: int = 64,
             **kwargs) -> Pipeline:
    """transformers' `pipeline(task, model=...)` for bertkit checkpoints. `backend`, `int8` and `device` choose
    how the model runs; `max_length` (and, for question answering, `doc_stride`) override the saved settings;
    every other keyword is a default of each call (`top_k`, `aggregation_strategy`, `word_splitter`, ...)."""
    if not model:
        raise UserError("pipeline(task, model=DIR): give a checkpoint directory or a bundled model name")
    loading = {k: kwargs.pop(k) for k in LOADING_OPTIONS if k in kwargs}
    options = {k: kwargs.pop(k) for k in ("max_length", "doc_stride") if k in kwargs}
    the_task, net = load(model, task, **loading, **options)
    return Pipeline(the_task, net, batch_size, **kwargs)
