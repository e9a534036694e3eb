"""Task data files to examples: TSV/CSV/JSON lines for text classification, CoNLL-style tags, SQuAD-style JSON.

Every reader names the file and line of a malformed row in a one-line `UserError`; with `skip_bad_rows`
it drops such rows instead and says how many in one warning, quoting the first error.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from bertkit.errors import UserError
from bertkit.tasks.examples import Answer, QAExample, TextExample, TokenExample

TEXT_COLUMNS = ("sentence", "text", "sentence1")  # the first of these in the header is the text
PAIR_COLUMNS = ("text_pair", "sentence2")
LABEL_COLUMNS = ("label", "score")
# A file without a header is read by its number of columns: (text, pair, label) indices.
NO_HEADER_COLUMNS = {1: (0, None, None), 2: (0, None, 1), 3: (0, 1, 2)}
JSON_LINES_SUFFIXES = (".jsonl", ".json")
_SPACES = re.compile(" +")

Row = TypeVar("Row")
Example = TypeVar("Example")


def read_text(path: str | Path) -> str:
    """A whole UTF-8 file less its BOM; missing, empty or not UTF-8 is an error naming the file (and line)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x}); convert the file to UTF-8") from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise UserError(f"{path}: empty file")
    return text


def numbered_lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, line) pairs. Splits on "\\n" only: str.splitlines would also split at U+2028,
    U+0085 or \\x1c, which can sit inside a sentence and would shift every later line number."""
    return [(n, line.removesuffix("\r")) for n, line in enumerate(text.split("\n"), start=1)]


def keep_good(rows: Sequence[Row], parse: Callable[[Row], Example], skip_bad_rows: bool, path, what: str = "rows"
              ) -> list[Example]:
    """`parse` each row. Its UserError stops the read, or with `skip_bad_rows` drops the row; the dropped rows are
    counted in one warning that quotes the first error."""
    examples, errors = [], []
    for row in rows:
        try:
            examples.append(parse(row))
        except UserError as e:
            if not skip_bad_rows:
                raise
            errors.append(str(e))
    if errors:
        warnings.warn(f"{path}: skipped {len(errors)} bad {what}; the first: {errors[0]}", stacklevel=3)
    return examples


# ---------------------------------------------------------------------------------------------------------------
# Text classification: TSV, CSV, JSON lines


def sniff_delimiter(path: str | Path, text: str) -> str:
    """Tab for .tsv, comma for .csv; otherwise comma if the first line has a comma and no tab, else tab."""
    suffix = Path(path).suffix.lower()
    if suffix in (".tsv", ".csv"):
        return "\t" if suffix == ".tsv" else ","
    first = text.split("\n", 1)[0]
    return "," if "," in first and "\t" not in first else "\t"


def delimited_rows(path: str | Path, text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """(line number where the row starts, fields) for each non-blank row.

    Quoting is off for tabs: GLUE's TSVs (STS-B, MRPC) hold text that starts with a quote and never closes it,
    which a CSV reader would run on into the next rows, so a tab-separated line is split at its tabs and nothing
    else (a stray \\r inside it stays text, and a line may be of any length). CSV files keep CSV quoting, so a
    field may span lines."""
    if delimiter == "\t":
        return [(line, s.split("\t")) for line, s in numbered_lines(text) if s]
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, quoting=csv.QUOTE_MINIMAL)
    rows, start = [], 1
    try:
        for fields in reader:
            if fields:
                rows.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as e:
        raise UserError(f"{path}:{start}: {csv_problem(e)}") from None
    return rows


def csv_problem(e: csv.Error) -> str:
    """csv's error in a user's words: its messages give advice about opening files in Python."""
    message = str(e)
    if message.startswith("new-line character seen in unquoted field"):
        return "a carriage return (\\r) inside an unquoted field; quote the field or end lines with \\n or \\r\\n"
    if message.startswith("field larger than field limit"):
        return (f"a field longer than {csv.field_size_limit()} characters: a quote (\") that is never closed "
                "runs on to the end of the file")
    return message


def column_index(path, header: list[str] | None, width: int, wanted: str | int | None, defaults: Sequence[str]
                 ) -> int | None:
    """The 0-based index of column `wanted` (a header name or an index); when None, of the first of `defaults` in
    the header, or None if there is none."""
    if wanted is None:
        return next((header.index(name) for name in defaults if header and name in header), None)
    if isinstance(wanted, int):
        if not -width <= wanted < width:
            raise UserError(f"{path}: no column {wanted}: the rows have {width} columns")
        return wanted % width
    if header is None:
        raise UserError(f"{path}: no header, so column {wanted!r} cannot be found by name; give its 0-based index")
    if wanted not in header:
        raise UserError(f"{path}: no column {wanted!r}; the columns are {', '.join(map(repr, header))}")
    return header.index(wanted)


def read_text_examples(path: str | Path, text_column: str | int | None = None, pair_column: str | int | None = None,
                       label_column: str | int | None = None, skip_bad_rows: bool = False,
                       delimiter: str | None = None, has_header: bool = True) -> list[TextExample]:
    """Rows of a TSV/CSV file (or objects of a .jsonl/.json JSON-lines file) as TextExamples, labels as strings.

    Columns are header names or 0-based indices. By default the text is the first of `sentence`, `text`,
    `sentence1` in the header, the pair the first of `text_pair`, `sentence2` (else none) and the label the
    first of `label`, `score` (else none). A file without a header is read by its width: one column is the
    text, two are text and label, three are text, pair and label. The delimiter is chosen by `sniff_delimiter`.
    Blank lines are skipped."""
    text = read_text(path)
    if delimiter is None and Path(path).suffix.lower() in JSON_LINES_SUFFIXES:
        return _read_json_lines(path, text, text_column, pair_column, label_column, skip_bad_rows)
    rows = delimited_rows(path, text, delimiter or sniff_delimiter(path, text))
    header = None
    if has_header:
        (_, header), rows = rows[0], rows[1:]
        if not rows:
            raise UserError(f"{path}: no rows after the header")
    elif (text_column, pair_column, label_column) == (None, None, None):
        if len(rows[0][1]) not in NO_HEADER_COLUMNS:
            raise UserError(f"{path}:{rows[0][0]}: {len(rows[0][1])} columns and no header: "
                            "choose text_column, pair_column and label_column by index")
        text_column, pair_column, label_column = NO_HEADER_COLUMNS[len(rows[0][1])]
    width = len(header) if header else len(rows[0][1])
    text_i = column_index(path, header, width, text_column, TEXT_COLUMNS)
    pair_i = column_index(path, header, width, pair_column, PAIR_COLUMNS)
    label_i = column_index(path, header, width, label_column, LABEL_COLUMNS)
    if text_i is None:
        columns = f"the columns are {', '.join(map(repr, header))}" if header else f"the rows have {width} columns"
        raise UserError(f"{path}: no text column ({' or '.join(TEXT_COLUMNS)}); {columns}: choose one with "
                        "text_column")

    def parse(row: tuple[int, list[str]]) -> TextExample:
        line, fields = row
        if len(fields) != width:
            raise UserError(f"{path}:{line}: expected {width} columns, got {len(fields)}")
        return TextExample(fields[text_i], None if pair_i is None else fields[pair_i],
                           None if label_i is None else fields[label_i], f"{path}:{line}")

    return keep_good(rows, parse, skip_bad_rows, path)


def parse_json(s: str, path, line: int | None = None):
    """`json.loads(s)` of line `line` of `path`, or of the whole file when `line` is None; what it cannot read is
    a UserError naming the file and line (for a whole file, the line json gives, where it gives one).

    Besides syntax errors json raises RecursionError for arrays nested thousands deep and ValueError for an
    integer of more than 4300 digits; neither is data a reader can use."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    try:
        return json.loads(s)
    except json.JSONDecodeError as e:
        at = where if line is not None else f"{path}:{e.lineno}"
        raise UserError(f"{at}: bad JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise UserError(f"{where}: bad JSON (nested too deeply)") from None
    except ValueError:  # int(): "Exceeds the limit (4300 digits) for integer string conversion"
        raise UserError(f"{where}: bad JSON (an integer of more than {sys.get_int_max_str_digits()} digits)") from None


def check_characters(value: str, where: str, field: str) -> str:
    """`value`, or a UserError if it holds a lone surrogate: JSON's "\\ud800" escape decodes to one, but it is no
    character, and neither the tokenizer nor a UTF-8 output file can take it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UserError(f"{where}: {field} holds a lone surrogate \\u{ord(value[e.start]):04x} (half of a \\u escape "
                        "pair), which is not a character") from None
    return value


def _json_label(value, where: str) -> str | list[str] | None:
    """Labels as strings, as the TSV reader gives them: 1 -> "1", 4.5 -> "4.5", ["a", 2] -> ["a", "2"]."""
    if value is None:
        return value
    if isinstance(value, str):
        return check_characters(value, where, "the label")
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
        return [check_characters(v, where, "the label") if isinstance(v, str) else str(v) for v in value]
    raise UserError(f"{where}: the label must be a string, a number or a list of them, not {json.dumps(value)[:40]}")


def _fields_of(obj: dict) -> str:
    return f"the fields are {', '.join(map(repr, obj))}" if obj else "the object is empty"


def _read_json_lines(path, text: str, text_key: str | None, pair_key: str | None, label_key: str | None,
                     skip_bad_rows: bool) -> list[TextExample]:
    """One JSON object a line; the keys are chosen like the columns of `read_text_examples`, on each object."""
    if any(isinstance(k, int) for k in (text_key, pair_key, label_key)):
        raise UserError(f"{path}: JSON lines have fields, not columns: name them (text_column='text')")
    rows = [(line, s) for line, s in numbered_lines(text) if s.strip()]

    def parse(row: tuple[int, str]) -> TextExample:
        line, s = row
        where = f"{path}:{line}"
        obj = parse_json(s, path, line)
        if not isinstance(obj, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        keys = {}
        for field, wanted, defaults in (("text", text_key, TEXT_COLUMNS), ("pair", pair_key, PAIR_COLUMNS),
                                        ("label", label_key, LABEL_COLUMNS)):
            if wanted is not None and wanted not in obj:
                raise UserError(f"{where}: no field {wanted!r}; {_fields_of(obj)}")
            keys[field] = wanted or next((k for k in defaults if k in obj), None)
        if keys["text"] is None:
            raise UserError(f"{where}: no text field ({' or '.join(TEXT_COLUMNS)}); {_fields_of(obj)}")
        text_value = obj[keys["text"]]
        pair_value = obj.get(keys["pair"]) if keys["pair"] else None
        if not isinstance(text_value, str) or not isinstance(pair_value, (str, type(None))):
            raise UserError(f"{where}: the text fields must be strings")
        check_characters(text_value, where, "the text")
        if pair_value is not None:
            check_characters(pair_value, where, "the text pair")
        label = _json_label(obj.get(keys["label"]) if keys["label"] else None, where)
        return TextExample(text_value, pair_value, label, where)

    return keep_good(rows, parse, skip_bad_rows, path)


# ---------------------------------------------------------------------------------------------------------------
# Token classification: CoNLL columns, one character a line (BMES), one sentence a line


def split_fields(line: str) -> list[str]:
    """Tab-separated fields if the line has a tab, else space-separated. Not str.split(): Chinese files hold
    U+3000 and U+00A0 as characters to tag, and str.split() would swallow them."""
    return line.split("\t") if "\t" in line else _SPACES.split(line.strip(" "))


def sentence_blocks(text: str) -> list[list[tuple[int, list[str]]]]:
    """Runs of non-blank lines as [(line number, fields)]. CoNLL-2003's `-DOCSTART-` lines mark documents, not
    tokens: they end a sentence and are dropped."""
    blocks, block = [], []
    for line, s in numbered_lines(text):
        fields = split_fields(s) if s.strip() else []
        if fields and fields[0] != "-DOCSTART-":
            block.append((line, fields))
        elif block:
            blocks.append(block)
            block = []
    return blocks + [block] if block else blocks


def read_conll(path: str | Path, token_column: int = 0, tag_column: int = -1, skip_bad_rows: bool = False
               ) -> list[TokenExample]:
    """One token a line in columns (tab- or space-separated), a blank line between sentences, `-DOCSTART-`
    lines skipped. Reads CoNLL-2003 (`token POS chunk NER`), WNUT-17 (`token<TAB>tag`) and the one-character-
    a-line Chinese files (Weibo, MSRA: `char tag`). Every line must have as many columns as the first; a file of
    one column has no tags (tags=None). With `skip_bad_rows` a sentence with a bad line is dropped whole."""
    sentences = sentence_blocks(read_text(path))
    if not sentences:
        raise UserError(f"{path}: no sentences (only -DOCSTART- lines)")
    first_line, first_fields = sentences[0][0]
    width = len(first_fields)
    for column in (token_column, tag_column):
        if not -width <= column < width:
            raise UserError(f"{path}:{first_line}: no column {column}: the line has {width} columns")

    def parse(block: list[tuple[int, list[str]]]) -> TokenExample:
        for line, fields in block:
            if len(fields) != width:
                raise UserError(f"{path}:{line}: expected {width} columns, got {len(fields)}")
        tokens = [fields[token_column] for _, fields in block]
        tags = [fields[tag_column] for _, fields in block] if width > 1 else None
        return TokenExample(tokens, tags, f"{path}:{block[0][0]}")

    return keep_good(sentences, parse, skip_bad_rows, path, "sentences")


def read_sentence_per_line(path: str | Path, skip_bad_rows: bool = False) -> list[TokenExample]:
    """Resume NER's format: one sentence a line, space-separated tokens, a tab, space-separated tags."""
    rows = [(line, s) for line, s in numbered_lines(read_text(path)) if s.strip()]

    def parse(row: tuple[int, str]) -> TokenExample:
        line, s = row
        parts = s.split("\t")
        if len(parts) != 2:
            raise UserError(f"{path}:{line}: expected tokens<TAB>tags, got {len(parts)} tab-separated fields")
        tokens, tags = parts[0].split(" "), parts[1].split(" ")
        if len(tokens) != len(tags):
            raise UserError(f"{path}:{line}: {len(tokens)} tokens but {len(tags)} tags")
        return TokenExample(tokens, tags, f"{path}:{line}")

    return keep_good(rows, parse, skip_bad_rows, path)


# ---------------------------------------------------------------------------------------------------------------
# Extractive question answering: SQuAD v1.1 / v2 and CMRC 2018 JSON


def locate_answer(context: str, text: str, start: int) -> int | None:
    """Where `text` is in `context`: at `start` when it is there, else at the occurrence nearest `start` (CMRC
    2018's trial and dev sets have 12 answers whose start is off by one or two characters), else None."""
    if not text:
        return None
    if 0 <= start and context.startswith(text, start):
        return start
    hits, at = [], context.find(text)
    while at != -1:
        hits.append(at)
        at = context.find(text, at + 1)
    return min(hits, key=lambda i: abs(i - start), default=None)


def _field(obj, key: str, kind, where: str):
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):  # JSON's true is no number here
        raise UserError(f"{where}: missing or malformed field {key!r}")
    if isinstance(value, str):
        check_characters(value, where, f"field {key!r}")
    return value


def _question_name(qid: str) -> str:
    """A question id as it reads in a message: as it is, or quoted when it is empty, holds a line break or another
    unprintable character, or has spaces at its ends."""
    return qid if qid and qid.isprintable() and qid.strip() == qid else repr(qid)


def read_squad(path: str | Path, skip_bad_rows: bool = False) -> list[QAExample]:
    """Questions of a SQuAD-style file (v1.1, or v2 with `is_impossible`), one QAExample each.

    An answer whose `answer_start` does not point at its text moves to the nearest occurrence of the text
    (`locate_answer`), counted in a warning. An answer marked `answer_start: -1` whose text is not in the context
    (CMRC 2018 dev has 193: annotators' free-form answers) is kept with start -1, as a reference for scoring
    only, as CMRC's official evaluation keeps it. Any other answer whose text is nowhere in the context is an
    error naming the question id, or with `skip_bad_rows` is dropped (the question stays, with its other
    answers). A file that is not SQuAD-shaped (missing fields) is always an error."""
    data = parse_json(read_text(path), path)
    examples, moved, dropped = [], 0, []
    for a, article in enumerate(_field(data, "data", list, f"{path}: not SQuAD JSON")):
        for p, paragraph in enumerate(_field(article, "paragraphs", list, f"{path}: article {a}")):
            in_paragraph = f"{path}: article {a} paragraph {p}"
            context = _field(paragraph, "context", str, in_paragraph)
            for qa in _field(paragraph, "qas", list, in_paragraph):
                qid = str(_field(qa, "id", (str, int), in_paragraph))
                name = _question_name(qid)
                where = f"{path}: question {name}"
                answers = []
                for answer in _field(qa, "answers", list, where):
                    answer_text = _field(answer, "text", str, where)
                    start = _field(answer, "answer_start", int, where)
                    found = locate_answer(context, answer_text, start)
                    if found is None and start == -1 and answer_text.strip():
                        answers.append(Answer(answer_text, -1))  # a reference for scoring, not a training label
                        continue
                    if found is None:
                        error = f"{where}: answer {answer_text!r} is not in the context"
                        if not skip_bad_rows:
                            raise UserError(error)
                        dropped.append(error)
                        continue
                    moved += found != start
                    answers.append(Answer(answer_text, found))
                impossible = qa.get("is_impossible", False)
                if impossible not in (True, False) or isinstance(impossible, float):  # True, False, 1 or 0
                    raise UserError(f"{where}: missing or malformed field 'is_impossible'")
                examples.append(QAExample(qid, _field(qa, "question", str, where), context, answers,
                                          bool(impossible), f"{path}:{name}"))
    if moved:
        warnings.warn(f"{path}: moved {moved} answers whose answer_start did not point at their text to the "
                      "nearest occurrence of the text", stacklevel=2)
    if dropped:
        warnings.warn(f"{path}: skipped {len(dropped)} answers not found in their context; the first: {dropped[0]}",
                      stacklevel=2)
    return examples


def read_token_examples(path: str | Path, skip_bad_rows: bool = False) -> list[TokenExample]:
    """A tagging file in any of the formats above, its tags checked and turned into IOB2: one sentence a line
    (`chars<TAB>tags`, both space-separated, as Resume NER) or columns (CoNLL, one character a line), in IOB1,
    IOB2, BIOES or BMES. A one-column file has no tags: its sentences come back with tags=None, as from
    `read_conll`."""
    from bertkit.tasks.tags import detect_scheme, to_iob2, validate_tags

    first = next((line for _, line in numbered_lines(read_text(path)) if line.strip()), "")
    parts = first.split("\t")
    one_line = len(parts) == 2 and len(parts[0].split()) == len(parts[1].split()) > 1
    examples = read_sentence_per_line(path, skip_bad_rows) if one_line else read_conll(path, skip_bad_rows=skip_bad_rows)
    if examples and examples[0].tags is None:  # a one-column file: tokens only (the task says where it needs tags)
        return examples
    scheme = detect_scheme([e.tags for e in examples])
    for e in examples:
        validate_tags(e.tags, scheme, e.source)
    return [TokenExample(e.tokens, to_iob2(e.tags), e.source) for e in examples]
