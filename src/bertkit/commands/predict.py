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
    a line. The rows come as the file is read, so memory stays bounded whatever its size.

    Lines end at "\\n" (a "\\r" before it is dropped), as `count_rows` counts them and the task readers read
    them; a leading BOM is dropped. A TSV is split at its tabs with no quoting, as `bertkit finetune` reads one
    (`readers.delimited_rows`); a CSV keeps CSV quoting, and a row that spans lines is named by its first line.
    Every problem (not UTF-8, bad JSON, a row of the wrong width, bad CSV quoting) is a one-line UserError naming
    the file and line."""
    from bertkit.tasks.readers import check_characters, parse_json

    path = Path(path)
    suffix = path.suffix.lower()
    with _open_input(path, "rb") as handle:
        lines = _decoded_lines(path, handle)
        if suffix in (".tsv", ".csv"):
            rows = _tsv_rows(lines) if suffix == ".tsv" else _csv_rows(path, (line for _, line in lines))
            _, header = next(rows, (0, None))
            if header is None:
                raise UserError(f"{path}: empty file")
            columns = ", ".join(map(repr, header))
            for n, row in rows:
                if not any(cell.strip() for cell in row):
                    continue
                where = f"{path}:{n}"
                if len(row) != len(header):
                    raise UserError(f"{where}: expected {len(header)} columns ({columns}), got {len(row)}")
                yield where, {k: v for k, v in zip(header, row) if v != ""}  # an empty cell: no value
            return
        for n, line in lines:
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            where = f"{path}:{n}"
            if line.lstrip().startswith("{") or suffix in (".jsonl", ".json"):
                row = parse_json(line, path, n)
                if "\\u" in line:  # only a \u escape can make a lone surrogate, which nothing downstream takes
                    check_characters(json.dumps(row, ensure_ascii=False), where, "the row")
                yield where, row
            else:
                yield where, line


def _decoded_lines(path: Path, handle) -> Iterator[tuple[int, str]]:
    """(1-based line number, line with its "\\n") of a file opened in binary, decoded from UTF-8 less a BOM."""
    for n, data in enumerate(handle, 1):
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{path}:{n}: not UTF-8 (byte 0x{data[e.start]:02x}); convert the file to UTF-8") from None
        yield n, line.removeprefix("\ufeff") if n == 1 else line


def _tsv_rows(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) of each non-empty line split at its tabs, as `readers.delimited_rows` splits a TSV."""
    for n, line in lines:
        line = line.removesuffix("\n").removesuffix("\r")
        if line:
            yield n, line.split("\t")


def _csv_rows(path: Path, lines: Iterator[str]) -> Iterator[tuple[int, list[str]]]:
    """(line where the row starts, cells) of each non-empty CSV row."""
    from bertkit.tasks.readers import csv_problem

    reader = csv.reader(lines)
    start = 1
    try:
        for row in reader:
            if row:
                yield start, row
            start = reader.line_num + 1
    except csv.Error as e:
        raise UserError(f"{path}:{start}: {csv_problem(e)}") from None


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
