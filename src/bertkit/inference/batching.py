"""Group inputs of similar length so a batch carries little padding; callers restore input order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence


def length_sorted_batches(
    lengths: Sequence[int], batch_size: int = 32, max_tokens: int | None = None
) -> Iterator[list[int]]:
    """Yield lists of input indices, longest first, each at most `batch_size` items and, when `max_tokens` is set,
    at most `max_tokens` padded tokens (items x longest length). Every index appears exactly once."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    for i in order:
        longest = lengths[batch[0]] if batch else lengths[i]  # sorted descending: the first is the longest
        too_many_tokens = max_tokens is not None and (len(batch) + 1) * longest > max_tokens
        if batch and (len(batch) == batch_size or too_many_tokens):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch
