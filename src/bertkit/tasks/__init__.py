"""The task registry: every head bertkit trains, evaluates, predicts and serves, by its transformers pipeline name.

    task_class = get_task("token-classification")            # a registered Task subclass
    task_class = task_for_config(config)                     # the task a checkpoint was made for
"""

from __future__ import annotations

from bertkit.errors import UserError
from bertkit.tasks.base import DataArgs, Task

_REGISTRY: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    _REGISTRY[cls.name] = cls
    return cls


def task_names(trainable_only: bool = False) -> list[str]:
    return [name for name, cls in _REGISTRY.items() if cls.trainable or not trainable_only]


def get_task(name: str) -> type[Task]:
    if name not in _REGISTRY:
        raise UserError(f"unknown task {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def task_for_config(config, requested: str | None = None, where: str = "the model") -> type[Task]:
    """The task to run a checkpoint as: `requested` when the checkpoint can serve it, else the one it was
    fine-tuned for (`finetuning_task` in its config), else the one its architecture implies."""
    arch = (config.architectures or ["BertModel"])[0]
    if requested is not None:
        cls = get_task(requested)
        if cls.runs_on_any_encoder or arch in cls.architectures:
            return cls
        raise UserError(f"{where} is a {arch} checkpoint, which cannot run {requested} "
                        f"(that needs {' or '.join(cls.architectures)})")
    saved = config.extra.get("finetuning_task")
    if saved in _REGISTRY and arch in _REGISTRY[saved].architectures:
        return _REGISTRY[saved]
    for cls in _REGISTRY.values():
        if arch in cls.architectures:
            return cls
    raise UserError(f"{where}: no task runs architecture {arch}; known tasks: {', '.join(_REGISTRY)}")


# Importing the families registers them, in this order (the first that claims an architecture is its default).
from bertkit.tasks import classification, token_classification, question_answering, fill_mask, embeddings  # noqa: E402,F401,I001

__all__ = ["DataArgs", "Task", "register", "get_task", "task_for_config", "task_names"]
