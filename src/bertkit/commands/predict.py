"""`bertkit predict` as a Python function: a task's pipeline over texts or a file, streamed in chunks so memory stays
bounded whatever the file's size, results as JSON lines in input order; under `torchrun` each process predicts its
share of the chunks and rank 0 merges the parts in input order."""

from __future__ import annotations

import csv
import itertools
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from bertkit.errors import UserError

CHUNK_ROWS = 2048  # rows read, predicted and written at a time (the pipeline sorts each chunk by length)


def _open_input(path: str | Path, mode: str = "r", **kwargs):
    """`open`, with a missing or unreadable --input as a one-line error."""
    try:
        return open(path, mode, **kwargs)
    except FileNotFoundError:
        raise UserError(f"--input {path}: no such file") from None
    except OSError as e:
        raise UserError(f"--input {path}: cannot read ({e.strerror})") from None


def read_rows(path: str | Path) -> Iterator[tuple[str, object]]:
    """("file:line", row) for each non-blank row of a prediction input: JSON lines (a `{` line, or .jsonl/.json),
    TSV/CSV with a header (.tsv/.csv: a dict per row by column name, empty cells left out), otherwise one text
    a line."""
    path = Path(path)
    suffix = path.suffix.lower()
    with _open_input(path, encoding="utf-8", newline="") as handle:
        try:
            if suffix in (".tsv", ".csv"):
                reader = csv.reader(handle, delimiter="\t" if suffix == ".tsv" else ",")
                header = next(reader, None)
                if not header:
                    raise UserError(f"{path}: empty file")
                header[0] = header[0].removeprefix("\ufeff")
                for row in reader:
                    where = f"{path}:{reader.line_num}"
                    if not any(cell.strip() for cell in row):
                        continue
                    if len(row) != len(header):
                        raise UserError(f"{where}: expected {len(header)} columns ({', '.join(header)}), got {len(row)}")
                    yield where, {k: v for k, v in zip(header, row) if v != ""}  # an empty cell: no value
                return
            for n, line in enumerate(handle, 1):
                line = line.rstrip("\r\n").removeprefix("\ufeff") if n == 1 else line.rstrip("\r\n")
                if not line.strip():
                    continue
                where = f"{path}:{n}"
                if line.lstrip().startswith("{") or suffix in (".jsonl", ".json"):
                    try:
                        yield where, json.loads(line)
                    except json.JSONDecodeError as e:
                        raise UserError(f"{where}: bad JSON ({e.msg})") from None
                else:
                    yield where, line
        except UnicodeDecodeError as e:
            raise UserError(f"--input {path}: not UTF-8 ({e.reason})") from None
        except csv.Error as e:
            raise UserError(f"{path}: {e}") from None


def count_rows(path: str | Path) -> int:
    """Lines in a file, read in blocks (for the progress bar's total)."""
    n, last = 0, b"\n"
    with _open_input(path, "rb") as f:
        while block := f.read(1 << 20):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def _chunks(rows: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def predict(model: str, texts: list | None = None, *, input: str | None = None, output: str | None = None,
            task: str | None = None, batch_size: int = 64, backend: str = "torch", int8: bool = False,
            progress: bool = True, chunk_rows: int = CHUNK_ROWS, **params) -> int:
    """Predict `texts` and/or the rows of the `input` file with `model`'s task, writing one JSON line per row
    (what the pipeline returns for it) to `output` (written whole or not at all) or stdout. `params` are the
    pipeline's (`top_k`, `aggregation_strategy`, ...). Returns the number of rows."""
    from tqdm.auto import tqdm

    from bertkit.inference.pipeline import pipeline
    from bertkit.training.distributed import barrier, setup, teardown

    if not texts and not input:
        raise UserError("predict: give TEXT arguments or --input FILE")
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if world > 1 and not output:
        raise UserError("predict under torchrun needs --output FILE (each process writes its part, rank 0 merges)")
    dist, device = setup()
    try:
        pipe = pipeline(task, model=model, batch_size=batch_size, backend=backend, int8=int8,
                        device=None if backend != "torch" or int8 else device)
        params = {**pipe.task.predict_defaults, **params}
        rows: Iterator = iter([(f"argument {i}", t) for i, t in enumerate(texts or [], 1)])
        total = len(texts or [])
        if input:
            rows = itertools.chain(rows, read_rows(input))
            total += count_rows(input)
        out_path = Path(output) if output else None
        part = _part(out_path, rank, world) if out_path else None
        sink = open(part, "w", encoding="utf-8") if part else sys.stdout
        bar = tqdm(total=total, unit="row", disable=not (progress and rank == 0 and out_path), dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 30, delay=2)  # a quick failure prints one line
        count = 0
        try:
            for k, chunk in enumerate(_chunks(rows, chunk_rows)):
                count += len(chunk)
                if k % world != rank:  # another process's chunk
                    continue
                for result in pipe.predict(chunk, params):
                    sink.write(json.dumps(result, ensure_ascii=False) + "\n")
                bar.update(len(chunk) * world)
            if part:
                sink.flush()
                os.fsync(sink.fileno())
        except BaseException:
            if part:  # a failed run leaves no partial output behind (and never touches an existing --output)
                sink.close()
                part.unlink(missing_ok=True)
            raise
        finally:
            bar.close()
            if part and not sink.closed:
                sink.close()
        barrier()
        if out_path and rank == 0:
            _merge(out_path, world, chunk_rows)
        barrier()
        return count
    finally:
        teardown()


def _part(out: Path, rank: int, world: int) -> Path:
    """Where process `rank` of `world` writes its share of `out` before the merge."""
    return out.with_name(f".{out.name}.part{rank}-of-{world}")


def _merge(out: Path, world: int, chunk_rows: int) -> None:
    """Interleave the processes' parts chunk by chunk (chunk k is in part k mod world) into `out`, atomically."""
    parts = [_part(out, r, world) for r in range(world)]
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    handles = [open(p, encoding="utf-8") for p in parts]
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            k = 0
            while True:
                lines = [line for _, line in zip(range(chunk_rows), handles[k % world])]
                if not lines:
                    break
                f.writelines(lines)
                k += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        for h in handles:
            h.close()
        for p in parts:
            p.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


__all__ = ["predict", "read_rows"]
