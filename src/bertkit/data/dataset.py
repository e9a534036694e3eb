"""The pretraining dataset: instances built once into sharded memory-mapped arrays, then read from disk.

One build lives in `<cache root>/pretraining-<key>/`:

    manifest.json               settings, files (document id = position in this list), shards
    shard-00000.input_ids.npy   (T,) uint16, or uint32 past 65,536 tokens: [CLS] A [SEP] B [SEP] back to back
    shard-00000.word_start.npy  (T,) bool, the token begins a word (whole-word masking)
    shard-00000.offsets.npy     (N+1,) int64, instance j is input_ids[offsets[j]:offsets[j + 1]]
    shard-00000.b_start.npy     (N,) int32, position of B's first token: token_type_ids = position >= b_start
    shard-00000.label.npy       (N,) int8, next_sentence_label (-100 without a pair task)
    shard-00000.document.npy    (N,) int32, the document of A
    shard-00000.b_document.npy  (N,) int32, the document of B (A's own without a pair task)

The key is a sha256 of the files (absolute path, size, mtime), the tokenizer's JSON and every
setting, so changing any of them builds anew. A build is written to a temporary folder renamed
into place at the end: a crash leaves no half cache, and two builds at once cannot mix.
Documents stream through tokenization (one file per worker process, at most two files per worker
waiting) and instance making (`iter_instances`' bounded buffer), so memory does not grow with the
corpus. Instances are stored in corpus order: the training loop must shuffle them.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from bertkit.data.pretraining import (
    Instance,
    PretrainingSettings,
    SpecialTokens,
    TokenizedDocument,
    iter_instances,
    plain_tokenizer,
    tokenize_document,
)
from bertkit.data.text import DataError, iter_documents, list_files, read_document
from bertkit.settings import cache_dir as resolve_cache_dir
from bertkit.errors import UserError

FORMAT_VERSION = 1  # bump when the layout or the recipe changes, so old caches are not read
PARALLEL_MIN_BYTES = 64 << 20  # smaller corpora are tokenized in-process (see build_or_load)
INSTANCES_PER_SHARD = 1 << 16  # ~8M tokens at length 128: a shard is built in memory before it is written
_ARRAYS = ("input_ids", "word_start", "offsets", "b_start", "label", "document", "b_document")


def cache_key(files: Iterable[Path], tokenizer: Tokenizer, settings: PretrainingSettings) -> str:
    """sha256 of everything the instances depend on; a file counts by path, size and modification time."""
    try:
        jieba_version = version("jieba")  # its dictionary decides the Chinese words
    except PackageNotFoundError:
        jieba_version = None
    stats = [(str(p.resolve()), st.st_size, st.st_mtime_ns) for p in files for st in [p.stat()]]
    payload = {
        "format": FORMAT_VERSION,
        "files": stats,
        "tokenizer": tokenizer.to_str(),
        "settings": asdict(settings),
        "jieba": jieba_version,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def build_or_load(
    paths: str | Path | Iterable[str | Path],
    tokenizer: Tokenizer,
    cache_dir: str | Path | None = None,
    settings: PretrainingSettings = PretrainingSettings(),
    workers: int | None = None,
) -> PretrainingDataset:
    """The dataset of `paths` (files or folders), loaded from the cache or built into it first.

    `cache_dir` defaults to $BERTKIT_CACHE_DIR, else ~/.cache/bertkit. `workers` only changes the
    speed, never the instances; by default one per CPU (at most one per file) for corpora of 64 MiB
    or more, and none below: each worker process imports torch, ~2 s of CPU, which a small corpus
    does not win back (8 MB of English builds in 4 s in-process, 8 s with two workers on two CPUs).
    """
    settings.check()
    files = list_files(paths)
    tokenizer = plain_tokenizer(tokenizer)
    directory = resolve_cache_dir(cache_dir) / f"pretraining-{cache_key(files, tokenizer, settings)[:32]}"
    if not (directory / "manifest.json").is_file():
        if workers is None:
            large = sum(p.stat().st_size for p in files) >= PARALLEL_MIN_BYTES
            workers = min(os.cpu_count() or 1, len(files)) if large else 1
        _build(directory, files, tokenizer, settings, workers)
    return PretrainingDataset(directory)


def _build(
    directory: Path, files: list[Path], tokenizer: Tokenizer, settings: PretrainingSettings, workers: int
) -> None:
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        dtype = np.uint16 if tokenizer.get_vocab_size(with_added_tokens=True) <= 1 << 16 else np.uint32
        writer = _ShardWriter(tmp, SpecialTokens.from_tokenizer(tokenizer), dtype)
        documents = tokenized_documents(files, tokenizer, settings, workers)
        for instance in iter_instances(documents, settings, random.Random(settings.seed)):
            writer.add(instance)
        writer.flush()
        if not writer.shards:
            raise DataError(f"{len(files)} files gave no instances: every document is too short to cut into segments")
        manifest = {
            "format": FORMAT_VERSION,
            "settings": asdict(settings),
            "files": [str(p) for p in files],
            "shards": writer.shards,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if directory.exists() and not (directory / "manifest.json").is_file():
            shutil.rmtree(directory)  # left by something that was not a build: builds only rename finished folders
        try:
            tmp.rename(directory)
        except OSError:
            if not (directory / "manifest.json").is_file():
                raise
            shutil.rmtree(tmp)  # another process finished the same build first; its copy is as good
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def tokenized_documents(
    files: list[Path], tokenizer: Tokenizer, settings: PretrainingSettings, workers: int
) -> Iterator[TokenizedDocument]:
    """The documents of `files` in order, tokenized in `workers` processes, two files per worker in flight."""
    if workers <= 1 or len(files) <= 1:
        for index, document in enumerate(iter_documents(files, settings.utf8_errors)):
            yield tokenize_document(document, index, tokenizer, settings.chinese_words)
        return
    # spawn, not fork: the parent may run torch's and tokenizers' thread pools, which a fork breaks.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, _init_worker, (tokenizer.to_str(), settings)) as pool:
        pending: deque = deque()
        for job in enumerate(files):
            pending.append(pool.apply_async(_tokenize_file, (job,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


_worker: dict = {}  # each worker process's tokenizer and settings, set once by _init_worker


def _init_worker(tokenizer_json: str, settings: PretrainingSettings) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the processes are the parallelism; threads on top oversubscribe
    _worker.update(tokenizer=Tokenizer.from_str(tokenizer_json), settings=settings)


def _tokenize_file(job: tuple[int, Path]) -> TokenizedDocument:
    index, path = job
    settings = _worker["settings"]
    document = read_document(path, settings.utf8_errors)
    return tokenize_document(document, index, _worker["tokenizer"], settings.chinese_words)


class _ShardWriter:
    """Gathers instances as [CLS] A [SEP] B [SEP] and writes a shard every INSTANCES_PER_SHARD."""

    def __init__(self, directory: Path, specials: SpecialTokens, dtype: type):
        self.directory, self.specials, self.dtype = directory, specials, dtype
        self.shards: list[dict] = []  # manifest entries: name, instances, tokens
        self._clear()

    def _clear(self) -> None:
        self.input_ids: list[np.ndarray] = []  # one compact copy per instance, so no document stays referenced
        self.word_start: list[np.ndarray] = []
        self.b_start: list[int] = []
        self.label: list[int] = []
        self.document: list[int] = []
        self.b_document: list[int] = []

    def add(self, instance: Instance) -> None:
        ids, starts = [[self.specials.cls]], [[True]]
        for span in [instance.a] if instance.b is None else [instance.a, instance.b]:
            word_start = span.doc.word_start[span.start : span.end].copy()
            word_start[0] = True  # a segment truncated at its front may open with a ## piece
            ids += [span.doc.ids[span.start : span.end], [self.specials.sep]]
            starts += [word_start, [True]]
        self.input_ids.append(np.concatenate(ids).astype(self.dtype))
        self.word_start.append(np.concatenate(starts))
        self.b_start.append(len(instance.a) + 2)
        self.label.append(instance.label)
        self.document.append(instance.a.doc.index)
        self.b_document.append((instance.b or instance.a).doc.index)
        if len(self.input_ids) == INSTANCES_PER_SHARD:
            self.flush()

    def flush(self) -> None:
        if not self.input_ids:
            return
        name = f"shard-{len(self.shards):05d}"
        arrays = {
            "input_ids": np.concatenate(self.input_ids),
            "word_start": np.concatenate(self.word_start),
            "offsets": np.cumsum([0] + [len(x) for x in self.input_ids], dtype=np.int64),
            "b_start": np.array(self.b_start, np.int32),
            "label": np.array(self.label, np.int8),
            "document": np.array(self.document, np.int32),
            "b_document": np.array(self.b_document, np.int32),
        }
        for key, array in arrays.items():
            np.save(self.directory / f"{name}.{key}.npy", array)
        self.shards.append({"name": name, "instances": len(self.input_ids), "tokens": len(arrays["input_ids"])})
        self._clear()


class PretrainingDataset(torch.utils.data.Dataset):
    """The instances of one build, read from memory-mapped shards (a map-style torch Dataset).

    Item i is a dict: `input_ids`, `token_type_ids` (L,) int64, `word_start` (L,) bool,
    `next_sentence_label` (int, -100 without a pair task), `document` (id of A's file in
    `documents`) and `index` (position in the whole build, which seeds the item's masks).
    """

    def __init__(self, directory: str | Path, indices: np.ndarray | None = None):
        self.directory = Path(directory)
        self.manifest = json.loads((self.directory / "manifest.json").read_text())
        self.documents: list[str] = self.manifest["files"]
        self._shard_ends = np.cumsum([s["instances"] for s in self.manifest["shards"]])  # (shards,)
        self.indices = np.arange(self._shard_ends[-1]) if indices is None else indices  # (N,) into the build
        self._arrays: dict[int, dict[str, np.ndarray]] = {}  # shards opened in this process

    def __getstate__(self) -> dict:
        # DataLoader workers open their own memory maps; pickling them would copy the arrays.
        return {**self.__dict__, "_arrays": {}}

    def __len__(self) -> int:
        return len(self.indices)

    def _shard(self, k: int) -> dict[str, np.ndarray]:
        if k not in self._arrays:
            name = self.manifest["shards"][k]["name"]
            self._arrays[k] = {a: np.load(self.directory / f"{name}.{a}.npy", mmap_mode="r") for a in _ARRAYS}
        return self._arrays[k]

    def _column(self, array: str) -> np.ndarray:
        """One per-instance array over the whole build: (N_build,)."""
        return np.concatenate([self._shard(k)[array] for k in range(len(self._shard_ends))])

    def __getitem__(self, i: int) -> dict:
        index = int(self.indices[i])
        k = int(np.searchsorted(self._shard_ends, index, side="right"))
        j = index - (int(self._shard_ends[k - 1]) if k else 0)
        shard = self._shard(k)
        lo, hi = int(shard["offsets"][j]), int(shard["offsets"][j + 1])
        return {
            "input_ids": shard["input_ids"][lo:hi].astype(np.int64),  # (L,)
            "token_type_ids": (np.arange(hi - lo) >= shard["b_start"][j]).astype(np.int64),  # (L,)
            "word_start": np.array(shard["word_start"][lo:hi]),  # (L,)
            "next_sentence_label": int(shard["label"][j]),
            "document": int(shard["document"][j]),
            "index": index,
        }

    def split_heldout(self, docs: float | int, seed: int = 0) -> tuple[PretrainingDataset, PretrainingDataset]:
        """(train, heldout) by whole documents: a float is a share of the documents, an int a count.

        Held-out documents are drawn at random with `seed`. Heldout has the instances whose A
        comes from them; train has those with neither A nor a random B from them, so no held-out
        text is trained on.
        """
        n_docs = len(self.documents)
        count = round(docs * n_docs) if isinstance(docs, float) else docs
        if not 1 <= count < n_docs:
            raise UserError(
                f"split_heldout({docs}): holds out {count} of {n_docs} documents; it must be 1 to {n_docs - 1}"
            )
        held = np.zeros(n_docs, bool)
        held[np.random.default_rng(seed).permutation(n_docs)[:count]] = True
        a_held = held[self._column("document")[self.indices]]
        b_held = held[self._column("b_document")[self.indices]]
        train = PretrainingDataset(self.directory, self.indices[~a_held & ~b_held])
        heldout = PretrainingDataset(self.directory, self.indices[a_held])
        return train, heldout
