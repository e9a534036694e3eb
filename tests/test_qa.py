"""Question answering: windowed features against transformers' run_qa, span decoding by hand, SQuAD and CMRC metrics."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, missing, require_module

from bertkit.checkpoint import resolve_model_dir
from bertkit.errors import UserError
from bertkit.tasks.examples import Answer, QAExample
from bertkit.tasks.metrics import cmrc_exact, cmrc_f1, cmrc_segments, normalize_answer, squad_exact, squad_f1, squad_scores
from bertkit.tasks.question_answering import Prediction, answer_token_span, postprocess, prepare_features, truncate_question
from bertkit.tasks.readers import read_squad
from bertkit.tokenization import BertTokenizer

DATA_DIR = DATA
NUMBERS = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
           "seventeen eighteen nineteen twenty")  # 20 words, each one token


def example(question: str, context: str, answer: str | None = None, id: str = "q") -> QAExample:
    answers = [] if answer is None else [Answer(answer, context.index(answer))]
    return QAExample(id, question, context, answers, answer is None, "test")


def logits(length: int, **values: float) -> np.ndarray:
    """(length,) logits of -100 but at the given positions (`t5=2.0` puts 2.0 at token 5)."""
    out = np.full(length, -100.0)
    for key, value in values.items():
        out[int(key[1:])] = value
    return out


def read(path: Path):
    if not path.is_file():
        missing(f"no data at {path}: set BERTKIT_DATA_DIR to the shared data folder")  # a skip; fails under CI=true
    with warnings.catch_warnings():  # CMRC's misplaced and missing answers are warned about by the reader
        warnings.simplefilter("ignore")
        return read_squad(path, skip_bad_rows=True)


@pytest.fixture(scope="module")
def tok() -> BertTokenizer:
    return BertTokenizer.from_pretrained("all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def zh_tok() -> BertTokenizer:
    """A vocab in which every Chinese character of the texts is a token of its own (MiniLM's has [UNK] for many)."""
    return BertTokenizer.train(texts=["《战国无双3》是由光荣和ω-force开发的战国无双系列的正统第三续作。", "谁开发了战国无双3？"],
                               vocab_size=120, min_frequency=1)


# ---- features ------------------------------------------------------------------------------------------------


def test_answer_token_span_by_hand():
    # [CLS] q q [SEP] "café" "buil" "##ding" "tower" [SEP] over the context "café building tower"
    offsets = [None, None, None, None, (0, 4), (5, 9), (9, 13), (14, 19), None]
    assert answer_token_span(offsets, 5, 13) == (5, 6)  # "building"
    assert answer_token_span(offsets, 6, 12) == (5, 6)  # "uildin": the tokens holding it
    assert answer_token_span(offsets, 4, 13) == (5, 6)  # " building": the next word, not "café"
    assert answer_token_span(offsets, 0, 19) == (4, 7)
    assert answer_token_span(offsets, 14, 25) == (0, 0)  # runs past the window
    assert answer_token_span(offsets[:4] + [None] + offsets[5:], 0, 9) == (0, 0)  # starts before the window
    assert answer_token_span(offsets, 4, 5) == (0, 0)  # only a space
    assert answer_token_span([None, None, None], 0, 1) == (0, 0)  # no context tokens at all


def test_truncate_question_keeps_the_first_tokens(tok):
    question = "What is the unaffable name of the café?"  # what is the una ##ffa ##ble name of the cafe ?
    offsets = tok(question, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert truncate_question(question, offsets, 5) == "What is the unaffa"
    assert tok.tokenize("What is the unaffa") == ["what", "is", "the", "una", "##ffa"]
    assert truncate_question(question, offsets, 11) == question

    features = prepare_features([example(question, "The café is closed.", "closed")], tok, max_query_length=5)
    full = tok(question, add_special_tokens=False)["input_ids"]
    assert features.input_ids[0][:7] == [tok.cls_token_id, *full[:5], tok.sep_token_id]
    assert features.offsets[0][:7] == [None] * 7


def test_long_context_windows_by_hand(tok):
    # question: 3 tokens, so windows of 16 hold 10 context tokens; a stride of 4 starts them at words 0, 6, 12.
    examples = [example("what color?", NUMBERS, "eight nine"), example("what color?", NUMBERS, "ten eleven"),
                example("what color?", NUMBERS)]
    assert examples[0].answers[0].start == 34 and examples[1].answers[0].start == 45
    features = prepare_features(examples, tok, max_length=16, doc_stride=4)

    assert features.example_index == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [len(ids) for ids in features.input_ids] == [16, 16, 14] * 3
    words = NUMBERS.split()
    assert [tok.decode(ids[5:-1]) for ids in features.input_ids[:3]] == [
        " ".join(words[0:10]), " ".join(words[6:16]), " ".join(words[12:20])]
    assert features.offsets[0][:5] == [None] * 5 and features.offsets[0][-1] is None
    assert features.token_type_ids[0] == [0] * 5 + [1] * 11
    # "eight nine" (words 7-8) is in windows 0 and 1; "ten eleven" (words 9-10) is cut by window 0's end
    assert features.start_positions == [12, 6, 0, 0, 8, 0, 0, 0, 0]
    assert features.end_positions == [13, 7, 0, 0, 9, 0, 0, 0, 0]
    for i, (start, end) in enumerate(zip(features.start_positions, features.end_positions)):
        if start:
            answer = examples[features.example_index[i]].answers[0].text
            assert NUMBERS[features.offsets[i][start][0]:features.offsets[i][end][1]] == answer

    eval_features = prepare_features(examples, tok, max_length=16, doc_stride=4, train=False)
    assert eval_features.start_positions is None and eval_features.input_ids == features.input_ids


def test_a_reference_only_answer_is_scored_against_but_never_a_label(tok):
    context = "The tower is in Paris, France."
    free_form = QAExample("q", "where?", context, [Answer("in the city of Paris", -1), Answer("Paris", 16)], False, "")
    only_free_form = QAExample("r", "where?", context, [Answer("in the city of Paris", -1)], False, "")
    features = prepare_features([free_form, only_free_form], tok, max_length=32, doc_stride=8)
    (start, end), (none_start, none_end) = zip(features.start_positions, features.end_positions)
    assert context[features.offsets[0][start][0]:features.offsets[0][end][1]] == "Paris"
    assert (none_start, none_end) == (0, 0)
    assert squad_scores({"q": "in the city of Paris", "r": "in the city of Paris"}, [free_form, only_free_form]) == \
        {"exact_match": 100.0, "f1": 100.0}


def test_collate_pads_to_the_longest_of_the_batch(tok):
    features = prepare_features([example("what color?", NUMBERS, "eight nine")], tok, max_length=16, doc_stride=4)
    batch = features.collate([2, 1])
    assert batch["input_ids"].shape == (2, 16) and batch["input_ids"].dtype == torch.long
    assert batch["input_ids"][0, 14:].tolist() == [tok.pad_token_id] * 2
    assert batch["attention_mask"].sum(1).tolist() == [14, 16]
    assert batch["start_positions"].tolist() == [0, 6] and batch["end_positions"].tolist() == [0, 7]
    assert features.collate([2])["input_ids"].shape == (1, 14)
    assert "start_positions" not in prepare_features([example("what?", NUMBERS)], tok, train=False).collate([0])


def _run_qa_train_features(ref, examples, max_length, stride):
    """transformers' examples/pytorch/question-answering/run_qa.py `prepare_train_features`, for BERT (pad right)."""
    tokenized = ref([e.question.lstrip() for e in examples], [e.context for e in examples], truncation="only_second",
                    max_length=max_length, stride=stride, return_overflowing_tokens=True,
                    return_offsets_mapping=True, padding="max_length")
    starts, ends = [], []
    for i, offsets in enumerate(tokenized["offset_mapping"]):
        input_ids = tokenized["input_ids"][i]
        cls_index = input_ids.index(ref.cls_token_id)
        sequence_ids = tokenized.sequence_ids(i)
        answers = examples[tokenized["overflow_to_sample_mapping"][i]].answers
        start_char = answers[0].start
        end_char = start_char + len(answers[0].text)
        token_start_index = 0
        while sequence_ids[token_start_index] != 1:
            token_start_index += 1
        token_end_index = len(input_ids) - 1
        while sequence_ids[token_end_index] != 1:
            token_end_index -= 1
        if not (offsets[token_start_index][0] <= start_char and offsets[token_end_index][1] >= end_char):
            starts.append(cls_index)
            ends.append(cls_index)
        else:
            while token_start_index < len(offsets) and offsets[token_start_index][0] <= start_char:
                token_start_index += 1
            starts.append(token_start_index - 1)
            while offsets[token_end_index][1] >= end_char:
                token_end_index -= 1
            ends.append(token_end_index + 1)
    return tokenized, starts, ends


@pytest.mark.parametrize("max_length, stride", [(384, 128), (128, 32)])
def test_windows_match_transformers_run_qa(tok, max_length, stride):
    transformers = require_module("transformers")
    transformers.logging.set_verbosity_error()
    ref = transformers.BertTokenizerFast.from_pretrained(resolve_model_dir("all-MiniLM-L6-v2"))
    examples = read(DATA_DIR / "squad" / "dev.json")[::20][:50]
    ours = prepare_features(examples, tok, max_length=max_length, doc_stride=stride)
    theirs, starts, ends = _run_qa_train_features(ref, examples, max_length, stride)

    unpadded = [ids[:sum(mask)] for ids, mask in zip(theirs["input_ids"], theirs["attention_mask"])]
    assert ours.input_ids == unpadded
    assert ours.token_type_ids == [t[:len(ids)] for t, ids in zip(theirs["token_type_ids"], unpadded)]
    assert ours.example_index == theirs["overflow_to_sample_mapping"]
    assert ours.start_positions == starts and ours.end_positions == ends
    # run_qa's validation features: offsets of the context only, None elsewhere
    assert ours.offsets == [[tuple(o) if theirs.sequence_ids(i)[t] == 1 else None for t, o in enumerate(offsets[:n])]
                            for i, (offsets, n) in enumerate(zip(theirs["offset_mapping"], map(len, unpadded)))]
    if max_length == 128:
        assert len(ours) > len(examples) and 0 < ours.start_positions.count(0) < len(ours)  # windows were cut


# ---- decoding ------------------------------------------------------------------------------------------------

CAFE = example("Which drink?", "Café  au lait is a drink from France.", "Café  au lait")
# [CLS] which drink ? [SEP] cafe au lai ##t is a drink from france . [SEP]  (16 tokens; context 5..14)


def test_postprocess_maps_the_best_span_to_the_original_characters(tok):
    features = prepare_features([CAFE], tok, train=False)
    assert len(features.input_ids[0]) == 16
    # The highest logits are on question tokens (1, 3), which cannot answer.
    start, end = logits(16, t1=9, t5=5), logits(16, t3=8, t8=4)
    assert postprocess([CAFE], features, [start], [end], n_best=2) == {"q": Prediction("Café  au lait", 0, 13, 1.0)}


def test_postprocess_score_is_a_softmax_over_the_n_best(tok):
    features = prepare_features([CAFE], tok, train=False)
    start, end = logits(16, t5=2, t13=1), logits(16, t8=3, t13=1)
    # pairs of the 2 best starts and ends: (5, 8) = 5, (5, 13) = 3, (13, 13) = 2; (13, 8) ends before it starts.
    # The softmax runs over the n_best = 2 best of them.
    prediction = postprocess([CAFE], features, [start], [end], n_best=2)["q"]
    assert prediction.text == "Café  au lait"
    assert prediction.score == pytest.approx(math.exp(5) / (math.exp(5) + math.exp(3)))
    three = postprocess([CAFE], features, [start], [end], n_best=3)["q"]
    assert three.score == pytest.approx(math.exp(5) / (math.exp(5) + math.exp(3) + math.exp(2)))
    # at most 3 tokens: only "France" (13, 13) is left
    short = postprocess([CAFE], features, [start], [end], n_best=2, max_answer_length=3)["q"]
    assert short == Prediction("France", 30, 36, pytest.approx(1.0))


def test_postprocess_never_ends_before_it_starts(tok):
    features = prepare_features([CAFE], tok, train=False)
    start, end = logits(16, t9=5, t5=1), logits(16, t6=5, t8=0.5)  # best start "is" (9), best end "au" (6)
    assert postprocess([CAFE], features, [start], [end], n_best=2)["q"].text == "Café  au"


def test_postprocess_over_windows_counts_a_span_once(tok):
    numbers = example("what color?", NUMBERS, "eight nine")
    features = prepare_features([numbers], tok, max_length=16, doc_stride=4, train=False)
    # "eight nine" is tokens 12-13 of window 0 and 6-7 of window 1; "fifteen" is token 7 of window 2 (14 tokens,
    # padded here to 16 with logits that must be ignored).
    starts = np.stack([logits(16, t12=3), logits(16, t6=3), logits(16, t7=2.5, t14=50, t15=50)])
    ends = np.stack([logits(16, t13=3), logits(16, t7=2.5), logits(16, t7=2.5, t14=50, t15=50)])
    prediction = postprocess([numbers], features, starts, ends, n_best=2)["q"]
    assert (prediction.text, prediction.start, prediction.end) == ("eight nine", 34, 44)
    # the n-best are "eight nine" (6; its 5.5 in window 1 does not count again) and "fifteen" (5)
    assert prediction.score == pytest.approx(1 / (1 + math.exp(-1)))


def test_postprocess_chinese_characters_map_exactly(zh_tok):
    context = "《战国无双3》是由光荣和ω-force开发的战国无双系列的正统第三续作。"
    zh = example("谁开发了战国无双3？", context, "光荣和ω-force")
    features = prepare_features([zh], zh_tok, train=False)
    offsets = features.offsets[0]
    assert zh_tok.tokenize("光荣和战国") == list("光荣和战国")
    assert offsets[12] == (0, 1) and offsets[21] == (9, 10)  # [CLS] 10 question characters [SEP], then 《 ...
    end = next(t for t, o in enumerate(offsets) if o is not None and o[1] == 19)  # the last piece of "force"
    n = len(features.input_ids[0])
    prediction = postprocess([zh], features, [logits(n, t21=4)], [logits(n, **{f"t{end}": 4})], n_best=2)["q"]
    assert (prediction.text, prediction.start, prediction.end) == ("光荣和ω-force", 9, 19)


def test_postprocess_version_2_null_wins_by_the_threshold(tok):
    numbers = example("what color?", NUMBERS, id="v2")
    features = prepare_features([numbers], tok, max_length=16, doc_stride=4, train=False)
    # null scores (CLS start + end) per window: 2, 1, 3 -> the null score is their minimum, 1; best span 0.5
    starts = [logits(16, t0=1, t12=0.25), logits(16, t0=0.5), logits(14, t0=1.5)]
    ends = [logits(16, t0=1, t13=0.25), logits(16, t0=0.5), logits(14, t0=1.5)]
    null = postprocess([numbers], features, starts, ends, n_best=2, version_2=True)["v2"]
    assert (null.text, null.start, null.end) == ("", 0, 0)
    assert null.score == pytest.approx(math.exp(1) / (math.exp(1) + math.exp(0.5)))
    # 1 - 0.5 does not exceed a threshold of 1: the span stands; without version_2 the null is never considered
    span = postprocess([numbers], features, starts, ends, n_best=2, version_2=True, null_threshold=1.0)["v2"]
    assert (span.text, span.score) == ("eight nine", pytest.approx(math.exp(0.5) / (math.exp(1) + math.exp(0.5))))
    assert postprocess([numbers], features, starts, ends, n_best=2)["v2"].text == "eight nine"


def test_postprocess_and_scores_name_what_does_not_fit(tok):
    features = prepare_features([CAFE], tok, train=False)
    with pytest.raises(UserError, match="1 features but 2 start and 2 end logits"):
        postprocess([CAFE], features, [logits(16)] * 2, [logits(16)] * 2)
    with pytest.raises(UserError, match="the features come from 1 examples, not these 2"):
        postprocess([CAFE, CAFE], features, [logits(16)], [logits(16)])
    with pytest.raises(UserError, match="language='fr'"):
        squad_scores({}, [CAFE], language="fr")


# ---- metrics -------------------------------------------------------------------------------------------------


def test_squad_metrics_by_hand():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("An apple, a day: the end.") == "apple day end"
    assert squad_exact("the Eiffel Tower", "Eiffel Tower!") == 1.0
    assert squad_f1("the Eiffel Tower", "Eiffel Tower!") == 1.0
    # [eiffel, tower, in, paris] vs [eiffel, tower]: precision 2/4, recall 1
    assert squad_exact("the Eiffel Tower in Paris", "Eiffel Tower") == 0.0
    assert squad_f1("the Eiffel Tower in Paris", "Eiffel Tower") == pytest.approx(2 / 3)
    assert squad_f1("tower tower", "Eiffel tower") == pytest.approx(0.5)  # common 1: precision 1/2, recall 1/2
    assert squad_f1("Paris", "Eiffel Tower") == 0.0
    assert squad_f1("", "") == 1.0 and squad_f1("the", "Tower") == 0.0  # "the" normalises to nothing


def test_squad_scores_over_examples():
    examples = [QAExample("a", "?", "", [Answer("Eiffel Tower", 0), Answer("the Eiffel Tower in Paris", 0)], False, ""),
                QAExample("b", "?", "", [Answer("Denver Broncos", 0)], False, ""),
                QAExample("c", "?", "", [], True, ""),
                QAExample("d", "?", "", [Answer("Paris", 0)], False, "")]
    predictions = {"a": "the Eiffel Tower!", "b": "Broncos", "c": ""}  # "d" missing: scores 0
    # EM 1, 0, 1, 0; F1 1, 2/3 (precision 1, recall 1/2), 1, 0
    assert squad_scores(predictions, examples) == {"exact_match": 50.0, "f1": pytest.approx(100 * (8 / 3) / 4)}
    assert squad_scores({"c": "Paris"}, examples[2:3]) == {"exact_match": 0.0, "f1": 0.0}


def test_cmrc_metrics_by_hand():
    # CMRC's punctuation goes ("-" joins ω and force), Chinese characters are units, English words and numbers stay
    assert cmrc_segments("光荣和ω-force") == ["光", "荣", "和", "ωforce"]
    assert cmrc_segments("11.42亿元") == ["11.42", "亿", "元"]
    assert cmrc_segments("《Men's YOUNG》, 1,000人") == ["men", "'s", "young", ",", "1,000", "人"]
    # 4 of 6 predicted segments match the gold's 4: precision 2/3, recall 1
    assert cmrc_f1("光荣和ω-force开发", "光荣和ω-force") == pytest.approx(0.8)
    assert cmrc_exact("光荣和ω-force开发", "光荣和ω-force") == 0.0
    # overlap is the longest common contiguous run: 北 (1), not the bag {北, 大} (2); precision 1/4, recall 1/2
    assert cmrc_f1("北京大学", "北大") == pytest.approx(1 / 3)
    assert cmrc_exact("《战国无双3》", "战国无双3") == 1.0
    assert cmrc_exact("1903 年", "1903年") == 0.0 and cmrc_f1("1903 年", "1903年") == 1.0  # EM keeps inner spaces
    assert cmrc_exact("光荣。", "光荣") == 1.0 and cmrc_f1("光荣.", "光荣") == pytest.approx(0.8)  # "." is no CMRC punctuation

    examples = [QAExample("a", "?", "", [Answer("光荣和ω-force", 0)], False, ""),
                QAExample("b", "?", "", [Answer("北大", 0), Answer("北京大学", 0)], False, "")]
    scores = squad_scores({"a": "光荣和ω-force开发", "b": "北京大学"}, examples, language="zh")
    assert scores == {"exact_match": 50.0, "f1": pytest.approx(90.0)}


# ---- real data -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, language", [("squad/dev.json", "en"), ("zh/cmrc2018/dev.json", "zh")])
def test_gold_answers_score_100(path, language):
    examples = read(DATA_DIR / path)
    examples = examples[:200] if language == "en" else examples
    predictions = {e.id: e.answers[0].text if e.answers else "" for e in examples}
    assert squad_scores(predictions, examples, language=language) == {"exact_match": 100.0, "f1": 100.0}


@pytest.mark.parametrize("path, language", [("squad/dev.json", "en"), ("zh/cmrc2018/dev.json", "zh")])
def test_labels_decode_back_to_the_answers(tok, path, language):
    """features -> training labels as one-hot logits -> postprocess gives back the gold answers exactly."""
    examples = [e for e in read(DATA_DIR / path)[:200] if e.answers]
    features = prepare_features(examples, tok, max_length=128, doc_stride=32)
    starts = [logits(len(ids), **{f"t{s}": 10.0}) for ids, s in zip(features.input_ids, features.start_positions)]
    ends = [logits(len(ids), **{f"t{e}": 10.0}) for ids, e in zip(features.input_ids, features.end_positions)]
    predictions = postprocess(examples, features, starts, ends, max_answer_length=128)
    assert all(predictions[e.id].text == e.context[predictions[e.id].start:predictions[e.id].end] for e in examples)
    # Only answers of at most doc_stride + 1 tokens are sure to fit in a window; a few of CMRC's are longer.
    labelled = sorted({features.example_index[i] for i, start in enumerate(features.start_positions) if start})
    assert len(labelled) >= 0.95 * len(examples)
    answered = {examples[i].id: predictions[examples[i].id].text for i in labelled}
    scores = squad_scores(answered, [examples[i] for i in labelled], language=language)
    assert scores == {"exact_match": 100.0, "f1": 100.0}
