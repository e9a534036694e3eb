"""`bertkit.pipeline(task, model=DIR)`: predictions from a fine-tuned checkpoint on plain Python inputs."""

from __future__ import annotations

from collections.abc import Sequence

from bertkit.errors import UserError


class Pipeline:
    """Callable on one input or a list; returns one result (a dict) per input, in input order.

    text-classification: "text" or {"text", "text_pair"} -> {"label", "score"} (+ "scores" with all_scores=True);
    token-classification: "text" -> {"entities": [{"type", "text", "start", "end"}]};
    question-answering: {"question", "context"} -> {"answer", "start", "end", "score"}.

    `backend="onnx"` runs the model under ONNX Runtime; `int8=True` runs it with int8 Linear weights (either
    backend, CPU)."""

    def __init__(self, model_dir: str, task: str | None = None, batch_size: int = 64, device: str | None = None,
                 backend: str = "torch", int8: bool = False):
        from bertkit.finetune import load_trained

        if (backend != "torch" or int8) and device not in (None, "cpu"):
            raise UserError(f"backend={backend!r}, int8={int8}: CPU only; device={device!r} needs backend='torch'")
        self.task, self.model, self.tokenizer = load_trained(model_dir, backend=backend, int8=int8)
        if task is not None and task != self.task.name:
            raise UserError(f"{model_dir} is a {self.task.name} model, not {task}")
        if device:
            self.model.to(device)
        self.model.eval()
        self.batch_size = batch_size

    def __call__(self, inputs, all_scores: bool = False):
        single = isinstance(inputs, (str, dict))
        rows = [inputs] if single else list(inputs)
        if self.task.name == "text-classification":
            results = self.task.predict(self.model, _text_examples(rows), self.batch_size, all_scores=all_scores)
        else:
            results = self.task.predict(self.model, rows, self.batch_size)
        return results[0] if single else results


def _text_examples(rows: Sequence) -> list:
    from bertkit.tasks.examples import TextExample

    out = []
    for i, row in enumerate(rows):
        if isinstance(row, str):
            out.append(TextExample(row, None, None, f"input {i + 1}"))
        elif isinstance(row, dict) and "text" in row:
            out.append(TextExample(row["text"], row.get("text_pair"), None, f"input {i + 1}"))
        else:
            raise UserError(f"input {i + 1}: expected a text or {{'text': ..., 'text_pair': ...}}, got {row!r:.80}")
    return out


def pipeline(task: str | None = None, model: str = "", **kwargs) -> Pipeline:
    if not model:
        raise UserError("pipeline(task, model=DIR): give a fine-tuned checkpoint directory")
    return Pipeline(model, task, **kwargs)
