"""Task readers, tag schemes and named datasets: real samples with hand-checked rows, exact one-line errors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from conftest import DATA

import bertkit.settings

from bertkit.errors import UserError
from bertkit.tasks.datasets import DATASETS, load_dataset, split_squad_dev
from bertkit.tasks.examples import Answer, QAExample, TextExample, TokenExample
from bertkit.tasks.readers import (
    locate_answer,
    read_conll,
    read_sentence_per_line,
    read_squad,
    read_text_examples,
)
from bertkit.tasks.tags import detect_scheme, to_iob2, validate_tags


def entities(iob2_tags):
    """(type, start, end) of each entity, read by seqeval (strict IOB2), as the metrics and predictions read them."""
    from seqeval.scheme import IOB2, Entities

    return [(e.tag, e.start, e.end) for e in Entities([list(iob2_tags)], IOB2).entities[0]]

# Tests on the real data skip where the shared data folder is absent (a clone without ../shared); fail under CI=true.
needs_data = pytest.mark.needs_data(*sorted({info.folder for info in DATASETS.values()}))


def head(tmp_path: Path, relative: str, lines: int) -> Path:
    """The first `lines` lines of a real data file, copied: a small real sample that keeps its file name."""
    with open(DATA / relative, encoding="utf-8") as f:
        text = "".join(f.readline() for _ in range(lines))
    out = tmp_path / Path(relative).name
    out.write_text(text, encoding="utf-8")
    return out


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def error(call) -> str:
    with pytest.raises(UserError) as e:
        call()
    return str(e.value)


# ---------------------------------------------------------------------------------------------------------------
# Real samples, hand-checked rows


@needs_data
def test_sst2_sample_keeps_text_as_published(tmp_path):
    p = head(tmp_path, "sst2/dev.tsv", 4)
    rows = read_text_examples(p)
    assert rows[0] == TextExample("it 's a charming and often affecting journey . ", None, "1", f"{p}:2")
    assert [r.label for r in rows] == ["1", "0", "1"]


@needs_data
def test_stsb_sample_reads_sentence_columns_and_score(tmp_path):
    p = head(tmp_path, "stsb/dev.tsv", 5)
    rows = read_text_examples(p)
    assert rows[0] == TextExample("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", "5.000",
                                  f"{p}:2")
    assert rows[3].text == "A woman is playing the guitar." and rows[3].label == "2.400"


@needs_data
def test_mrpc_sample_keeps_an_unclosed_quote_inside_its_field(tmp_path):
    p = head(tmp_path, "mrpc/train.txt", 12)
    rows = read_text_examples(p, text_column="#1 String", pair_column="#2 String", label_column="Quality")
    assert len(rows) == 11  # a CSV reader would run line 11's opening quote on into line 12
    assert rows[0].text == \
        'Amrozi accused his brother, whom he called "the witness", of deliberately distorting his evidence.'
    assert rows[9] == TextExample(
        "He said the foodservice pie business doesn't fit the company's long-term growth strategy.",
        '"The foodservice pie business does not fit our long-term growth strategy.', "1", f"{p}:11")


@needs_data
def test_afqmc_sample_without_header_is_text_pair_label(tmp_path):
    p = head(tmp_path, "zh/afqmc/dev.txt", 3)
    rows = read_text_examples(p, has_header=False)
    assert rows[0] == TextExample("双十一花呗提额在哪", "里可以提花呗额度", "0", f"{p}:1")
    assert len(rows) == 3


@needs_data
def test_conll2003_sample_sentences_skip_docstart(tmp_path):
    p = head(tmp_path, "conll2003/train.txt", 16)
    rows = read_conll(p)
    assert rows[0] == TokenExample(["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
                                   ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"], f"{p}:3")
    assert rows[1] == TokenExample(["Peter", "Blackburn"], ["B-PER", "I-PER"], f"{p}:13")
    assert read_conll(p, tag_column=1)[1].tags == ["NNP", "NNP"]  # the POS column


@needs_data
def test_wnut17_sample_sentences_end_at_lines_holding_only_a_tab(tmp_path):
    p = head(tmp_path, "wnut17/train.conll", 44)  # line 28 is "\t", as 2,394 separators in train are
    rows = read_conll(p)
    assert [len(r.tokens) for r in rows] == [27, 15]
    assert rows[0].tokens[14:17] == ["Empire", "State", "Building"]
    assert rows[0].tags[14:19] == ["B-location", "I-location", "I-location", "O", "B-location"]
    assert rows[1].source == f"{p}:29" and rows[1].tags[4] == "B-group"


@needs_data
def test_weibo_sample_one_character_a_line_keeps_dotted_types(tmp_path):
    p = head(tmp_path, "zh/weibo_ner/test.bmes", 17)
    (row,) = read_conll(p)
    assert "".join(row.tokens) == "一节课的时间真心感动了李开复感动"
    assert row.tags[10:15] == ["O", "B-PER.NAM", "M-PER.NAM", "E-PER.NAM", "O"]
    assert entities(to_iob2(row.tags)) == [("PER.NAM", 11, 14)]


@needs_data
def test_msra_sample(tmp_path):
    p = head(tmp_path, "zh/msra_ner/test.ner", 17)
    (row,) = read_conll(p)
    assert "".join(row.tokens) == "中共中央致中国致公党十一大的贺词"
    assert entities(to_iob2(row.tags)) == [("NT", 0, 4), ("NT", 5, 13)]


@needs_data
def test_resume_sample_one_sentence_a_line(tmp_path):
    p = head(tmp_path, "zh/resume_ner/test.bmes", 2)
    rows = read_sentence_per_line(p)
    assert rows[0] == TokenExample(list("常建良，男，"), ["B-NAME", "M-NAME", "E-NAME", "O", "O", "O"], f"{p}:1")
    assert len(rows) == 2


@needs_data
def test_squad_answers_are_character_spans_of_the_context():
    rows = read_squad(DATA / "squad" / "train.json")
    first = rows[0]
    assert first.id == "56be4db0acb8001400a502ec"
    assert first.question == "Which NFL team represented the AFC at Super Bowl 50?"
    assert first.answers[0] == Answer("Denver Broncos", 177) and first.context[177:191] == "Denver Broncos"
    assert not first.is_impossible and first.source.endswith("train.json:56be4db0acb8001400a502ec")
    assert all(r.context[a.start:a.start + len(a.text)] == a.text for r in rows for a in r.answers)


@needs_data
def test_cmrc2018_trial_answers_off_by_one_move_to_their_text():
    with pytest.warns(UserWarning, match="moved 5 answers whose answer_start did not point at their text"):
        rows = read_squad(DATA / "zh" / "cmrc2018" / "trial.json")
    (row,) = [r for r in rows if r.id == "TRIAL_210_QUERY_0"]
    assert row.answers == [Answer("俗名龙尖", 13)]  # the file says 14
    assert row.context[13:17] == "俗名龙尖"


@needs_data
def test_cmrc2018_dev_keeps_free_form_answers_for_scoring_only():
    """193 dev answers are marked answer_start -1 and are not in their context: kept with start -1, as CMRC's
    official evaluation scores against them; an unmarked answer missing from its context stays an error."""
    with pytest.warns(UserWarning, match="moved 7 answers"):
        split = load_dataset("cmrc2018", "dev", DATA)
    assert len(split.examples) == 3219
    answers = [a for e in split.examples for a in e.answers]
    assert len(answers) == 9657 and sum(a.start == -1 for a in answers) == 193
    assert all(e.answers and any(a.start >= 0 for a in e.answers) for e in split.examples)
    (row,) = [e for e in split.examples if e.id == "DEV_6_QUERY_2"]
    assert Answer("2010年是邹游在河南建业効力的最后一个赛季更无法得到出场机会。", -1) in row.answers
    assert all(row.context[a.start:a.start + len(a.text)] == a.text for a in row.answers if a.start >= 0)


# ---------------------------------------------------------------------------------------------------------------
# Every named dataset


COUNTS = [
    ("sst2", "train", 67349), ("sst2", "dev", 872), ("stsb", "train", 5749), ("stsb", "dev", 1500),
    ("mrpc", "train", 3668), ("mrpc", "dev", 408), ("mrpc", "test", 1725), ("afqmc", "train", 34334), ("afqmc", "dev", 4316),
    ("conll2003", "train", 14041), ("conll2003", "validation", 3250), ("wnut17", "train", 3394),
    ("wnut17", "dev", 1009), ("weibo_ner", "train", 1350), ("weibo_ner", "dev", 270), ("weibo_ner", "test", 270),
    ("resume_ner", "train", 3821), ("resume_ner", "dev", 463), ("resume_ner", "test", 477),
    ("msra_ner", "dev", 4636), ("msra_ner", "test", 4365), ("squad", "train", 8582), ("squad", "dev", 1032),
    ("cmrc2018", "train", 1002), ("cmrc2018", "dev", 3219),
]


@needs_data
@pytest.mark.parametrize("name, split, count", COUNTS)
def test_every_dataset_loads_with_the_published_count(name, split, count):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CMRC 2018's answer repairs, tested above
        loaded = load_dataset(name, split, DATA)
    assert len(loaded.examples) == count
    assert loaded.task == DATASETS[name].task and loaded.path.is_file()


@needs_data
def test_dataset_fields():
    sst2, stsb = load_dataset("sst2", "dev", DATA), load_dataset("stsb", "dev", DATA)
    assert (sst2.task, sst2.labels, sst2.is_regression, sst2.language) == \
        ("text-classification", ["negative", "positive"], False, "en")  # the files' 0/1, named
    assert {e.label for e in sst2.examples} == {"negative", "positive"}
    assert (stsb.labels, stsb.is_regression) == (None, True)
    conll = load_dataset("conll2003", "dev", DATA)
    assert conll.labels == ["B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG", "I-PER", "O"]
    assert conll.split == "dev" and conll.path.name == "valid.txt"
    mrpc = load_dataset("mrpc", "test", DATA)
    assert mrpc.path.name == "test.txt" and mrpc.examples[0].label == "equivalent"
    assert load_dataset("mrpc", "dev", DATA).path.name == "train.txt"  # carved from train (tests/test_datasets.py)
    weibo = load_dataset("weibo_ner", "test", DATA)
    assert (weibo.language, len(weibo.labels)) == ("zh", 17)
    assert weibo.examples[0].tags[10:15] == ["O", "B-PER.NAM", "I-PER.NAM", "I-PER.NAM", "O"]  # BMES -> IOB2
    squad = load_dataset("squad", "dev", DATA)
    assert (squad.task, squad.labels, squad.is_regression) == ("question-answering", None, False)


@needs_data
@pytest.mark.parametrize("name, split", [("conll2003", "dev"), ("wnut17", "dev"), ("weibo_ner", "dev"),
                                         ("resume_ner", "dev"), ("msra_ner", "test")])
def test_declared_tag_scheme_is_the_one_in_the_files(name, split):
    info = DATASETS[name]
    raw = info.read(DATA / info.folder / info.splits[split])
    assert detect_scheme(e.tags for e in raw) == info.scheme


def test_unknown_dataset_split_and_missing_files(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("BERTKIT_CACHE_DIR", str(cache))  # not the developer's own download cache
    assert error(lambda: load_dataset("glue", "dev", tmp_path)).startswith("unknown dataset 'glue'; known: sst2, stsb")
    assert error(lambda: load_dataset("msra_ner", "train", tmp_path)) == \
        "msra_ner has no 'train' split here; its splits are dev, test"
    missing = tmp_path / "nowhere"
    assert error(lambda: load_dataset("sst2", "dev", missing)) == (
        f"{missing}: no data directory, and no {cache}/datasets/sst2/dev.tsv downloaded; set BERTKIT_DATA_DIR to "
        "the folder that holds sst2/, or `bertkit data download sst2`")
    monkeypatch.setenv("BERTKIT_DATA_DIR", str(tmp_path))
    assert error(lambda: load_dataset("conll2003", "validation")) == (
        f"{tmp_path}/conll2003/valid.txt: no such file, and no {cache}/datasets/conll2003/valid.txt downloaded; "
        f"set BERTKIT_DATA_DIR to the folder that holds conll2003/, or copy conll2003's files into "
        f"{tmp_path}/conll2003/")
    monkeypatch.delenv("BERTKIT_DATA_DIR")
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    assert bertkit.settings.data_dir() == tmp_path / "shared" / "data"


def test_a_label_outside_the_dataset_is_an_error_naming_the_row(tmp_path):
    (tmp_path / "sst2").mkdir()
    p = write(tmp_path, "sst2/dev.tsv", "sentence\tlabel\ngood\t1\nodd\t2\n")
    assert error(lambda: load_dataset("sst2", "dev", tmp_path)) == \
        f"{p}:3: label '2' is not one of sst2's labels (0, 1)"


def test_a_bad_ner_tag_is_an_error_naming_the_sentence(tmp_path):
    (tmp_path / "conll2003").mkdir()
    p = write(tmp_path, "conll2003/valid.txt", "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nsays VBZ B-VP X-PER\n")
    assert error(lambda: load_dataset("conll2003", "dev", tmp_path)) == \
        f"{p}:3: bad tag 'X-PER' at token 2: IOB2 tags are O, B-TYPE, I-TYPE"


# ---------------------------------------------------------------------------------------------------------------
# Download's unpacking (the download itself: tests/test_datasets.py)


def test_split_squad_dev_keeps_articles_0_to_37_for_train_and_38_to_42_for_dev():
    official = {"version": "1.1", "data": [{"title": str(i), "paragraphs": []} for i in range(48)]}
    files = split_squad_dev(json.dumps(official).encode())
    titles = {name: [a["title"] for a in json.loads(b)["data"]] for name, b in files.items()}
    assert titles == {"train.json": [str(i) for i in range(38)], "dev.json": ["38", "39", "40", "41", "42"]}


# ---------------------------------------------------------------------------------------------------------------
# Malformed files: one line naming file:line, or counted and skipped


def test_wrong_column_count_names_file_and_line(tmp_path):
    p = write(tmp_path, "train.tsv", "sentence\tlabel\ngood\t1\nbad\t1\textra\nfine\t0\nshort\n")
    assert error(lambda: read_text_examples(p)) == f"{p}:3: expected 2 columns, got 3"
    with pytest.warns(UserWarning) as caught:
        rows = read_text_examples(p, skip_bad_rows=True)
    assert [r.text for r in rows] == ["good", "fine"]
    assert len(caught) == 1
    assert str(caught[0].message) == f"{p}: skipped 2 bad rows; the first: {p}:3: expected 2 columns, got 3"


def test_columns_by_name_or_index_and_missing_columns(tmp_path):
    p = write(tmp_path, "pairs.tsv", "id\tq1\tq2\tis_dup\n7\tHow?\tWhy?\t0\n")
    assert read_text_examples(p, text_column="q1", pair_column=2, label_column=-1) == \
        [TextExample("How?", "Why?", "0", f"{p}:2")]
    assert error(lambda: read_text_examples(p)) == \
        f"{p}: no text column (sentence or text or sentence1); the columns are 'id', 'q1', 'q2', 'is_dup': " \
        "choose one with text_column"
    assert error(lambda: read_text_examples(p, text_column="q1", label_column="label")) == \
        f"{p}: no column 'label'; the columns are 'id', 'q1', 'q2', 'is_dup'"
    assert error(lambda: read_text_examples(p, text_column=4)) == f"{p}: no column 4: the rows have 4 columns"
    assert read_text_examples(p, text_column="q1")[0].label is None  # no label column: input to predict on


def test_empty_header_only_and_non_utf8_files(tmp_path):
    empty = write(tmp_path, "empty.tsv", "")
    assert error(lambda: read_text_examples(empty)) == f"{empty}: empty file"
    blank = write(tmp_path, "blank.conll", "\n  \n")
    assert error(lambda: read_conll(blank)) == f"{blank}: empty file"
    header = write(tmp_path, "header.tsv", "sentence\tlabel\n")
    assert error(lambda: read_text_examples(header)) == f"{header}: no rows after the header"
    latin1 = write(tmp_path, "latin1.tsv", b"sentence\tlabel\nok\t1\ncaf\xe9\t0\n")
    assert error(lambda: read_text_examples(latin1)) == f"{latin1}:3: not UTF-8 (byte 0xe9); convert the file to UTF-8"
    assert error(lambda: read_text_examples(tmp_path / "absent.tsv")) == \
        f"{tmp_path / 'absent.tsv'}: cannot read (No such file or directory)"


def test_csv_keeps_quoting_and_counts_lines_from_where_a_row_starts(tmp_path):
    p = write(tmp_path, "reviews.csv", '\ufefftext,label\n"good, really",1\n"two\nlines",0\nplain,1\n')
    rows = read_text_examples(p)
    assert [(r.text, r.label, r.source) for r in rows] == \
        [("good, really", "1", f"{p}:2"), ("two\nlines", "0", f"{p}:3"), ("plain", "1", f"{p}:5")]


def test_delimiter_is_sniffed_for_other_extensions(tmp_path):
    tabs = write(tmp_path, "tabs.txt", "text\tlabel\na, b\tx\n")
    commas = write(tmp_path, "commas.txt", "text,label\nab,y\n")
    assert read_text_examples(tabs)[0].text == "a, b"
    assert read_text_examples(commas)[0].label == "y"


def test_json_lines(tmp_path):
    p = write(tmp_path, "tags.jsonl", '{"text": "a", "label": ["x", "y"]}\n\n'
                                      '{"text": "b", "text_pair": "c", "label": 2}\n{oops\n{"label": 1}\n[1, 2]\n')
    assert error(lambda: read_text_examples(p)) == \
        f"{p}:4: bad JSON (Expecting property name enclosed in double quotes at column 2)"
    with pytest.warns(UserWarning, match="skipped 3 bad rows"):
        rows = read_text_examples(p, skip_bad_rows=True)
    assert rows == [TextExample("a", None, ["x", "y"], f"{p}:1"), TextExample("b", "c", "2", f"{p}:3")]
    assert error(lambda: read_text_examples(write(tmp_path, "x.jsonl", '{"label": 1}\n'))) == \
        f"{tmp_path / 'x.jsonl'}:1: no text field (sentence or text or sentence1); the fields are 'label'"
    assert error(lambda: read_text_examples(write(tmp_path, "y.jsonl", '[1, 2]\n'))) == \
        f"{tmp_path / 'y.jsonl'}:1: expected a JSON object, got list"


def test_conll_tabs_or_spaces_and_bad_lines(tmp_path):
    p = write(tmp_path, "ner.txt", "-DOCSTART- O\n\nEU  B-ORG\nrejects\tO\n\n\nBonn B-LOC\nsays\n\nOK O\n")
    assert error(lambda: read_conll(p)) == f"{p}:8: expected 2 columns, got 1"
    with pytest.warns(UserWarning, match=f"skipped 1 bad sentences; the first: {p}:8: expected 2 columns, got 1"):
        rows = read_conll(p, skip_bad_rows=True)
    assert rows == [TokenExample(["EU", "rejects"], ["B-ORG", "O"], f"{p}:3"), TokenExample(["OK"], ["O"], f"{p}:10")]
    chars = write(tmp_path, "chars.bmes", "\u3000 O\n张 S-PER\n")  # a full-width space is a character to tag
    assert read_conll(chars)[0].tokens == ["\u3000", "张"]
    untagged = write(tmp_path, "predict.txt", "Hello\nworld\n")
    assert read_conll(untagged) == [TokenExample(["Hello", "world"], None, f"{untagged}:1")]


def test_sentence_per_line_needs_one_tag_per_token(tmp_path):
    p = write(tmp_path, "resume.bmes", "高 勇\tB-NAME E-NAME\n男 ，\tO\n")
    assert error(lambda: read_sentence_per_line(p)) == f"{p}:2: 2 tokens but 1 tags"
    with pytest.warns(UserWarning, match="skipped 1 bad rows"):
        rows = read_sentence_per_line(p, skip_bad_rows=True)
    assert rows == [TokenExample(["高", "勇"], ["B-NAME", "E-NAME"], f"{p}:1")]


def squad_file(tmp_path, answers, **qa):
    doc = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": "Bonn is on the Rhine. Bonn.", "qas": [
        {"id": "q1", "question": "Where?", "answers": answers, **qa}]}]}]}
    return write(tmp_path, "qa.json", json.dumps(doc))


def test_squad_answers_checked_moved_or_skipped(tmp_path):
    p = squad_file(tmp_path, [{"text": "Rhine", "answer_start": 15}])
    assert read_squad(p) == [QAExample("q1", "Where?", "Bonn is on the Rhine. Bonn.", [Answer("Rhine", 15)], False,
                                       f"{p}:q1")]
    p = squad_file(tmp_path, [{"text": "Bonn", "answer_start": 20}])
    with pytest.warns(UserWarning, match="moved 1 answers"):
        assert read_squad(p)[0].answers == [Answer("Bonn", 22)]  # nearer 20 than the Bonn at 0
    p = squad_file(tmp_path, [{"text": "Rhine", "answer_start": 15}, {"text": "Main", "answer_start": 3}])
    assert error(lambda: read_squad(p)) == f"{p}: question q1: answer 'Main' is not in the context"
    with pytest.warns(UserWarning, match="skipped 1 answers not found in their context"):
        assert read_squad(p, skip_bad_rows=True)[0].answers == [Answer("Rhine", 15)]
    # marked -1 (CMRC 2018's free-form answers): kept as a reference for scoring, never a training label
    p = squad_file(tmp_path, [{"text": "Rhine", "answer_start": 15}, {"text": "Main", "answer_start": -1}])
    assert read_squad(p)[0].answers == [Answer("Rhine", 15), Answer("Main", -1)]
    p = squad_file(tmp_path, [], is_impossible=True, plausible_answers=[{"text": "Bonn", "answer_start": 0}])
    assert read_squad(p)[0].is_impossible and read_squad(p)[0].answers == []
    p = squad_file(tmp_path, [{"text": "Rhine"}])
    assert error(lambda: read_squad(p)) == f"{p}: question q1: missing or malformed field 'answer_start'"
    not_squad = write(tmp_path, "rows.json", '{"rows": []}')
    assert error(lambda: read_squad(not_squad)) == f"{not_squad}: not SQuAD JSON: missing or malformed field 'data'"
    broken = write(tmp_path, "broken.json", '{"data": [\n  {]\n}')
    assert error(lambda: read_squad(broken)) == \
        f"{broken}:2: bad JSON (Expecting property name enclosed in double quotes at column 4)"


def test_locate_answer():
    assert locate_answer("abcabc", "bc", 4) == 4
    assert locate_answer("abcabc", "bc", 3) == 4  # off by one: the nearest occurrence
    assert locate_answer("abcabc", "bc", -1) == 1
    assert locate_answer("abcabc", "x", 0) is None
    assert locate_answer("abc", "", 0) is None


# ---------------------------------------------------------------------------------------------------------------
# Tag schemes, by hand


def test_iob1_to_iob2():
    assert to_iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG"]) == \
        ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-ORG"]


def test_bmes_and_bioes_to_iob2():
    weibo = ["B-PER.NAM", "M-PER.NAM", "E-PER.NAM", "S-GPE.NAM", "S-GPE.NAM", "O", "B-LOC.NOM", "E-LOC.NOM"]
    assert to_iob2(weibo) == \
        ["B-PER.NAM", "I-PER.NAM", "I-PER.NAM", "B-GPE.NAM", "B-GPE.NAM", "O", "B-LOC.NOM", "I-LOC.NOM"]
    assert to_iob2(["B-X", "I-X", "E-X", "E-X", "S-Y", "I-Y"]) == ["B-X", "I-X", "I-X", "B-X", "B-Y", "B-Y"]
    assert to_iob2(["O", "M-PER.NOM", "E-PER.NOM"]) == ["O", "B-PER.NOM", "I-PER.NOM"]  # Weibo's entities from M-


def test_iob2_stays_and_hyphenated_types_survive():
    tags = ["B-creative-work", "I-creative-work", "O", "B-person", "B-person"]
    assert to_iob2(tags) == tags
    assert entities(tags) == [("creative-work", 0, 2), ("person", 3, 4), ("person", 4, 5)]


def test_detect_scheme():
    assert detect_scheme([["B-PER", "I-PER", "O"], ["O"]]) == "IOB2"
    assert detect_scheme([["B-PER", "I-PER"], ["O", "I-LOC"]]) == "IOB1"
    assert detect_scheme([["I-PER", "I-PER", "B-PER"]]) == "IOB1"
    assert detect_scheme([["I-PER", "O", "I-LOC"]]) == "IO"
    assert detect_scheme([["S-PER", "B-LOC", "I-LOC", "E-LOC"]]) == "BIOES"
    assert detect_scheme([["B-PER", "M-PER", "E-PER", "S-LOC"]]) == "BMES"
    assert detect_scheme([["O", "O"]]) == "IOB2"


def test_validate_tags():
    validate_tags(["O", "B-PER.NAM", "M-PER.NAM", "E-PER.NAM", "S-LOC.NOM"], "BMES", "w.bmes:1")
    assert error(lambda: validate_tags(["O", "X-PER"], "IOB2", "n.txt:4")) == \
        "n.txt:4: bad tag 'X-PER' at token 2: IOB2 tags are O, B-TYPE, I-TYPE"
    assert error(lambda: validate_tags(["B-"], "IOB2", "n.txt:4")) == \
        "n.txt:4: bad tag 'B-' at token 1: IOB2 tags are O, B-TYPE, I-TYPE"
    assert error(lambda: validate_tags(["PER"], "IO", "n.txt:4")) == \
        "n.txt:4: bad tag 'PER' at token 1: IO tags are O, I-TYPE"
    assert error(lambda: validate_tags(["B-PER", "I-PER"], "BMES", "r.bmes:2")) == \
        "r.bmes:2: bad tag 'I-PER' at token 2: BMES tags are O, B-TYPE, M-TYPE, E-TYPE, S-TYPE"
