"""What every task shares: tokenized features, padding a batch of them, and running a model over them by length."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from bertkit.settings import autocast_dtype


def length_sorted_batches(
    lengths: Sequence[int], batch_size: int = 32, max_tokens: int | None = None,
    max_padding: float | None = None, min_rows: int = 8,
) -> Iterator[list[int]]:
    """Yield lists of input indices, longest first, each at most `batch_size` items and, when `max_tokens` is set,
    at most `max_tokens` padded tokens (items x longest length). With `max_padding`, a batch of at least `min_rows`
    also ends before a row that would make more than that share of its positions padding (the server's batches
    mix lengths from many requests). Every index appears exactly once; callers put the results back in order."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    real = 0
    for i in order:
        longest = lengths[batch[0]] if batch else lengths[i]  # sorted descending: the first is the longest
        too_many_tokens = max_tokens is not None and (len(batch) + 1) * longest > max_tokens
        too_much_padding = max_padding is not None and len(batch) >= min_rows and \
            1 - (real + lengths[i]) / ((len(batch) + 1) * longest) > max_padding
        if batch and (len(batch) == batch_size or too_many_tokens or too_much_padding):
            yield batch
            batch, real = [], 0
        batch.append(i)
        real += lengths[i]
    if batch:
        yield batch


def windows_by_example(example_index: Sequence[int], num_examples: int) -> list[list[int]]:
    """For each of `num_examples` examples, the indices of its features in order (a long input is several
    windows); `example_index[i]` is feature i's example. An example with no window gets an empty list."""
    windows: list[list[int]] = [[] for _ in range(num_examples)]
    for i, example in enumerate(example_index):
        windows[example].append(i)
    return windows


def pad_batch(rows: Sequence[dict], token_labels: bool = False, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Rows of python lists/numbers -> tensors padded to the longest row, with an attention_mask.

    `labels` are per token when `token_labels` (padded with -100), else one value or vector per row;
    `start_positions`/`end_positions` are one index per row."""
    longest = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    types = torch.zeros((len(rows), longest), dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.as_tensor(r["input_ids"])
        types[i, :n] = torch.as_tensor(r["token_type_ids"])
        mask[i, :n] = 1
    batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    if "labels" in rows[0] and token_labels:
        labels = torch.full((len(rows), longest), -100, dtype=torch.long)  # (B, L)
        for i, r in enumerate(rows):
            labels[i, : len(r["labels"])] = torch.as_tensor(r["labels"])
        batch["labels"] = labels
    elif "labels" in rows[0]:
        batch["labels"] = torch.as_tensor([r["labels"] for r in rows])  # (B,) ids or floats, (B, C) multi-hot
    for key in ("start_positions", "end_positions"):
        if key in rows[0]:
            batch[key] = torch.as_tensor([r[key] for r in rows])
    return batch


def logits_of(model, inputs: dict) -> torch.Tensor:
    """The default forward of `run_model`: the head's logits."""
    return model(**inputs).logits


@torch.inference_mode()
def run_model(
    model,
    features: Sequence[dict],
    collate: Callable[[Sequence[dict]], dict],
    batch_size: int = 64,
    max_tokens: int | None = 16384,
    per_token: bool = False,
    forward: Callable = logits_of,
) -> list:
    """Run `model` over `features` batched by length (little padding); returns per-feature outputs in input order.

    `forward(model, inputs)` runs one padded batch and returns what to keep: a (B, ...) tensor, a tuple of them, or
    a list of B per-row tensors; the server batches rows of requests whose forwards are equal. With `per_token` each is (B, L, ...) and a row comes back trimmed to its own length.

    A model that batches across callers (the server's, `serving.batcher`) has `run_batched`: the features go to it
    and it forms the batches, with requests from other clients, by the same rule."""
    features = [features[i] for i in range(len(features))]  # QAFeatures and other row views become dicts
    if hasattr(model, "run_batched"):
        return model.run_batched(features, collate, forward, per_token)
    model.eval()
    results: list = [None] * len(features)
    lengths = [len(f["input_ids"]) for f in features]
    for idx in length_sorted_batches(lengths, batch_size, max_tokens):
        for i, result in zip(idx, run_batch(model, [features[i] for i in idx], collate, forward, per_token)):
            results[i] = result
    return results


@torch.inference_mode()
def run_batch(model, rows: Sequence[dict], collate: Callable, forward: Callable = logits_of,
              per_token: bool = False) -> list:
    """One forward pass over `rows` (padded together by `collate`): one result per row, as `run_model` returns."""
    batch = collate(rows)
    device = model.device
    inputs = {k: batch[k].to(device) for k in ("input_ids", "token_type_ids", "attention_mask")}
    amp_dtype = autocast_dtype("auto", device)
    # precision "auto", as in training: bf16 (else fp16) autocast on CUDA, where SDPA takes its flash kernels
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        picked = forward(model, inputs)
    if isinstance(picked, list):  # per-row results already (e.g. logits at each row's [MASK]s)
        return [p.float().cpu() for p in picked]
    picked = tuple(p.float().cpu() for p in (picked if isinstance(picked, tuple) else (picked,)))  # one copy each
    results = []
    for row, r in enumerate(rows):
        parts = [p[row, : len(r["input_ids"])] if per_token else p[row] for p in picked]
        results.append(parts[0] if len(parts) == 1 else tuple(parts))
    return results
