"""Dynamic batching: one batcher per served model, one inference worker thread per batcher.

A request runs its task's pipeline in a thread of its own (tokenizing and decoding off the event loop). When the
task's `run_model` reaches the model, the request's features go to the batcher instead (`BatchedModel`); the
worker takes waiting requests in arrival order up to a token budget, sorts their rows by length, runs them in
as few padded forwards as the budget allows, and hands each request its rows' results.

Admission is one rule for single and batched requests alike: the queue holds at most `max_queue_tokens` real
tokens; a request that would overflow it is refused with an estimate of when there will be room (`Overloaded`).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

from bertkit.tasks.common import length_sorted_batches, run_batch

TRIM_EVERY = 2.0  # seconds between returns of freed heap memory to the system


def _malloc_trim():
    """glibc's malloc_trim(0), or None elsewhere. Batches of every shape leave freed memory in the heap that glibc
    keeps (its mmap threshold rises with the first large frees), so without it RSS climbs for minutes under load."""
    try:
        import ctypes

        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


class Overloaded(Exception):
    """The queue is full: come back in `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Draining(Exception):
    """The server is stopping: it finishes what it admitted and takes nothing new."""


class Cancelled(Exception):
    """The request's client went away; its rows were dropped."""


@dataclass
class Job:
    """One request's rows for one `run_model` call, and where its results go."""

    rows: list[dict]
    collate: object
    forward: object
    per_token: bool
    cancel: threading.Event
    tokens: int
    enqueued: float = field(default_factory=time.perf_counter)
    started: float | None = None
    finished: float | None = None
    results: list = field(default_factory=list)
    remaining: int = 0
    future: Future = field(default_factory=Future)

    def same_kind(self, other: Job) -> bool:
        """Rows of two jobs share a forward pass when they are padded and run the same way."""
        return self.per_token == other.per_token and self.forward == other.forward and self.collate == other.collate


@dataclass
class BatchStats:
    """What one forward pass computed, for the metrics."""

    rows: int
    real_tokens: int
    padded_tokens: int
    seconds: float


class Batcher:
    """Queues requests' rows for one model and runs them in batches on one worker thread.

    `max_batch_tokens`: padded tokens (rows x longest row) in one forward; `max_batch_size`: rows in one forward
    (1 turns batching off: one input per forward); `max_wait_ms`: how long an idle worker waits for more work
    before it runs a batch that is not full; `max_queue_tokens`: real tokens waiting, beyond which `submit`
    refuses; `max_padding`: the taken rows, sorted by length, are split into forwards that are at most this share
    padding (requests bring every length; one padded forward over all of them computed half padding). `on_batch(BatchStats)` and `on_drop(rows)` report to the metrics."""

    def __init__(self, model, name: str = "model", max_batch_tokens: int = 4096, max_batch_size: int = 256,
                 max_wait_ms: float = 2.0, max_queue_tokens: int = 65536, max_padding: float = 0.2, on_batch=None,
                 on_drop=None):
        if max_batch_tokens < 1 or max_batch_size < 1 or max_queue_tokens < 1 or max_wait_ms < 0:
            raise ValueError("batch limits must be positive")
        self.model, self.name = model, name
        self.max_batch_tokens, self.max_batch_size = max_batch_tokens, max_batch_size
        self.max_wait, self.max_queue_tokens = max_wait_ms / 1000, max_queue_tokens
        self.max_padding = max_padding
        self.on_batch, self.on_drop = on_batch or (lambda stats: None), on_drop or (lambda rows: None)
        self.queue: deque[Job] = deque()
        self.queued_tokens = 0  # real tokens of the jobs waiting (not those being run)
        self.tokens_per_second: float | None = None  # measured by the worker, for Retry-After
        self.closing = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._work, name=f"batcher-{name}", daemon=True)
        self.thread.start()

    # ---- the request side ----------------------------------------------------------------------------------

    def submit(self, rows: list[dict], collate, forward, per_token: bool, cancel: threading.Event) -> Job:
        """Queue one request's rows; the job's future gets their results in order. Raises `Overloaded` when the
        queue cannot take them (a request alone in an empty queue is always taken) or `Draining`."""
        tokens = sum(len(r["input_ids"]) for r in rows)
        job = Job(rows, collate, forward, per_token, cancel, tokens, results=[None] * len(rows), remaining=len(rows))
        with self.cond:
            if self.closing:
                raise Draining(f"{self.name}: the server is stopping")
            if self.queue and self.queued_tokens + tokens > self.max_queue_tokens:
                raise Overloaded(f"{self.name}: the queue is full ({self.queued_tokens} tokens waiting, limit "
                                 f"{self.max_queue_tokens}); retry later", self.retry_after(tokens))
            self.queue.append(job)
            self.queued_tokens += tokens
            self.cond.notify()
        if not rows:
            self._finish(job)
        return job

    def retry_after(self, tokens: int = 0) -> int:
        """Whole seconds until the queue, at the measured throughput, has room for `tokens` more (at least 1)."""
        rate = self.tokens_per_second or 1000.0
        return max(1, math.ceil((self.queued_tokens + tokens - self.max_queue_tokens / 2) / rate))

    def close(self, timeout: float | None = None) -> None:
        """Stop taking work, run what is queued, and end the worker."""
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.thread.join(timeout)

    # ---- the worker ----------------------------------------------------------------------------------------

    def _take(self) -> list[Job]:
        """Wait for work; then, up to `max_wait` after the oldest job arrived unless the budget fills first, take
        jobs of one kind in arrival order up to the token budget (always at least one)."""
        with self.cond:
            while not self.queue and not self.closing:
                self.cond.wait()
            if not self.queue:
                return []
            deadline = self.queue[0].enqueued + self.max_wait
            while self.queued_tokens < self.max_batch_tokens and not self.closing and self.max_batch_size > 1:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self.cond.wait(left)
            jobs, tokens, rows = [self.queue.popleft()], 0, 0
            tokens, rows = jobs[0].tokens, len(jobs[0].rows)
            while self.queue and self.queue[0].same_kind(jobs[0]) and rows < self.max_batch_size \
                    and tokens + self.queue[0].tokens <= self.max_batch_tokens:
                job = self.queue.popleft()
                jobs.append(job)
                tokens, rows = tokens + job.tokens, rows + len(job.rows)
            self.queued_tokens -= sum(j.tokens for j in jobs)
            return jobs

    def _work(self) -> None:
        trim, trimmed = _malloc_trim(), time.perf_counter()
        while True:
            jobs = self._take()
            if not jobs:
                return
            try:
                self._run(jobs)
            except BaseException as e:  # noqa: BLE001  (a model failure fails its requests, not the worker)
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(e)
            if trim is not None and time.perf_counter() - trimmed > TRIM_EVERY:
                trim()
                trimmed = time.perf_counter()

    def _run(self, jobs: list[Job]) -> None:
        now = time.perf_counter()
        live = []
        for job in jobs:
            job.started = now
            if job.cancel.is_set():
                self.on_drop(len(job.rows))
                job.future.set_exception(Cancelled("the client disconnected"))
            else:
                live.append(job)
        rows = [(job, i) for job in live for i in range(len(job.rows))]
        if not rows:
            return
        first = live[0]
        lengths = [len(job.rows[i]["input_ids"]) for job, i in rows]
        for idx in length_sorted_batches(lengths, self.max_batch_size, self.max_batch_tokens, self.max_padding):
            idx = [k for k in idx if not rows[k][0].cancel.is_set()]  # a client that left meanwhile
            if not idx:
                continue
            start = time.perf_counter()
            outputs = run_batch(self.model, [rows[k][0].rows[rows[k][1]] for k in idx], first.collate,
                                first.forward, first.per_token)
            seconds = time.perf_counter() - start
            real = sum(lengths[k] for k in idx)
            self.on_batch(BatchStats(len(idx), real, len(idx) * max(lengths[k] for k in idx), seconds))
            rate = real / max(seconds, 1e-6)
            self.tokens_per_second = rate if self.tokens_per_second is None else \
                0.8 * self.tokens_per_second + 0.2 * rate
            for k, out in zip(idx, outputs):
                job, i = rows[k]
                job.results[i] = out
                job.remaining -= 1
                if job.remaining == 0:
                    self._finish(job)
        for job in live:  # dropped part-way: its remaining rows were skipped
            if not job.future.done():
                self.on_drop(job.remaining)
                job.future.set_exception(Cancelled("the client disconnected"))

    def _finish(self, job: Job) -> None:
        job.finished = time.perf_counter()
        if job.started is None:
            job.started = job.finished
        job.future.set_result(job.results)


class BatchedModel:
    """What one request's pipeline runs: the model's attributes, but `run_model` hands its features to the
    batcher (see `tasks.common.run_model`) and waits for them. Records the request's queue and inference time."""

    def __init__(self, batcher: Batcher, cancel: threading.Event | None = None):
        self._batcher, self.cancel = batcher, cancel or threading.Event()
        self.created = time.perf_counter()
        self.submitted: float | None = None  # when the first features reached the batcher: tokenizing ended
        self.queue_seconds = self.inference_seconds = 0.0
        self.tokens = 0

    def __getattr__(self, name):  # config, device, ... of the real model
        return getattr(self._batcher.model, name)

    def eval(self) -> BatchedModel:
        return self

    def run_batched(self, rows: list[dict], collate, forward, per_token: bool) -> list:
        if self.submitted is None:
            self.submitted = time.perf_counter()
        job = self._batcher.submit(rows, collate, forward, per_token, self.cancel)
        results = job.future.result()
        self.queue_seconds += job.started - job.enqueued
        self.inference_seconds += job.finished - job.started
        self.tokens += job.tokens
        return results
